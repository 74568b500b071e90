//! When to renew a certificate, and when to try again after a renewal failed.
//!
//! Pure functions of the certificate's validity, the current time and a jitter draw, so the
//! agent's and the proxy's renewal loops stay thin and the policy is tested with fixed times.
//!
//! Renewal starts in a window before half the lifetime has passed (40–50% by default, spread by
//! the jitter so the pods of a node do not all renew in the same second). A failed renewal is
//! retried with capped exponential backoff, and the delay is never more than half the time the
//! current certificate has left, so retries get denser as expiry nears and the last one lands
//! before it rather than after.

use std::time::{Duration, SystemTime};

/// The renewal and retry policy.
#[derive(Clone, Debug, PartialEq)]
pub struct RefreshPolicy {
    /// Start of the renewal window, as a fraction of the lifetime.
    pub window_start: f64,
    /// End of the renewal window (exclusive), as a fraction of the lifetime; at most 0.5.
    pub window_end: f64,
    /// Delay before the first retry after a failure.
    pub retry_initial: Duration,
    /// Largest delay between retries.
    pub retry_max: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            window_start: 0.4,
            window_end: 0.5,
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
        }
    }
}

impl RefreshPolicy {
    /// The instant to renew a certificate valid from `not_before` to `not_after`. `jitter` is a
    /// uniform draw in `[0, 1)` (clamped) that places the instant inside the window.
    pub fn renew_at(
        &self,
        not_before: SystemTime,
        not_after: SystemTime,
        jitter: f64,
    ) -> SystemTime {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        let start = fraction_in(self.window_start, 0.0, 0.5);
        let end = fraction_in(self.window_end, start, 0.5);
        let fraction = start + (end - start) * fraction_in(jitter, 0.0, 1.0);
        not_before + lifetime.mul_f64(fraction)
    }

    /// The instant of retry number `attempt` (0 for the first retry) after a renewal failed at
    /// `now`, for a certificate that expires at `not_after`.
    ///
    /// The backoff doubles from `retry_initial` up to `retry_max`, with "equal jitter" (half
    /// fixed, half drawn) so a node's proxies do not retry in lockstep; it is then capped at half
    /// the time left before `not_after`. Once the certificate has expired there is nothing to
    /// protect and the plain backoff applies.
    pub fn retry_at(
        &self,
        attempt: u32,
        now: SystemTime,
        not_after: SystemTime,
        jitter: f64,
    ) -> SystemTime {
        let doubled = self
            .retry_initial
            .saturating_mul(2u32.saturating_pow(attempt.min(31)));
        let backoff = doubled.min(self.retry_max);
        let delay = backoff / 2 + (backoff / 2).mul_f64(fraction_in(jitter, 0.0, 1.0));
        match not_after.duration_since(now) {
            Ok(left) if !left.is_zero() => now + delay.min(left / 2),
            _ => now + delay,
        }
    }
}

/// `x` clamped to `[low, high]`, NaN taken as `low`: these feed `Duration::mul_f64`, which
/// panics on NaN or negative factors, and the policy's fields come from configuration.
fn fraction_in(x: f64, low: f64, high: f64) -> f64 {
    if x.is_nan() {
        low
    } else {
        x.max(low).min(high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn renews_inside_the_40_to_50_percent_window() {
        let policy = RefreshPolicy::default();
        let (nb, na) = (t(0), t(0) + 24 * HOUR);
        assert_eq!(policy.renew_at(nb, na, 0.0), nb + HOUR.mul_f64(9.6));
        assert_eq!(policy.renew_at(nb, na, 0.5), nb + HOUR.mul_f64(10.8));
        let latest = policy.renew_at(nb, na, 0.999_999);
        assert!(latest < nb + 12 * HOUR, "{latest:?}");
        assert!(latest > nb + HOUR.mul_f64(11.99));
    }

    #[test]
    fn jitter_outside_the_unit_interval_is_clamped() {
        let policy = RefreshPolicy::default();
        let (nb, na) = (t(0), t(100));
        assert_eq!(policy.renew_at(nb, na, -3.0), t(40));
        assert_eq!(policy.renew_at(nb, na, 7.0), t(50));
        assert_eq!(policy.renew_at(nb, na, f64::NAN), t(40));
        let odd = RefreshPolicy {
            window_start: f64::NAN,
            window_end: -1.0,
            ..RefreshPolicy::default()
        };
        assert_eq!(odd.renew_at(nb, na, 0.5), t(0));
    }

    #[test]
    fn window_never_reaches_past_half_life() {
        let policy = RefreshPolicy {
            window_start: 0.7,
            window_end: 0.9,
            ..RefreshPolicy::default()
        };
        assert_eq!(policy.renew_at(t(0), t(100), 0.9), t(50));
    }

    #[test]
    fn inverted_validity_renews_at_once() {
        let policy = RefreshPolicy::default();
        assert_eq!(policy.renew_at(t(100), t(0), 0.3), t(100));
    }

    #[test]
    fn ten_second_certificates_renew_between_4_and_5_seconds() {
        let policy = RefreshPolicy::default();
        let at = policy.renew_at(t(0), t(10), 0.25);
        assert_eq!(at, t(0) + Duration::from_millis(4250));
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let policy = RefreshPolicy::default();
        let far = t(0) + 1000 * HOUR;
        let delays: Vec<Duration> = (0..10)
            .map(|n| {
                policy
                    .retry_at(n, t(0), far, 1.0)
                    .duration_since(t(0))
                    .unwrap()
            })
            .collect();
        let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
        assert_eq!(
            ms,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        // With no jitter, half the backoff.
        let low = policy
            .retry_at(3, t(0), far, 0.0)
            .duration_since(t(0))
            .unwrap();
        assert_eq!(low, Duration::from_secs(2));
        // Huge attempt numbers neither overflow nor exceed the cap.
        let huge = policy.retry_at(u32::MAX, t(0), far, 1.0);
        assert_eq!(huge, t(30));
    }

    #[test]
    fn retries_never_go_past_expiry() {
        let policy = RefreshPolicy::default();
        let expiry = t(10);
        let mut now = t(0);
        for attempt in 0..25 {
            let next = policy.retry_at(attempt, now, expiry, 0.99);
            assert!(next < expiry, "attempt {attempt}: {next:?} is past expiry");
            assert!(next > now, "attempt {attempt} does not move forward");
            now = next;
        }
        // Close to expiry the delay is half the time left.
        let near = t(9) + Duration::from_millis(900);
        assert_eq!(
            policy.retry_at(5, near, expiry, 0.5),
            near + Duration::from_millis(50)
        );
    }

    #[test]
    fn after_expiry_plain_backoff_applies() {
        let policy = RefreshPolicy::default();
        assert_eq!(policy.retry_at(1, t(20), t(10), 1.0), t(21));
        assert_eq!(policy.retry_at(1, t(10), t(10), 1.0), t(11));
    }
}
