//! How many retries may be in flight at once towards one upstream (`maxRetries` of the
//! DestinationRule's connection pool; unlimited when unset, as in Istio).
//!
//! A retry takes a [`RetryPermit`] before its backoff and holds it until the retried try
//! has its answer. When none is left the layer does not retry and returns the answer it has.
//! Clone the budget to share it: the circuit module keeps one per upstream.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

#[derive(Clone, Debug, Default)]
pub struct RetryBudget {
    max: Option<u32>,
    active: Arc<AtomicU32>,
}

impl RetryBudget {
    /// At most `max` retries in flight; `None` for no limit.
    pub fn new(max: Option<u32>) -> Self {
        Self {
            max,
            active: Arc::new(AtomicU32::new(0)),
        }
    }

    pub fn unlimited() -> Self {
        Self::new(None)
    }

    /// Retries in flight now.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    pub fn try_acquire(&self) -> Option<RetryPermit> {
        let max = self.max.unwrap_or(u32::MAX);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| RetryPermit {
                active: self.active.clone(),
            })
    }
}

/// One retry in flight; released on drop.
#[derive(Debug)]
pub struct RetryPermit {
    active: Arc<AtomicU32>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_concurrent_retries() {
        let budget = RetryBudget::new(Some(2));
        let a = budget.try_acquire().unwrap();
        let _b = budget.clone().try_acquire().unwrap();
        assert!(budget.try_acquire().is_none());
        assert_eq!(budget.active(), 2);
        drop(a);
        assert!(budget.try_acquire().is_some());
    }

    #[test]
    fn zero_forbids_and_none_allows() {
        assert!(RetryBudget::new(Some(0)).try_acquire().is_none());
        let unlimited = RetryBudget::unlimited();
        let permits: Vec<_> = (0..1000)
            .map(|_| unlimited.try_acquire().unwrap())
            .collect();
        assert_eq!(unlimited.active(), 1000);
        drop(permits);
        assert_eq!(unlimited.active(), 0);
    }
}
