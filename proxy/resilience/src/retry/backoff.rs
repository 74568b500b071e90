//! Jittered exponential backoff between tries ("full jitter").
//!
//! Before retry `n` (1 for the first retry) the layer waits a uniformly random time in
//! `[0, min(base × 2^(n-1), 10 × base)]`, as Envoy does with its 25 ms default base and a
//! maximum of ten times the base.

use std::time::Duration;

use rand::RngExt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(base: Duration) -> Self {
        Self {
            base,
            max: base.saturating_mul(10),
        }
    }

    /// The longest wait before retry `n` (1-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random wait before retry `n`, drawn with `rng`.
    pub fn delay_with(&self, n: u32, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(n).as_micros() as u64;
        Duration::from_micros(rng.random_range(0..=ceiling))
    }

    /// A random wait before retry `n`.
    pub fn delay(&self, n: u32) -> Duration {
        self.delay_with(n, &mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::SmallRng};

    #[test]
    fn ceiling_doubles_and_caps_at_ten_times_base() {
        let b = Backoff::new(Duration::from_millis(25));
        let ceilings: Vec<u64> = (1..=6).map(|n| b.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, vec![25, 50, 100, 200, 250, 250]);
        assert_eq!(b.ceiling(1000), Duration::from_millis(250));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let b = Backoff::new(Duration::from_millis(25));
        let mut rng = SmallRng::seed_from_u64(5);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay_with(3, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(100)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter spreads the waits");
        let mean = delays.iter().sum::<Duration>() / 200;
        assert!(
            mean > Duration::from_millis(35) && mean < Duration::from_millis(65),
            "{mean:?}"
        );
    }
}
