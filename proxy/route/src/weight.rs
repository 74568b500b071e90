//! Random draws: the weighted pick of a destination and percentage draws (faults, mirrors).
//! Both are plain functions of a random number, so tests sweep it instead of trusting luck.

use mizzen_proxy_config::WeightedDestination;

// The percentage draw is defined once, beside the draws of the fault and mirror layers.
pub use mizzen_resilience::draw::{PERCENT_DENOMINATOR, percent_hit};

/// Cumulative weights of a route's destinations, built once.
#[derive(Clone, Debug)]
pub(crate) struct WeightedPick {
    /// `cumulative[i]` is the sum of weights `0..=i`.
    cumulative: Vec<u64>,
    total: u64,
}

impl WeightedPick {
    pub(crate) fn new(destinations: &[WeightedDestination]) -> Self {
        let mut total = 0u64;
        let cumulative = destinations
            .iter()
            .map(|d| {
                total += u64::from(d.weight);
                total
            })
            .collect();
        Self { cumulative, total }
    }

    /// The index of the destination for draw `random`: the first whose cumulative weight
    /// exceeds `random % total`, so a zero-weight destination is never chosen. When every weight
    /// is 0 (a lone destination written without weight), the first destination is chosen.
    pub(crate) fn pick(&self, random: u32) -> usize {
        if self.total == 0 {
            return 0;
        }
        let r = u64::from(random) % self.total;
        // cumulative is non-decreasing; find the first entry > r.
        self.cumulative.partition_point(|&c| c <= r)
    }
}

/// Picks a destination by weight with the draw `random`: the first whose cumulative weight
/// exceeds `random % total`, so zero-weight destinations are never picked and sweeping
/// `random` over `0..total` picks each exactly `weight` times; when every weight is 0 the
/// first destination is picked. `None` for an empty list. The route table keeps a precomputed
/// pick per route; this is the same rule for callers that hold only a list.
pub fn pick_weighted(
    destinations: &[WeightedDestination],
    random: u32,
) -> Option<&WeightedDestination> {
    if destinations.is_empty() {
        return None;
    }
    destinations.get(WeightedPick::new(destinations).pick(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(weights: &[u32]) -> Vec<WeightedDestination> {
        weights
            .iter()
            .map(|&weight| WeightedDestination {
                weight,
                ..WeightedDestination::default()
            })
            .collect()
    }

    fn sweep(weights: &[u32], n: u32) -> Vec<u32> {
        let pick = WeightedPick::new(&dests(weights));
        let mut counts = vec![0; weights.len()];
        for r in 0..n {
            counts[pick.pick(r)] += 1;
        }
        counts
    }

    #[test]
    fn a_90_10_split_is_exact_over_a_sweep() {
        assert_eq!(sweep(&[90, 10], 10_000), vec![9_000, 1_000]);
    }

    #[test]
    fn zero_weights_are_never_picked() {
        assert_eq!(sweep(&[0, 100, 0], 1_000), vec![0, 1_000, 0]);
        assert_eq!(sweep(&[50, 0, 50], 1_000), vec![500, 0, 500]);
    }

    #[test]
    fn a_lone_destination_takes_everything() {
        assert_eq!(sweep(&[0], 100), vec![100]);
        assert_eq!(sweep(&[100], 100), vec![100]);
    }

    #[test]
    fn uneven_splits_and_large_draws() {
        assert_eq!(sweep(&[33, 33, 34], 10_000), vec![3_300, 3_300, 3_400]);
        let pick = WeightedPick::new(&dests(&[90, 10]));
        // Any u32 draw is valid.
        assert!(pick.pick(u32::MAX) < 2);
        assert_eq!(pick_weighted(&dests(&[]), 5), None);
        let ds = dests(&[1, 99]);
        assert!(std::ptr::eq(pick_weighted(&ds, 0).unwrap(), &ds[0]));
        assert!(std::ptr::eq(pick_weighted(&ds, 1).unwrap(), &ds[1]));
    }
}
