//! Keep Alive (§3.1.2.10): when a silent connection is closed.

use std::time::Duration;

use tokio::time::Instant;

/// The deadline for the next complete packet, `now` being when the last one was handled: one
/// and a half times the Keep Alive [MQTT-3.1.2-22]; `None` when Keep Alive is 0 (off).
///
/// Measured from the last complete packet, not the last byte, so that a client trickling a
/// packet byte by byte cannot keep a connection (and the buffer of its partial packet) forever.
pub(crate) fn deadline(now: Instant, keep_alive: u16) -> Option<Instant> {
    (keep_alive > 0).then(|| now + Duration::from_millis(u64::from(keep_alive) * 1500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_a_half_times_the_keep_alive_mqtt_3_1_2_22() {
        let now = Instant::now();
        assert_eq!(deadline(now, 10), Some(now + Duration::from_secs(15)));
        assert_eq!(deadline(now, 1), Some(now + Duration::from_millis(1500)));
        assert_eq!(
            deadline(now, u16::MAX),
            Some(now + Duration::from_millis(u64::from(u16::MAX) * 1500))
        );
    }

    #[test]
    fn zero_turns_keep_alive_off_mqtt_3_1_2_23() {
        assert_eq!(deadline(Instant::now(), 0), None);
    }
}
