use std::fmt;

/// Milliseconds since the Unix epoch, UTC. Millisecond precision is what
/// event sources send in practice and keeps stored keys short.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    pub fn as_i64(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

/// The one source of "now" for everything time-dependent, so that tests set
/// the time instead of sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> UnixMillis;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        UnixMillis(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to: tests and simulations set the
/// time instead of sleeping.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: std::sync::atomic::AtomicI64,
}

impl ManualClock {
    pub fn new(at: UnixMillis) -> Self {
        ManualClock {
            now_ms: std::sync::atomic::AtomicI64::new(at.0),
        }
    }

    pub fn set(&self, at: UnixMillis) {
        self.now_ms.store(at.0, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn advance_days(&self, days: i64) {
        self.now_ms
            .fetch_add(days * 86_400_000, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMillis {
        UnixMillis(self.now_ms.load(std::sync::atomic::Ordering::SeqCst))
    }
}
