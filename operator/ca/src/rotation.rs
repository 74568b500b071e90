//! Root rotation, planned as a pure function of the stored roots and the time.
//!
//! A root is replaced in the last fifth of its life. The new root is first only published (added
//! to the trust bundle every proxy loads); once it has had time to reach them it starts signing,
//! and the old root stays trusted until everything it signed has expired: the node
//! intermediates, and the leaves they signed, whose lifetime is capped at their intermediate's.
//! Then the old root is retired from the bundle.
//!
//! The operator calls [`RotationPolicy::plan`] on every reconcile and applies the answer; it
//! signs with [`RotationPolicy::signer`].

use std::time::{Duration, SystemTime};

use mizzen_identity::svid::Validity;

use crate::node::DEFAULT_NODE_CA_TTL;

/// When to rotate, how long to publish before signing, and how long to overlap.
#[derive(Clone, Debug, PartialEq)]
pub struct RotationPolicy {
    /// Fraction of a root's lifetime after which it is replaced (0.8: its last fifth).
    pub rotate_at: f64,
    /// How long a new root is only trusted before it signs (the ConfigMap refresh and the
    /// agents' bundle push take about a minute; the default leaves ample room).
    pub propagation: Duration,
    /// How long an old root stays trusted once the new one signs: at least the longest
    /// intermediate lifetime (leaves are capped at their intermediate's expiry).
    pub overlap: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            rotate_at: 0.8,
            propagation: Duration::from_secs(15 * 60),
            overlap: DEFAULT_NODE_CA_TTL,
        }
    }
}

/// What to do with the stored roots now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationPlan {
    /// Nothing to do.
    Keep,
    /// Generate a new root and add it next to the current one (both stay trusted).
    Rotate,
    /// Remove these roots (indices into the input) from the bundle and the Secret.
    Retire(Vec<usize>),
}

impl RotationPolicy {
    /// The plan for `roots` (validity of each stored root, any order) at `now`. Retiring comes
    /// first; a rotation that is also due is planned on the next call.
    pub fn plan(&self, roots: &[Validity], now: SystemTime) -> RotationPlan {
        let Some(newest) = newest(roots) else {
            return RotationPlan::Rotate;
        };
        let current = roots[newest];
        let overlap_ends = current.not_before + self.propagation + self.overlap;
        let retire: Vec<usize> = roots
            .iter()
            .enumerate()
            .filter(|&(i, root)| i != newest && (now >= root.not_after || now >= overlap_ends))
            .map(|(i, _)| i)
            .collect();
        if !retire.is_empty() {
            return RotationPlan::Retire(retire);
        }
        let lifetime = current
            .not_after
            .duration_since(current.not_before)
            .unwrap_or(Duration::ZERO);
        let due = current.not_before
            + lifetime.mul_f64(if self.rotate_at.is_nan() {
                0.8
            } else {
                self.rotate_at.clamp(0.0, 1.0)
            });
        if now >= due {
            RotationPlan::Rotate
        } else {
            RotationPlan::Keep
        }
    }

    /// Which root signs at `now`: the newest one that has been published for
    /// [`RotationPolicy::propagation`], or the newest if none has (a first root).
    pub fn signer(&self, roots: &[Validity], now: SystemTime) -> Option<usize> {
        let published = (0..roots.len())
            .filter(|&i| now >= roots[i].not_before + self.propagation && now < roots[i].not_after)
            .max_by_key(|&i| roots[i].not_before);
        published.or_else(|| newest(roots))
    }
}

fn newest(roots: &[Validity]) -> Option<usize> {
    (0..roots.len()).max_by_key(|&i| roots[i].not_before)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    fn t(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + DAY * days as u32
    }

    fn root(from_day: u64, years: u32) -> Validity {
        Validity {
            not_before: t(from_day),
            not_after: t(from_day) + YEAR * years,
        }
    }

    #[test]
    fn no_root_means_make_one() {
        assert_eq!(
            RotationPolicy::default().plan(&[], t(0)),
            RotationPlan::Rotate
        );
    }

    #[test]
    fn rotates_exactly_at_the_last_fifth() {
        let policy = RotationPolicy::default();
        let r = root(0, 10);
        let due = t(0) + YEAR * 8;
        assert_eq!(
            policy.plan(&[r], due - Duration::from_secs(1)),
            RotationPlan::Keep
        );
        assert_eq!(policy.plan(&[r], due), RotationPlan::Rotate);
        assert_eq!(policy.plan(&[r], r.not_after + DAY), RotationPlan::Rotate);
    }

    #[test]
    fn both_roots_kept_during_the_overlap_then_old_retired() {
        let policy = RotationPolicy::default();
        let old = root(0, 10);
        let new_start = 2920; // 8 years in
        let new = root(new_start, 10);
        let roots = [old, new];
        let overlap_ends = t(new_start) + policy.propagation + policy.overlap;
        assert_eq!(policy.plan(&roots, t(new_start)), RotationPlan::Keep);
        assert_eq!(
            policy.plan(&roots, overlap_ends - Duration::from_secs(1)),
            RotationPlan::Keep
        );
        assert_eq!(
            policy.plan(&roots, overlap_ends),
            RotationPlan::Retire(vec![0])
        );
        // Order of the input does not matter.
        assert_eq!(
            policy.plan(&[new, old], overlap_ends),
            RotationPlan::Retire(vec![1])
        );
    }

    #[test]
    fn an_expired_old_root_is_retired_even_inside_the_overlap() {
        let policy = RotationPolicy {
            overlap: 30 * DAY,
            ..RotationPolicy::default()
        };
        let old = Validity {
            not_before: t(0),
            not_after: t(100),
        };
        let new = root(95, 10);
        assert_eq!(policy.plan(&[old, new], t(99)), RotationPlan::Keep);
        assert_eq!(
            policy.plan(&[old, new], t(100)),
            RotationPlan::Retire(vec![0])
        );
    }

    #[test]
    fn retiring_comes_before_a_due_rotation() {
        let policy = RotationPolicy::default();
        let old = root(0, 1);
        let new = Validity {
            not_before: t(300),
            not_after: t(310),
        };
        assert_eq!(
            policy.plan(&[old, new], t(309)),
            RotationPlan::Retire(vec![0])
        );
        assert_eq!(policy.plan(&[new], t(309)), RotationPlan::Rotate);
    }

    #[test]
    fn new_root_signs_only_after_propagation() {
        let policy = RotationPolicy::default();
        let old = root(0, 10);
        let new = root(2920, 10);
        let roots = [old, new];
        assert_eq!(policy.signer(&roots, t(2920)), Some(0));
        assert_eq!(
            policy.signer(
                &roots,
                t(2920) + policy.propagation - Duration::from_secs(1)
            ),
            Some(0)
        );
        assert_eq!(policy.signer(&roots, t(2920) + policy.propagation), Some(1));
        // A first root signs at once.
        assert_eq!(policy.signer(&[new], t(2920)), Some(0));
        assert_eq!(policy.signer(&[], t(0)), None);
    }
}
