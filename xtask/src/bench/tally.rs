//! Counting what one subscriber received in a fan row: each message carries its publisher's
//! index and its sequence number in the first 8 payload bytes, so that loss and duplicates are
//! both counted (a duplicate must never make up for a lost message).

/// The first 8 payload bytes of message `sequence` of publisher `publisher`.
pub(crate) fn tag(publisher: usize, sequence: usize) -> [u8; 8] {
    let publisher = u32::try_from(publisher).unwrap_or(u32::MAX);
    let sequence = u32::try_from(sequence).unwrap_or(u32::MAX);
    ((u64::from(publisher) << 32) | u64::from(sequence)).to_be_bytes()
}

/// What one subscriber received, message by message.
#[derive(Debug)]
pub(crate) struct Tally {
    /// One bit per expected message, per publisher.
    seen: Vec<Vec<u64>>,
    messages: usize,
    /// Distinct expected messages received.
    pub(crate) unique: usize,
    /// Messages received again, or not of this run (an unknown tag).
    pub(crate) duplicates: usize,
}

impl Tally {
    /// A tally for `publishers` publishers of `messages` each.
    pub(crate) fn new(publishers: usize, messages: usize) -> Self {
        Self {
            seen: vec![vec![0; messages.div_ceil(64)]; publishers],
            messages,
            unique: 0,
            duplicates: 0,
        }
    }

    /// Every expected message arrived.
    pub(crate) fn complete(&self) -> bool {
        self.unique >= self.seen.len() * self.messages
    }

    /// Records one received payload; true if it is an expected message seen for the first time.
    pub(crate) fn record(&mut self, payload: &[u8]) -> bool {
        let head = payload
            .get(..8)
            .and_then(|head| <[u8; 8]>::try_from(head).ok())
            .map(u64::from_be_bytes);
        let fresh = head.is_some_and(|head| {
            let publisher = usize::try_from(head >> 32).unwrap_or(usize::MAX);
            let sequence = usize::try_from(head & 0xFFFF_FFFF).unwrap_or(usize::MAX);
            if sequence >= self.messages {
                return false;
            }
            let Some(word) = self
                .seen
                .get_mut(publisher)
                .and_then(|bits| bits.get_mut(sequence / 64))
            else {
                return false;
            };
            let bit = 1u64 << (sequence % 64);
            let fresh = *word & bit == 0;
            *word |= bit;
            fresh
        });
        if fresh {
            self.unique += 1;
        } else {
            self.duplicates += 1;
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_loss_and_duplicates() {
        let mut tally = Tally::new(2, 70);
        let mut payload = vec![0x5A; 64];
        for (publisher, sequence) in [(0, 0), (1, 69), (0, 64), (1, 69), (2, 0), (0, 70)] {
            payload[..8].copy_from_slice(&tag(publisher, sequence));
            tally.record(&payload);
        }
        // A duplicate, a publisher and a sequence out of range: not counted as received.
        assert_eq!((tally.unique, tally.duplicates), (3, 3));
        assert!(!tally.record(&[1, 2, 3]));
        assert!(!tally.complete());
        for publisher in 0..2 {
            for sequence in 0..70 {
                payload[..8].copy_from_slice(&tag(publisher, sequence));
                tally.record(&payload);
            }
        }
        assert!(tally.complete());
        assert_eq!(tally.unique, 140);
    }
}
