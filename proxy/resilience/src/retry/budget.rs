//! How many retries may be in flight at once towards one upstream: `maxRetries` of the
//! DestinationRule's connection pool (unlimited when unset, as in Istio), or, when the rule
//! sets a `retryBudget`, a share of the requests in flight and waiting with a floor (Envoy's
//! `retry_budget`, which then replaces `maxRetries`).
//!
//! A retry takes a [`RetryPermit`] before its backoff and holds it until the retried try
//! has its answer. When none is left the layer does not retry and returns the answer it has.
//! Clone the budget to share it: the circuit module keeps one per upstream.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use crate::circuit::Load;

#[derive(Clone, Debug, Default)]
pub struct RetryBudget {
    cap: Cap,
    active: Arc<AtomicU32>,
}

/// How many retries may be in flight.
#[derive(Clone, Debug, Default)]
enum Cap {
    #[default]
    Unlimited,
    Fixed(u32),
    /// `percent` of the upstream's `load`, never below `min`.
    Share {
        percent: f64,
        min: u32,
        load: Arc<Load>,
    },
}

impl Cap {
    fn max(&self) -> u32 {
        match self {
            Cap::Unlimited => u32::MAX,
            Cap::Fixed(max) => *max,
            Cap::Share { percent, min, load } => {
                // Envoy truncates the share and takes the floor over it.
                let share = (percent / 100.0 * f64::from(load.active())) as u32;
                share.max(*min)
            }
        }
    }
}

impl RetryBudget {
    /// At most `max` retries in flight; `None` for no limit.
    pub fn new(max: Option<u32>) -> Self {
        Self::with_cap(max.map_or(Cap::Unlimited, Cap::Fixed))
    }

    /// At most `percent`% of the requests `load` counts, and at least `min`, in flight.
    pub fn share(percent: f64, min: u32, load: Arc<Load>) -> Self {
        Self::with_cap(Cap::Share { percent, min, load })
    }

    fn with_cap(cap: Cap) -> Self {
        Self {
            cap,
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
        let max = self.cap.max();
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
