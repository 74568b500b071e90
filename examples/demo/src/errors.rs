//! The `--error-rate` of a reviews version: which requests fail.
//!
//! Deterministic rather than random: of any `n` requests in a row, `round(n * rate)` fail
//! (within one), so a canary analysis over a short window sees the configured rate and not a
//! lucky streak, and tests can count exactly.

use std::sync::atomic::{AtomicU64, Ordering};

/// Spreads failures evenly over the request sequence.
pub struct ErrorBudget {
    rate: f64,
    served: AtomicU64,
}

impl ErrorBudget {
    /// `rate` is the fraction of requests that fail, 0 to 1.
    pub fn new(rate: f64) -> Self {
        ErrorBudget {
            rate: rate.clamp(0.0, 1.0),
            served: AtomicU64::new(0),
        }
    }

    /// Whether the next request fails: the failures owed after it exceed those owed before.
    pub fn next_fails(&self) -> bool {
        if self.rate <= 0.0 {
            return false;
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.rate).floor() > (n * self.rate).floor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(rate: f64, n: usize) -> usize {
        let budget = ErrorBudget::new(rate);
        (0..n).filter(|_| budget.next_fails()).count()
    }

    #[test]
    fn fails_the_configured_fraction_evenly() {
        assert_eq!(failures(0.0, 1000), 0);
        assert_eq!(failures(1.0, 1000), 1000);
        assert_eq!(failures(0.2, 1000), 200);
        // Evenly spread: every window of 10 holds exactly 2 failures at 20%.
        let budget = ErrorBudget::new(0.2);
        for _ in 0..10 {
            let window = (0..10).filter(|_| budget.next_fails()).count();
            assert_eq!(window, 2);
        }
    }
}
