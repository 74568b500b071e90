//! Maglev consistent hashing: a lookup table of prime size filled from each endpoint's
//! permutation, so every endpoint owns an almost equal share and few keys move on change.

use super::hash::{hash64, mix};

#[derive(Debug, Clone)]
pub struct Maglev {
    table: Vec<usize>,
}

/// The smallest prime at or above `n` (table sizes must be prime).
fn next_prime(n: u64) -> u64 {
    let is_prime = |n: u64| {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    (n.max(2)..).find(|n| is_prime(*n)).unwrap_or(65537)
}

impl Maglev {
    pub fn new(names: &[String], weights: &[u32], table_size: u64) -> Self {
        let m = next_prime(table_size.clamp(7, 5_000_011));
        let n = names.len();
        if n == 0 {
            return Self { table: Vec::new() };
        }
        let offsets: Vec<u64> = names.iter().map(|s| hash64(s.as_bytes()) % m).collect();
        let skips: Vec<u64> = names
            .iter()
            .map(|s| mix(hash64(s.as_bytes()) ^ 0x5bd1_e995) % (m - 1) + 1)
            .collect();
        let max_w = weights.iter().copied().max().unwrap_or(1).max(1);
        let mut next = vec![0u64; n];
        let mut table = vec![usize::MAX; m as usize];
        let mut filled = 0u64;
        // Weighted Maglev: an endpoint takes a turn in a round only while its credit allows.
        let mut credit = vec![0u64; n];
        'fill: loop {
            for i in 0..n {
                credit[i] += u64::from(weights.get(i).copied().unwrap_or(1).max(1));
                if credit[i] < u64::from(max_w) {
                    continue;
                }
                credit[i] -= u64::from(max_w);
                loop {
                    let c = (offsets[i] + next[i] * skips[i]) % m;
                    next[i] += 1;
                    if table[c as usize] == usize::MAX {
                        table[c as usize] = i;
                        filled += 1;
                        break;
                    }
                }
                if filled == m {
                    break 'fill;
                }
            }
        }
        Self { table }
    }

    pub fn pick(&self, hash: u64, eligible: impl Fn(usize) -> bool) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let len = self.table.len();
        let start = (hash % len as u64) as usize;
        // An ejected endpoint's keys move to the next slots' owners.
        (0..len)
            .map(|k| self.table[(start + k) % len])
            .find(|i| eligible(*i))
    }
}
