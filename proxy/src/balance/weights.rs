//! Endpoint weights for the balancers that are not consistent hashing (ROUND_ROBIN, RANDOM,
//! LEAST_REQUEST), as Envoy honours `load_balancing_weight`: a ServiceEntry's or
//! WorkloadEntry's `weight` gives an endpoint that share of new requests. Made only when the
//! weights differ; a Kubernetes Service's endpoints all weigh 1 and are balanced as before.

/// The longest round-robin schedule kept; longer ones are scaled down to it.
const MAX_SCHEDULE: u64 = 4096;

#[derive(Debug)]
pub struct Weights {
    weights: Box<[u32]>,
    /// One round of weighted round robin over every endpoint, interleaved as nginx's smooth
    /// weighted round robin does (weights 5, 1, 1 give `a a b a c a a`, not `a a a a a b c`).
    schedule: Box<[u32]>,
}

impl Weights {
    /// `None` when every endpoint weighs the same (a weight of 0 counts as 1, as Istio reads an
    /// unset weight).
    pub fn new(weights: &[u32]) -> Option<Self> {
        let weights: Box<[u32]> = weights.iter().map(|w| (*w).max(1)).collect();
        if weights.windows(2).all(|w| w[0] == w[1]) {
            return None;
        }
        let schedule = smooth_round(&reduce(&weights));
        Some(Self { weights, schedule })
    }

    pub fn of(&self, i: usize) -> u32 {
        self.weights[i]
    }

    /// The `k`th round-robin pick among the eligible endpoints: the schedule's `k`th entry, or
    /// the next eligible one after it.
    pub fn round_robin(&self, k: usize, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        let len = self.schedule.len();
        (0..len)
            .map(|j| self.schedule[(k + j) % len] as usize)
            .find(|&i| eligible(i))
    }

    /// An eligible endpoint drawn with probability proportional to its weight, leaving out
    /// `except`.
    pub fn random(
        &self,
        random: u32,
        eligible: impl Fn(usize) -> bool,
        except: Option<usize>,
    ) -> Option<usize> {
        let candidate = |i: &usize| eligible(*i) && Some(*i) != except;
        let total: u64 = (0..self.weights.len())
            .filter(candidate)
            .map(|i| u64::from(self.weights[i]))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = u64::from(random) % total;
        (0..self.weights.len()).filter(candidate).find(|&i| {
            let w = u64::from(self.weights[i]);
            if r < w {
                return true;
            }
            r -= w;
            false
        })
    }
}

/// The weights divided by their greatest common divisor, then scaled down (each at least 1)
/// when their sum is longer than a schedule may be.
fn reduce(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0, |g, &w| gcd(g, u64::from(w)));
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let total: u64 = reduced.iter().sum();
    if total <= MAX_SCHEDULE {
        return reduced;
    }
    reduced
        .iter()
        .map(|w| (w * MAX_SCHEDULE / total).max(1))
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// One round of smooth weighted round robin: each step every endpoint gains its weight, the
/// one with the most goes next and gives up the total.
fn smooth_round(weights: &[u64]) -> Box<[u32]> {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(weights) {
                *c += *w as i64;
            }
            let best = (0..current.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .expect("at least two endpoints");
            current[best] -= total as i64;
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_need_nothing() {
        assert!(Weights::new(&[1, 1, 1]).is_none());
        assert!(Weights::new(&[0, 1]).is_none(), "0 reads as 1");
        assert!(Weights::new(&[5]).is_none());
    }

    #[test]
    fn the_round_robin_schedule_interleaves_by_weight() {
        let w = Weights::new(&[5, 1, 1]).unwrap();
        let round: Vec<usize> = (0..7)
            .map(|k| w.round_robin(k, |_| true).unwrap())
            .collect();
        assert_eq!(round, [0, 0, 1, 0, 2, 0, 0]);
        // Divided by the common factor: the same round.
        let w = Weights::new(&[50, 10, 10]).unwrap();
        let again: Vec<usize> = (0..7)
            .map(|k| w.round_robin(k, |_| true).unwrap())
            .collect();
        assert_eq!(again, round);
    }

    #[test]
    fn round_robin_skips_ejected_endpoints() {
        let w = Weights::new(&[3, 1]).unwrap();
        assert!((0..8).all(|k| w.round_robin(k, |i| i != 0) == Some(1)));
        assert_eq!(w.round_robin(0, |_| false), None);
    }

    #[test]
    fn a_long_schedule_is_scaled_down_and_keeps_the_shares() {
        let w = Weights::new(&[30_000, 10_000, 1]).unwrap();
        let len = w.schedule.len();
        assert!(len as u64 <= MAX_SCHEDULE + 3, "{len}");
        let mut counts = [0usize; 3];
        for k in 0..len {
            counts[w.round_robin(k, |_| true).unwrap()] += 1;
        }
        assert!(counts[2] >= 1, "the lightest endpoint still gets a turn");
        let share = counts[0] as f64 / len as f64;
        assert!((0.74..0.76).contains(&share), "{counts:?}");
    }

    #[test]
    fn random_draws_follow_the_weights_among_the_eligible() {
        let w = Weights::new(&[6, 3, 1]).unwrap();
        let mut counts = [0usize; 3];
        for r in 0..10_000u32 {
            counts[w
                .random(r.wrapping_mul(2_654_435_761), |_| true, None)
                .unwrap()] += 1;
        }
        for (got, want) in counts.iter().zip([6_000, 3_000, 1_000]) {
            assert!(got.abs_diff(want) < 300, "{counts:?}");
        }
        // Leaving out one endpoint, and one ejected: only the third remains.
        assert!((0..100).all(|r| w.random(r, |i| i != 1, Some(0)) == Some(2)));
        assert_eq!(w.random(7, |i| i == 0, Some(0)), None);
    }
}
