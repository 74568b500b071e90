//! Percentage draws for fault injection and mirroring, behind a trait so tests can seed them.

use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng, rngs::SmallRng};

/// Decides whether one request falls in a percentage.
pub trait Draw {
    /// True with probability `pct`/100: always for 100 or more, never for 0, less or NaN.
    fn hit(&mut self, pct: f64) -> bool;
}

/// A [`Draw`] over a small fast PRNG.
#[derive(Clone, Debug)]
pub struct RandomDraw {
    rng: SmallRng,
}

impl RandomDraw {
    /// Seeded from the operating system.
    pub fn new() -> Self {
        Self {
            rng: rand::make_rng(),
        }
    }

    /// Reproducible draws, for tests.
    pub fn seeded(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Default for RandomDraw {
    fn default() -> Self {
        Self::new()
    }
}

impl Draw for RandomDraw {
    fn hit(&mut self, pct: f64) -> bool {
        percent_hit(pct, self.rng.random())
    }
}

/// A [`Draw`] shared by every clone of a service (so clones do not repeat one sequence): the
/// thread's generator, which costs nothing to make, or a given one (seeded, for tests).
#[derive(Clone)]
pub struct SharedDraw(Option<Arc<Mutex<dyn Draw + Send>>>);

impl SharedDraw {
    pub fn new(draw: impl Draw + Send + 'static) -> Self {
        Self(Some(Arc::new(Mutex::new(draw))))
    }

    /// Draws from the thread's random generator: made per request by the data path, so no
    /// generator of its own is seeded (from the operating system) and no lock is taken.
    pub fn random() -> Self {
        Self(None)
    }

    pub fn hit(&self, pct: f64) -> bool {
        let Some(draw) = &self.0 else {
            return percent_hit(pct, rand::rng().random());
        };
        // A panic while drawing cannot leave the generator in a state worth refusing.
        let mut draw = draw.lock().unwrap_or_else(|p| p.into_inner());
        draw.hit(pct)
    }
}

/// The resolution of percentage draws: one part in a million (Envoy's `MILLION` denominator).
pub const PERCENT_DENOMINATOR: u32 = 1_000_000;

/// Whether a draw `random` falls within `percentage` (0 to 100, fractions allowed). Every
/// percentage in the proxy (fault delay and abort, mirror) uses this, so they share one
/// definition: the draw hits when `random % 1_000_000 < percentage × 10_000`, so sweeping
/// `random` over any million consecutive values hits exactly `percentage`% of them. 100 or more
/// always hits; 0, less, or NaN never does.
pub fn percent_hit(percentage: f64, random: u32) -> bool {
    if percentage.is_nan() || percentage <= 0.0 {
        return false;
    }
    if percentage >= 100.0 {
        return true;
    }
    let threshold = (percentage * f64::from(PERCENT_DENOMINATOR) / 100.0).round() as u32;
    random % PERCENT_DENOMINATOR < threshold
}

impl Default for SharedDraw {
    fn default() -> Self {
        Self::random()
    }
}

impl std::fmt::Debug for SharedDraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedDraw")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_lands_near_half() {
        let mut d = RandomDraw::seeded(7);
        let hits = (0..2000).filter(|_| d.hit(50.0)).count();
        assert!((900..=1100).contains(&hits), "{hits} hits of 2000");
    }

    #[test]
    fn percentages_are_exact_over_a_million_draws() {
        let count = |p: f64| {
            (0..PERCENT_DENOMINATOR)
                .filter(|&r| percent_hit(p, r))
                .count()
        };
        assert_eq!(count(50.0), 500_000);
        assert_eq!(count(0.1), 1_000);
        assert_eq!(count(12.5), 125_000);
        assert_eq!(count(0.0), 0);
        assert_eq!(count(100.0), 1_000_000);
        assert!(!percent_hit(-1.0, 0));
        assert!(!percent_hit(f64::NAN, 0));
        assert!(percent_hit(150.0, u32::MAX));
    }

    #[test]
    fn the_threads_generator_draws_like_a_seeded_one() {
        let d = SharedDraw::random();
        let hits = (0..20_000).filter(|_| d.hit(25.0)).count();
        assert!((4_600..=5_400).contains(&hits), "{hits} hits of 20000");
        assert_eq!((0..2000).filter(|_| d.hit(0.0)).count(), 0);
        assert_eq!((0..2000).filter(|_| d.hit(f64::NAN)).count(), 0);
        assert_eq!((0..2000).filter(|_| d.hit(100.0)).count(), 2000);
    }

    #[test]
    fn ends_are_exact() {
        let mut d = RandomDraw::seeded(1);
        assert_eq!((0..2000).filter(|_| d.hit(0.0)).count(), 0);
        assert_eq!((0..2000).filter(|_| d.hit(100.0)).count(), 2000);
        assert!(!d.hit(f64::NAN));
        assert!(!d.hit(-3.0));
        assert!(d.hit(150.0));
    }

    #[test]
    fn same_seed_same_sequence() {
        let mut a = RandomDraw::seeded(42);
        let mut b = RandomDraw::seeded(42);
        let xa: Vec<bool> = (0..100).map(|_| a.hit(30.0)).collect();
        let xb: Vec<bool> = (0..100).map(|_| b.hit(30.0)).collect();
        assert_eq!(xa, xb);
    }

    #[test]
    fn shared_clones_advance_one_sequence() {
        let shared = SharedDraw::new(RandomDraw::seeded(3));
        let other = shared.clone();
        let mut solo = RandomDraw::seeded(3);
        for i in 0..50 {
            let got = if i % 2 == 0 {
                shared.hit(50.0)
            } else {
                other.hit(50.0)
            };
            assert_eq!(got, solo.hit(50.0));
        }
    }
}
