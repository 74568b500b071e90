//! Turning metric values into the pass/fail of a check round, and computing the two built-in
//! metrics straight from the proxies' Istio-named series, so a cluster without Prometheus still
//! gets canaries.
//!
//! The built-in metrics are read from two scrapes of one canary pod, taken one analysis interval
//! apart: the counters' increase between them is what the canary served in the window.
//! `request-success-rate` is the percentage of `istio_requests_total` that did not answer 5xx;
//! `request-duration` is the 99th percentile of `istio_request_duration_milliseconds`, estimated
//! from the histogram buckets by linear interpolation within the bucket, as Prometheus'
//! `histogram_quantile` does. Only series reported by the server side (`reporter="destination"`)
//! count, so a canary pod's own outbound calls do not.

use std::collections::{BTreeMap, HashMap};

use mizzen_crds::rollouts::canary::{BuiltinMetric, CanaryMetric, MetricResult};

use super::promtext::Sample;

/// The request counter, labelled with `response_code`.
pub const REQUESTS_TOTAL: &str = "istio_requests_total";
/// The request duration histogram's buckets, labelled with `le` (milliseconds).
pub const DURATION_BUCKET: &str = "istio_request_duration_milliseconds_bucket";
/// The quantile `request-duration` reports.
pub const DURATION_QUANTILE: f64 = 0.99;

/// The result of one check: its value (or `None` for no data) and whether it passed. No data
/// fails: a canary that serves nothing has proven nothing.
pub fn check(metric: &CanaryMetric, value: Option<f64>) -> MetricResult {
    let value = value.filter(|v| !v.is_nan());
    MetricResult {
        name: metric.name.clone(),
        value,
        passed: match (value, &metric.threshold_range) {
            (Some(v), Some(range)) => range.contains(v),
            (Some(_), None) => true,
            (None, _) => false,
        },
    }
}

/// Every check of the spec against the values observed by name; a metric with no entry has no
/// data.
pub fn check_all(
    metrics: &[CanaryMetric],
    values: &BTreeMap<String, Option<f64>>,
) -> Vec<MetricResult> {
    metrics
        .iter()
        .map(|m| check(m, values.get(&m.name).copied().flatten()))
        .collect()
}

/// One line per failed check, for the status message and the Event.
pub fn describe_failure(metric: &CanaryMetric, result: &MetricResult) -> String {
    let range = metric.threshold_range.unwrap_or_default();
    match result.value {
        None => format!("{}: no data", result.name),
        Some(v) => match (range.min, range.max) {
            (Some(min), _) if v < min => format!("{}: {v} is below the minimum {min}", result.name),
            (_, Some(max)) if v > max => format!("{}: {v} is above the maximum {max}", result.name),
            _ => format!("{}: {v} is out of range", result.name),
        },
    }
}

/// What the canary served between two scrapes: request and error counts and the duration
/// histogram's bucket increases. Windows of several pods add up with [`IstioWindow::merge`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IstioWindow {
    pub requests: f64,
    /// Requests answered with a 5xx code.
    pub server_errors: f64,
    /// Cumulative bucket counts by upper bound in milliseconds (`+Inf` last), ascending.
    pub buckets: Vec<(f64, f64)>,
}

impl IstioWindow {
    /// The increase of the canary's series from `before` to `after` (two scrapes of one pod).
    ///
    /// A series counts when it has `reporter="destination"` and every label of `selector`
    /// (e.g. `destination_workload`/`destination_version` of the canary subset). A counter that
    /// went down was reset (the proxy restarted), so its increase is its new value; a series
    /// absent from `before` is new and counts from zero.
    pub fn between(before: &[Sample], after: &[Sample], selector: &[(&str, &str)]) -> Self {
        let selected = |s: &&Sample| {
            s.label("reporter") == Some("destination")
                && selector.iter().all(|(k, v)| s.label(k) == Some(*v))
        };
        let previous: HashMap<SeriesKey, f64> = before
            .iter()
            .filter(selected)
            .map(|s| (SeriesKey::of(s), s.value))
            .collect();
        let increase = |s: &Sample| {
            let was = previous.get(&SeriesKey::of(s)).copied().unwrap_or(0.0);
            if s.value >= was {
                s.value - was
            } else {
                s.value
            }
        };

        let mut window = IstioWindow::default();
        let mut by_bound: BTreeMap<OrderedBound, f64> = BTreeMap::new();
        for s in after
            .iter()
            .filter(selected)
            .filter(|s| s.value.is_finite())
        {
            match s.name.as_str() {
                REQUESTS_TOTAL => {
                    let delta = increase(s);
                    window.requests += delta;
                    if s.label("response_code").is_some_and(is_server_error) {
                        window.server_errors += delta;
                    }
                }
                DURATION_BUCKET => {
                    let Some(le) = s.label("le").and_then(parse_bound) else {
                        continue;
                    };
                    *by_bound.entry(OrderedBound(le)).or_default() += increase(s);
                }
                _ => {}
            }
        }
        window.buckets = by_bound.into_iter().map(|(b, c)| (b.0, c)).collect();
        window
    }

