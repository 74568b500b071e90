//! Locality load balancing, as Istio sets Envoy up for it (`localityLbSetting`, on by default
//! mesh-wide): with outlier detection, endpoints are ranked into priority levels by how near
//! they are to this proxy (same subzone, zone, region, the `failover` region, elsewhere; or
//! by `failoverPriority` labels) and a level receives traffic only as far as the levels
//! before it are short of healthy endpoints; with `distribute`, localities get shares of the
//! traffic instead. Pure: a [`Plan`] is made once per upstream from the endpoints' localities
//! and labels; each request, the caller says which endpoints are healthy and gives a random
//! number, and gets back which endpoints the balancer may choose from.

use std::collections::BTreeMap;

use std::borrow::Cow;

use mizzen_proxy_config::{LocalityLb, TrafficDistribution};

pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Envoy's overprovisioning factor, in percent: a level keeps all of its traffic while 1/1.4
/// (about 72 %) of its endpoints are healthy, and sheds the rest to the next level below that.
const OVERPROVISIONING: u64 = 140;

/// Where a workload runs: Istio's `region/zone/subzone`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locality {
    pub region: String,
    pub zone: String,
    pub subzone: String,
}

impl Locality {
    /// `region/zone/subzone`; missing parts are empty.
    pub fn parse(s: &str) -> Self {
        let mut parts = s.splitn(3, '/');
        let mut next = || parts.next().unwrap_or_default().to_string();
        Locality {
            region: next(),
            zone: next(),
            subzone: next(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.region.is_empty() && self.zone.is_empty() && self.subzone.is_empty()
    }

    /// Whether this locality is in `pattern` (Istio's rule): `*` matches any part, and a
    /// pattern without a zone or subzone matches every one.
    pub fn matches(&self, pattern: &str) -> bool {
        let rule = Locality::parse(pattern);
        let part = |rule: &str, have: &str, open_when_empty: bool| {
            rule == "*" || rule == have || (open_when_empty && rule.is_empty())
        };
        part(&rule.region, &self.region, false)
            && part(&rule.zone, &self.zone, true)
            && part(&rule.subzone, &self.subzone, true)
    }

    /// Istio's rank of an endpoint here by how much of its locality it shares with this one:
    /// 0 the same subzone, 1 the same zone, 2 the same region, 3 another region.
    fn distance(&self, other: &Locality) -> u32 {
        match (
            self.region == other.region,
            self.zone == other.zone,
            self.subzone == other.subzone,
        ) {
            (true, true, true) => 0,
            (true, true, false) => 1,
            (true, false, _) => 2,
            (false, ..) => 3,
        }
    }

    /// A label Istio adds to every workload's from its locality (`topology.kubernetes.io/zone`
    /// and the like), for `failoverPriority`.
    fn label(&self, key: &str) -> Option<&str> {
        let v = match key {
            REGION_LABEL => &self.region,
            ZONE_LABEL => &self.zone,
            SUBZONE_LABEL => &self.subzone,
            _ => return None,
        };
        Some(v.as_str()).filter(|v| !v.is_empty())
    }
}

/// A workload as locality balancing sees it: where it runs (locality and node) and its labels.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    pub locality: &'a Locality,
    pub node: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
}

impl Site<'_> {
    /// A label, or one Istio adds from where the workload runs.
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str).or_else(|| {
            if key == HOSTNAME_LABEL {
                self.node
            } else {
                self.locality.label(key)
            }
        })
    }
}

/// Marks an endpoint no request may reach (`distribute` gives its locality no share).
const NONE: u16 = u16::MAX;

/// How an upstream's endpoints are split by locality: each endpoint's class (a priority
/// level, or a locality with a share), and how a request picks a class.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    class: Vec<u16>,
    kind: Kind,
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// Classes are priority levels, 0 the nearest.
    Priorities { levels: u16 },
    /// Classes are localities with these weights.
    Shares(Vec<u64>),
}

