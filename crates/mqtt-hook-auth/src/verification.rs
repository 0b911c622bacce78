//! Admission to password checks: Argon2 and bcrypt are slow on purpose, so a few checks run at
//! once, a bounded number of connections wait for their turn, and a wait is bounded in time. A
//! flood of CONNECTs is then refused at once instead of queueing without limit (each waiting
//! connection holds its socket and its decoded CONNECT).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Limits on the password checks of a [`LedgerHook`](crate::LedgerHook).
///
/// When `max_waiting` connections already wait, a new CONNECT that needs a check is refused at
/// once with 0x89 Server busy (MQTT 3.1.1: return code 3, Server unavailable): clients take that
/// as a transient refusal and retry later, whereas 0x86 or 0x87 would tell them their
/// credentials are wrong. A connection that waits longer than `wait_timeout`, or that gets past
/// the busy check in a race, is refused like a wrong password (the authentication hook API has
/// no other answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerificationLimits {
    /// Checks that run at once, on the blocking pool. 0 (the default): the number of CPU cores.
    pub concurrent: usize,
    /// Connections that may wait for a check to start. `None` (the default): 8 × `concurrent`.
    pub max_waiting: Option<usize>,
    /// The longest a connection waits for its check to start. Default: 5 seconds.
    pub wait_timeout: Duration,
}

impl Default for VerificationLimits {
    fn default() -> Self {
        Self {
            concurrent: 0,
            max_waiting: None,
            wait_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a connection does not get its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Too many connections wait already.
    Busy,
    /// It waited `wait_timeout`.
    TimedOut,
}

/// The permits and the waiting room.
#[derive(Debug)]
pub(crate) struct Verifier {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    wait_timeout: Duration,
}

/// Counts one waiting connection while it lives (cancel-safe).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Verifier {
    pub(crate) fn new(limits: VerificationLimits) -> Self {
        let concurrent = match limits.concurrent {
            0 => std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            concurrent => concurrent,
        };
        Self {
            permits: Arc::new(Semaphore::new(concurrent)),
            waiting: AtomicUsize::new(0),
            max_waiting: limits.max_waiting.unwrap_or(concurrent.saturating_mul(8)),
            wait_timeout: limits.wait_timeout,
        }
    }

    /// Whether a new connection would be refused as busy: no free permit and a full waiting
    /// room.
    pub(crate) fn is_busy(&self) -> bool {
        self.permits.available_permits() == 0
            && self.waiting.load(Ordering::Acquire) >= self.max_waiting
    }

    /// A permit to run one check; hold it until the check ends. Cancel-safe: dropping the
    /// future leaves the waiting room.
    pub(crate) async fn admit(&self) -> Result<OwnedSemaphorePermit, Refused> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(TryAcquireError::Closed) => return Err(Refused::Busy),
            Err(TryAcquireError::NoPermits) => {}
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Busy);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(self.wait_timeout, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Refused::Busy),
            Err(_elapsed) => Err(Refused::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(concurrent: usize, max_waiting: usize) -> Arc<Verifier> {
        Arc::new(Verifier::new(VerificationLimits {
            concurrent,
            max_waiting: Some(max_waiting),
            wait_timeout: Duration::from_secs(5),
        }))
    }

    /// Waits (on the paused clock, which advances only when every task is idle) until `f` holds.
    async fn until(f: impl Fn() -> bool) {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition never held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_waiting_room_refuses_at_once() {
        let verifier = verifier(1, 1);
        let running = verifier.admit().await.unwrap();
        assert!(!verifier.is_busy(), "the waiting room is empty");
        let waiter = tokio::spawn({
            let verifier = verifier.clone();
            async move { verifier.admit().await.map(drop) }
        });
        until(|| verifier.waiting.load(Ordering::Acquire) == 1).await;
        assert!(verifier.is_busy());
        assert_eq!(verifier.admit().await.err(), Some(Refused::Busy));
        drop(running);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(verifier.waiting.load(Ordering::Acquire), 0);
        assert!(!verifier.is_busy());
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_after_the_timeout_and_a_cancelled_wait_leaves() {
        let verifier = verifier(1, 4);
        let _running = verifier.admit().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(verifier.admit().await.err(), Some(Refused::TimedOut));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(verifier.waiting.load(Ordering::Acquire), 0);
        let cancelled = tokio::time::timeout(Duration::from_secs(1), verifier.admit()).await;
        assert!(cancelled.is_err());
        assert_eq!(verifier.waiting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn defaults() {
        let verifier = Verifier::new(VerificationLimits::default());
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        assert_eq!(verifier.permits.available_permits(), cores);
        assert_eq!(verifier.max_waiting, 8 * cores);
        assert_eq!(verifier.wait_timeout, Duration::from_secs(5));
    }
}