    /// Adds another pod's window to this one.
    pub fn merge(&mut self, other: &IstioWindow) {
        self.requests += other.requests;
        self.server_errors += other.server_errors;
        let mut by_bound: BTreeMap<OrderedBound, f64> = self
            .buckets
            .iter()
            .map(|&(b, c)| (OrderedBound(b), c))
            .collect();
        for &(b, c) in &other.buckets {
            *by_bound.entry(OrderedBound(b)).or_default() += c;
        }
        self.buckets = by_bound.into_iter().map(|(b, c)| (b.0, c)).collect();
    }

    /// Percentage of requests that did not answer 5xx; `None` when there were none.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0.0).then(|| {
            100.0 * (self.requests - self.server_errors.min(self.requests)) / self.requests
        })
    }

    /// The `q` quantile (0 to 1) of the request duration in milliseconds; `None` when no request
    /// was observed or the histogram has no `+Inf` bucket.
    pub fn duration_quantile(&self, q: f64) -> Option<f64> {
        histogram_quantile(q, &self.buckets)
    }

    /// The value of a built-in metric over this window.
    pub fn value(&self, metric: BuiltinMetric) -> Option<f64> {
        match metric {
            BuiltinMetric::RequestSuccessRate => self.success_rate(),
            BuiltinMetric::RequestDuration => self.duration_quantile(DURATION_QUANTILE),
        }
    }
}

/// The quantile `q` of a histogram given as cumulative counts by ascending upper bound, the last
/// one `+Inf`: find the bucket that holds the rank `q * total` and interpolate linearly between
/// its bounds (the first bucket starts at 0). A rank in the `+Inf` bucket answers the highest
/// finite bound, since nothing more is known. Counts that go down (scrapes racing the writer)
/// are raised to keep the series monotonic.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) {
        return None;
    }
    let &(last_bound, total) = buckets.last()?;
    if last_bound != f64::INFINITY || total <= 0.0 {
        return None;
    }
    let mut cumulative = Vec::with_capacity(buckets.len());
    let mut running = 0.0f64;
    for &(bound, count) in buckets {
        running = running.max(count);
        cumulative.push((bound, running));
    }
    let total = running;
    let rank = q * total;
    let i = cumulative.iter().position(|&(_, c)| c >= rank)?;
    let (upper, count) = cumulative[i];
    if upper == f64::INFINITY {
        return Some(if i == 0 { 0.0 } else { cumulative[i - 1].0 });
    }
    let (lower, below) = if i == 0 {
        (0.0f64.min(upper), 0.0)
    } else {
        cumulative[i - 1]
    };
    let in_bucket = count - below;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * (rank - below) / in_bucket)
}

fn is_server_error(code: &str) -> bool {
    code.len() == 3 && code.starts_with('5')
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => le.parse().ok().filter(|b: &f64| b.is_finite()),
    }
}

/// A series' identity: its name and labels, order-independent.
#[derive(PartialEq, Eq, Hash)]
struct SeriesKey(String, Vec<(String, String)>);

impl SeriesKey {
    fn of(s: &Sample) -> Self {
        let mut labels = s.labels.clone();
        labels.sort();
        SeriesKey(s.name.clone(), labels)
    }
}

/// A bucket bound as a map key (bounds are finite or `+Inf`, never NaN).
#[derive(Clone, Copy)]
struct OrderedBound(f64);

impl PartialEq for OrderedBound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_within_the_bucket() {
        // 100 requests: 50 up to 10 ms, 40 in (10, 100], 10 in (100, 1000].
        let b = [
            (10.0, 50.0),
            (100.0, 90.0),
            (1000.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        // rank 99 is the 9th of 10 in (100, 1000]: 100 + 900 * 9/10.
        assert_eq!(histogram_quantile(0.99, &b), Some(910.0));
        // rank 50 is the last of the first bucket, which starts at 0.
        assert_eq!(histogram_quantile(0.5, &b), Some(10.0));
        assert_eq!(histogram_quantile(0.25, &b), Some(5.0));
        assert_eq!(histogram_quantile(0.7, &b), Some(55.0));
    }

    #[test]
    fn quantile_edges() {
        let inf_only = [(10.0, 0.0), (f64::INFINITY, 4.0)];
        assert_eq!(histogram_quantile(0.99, &inf_only), Some(10.0));
        assert_eq!(
            histogram_quantile(0.99, &[(10.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(
            histogram_quantile(0.99, &[(10.0, 3.0)]),
            None,
            "no +Inf bucket"
        );
        assert_eq!(histogram_quantile(1.5, &inf_only), None);
        assert_eq!(histogram_quantile(0.5, &[]), None);
        // a count that goes down is raised to the one before it
        let racy = [(10.0, 10.0), (100.0, 8.0), (f64::INFINITY, 10.0)];
        assert_eq!(histogram_quantile(0.9, &racy), Some(9.0));
    }

    #[test]
    fn checks_pass_in_range_and_fail_without_data() {
        let m: CanaryMetric = serde_json::from_value(serde_json::json!({
            "name": "request-success-rate", "thresholdRange": {"min": 99.0}
        }))
        .unwrap();
        assert!(check(&m, Some(99.0)).passed);
        assert!(!check(&m, Some(98.9)).passed);
        let none = check(&m, None);
        assert!(!none.passed);
        assert_eq!(describe_failure(&m, &none), "request-success-rate: no data");
        let nan = check(&m, Some(f64::NAN));
        assert_eq!((nan.value, nan.passed), (None, false));
        assert_eq!(
            describe_failure(&m, &check(&m, Some(80.0))),
            "request-success-rate: 80 is below the minimum 99"
        );
    }
}
