//! A process-wide bound on how many of a costly thing run at once (video transcoders,
//! `video.max_transcodes`; grid compositions, `video.max_grids`), with a gauge of how many do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How many run, against the configured most, and the gauge that shows it.
pub struct Limit {
    max: usize,
    running: AtomicUsize,
    gauge: &'static str,
}

/// One running thing's place under a [`Limit`], given back when it is dropped.
pub struct Slot(Arc<Limit>);

impl Limit {
    /// A bound of `max` at once, counted by the gauge `gauge` (set to 0 now).
    pub fn new(max: usize, gauge: &'static str) -> Arc<Limit> {
        metrics::gauge!(gauge).set(0.0);
        Arc::new(Limit { max, running: AtomicUsize::new(0), gauge })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A place, unless `max` already run.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        let taken =
            self.running.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1)).ok()?;
        metrics::gauge!(self.gauge).set((taken + 1) as f64);
        Some(Slot(self.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let left = self.0.running.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(self.0.gauge).set(left as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_bounded_and_given_back() {
        let limit = Limit::new(2, "junction_test_limit");
        let (a, b) = (limit.take(), limit.take());
        assert!(a.is_some() && b.is_some());
        assert!(limit.take().is_none(), "a third is refused");
        drop(a);
        assert!(limit.take().is_some(), "a place given back is taken again");
        assert_eq!(limit.max(), 2);
    }
}
