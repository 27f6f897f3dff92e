//! Key deadlines: when a key expires, in milliseconds since the Unix epoch (as Redis keeps
//! them), and the clock they are compared with.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What [`KvsEngine::expiry_bytes`](crate::KvsEngine::expiry_bytes) finds for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyExpiry {
    /// The key is not set (or has expired).
    Missing,
    /// The key is set and has no deadline.
    Never,
    /// The key is set and expires at this deadline, in milliseconds since the Unix epoch
    /// (always in the future when returned).
    At(u64),
}

impl KeyExpiry {
    /// Time left before the key expires, in milliseconds, as Redis's `PTTL` answers it: `-2`
    /// for a missing key, `-1` for a key without a deadline, otherwise the milliseconds left
    /// from `now` (a deadline that is due counts as 0).
    pub fn ttl_millis(self, now: u64) -> i64 {
        match self {
            KeyExpiry::Missing => -2,
            KeyExpiry::Never => -1,
            KeyExpiry::At(deadline) => {
                i64::try_from(deadline.saturating_sub(now)).unwrap_or(i64::MAX)
            }
        }
    }
}

/// The current time in milliseconds since the Unix epoch: the clock every deadline is
/// compared with. A clock set before 1970 reads as 0.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The deadline `ttl` from now, in milliseconds since the Unix epoch (saturating, never
/// wrapping).
pub fn deadline_after(ttl: Duration) -> u64 {
    now_millis().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a key with `deadline` has expired at `now`: a deadline is the first millisecond
/// at which the key is gone.
pub fn is_expired(deadline: u64, now: u64) -> bool {
    deadline <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_millis_answers_as_redis_pttl() {
        assert_eq!(KeyExpiry::Missing.ttl_millis(5), -2);
        assert_eq!(KeyExpiry::Never.ttl_millis(5), -1);
        assert_eq!(KeyExpiry::At(1_500).ttl_millis(1_000), 500);
        assert_eq!(KeyExpiry::At(900).ttl_millis(1_000), 0);
        assert_eq!(KeyExpiry::At(u64::MAX).ttl_millis(0), i64::MAX);
    }

    #[test]
    fn a_deadline_is_the_first_millisecond_the_key_is_gone() {
        assert!(!is_expired(1_000, 999));
        assert!(is_expired(1_000, 1_000));
        assert!(is_expired(1_000, 1_001));
        let soon = deadline_after(Duration::from_secs(60));
        assert!(soon >= now_millis() + 59_000);
        assert_eq!(
            deadline_after(Duration::MAX),
            u64::MAX,
            "a huge time to live saturates"
        );
    }
}