/// The locality setting of a destination and whether it ranks endpoints into priority levels,
/// as Istio resolves it: the DestinationRule's `localityLbSetting` (levels only with outlier
/// detection); else the Service's traffic distribution, which ranks by network, region and
/// zone (and subzone and node for `PreferSameNode`) whether or not outlier detection is on;
/// else the mesh default (on, levels with outlier detection).
pub fn setting(
    rule: Option<&LocalityLb>,
    distribution: Option<TrafficDistribution>,
    outlier_detection: bool,
) -> (Option<Cow<'_, LocalityLb>>, bool) {
    match (rule, distribution) {
        (Some(rule), _) => (Some(Cow::Borrowed(rule)), outlier_detection),
        (None, Some(d)) => {
            let mut labels = vec![NETWORK_LABEL, REGION_LABEL, ZONE_LABEL];
            if d == TrafficDistribution::PreferSameNode {
                labels.extend([SUBZONE_LABEL, HOSTNAME_LABEL]);
            }
            let lb = LocalityLb {
                failover_priority: labels.into_iter().map(str::to_string).collect(),
                ..Default::default()
            };
            (Some(Cow::Owned(lb)), true)
        }
        (None, None) => (None, outlier_detection),
    }
}

/// The plan for endpoints at `endpoints` seen from `here`, or `None` when locality makes no
/// difference (turned off, nothing to rank, or every endpoint ranked alike). As Istio:
/// `distribute` applies when an entry's `from` matches this proxy's locality; otherwise, when
/// `failover` (see [`setting`]: Envoy only moves traffic off endpoints it finds unhealthy, so
/// a DestinationRule's failover needs outlier detection), priority levels by `failoverPriority`
/// labels, then by locality (with the `failover` region second).
pub fn plan(
    setting: Option<&LocalityLb>,
    failover: bool,
    here: Site<'_>,
    endpoints: &[(Site<'_>, u32)],
) -> Option<Plan> {
    let default = LocalityLb::default();
    let setting = setting.unwrap_or(&default);
    if setting.disabled || endpoints.is_empty() {
        return None;
    }
    if !setting.distribute.is_empty() {
        return distribute(setting, here.locality, endpoints);
    }
    if !failover {
        return None;
    }
    let raw: Vec<u32> = endpoints
        .iter()
        .map(|(site, _)| {
            match label_rank(&setting.failover_priority, here, *site) {
                Some(rank) if setting.failover.is_empty() => rank,
                // Istio ranks by labels first and by locality within (5 locality ranks).
                Some(rank) => rank * 5 + locality_rank(setting, here.locality, site.locality),
                None => locality_rank(setting, here.locality, site.locality),
            }
        })
        .collect();
    let mut levels: Vec<u32> = raw.clone();
    levels.sort_unstable();
    levels.dedup();
    if levels.len() < 2 {
        return None;
    }
    let class = raw
        .iter()
        .map(|r| levels.binary_search(r).unwrap_or_default() as u16)
        .collect();
    Some(Plan {
        class,
        kind: Kind::Priorities {
            levels: levels.len() as u16,
        },
    })
}

/// Istio's locality rank (see [`Locality::distance`]), with endpoints outside the `failover`
/// region of this proxy's region put after those in it.
fn locality_rank(setting: &LocalityLb, here: &Locality, there: &Locality) -> u32 {
    let rank = here.distance(there);
    let elsewhere = rank == 3
        && setting
            .failover
            .iter()
            .find(|f| f.from == here.region)
            .is_some_and(|f| f.to != there.region);
    if elsewhere { 4 } else { rank }
}

/// `failoverPriority`: 0 when the endpoint has every label as this proxy does (or as the
/// `key=value` entry says), else the higher the earlier the first label that differs. `None`
/// when there are no such labels, or the proxy has no labels (Istio then skips the label
/// ranking).
fn label_rank(priorities: &[String], here: Site<'_>, there: Site<'_>) -> Option<u32> {
    // Istio's proxy labels include the topology labels of its locality.
    if priorities.is_empty() || (here.labels.is_empty() && here.locality.is_empty()) {
        return None;
    }
    let lowest = priorities.len() as u32;
    for (j, entry) in priorities.iter().enumerate() {
        let (key, wanted) = match entry.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (entry.as_str(), here.label(entry)),
        };
        if wanted.unwrap_or_default() != there.label(key).unwrap_or_default() {
            return Some(lowest - j as u32);
        }
    }
    Some(0)
}

/// `distribute`: the first entry whose `from` matches `here`; each `to` pattern's share goes to
/// the localities it matches (that no earlier pattern took), split by their endpoints' weights
/// and rounded up as Istio does; endpoints in no `to` locality get nothing.
fn distribute(
    setting: &LocalityLb,
    here: &Locality,
    endpoints: &[(Site<'_>, u32)],
) -> Option<Plan> {
    let rule = setting.distribute.iter().find(|d| here.matches(&d.from))?;
    let mut localities: Vec<&Locality> = endpoints.iter().map(|(s, _)| s.locality).collect();
    localities.sort();
    localities.dedup();
    let weight_of = |l: &Locality| -> u64 {
        endpoints
            .iter()
            .filter(|(s, _)| s.locality == l)
            .map(|(_, w)| u64::from(*w).max(1))
            .sum()
    };
    let mut share: Vec<Option<u64>> = vec![None; localities.len()];
    for (pattern, percent) in &rule.to {
        let taken: Vec<usize> = (0..localities.len())
            .filter(|&i| share[i].is_none() && localities[i].matches(pattern))
            .collect();
        let total: u64 = taken.iter().map(|&i| weight_of(localities[i])).sum();
        for i in taken {
            let w = weight_of(localities[i]) * u64::from(*percent);
            share[i] = Some(w.div_ceil(total.max(1)));
        }
    }
    let class = endpoints
        .iter()
        .map(|(s, _)| {
            let i = localities.binary_search(&s.locality).unwrap_or_default();
            if share[i].is_some_and(|w| w > 0) {
                i as u16
            } else {
                NONE
            }
        })
        .collect();
    Some(Plan {
        class,
        kind: Kind::Shares(share.into_iter().map(Option::unwrap_or_default).collect()),
    })
}

/// The endpoints one request may go to: those of one class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice(u16);

impl Plan {
    /// The class a request goes to, given which endpoints are healthy and a random number;
    /// `None` when no class has a healthy endpoint (the caller then balances over all of
    /// them, as Envoy does in panic). A class takes its traffic in proportion to its healthy
    /// share (times the overprovisioning factor, capped at the whole): a level passes what it
    /// cannot take to the next; a locality's share shrinks with its health. Priority levels
    /// in `tried` (a bit per level) count as unhealthy, unless that leaves none (a retry
    /// that goes elsewhere, Envoy's `previous_priorities`).
    pub fn choose(
        &self,
        healthy: impl Fn(usize) -> bool,
        random: u32,
        tried: u64,
    ) -> Option<Choice> {
        if tried != 0 && matches!(self.kind, Kind::Priorities { .. }) {
            let untried = |i: usize| {
                let level = self.class.get(i).copied().unwrap_or(NONE);
                level >= 64 || tried & (1 << level) == 0
            };
            if let Some(c) = self.choose_among(&|i| healthy(i) && untried(i), random) {
                return Some(c);
            }
        }
        self.choose_among(&healthy, random)
    }

    fn choose_among(&self, healthy: &dyn Fn(usize) -> bool, random: u32) -> Option<Choice> {
        let classes = match &self.kind {
            Kind::Priorities { levels } => usize::from(*levels),
            Kind::Shares(w) => w.len(),
        };
        // (healthy, total) endpoints per class.
        let mut count = vec![(0u64, 0u64); classes];
        for (i, &c) in self.class.iter().enumerate() {
            if let Some(n) = count.get_mut(usize::from(c)) {
                n.1 += 1;
                n.0 += u64::from(healthy(i));
            }
        }
        let health = |(up, all): (u64, u64)| (OVERPROVISIONING * up / all.max(1)).min(100);
        let load: Vec<u64> = match &self.kind {
            Kind::Priorities { .. } => {
                let health: Vec<u64> = count.iter().map(|c| health(*c)).collect();
                let total = health.iter().sum::<u64>().min(100);
                if total == 0 {
                    return None;
                }
                // Each level takes its health's part of what is left, scaled up so the
                // levels' parts add up to the whole when the healthy ones cannot cover it.
                let mut left = 100;
                let mut load: Vec<u64> = health
                    .iter()
                    .map(|h| {
                        let l = (h * 100 / total).min(left);
                        left -= l;
                        l
                    })
                    .collect();
                if let Some(first) = health.iter().position(|h| *h > 0) {
                    load[first] += left;
                }
                load
            }
            Kind::Shares(weights) => weights
                .iter()
                .zip(&count)
                .map(|(w, c)| w * health(*c))
                .collect(),
        };
        let total: u64 = load.iter().sum();
        if total == 0 {
            return None;
        }
        // Uniform over [0, total) for a uniform 32-bit `random`.
        let mut at = (u64::from(random) * total) >> 32;
        load.iter()
            .position(|l| {
                if at < *l {
                    return true;
                }
                at -= l;
                false
            })
            .map(|c| Choice(c as u16))
    }

    /// The priority level `choice` is, when the plan ranks endpoints into levels.
    pub fn level(&self, choice: Choice) -> Option<u16> {
        matches!(self.kind, Kind::Priorities { .. }).then_some(choice.0)
    }

    /// Whether endpoint `i` may take a request of `choice`: one in the chosen class, or,
    /// when there was none to choose, any that has a share at all.
    pub fn admits(&self, choice: Option<Choice>, i: usize) -> bool {
        match (choice, self.class.get(i)) {
            (Some(Choice(c)), Some(class)) => *class == c,
            (None, Some(class)) => *class != NONE,
            (_, None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mizzen_proxy_config::{LocalityDistribute, LocalityFailover};

    fn loc(s: &str) -> Locality {
        Locality::parse(s)
    }

    /// A workload at `locality` with `labels`, on no known node.
    fn at<'a>(locality: &'a Locality, labels: &'a BTreeMap<String, String>) -> Site<'a> {
        Site {
            locality,
            node: None,
            labels,
        }
    }

    fn plan_for(setting: &LocalityLb, here: &str, endpoints: &[&str]) -> Option<Plan> {
        let here = loc(here);
        let no_labels = BTreeMap::new();
        let locs: Vec<Locality> = endpoints.iter().map(|e| loc(e)).collect();
        let sites: Vec<(Site<'_>, u32)> = locs.iter().map(|l| (at(l, &no_labels), 1)).collect();
        plan(Some(setting), true, at(&here, &no_labels), &sites)
    }

    /// How 1,000 requests split over the classes, their random numbers evenly spread.
    fn split(plan: &Plan, healthy: impl Fn(usize) -> bool, classes: usize) -> Vec<u32> {
        let mut out = vec![0; classes];
        for k in 0..1000u64 {
            let r = (k << 32).div_ceil(1000) as u32;
            if let Some(Choice(c)) = plan.choose(&healthy, r, 0) {
                out[usize::from(c)] += 1;
            }
        }
        out
    }

    #[test]
    fn localities_parse_and_match_patterns_as_istio() {
        let l = loc("us-east1/us-east1-b/rack1");
        assert_eq!(
            (l.region.as_str(), l.zone.as_str(), l.subzone.as_str()),
            ("us-east1", "us-east1-b", "rack1")
        );
        assert_eq!(
            loc("eu"),
            Locality {
                region: "eu".into(),
                ..Default::default()
            }
        );
        for (pattern, expected) in [
            ("us-east1", true),
            ("us-east1/*", true),
            ("us-east1/us-east1-b", true),
            ("us-east1/us-east1-b/rack1", true),
            ("us-east1/us-east1-b/rack2", false),
            ("us-east1/us-east1-c/*", false),
            ("*", true),
            ("us-west1/*", false),
        ] {
            assert_eq!(l.matches(pattern), expected, "{pattern}");
        }
    }

    #[test]
    fn failover_ranks_subzone_zone_region_then_the_rest() {
        let p = plan_for(
            &LocalityLb::default(),
            "r1/z1/s1",
            &["r2/z9/s9", "r1/z2/s1", "r1/z1/s2", "r1/z1/s1"],
        )
        .unwrap();
        assert_eq!(p.class, [3, 2, 1, 0]);
        // All healthy: everything stays in the nearest level.
        assert_eq!(split(&p, |_| true, 4), [1000, 0, 0, 0]);
        // The nearest level's one endpoint ejected: the next level takes it all.
        assert_eq!(split(&p, |i| i != 3, 4), [0, 1000, 0, 0]);
    }

    #[test]
    fn a_level_sheds_traffic_only_below_its_overprovisioned_health() {
        // Ten endpoints here, ten in the next zone.
        let mut eps = vec!["r/z1/"; 10];
        eps.extend(vec!["r/z2/"; 10]);
        let p = plan_for(&LocalityLb::default(), "r/z1/", &eps).unwrap();
        // 8 of 10 healthy: 1.4 × 80 % ≥ 100 %, nothing moves.
        assert_eq!(split(&p, |i| i >= 2, 2), [1000, 0]);
        // 5 of 10 healthy: health 70, the next level takes the other 30 %.
        assert_eq!(split(&p, |i| i >= 5, 2), [700, 300]);
        // Both levels half healthy: 70 + 70 > 100, so the first keeps 70 %.
        assert_eq!(split(&p, |i| i % 2 == 0, 2), [700, 300]);
        // Nothing healthy anywhere: no choice, the caller balances over all.
        assert_eq!(p.choose(|_| false, 1, 0), None);
        // A retry away from the tried level 0 goes to level 1 while it has healthy endpoints,
        // and back to 0 when nothing else is left.
        assert_eq!(p.choose(|_| true, 1, 0b1), Some(Choice(1)));
        assert_eq!(p.level(Choice(1)), Some(1));
        assert_eq!(p.choose(|i| i < 10, 1, 0b1), Some(Choice(0)));
        // Only 1 of 10 healthy here and 1 of 10 there: health 14 each, scaled to the whole.
        assert_eq!(split(&p, |i| i == 0 || i == 10, 2), [500, 500]);
    }

    #[test]
    fn failover_puts_the_named_region_before_others() {
        let setting = LocalityLb {
            failover: vec![LocalityFailover {
                from: "us-east".into(),
                to: "eu-west".into(),
            }],
            ..Default::default()
        };
        let p = plan_for(
            &setting,
            "us-east/a/",
            &["ap-south/x/", "eu-west/y/", "us-east/a/"],
        )
        .unwrap();
        assert_eq!(p.class, [2, 1, 0]);
        // From another region the rule does not apply: both foreign regions rank alike.
        let p = plan_for(
            &setting,
            "us-west/a/",
            &["ap-south/x/", "eu-west/y/", "us-west/a/"],
        )
        .unwrap();
        assert_eq!(p.class, [1, 1, 0]);
    }

    #[test]
    fn without_outlier_detection_or_when_disabled_locality_changes_nothing() {
        let here = loc("r/z1/");
        let other = loc("r/z2/");
        let labels = BTreeMap::new();
        let site = |l| at(l, &labels);
        let eps = [(site(&here), 1), (site(&other), 1)];
        assert!(plan(None, true, site(&here), &eps).is_some());
        assert!(plan(None, false, site(&here), &eps).is_none());
        let off = LocalityLb {
            disabled: true,
            ..Default::default()
        };
        assert!(plan(Some(&off), true, site(&here), &eps).is_none());
        // All in one level: nothing to rank.
        assert!(plan(None, true, site(&here), &eps[..1]).is_none());
    }

    #[test]
    fn failover_priority_ranks_by_the_first_label_that_differs() {
        let here_loc = loc("r/z1/");
        let there_loc = loc("r/z2/");
        let mine: BTreeMap<String, String> = [("version".to_string(), "v1".to_string())].into();
        let v1 = mine.clone();
        let v2: BTreeMap<String, String> = [("version".to_string(), "v2".to_string())].into();
        let site = at;
        let eps = [
            (site(&here_loc, &v1), 1),  // version and zone match: 0
            (site(&there_loc, &v1), 1), // zone differs (2nd label): 1
            (site(&here_loc, &v2), 1),  // version differs (1st label): 2
        ];
        let setting = LocalityLb {
            failover_priority: vec!["version".into(), ZONE_LABEL.into()],
            ..Default::default()
        };
        let p = plan(Some(&setting), true, site(&here_loc, &mine), &eps).unwrap();
        assert_eq!(p.class, [0, 1, 2]);
        // A `key=value` entry compares with that value, not the proxy's.
        let setting = LocalityLb {
            failover_priority: vec!["version=v2".into()],
            ..Default::default()
        };
        let p = plan(Some(&setting), true, site(&here_loc, &mine), &eps).unwrap();
        assert_eq!(p.class, [1, 1, 0]);
        // With failover too, locality ranks within each label rank.
        let setting = LocalityLb {
            failover_priority: vec!["version".into()],
            failover: vec![LocalityFailover {
                from: "r".into(),
                to: "q".into(),
            }],
            ..Default::default()
        };
        let p = plan(Some(&setting), true, site(&here_loc, &mine), &eps).unwrap();
        assert_eq!(p.class, [0, 1, 2]);
    }

    #[test]
    fn a_services_traffic_distribution_ranks_by_zone_without_outlier_detection() {
        let (rule, failover) = setting(None, Some(TrafficDistribution::PreferSameZone), false);
        assert!(failover);
        let rule = rule.unwrap();
        let here = loc("r1/z1/s1");
        let labels = BTreeMap::new();
        let site = |l| at(l, &labels);
        let eps: Vec<Locality> = ["r1/z1/s2", "r1/z2/s1", "r2/z1/s1", "r1/z1/s1"]
            .iter()
            .map(|l| loc(l))
            .collect();
        let sites: Vec<(Site<'_>, u32)> = eps.iter().map(|l| (site(l), 1)).collect();
        // The zone is what counts: another subzone of it ranks with this one.
        let p = plan(Some(&rule), failover, site(&here), &sites).unwrap();
        assert_eq!(p.class, [0, 1, 2, 0]);
        let (rule, _) = setting(None, Some(TrafficDistribution::PreferSameNode), false);
        let p = plan(rule.as_deref(), true, site(&here), &sites).unwrap();
        assert_eq!(p.class, [1, 2, 3, 0]);
        // PreferSameNode: this node first, then the rest of the subzone.
        let on = |node| Site {
            node: Some(node),
            ..site(&here)
        };
        let sites = [(on("n2"), 1), (on("n1"), 1), (site(&eps[1]), 1)];
        let p = plan(rule.as_deref(), true, on("n1"), &sites).unwrap();
        assert_eq!(p.class, [1, 0, 2]);
        // A DestinationRule's setting wins, and needs outlier detection to rank.
        let off = LocalityLb {
            disabled: true,
            ..Default::default()
        };
        let (rule, failover) =
            setting(Some(&off), Some(TrafficDistribution::PreferSameZone), false);
        assert!(!failover && rule.unwrap().disabled);
        assert!(setting(None, None, true).1);
    }

    #[test]
    fn distribute_splits_by_share_and_drops_localities_without_one() {
        let setting = LocalityLb {
            distribute: vec![LocalityDistribute {
                from: "r/z1/*".into(),
                to: [("r/z1/*".to_string(), 80), ("r/z2/*".to_string(), 20)].into(),
            }],
            ..Default::default()
        };
        let p = plan_for(
            &setting,
            "r/z1/a",
            &["r/z1/a", "r/z2/b", "r/z3/c", "r/z2/b"],
        )
        .unwrap();
        assert!(!p.admits(None, 2) && p.admits(None, 1));
        // Localities sorted: r/z1/a = 0, r/z2/b = 1, r/z3/c = none.
        assert_eq!(p.class, [0, 1, NONE, 1]);
        assert_eq!(p.kind, Kind::Shares(vec![80, 20, 0]));
        assert_eq!(split(&p, |_| true, 3), [800, 200, 0]);
        // Half of z2's endpoints down: its share shrinks to 20 × 0.7.
        let s = split(&p, |i| i != 3, 3);
        assert_eq!(s[0] + s[1], 1000);
        assert!((147..=150).contains(&s[1]), "{s:?}"); // 14 / 94 of 1000
        // A proxy elsewhere is not subject to the rule (and without outlier detection, nothing
        // else applies).
        let here = loc("r/z9/");
        let labels = BTreeMap::new();
        let a = loc("r/z1/a");
        let site = |l| at(l, &labels);
        assert!(plan(Some(&setting), false, site(&here), &[(site(&a), 1)]).is_none());
    }

    #[test]
    fn a_pattern_matching_several_localities_splits_its_share_by_their_weights() {
        let setting = LocalityLb {
            distribute: vec![LocalityDistribute {
                from: "*".into(),
                to: [("r/*".to_string(), 100)].into(),
            }],
            ..Default::default()
        };
        let (a, b) = (loc("r/a/"), loc("r/b/"));
        let labels = BTreeMap::new();
        let site = |l| at(l, &labels);
        // Locality a has weight 3 (three endpoints), b weight 1: 75 and 25.
        let eps = [(site(&a), 1), (site(&a), 1), (site(&a), 1), (site(&b), 1)];
        let p = plan(Some(&setting), false, site(&a), &eps).unwrap();
        assert_eq!(p.kind, Kind::Shares(vec![75, 25]));
    }
}
