//! Slow start (`loadBalancer.warmup`, Envoy's `slow_start_config`): an endpoint the proxy has
//! just seen gets a share of new requests that grows over the window instead of a full one at
//! once. Its weight is scaled by `max(minimum, t^(1 / aggression))`, `t` being the time since
//! it joined (at least one second, as Envoy counts) over the window; past the window it has
//! its full weight. Endpoints that joined together ramp together: at the proxy's start (or an
//! upstream's first use) every endpoint is new, and they share evenly, as in Envoy.
//!
//! Pure: the caller passes each endpoint's age.

use std::time::Duration;

use mizzen_proxy_config::Warmup;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ramp {
    window: Duration,
    /// The least factor, 0..=1.
    minimum: f64,
    /// `1 / aggression`.
    exponent: f64,
}

impl Ramp {
    /// `None` when the window is empty: nothing ramps.
    pub fn new(w: &Warmup) -> Option<Self> {
        let window = Duration::from_millis(w.duration_ms);
        let aggression = if w.aggression.is_finite() && w.aggression > 0.0 {
            w.aggression
        } else {
            1.0
        };
        (!window.is_zero()).then(|| Self {
            window,
            minimum: (w.minimum_percent / 100.0).clamp(0.0, 1.0),
            exponent: 1.0 / aggression,
        })
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// What an endpoint `age` after it joined has of its weight: below 1 within the window.
    pub fn factor(&self, age: Duration) -> f64 {
        if age >= self.window {
            return 1.0;
        }
        let t = age.max(Duration::from_secs(1)).as_secs_f64() / self.window.as_secs_f64();
        t.min(1.0).powf(self.exponent).max(self.minimum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(secs: u64, minimum_percent: f64, aggression: f64) -> Ramp {
        Ramp::new(&Warmup {
            duration_ms: secs * 1000,
            minimum_percent,
            aggression,
        })
        .unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn linear_by_default_from_the_first_second_with_a_floor() {
        let r = ramp(10, 10.0, 1.0);
        assert!(close(r.factor(Duration::ZERO), 0.1), "1 s of 10");
        assert!(close(r.factor(Duration::from_millis(500)), 0.1));
        assert!(close(r.factor(Duration::from_secs(5)), 0.5));
        assert!(close(r.factor(Duration::from_millis(9_990)), 0.999));
        assert!(close(r.factor(Duration::from_secs(10)), 1.0));
        assert!(close(r.factor(Duration::from_secs(3600)), 1.0));
        // The floor holds early in a long window.
        let long = ramp(100, 10.0, 1.0);
        assert!(close(long.factor(Duration::from_secs(5)), 0.1));
        assert!(close(long.factor(Duration::from_secs(20)), 0.2));
    }

    #[test]
    fn aggression_bends_the_ramp() {
        let slow = ramp(10, 0.0, 2.0);
        assert!(close(slow.factor(Duration::from_secs(4)), 0.4f64.sqrt()));
        let fast = ramp(10, 0.0, 0.5);
        assert!(close(fast.factor(Duration::from_secs(4)), 0.16));
    }

    #[test]
    fn an_empty_window_or_bad_aggression_does_not_break() {
        assert!(
            Ramp::new(&Warmup {
                duration_ms: 0,
                minimum_percent: 10.0,
                aggression: 1.0
            })
            .is_none()
        );
        let r = ramp(10, 10.0, 0.0);
        assert!(close(r.factor(Duration::from_secs(5)), 0.5), "read as 1");
    }
}
