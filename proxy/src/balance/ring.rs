//! Ketama-style ring hash: each endpoint owns many points on a 64-bit ring, proportional to its
//! weight; a key goes to the first point at or after its hash.

use super::hash::hash64;

#[derive(Debug, Clone)]
pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// `names` identify the endpoints (stable across proxies), `weights` scale their share.
    pub fn new(names: &[String], weights: &[u32], minimum_ring_size: u64) -> Self {
        let total: u64 = weights
            .iter()
            .map(|w| u64::from((*w).max(1)))
            .sum::<u64>()
            .max(1);
        let size = minimum_ring_size.clamp(1, 8 * 1024 * 1024);
        let mut points = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let w = u64::from(weights.get(i).copied().unwrap_or(1).max(1));
            let replicas = (size * w).div_ceil(total).max(1);
            for r in 0..replicas {
                points.push((hash64(format!("{name}_{r}").as_bytes()), i));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// The endpoint for `hash`, skipping endpoints `eligible` refuses (ejected ones).
    pub fn pick(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|(p, _)| *p < hash);
        (0..self.points.len())
            .map(|k| self.points[(start + k) % self.points.len()].1)
            .find(|i| eligible(*i))
    }
}
