//! The engine's sense of time. Production uses the system clock; tests drive a [`ManualClock`]
//! so room timeouts and feedback debouncing are checked without sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
    /// Wall-clock time in Unix milliseconds, for timestamps shown to users.
    fn unix_ms(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    start_unix_ms: u64,
    offset: Arc<Mutex<Duration>>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    pub fn new() -> Self {
        Self { start: Instant::now(), start_unix_ms: 1_700_000_000_000, offset: Arc::default() }
    }

    pub fn advance(&self, by: Duration) {
        *self.offset.lock() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + *self.offset.lock()
    }

    fn unix_ms(&self) -> u64 {
        self.start_unix_ms + self.offset.lock().as_millis() as u64
    }
}
