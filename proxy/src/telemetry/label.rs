//! Metric label values that cost nothing per request: fixed text or strings shared with the
//! config, the workload and the endpoints, computed once where they change rather than copied
//! into every request's label set.

use std::{collections::BTreeMap, fmt, hash, sync::Arc};

use mizzen_resilience::ResponseFlags;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

use super::metrics::LabelParts;
use crate::env::Workload;

const UNKNOWN: &str = "unknown";

/// One label value, compared and hashed by its text.
#[derive(Clone)]
pub enum Label {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Label {
    pub const UNKNOWN: Label = Label::Static(UNKNOWN);
    pub const EMPTY: Label = Label::Static("");

    pub fn as_str(&self) -> &str {
        match self {
            Label::Static(s) => s,
            Label::Shared(s) => s,
        }
    }

    /// `s`, or Istio's `unknown` when it is empty.
    pub fn or_unknown(s: &str) -> Label {
        if s.is_empty() {
            Label::UNKNOWN
        } else {
            Label::from(s)
        }
    }
}

impl Default for Label {
    fn default() -> Self {
        Label::EMPTY
    }
}

impl From<&str> for Label {
    fn from(s: &str) -> Self {
        Label::Shared(Arc::from(s))
    }
}

impl From<String> for Label {
    fn from(s: String) -> Self {
        Label::Shared(Arc::from(s))
    }
}

impl PartialEq for Label {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.as_str(), other.as_str());
        // A request's labels and those of its cached series mostly share their text (the same
        // `Arc` or static): the same address and length is equal without reading the bytes.
        std::ptr::eq(a, b) || a == b
    }
}

impl Eq for Label {}

impl hash::Hash for Label {
    fn hash<H: hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Label {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The `response_flags` label: Envoy's flags as Envoy prints them (`-` when none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub ResponseFlags);

impl EncodeLabelValue for Flags {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        fmt::Write::write_fmt(encoder, format_args!("{}", self.0))
    }
}

/// The five labels Istio gives each end of a request (`source_*` or `destination_*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerLabels {
    pub workload: Label,
    pub namespace: Label,
    pub principal: Label,
    pub app: Label,
    pub version: Label,
    /// For this proxy's own workload: `/ns/<namespace>/sa/<service-account>`, the path of the
    /// identity it serves, which becomes its principal once a connection is mTLS. Empty for
    /// other peers.
    pub served_identity: Label,
}

impl Default for PeerLabels {
    fn default() -> Self {
        Self {
            workload: Label::UNKNOWN,
            namespace: Label::UNKNOWN,
            principal: Label::UNKNOWN,
            app: Label::UNKNOWN,
            version: Label::UNKNOWN,
            served_identity: Label::EMPTY,
        }
    }
}

impl PeerLabels {
    /// This proxy's own workload. The principal is known to peers only through mTLS.
    pub fn of_workload(w: &Workload) -> Self {
        Self {
            workload: Label::or_unknown(&w.name),
            namespace: Label::or_unknown(&w.namespace),
            principal: Label::UNKNOWN,
            app: Label::or_unknown(&w.app),
            version: Label::or_unknown(&w.version),
            served_identity: Label::from(format!(
                "/ns/{}/sa/{}",
                w.namespace,
                if w.service_account.is_empty() {
                    "default"
                } else {
                    &w.service_account
                }
            )),
        }
    }

    /// An upstream endpoint, as the calling side sees it: from the endpoint's labels
    /// (`workload`, else `app`, for the workload name) in the service's namespace.
    pub fn of_endpoint(labels: &BTreeMap<String, String>, namespace: &Label) -> Self {
        let label = |k: &str| labels.get(k).map(|v| Label::or_unknown(v));
        Self {
            workload: label("workload")
                .or_else(|| label("app"))
                .unwrap_or(Label::UNKNOWN),
            namespace: namespace.clone(),
            principal: Label::UNKNOWN,
            app: label("app").unwrap_or(Label::UNKNOWN),
            version: label("version").unwrap_or(Label::UNKNOWN),
            served_identity: Label::EMPTY,
        }
    }
}

/// What a meshed peer gives the requests of its mTLS connection on the inbound side: the source
/// is known by its SPIFFE identity (its namespace is the id's), and the destination — this
/// workload — by the identity it served, in the peer's trust domain (one mesh: the server
/// accepts only chains to its own roots). That is the workload's own id, the only one the node
/// agent signs for it; with certificate files, they must be the workload's.
///
/// Made once per connection: labels made per request would be new text at new addresses each
/// time, and the series cache, keyed by address, would miss on every request.
#[derive(Clone, Debug)]
pub struct MtlsPeer {
    principal: Label,
    namespace: Option<Label>,
    served_principal: Option<Label>,
}

impl MtlsPeer {
    /// `served_identity`: this workload's (see [`PeerLabels::served_identity`]).
    pub fn new(spiffe_uri: &str, served_identity: &Label) -> Self {
        let served = served_identity.as_str();
        let served_principal = spiffe_uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .filter(|_| !served.is_empty())
            .map(|td| Label::from(format!("spiffe://{td}{served}")));
        let namespace = spiffe_uri
            .split("/ns/")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .map(Label::from);
        Self {
            principal: Label::from(spiffe_uri),
            namespace,
            served_principal,
        }
    }
}

impl LabelParts {
    /// A request from a meshed peer: the security policy is `mutual_tls`, and the peer's labels.
    pub fn mtls_source(&mut self, peer: &MtlsPeer) {
        self.security_policy = Label::Static("mutual_tls");
        if let Some(p) = &peer.served_principal {
            self.destination.principal = p.clone();
        }
        self.source.principal = peer.principal.clone();
        if let Some(ns) = &peer.namespace {
            self.source.namespace = ns.clone();
        }
    }
}

/// The `destination_service*` labels of a service host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceLabels {
    pub service: Label,
    pub name: Label,
    pub namespace: Label,
}

impl Default for ServiceLabels {
    fn default() -> Self {
        Self {
            service: Label::UNKNOWN,
            name: Label::UNKNOWN,
            namespace: Label::UNKNOWN,
        }
    }
}

impl ServiceLabels {
    pub fn of(host: &str, namespace: &str) -> Self {
        if host.is_empty() {
            return Self::default();
        }
        Self {
            service: Label::from(host),
            name: Label::from(service_name(host)),
            namespace: Label::or_unknown(namespace),
        }
    }
}

type HostMap = std::collections::HashMap<Box<str>, ServiceLabels, foldhash::fast::RandomState>;

/// The destination-service labels an inbound proxy reports per request host, made once per
/// host and config version rather than per request (three strings each). Few hosts call a
/// workload; past [`HostLabels::MAX`] hosts the labels are made per request, uncached.
#[derive(Default)]
pub struct HostLabels {
    cached: std::sync::Mutex<(u64, HostMap)>,
}

impl HostLabels {
    pub const MAX: usize = 256;

    /// The labels of `authority` under config `version`, made by `make` when not cached.
    pub fn get(
        &self,
        version: u64,
        authority: &str,
        make: impl FnOnce() -> ServiceLabels,
    ) -> ServiceLabels {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let (at, map) = &mut *cached;
        if *at != version {
            *at = version;
            map.clear();
        }
        if let Some(labels) = map.get(authority) {
            return labels.clone();
        }
        let labels = make();
        if map.len() < Self::MAX {
            map.insert(authority.into(), labels.clone());
        }
        labels
    }
}

/// `reviews` of `reviews.default.svc.cluster.local`; other hosts as they are.
pub fn service_name(host: &str) -> &str {
    match host.split_once(".svc.") {
        Some((prefix, _)) => prefix.split('.').next().unwrap_or(host),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_made_once_per_host_and_config_version() {
        let cache = HostLabels::default();
        let made = std::cell::Cell::new(0);
        let make = || {
            made.set(made.get() + 1);
            ServiceLabels::of("reviews.shop.svc.cluster.local", "shop")
        };
        let a = cache.get(1, "reviews:9080", make);
        let b = cache.get(1, "reviews:9080", make);
        assert_eq!((a.name.as_str(), b.name.as_str()), ("reviews", "reviews"));
        assert_eq!(made.get(), 1);
        cache.get(2, "reviews:9080", make);
        assert_eq!(made.get(), 2, "a new config version makes them again");
        for i in 0..HostLabels::MAX + 10 {
            cache.get(2, &format!("h{i}"), make);
        }
        let before = made.get();
        cache.get(2, &format!("h{}", HostLabels::MAX + 5), make);
        assert_eq!(made.get(), before + 1, "hosts past the bound are not kept");
    }

    #[test]
    fn labels_compare_by_text_whatever_their_storage() {
        assert_eq!(Label::Static("a"), Label::from("a"));
        assert_eq!(Label::or_unknown(""), Label::UNKNOWN);
        use std::hash::{BuildHasher, RandomState};
        let s = RandomState::new();
        assert_eq!(
            s.hash_one(Label::Static("x")),
            s.hash_one(Label::from(String::from("x")))
        );
    }

    #[test]
    fn endpoint_labels_name_the_workload_by_workload_then_app() {
        let ns = Label::from("shop");
        let l = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let p = PeerLabels::of_endpoint(&l(&[("app", "reviews"), ("version", "v2")]), &ns);
        assert_eq!(p.workload.as_str(), "reviews");
        assert_eq!(p.version.as_str(), "v2");
        assert_eq!(p.namespace.as_str(), "shop");
        let p = PeerLabels::of_endpoint(&l(&[("workload", "reviews-v2")]), &ns);
        assert_eq!(p.workload.as_str(), "reviews-v2");
        assert_eq!(p.app, Label::UNKNOWN);
    }

    #[test]
    fn inbound_mtls_names_both_principals() {
        let workload = Workload {
            namespace: "shop".into(),
            service_account: "reviews".into(),
            ..Default::default()
        };
        let mut parts = LabelParts {
            destination: PeerLabels::of_workload(&workload),
            ..Default::default()
        };
        assert_eq!(parts.destination.principal, Label::UNKNOWN);
        parts.mtls_source(&MtlsPeer::new(
            "spiffe://corp.example/ns/web/sa/frontend",
            &parts.destination.served_identity,
        ));
        assert_eq!(
            parts.source.principal.as_str(),
            "spiffe://corp.example/ns/web/sa/frontend"
        );
        assert_eq!(parts.source.namespace.as_str(), "web");
        assert_eq!(
            parts.destination.principal.as_str(),
            "spiffe://corp.example/ns/shop/sa/reviews"
        );
        // A pod that names no account serves `default`; a remote peer's labels serve nothing.
        let mut parts = LabelParts {
            destination: PeerLabels::of_workload(&Workload {
                namespace: "shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        parts.mtls_source(&MtlsPeer::new(
            "spiffe://cluster.local/ns/web/sa/frontend",
            &parts.destination.served_identity,
        ));
        assert_eq!(
            parts.destination.principal.as_str(),
            "spiffe://cluster.local/ns/shop/sa/default"
        );
        let mut parts = LabelParts::default();
        parts.mtls_source(&MtlsPeer::new(
            "spiffe://cluster.local/ns/web/sa/frontend",
            &parts.destination.served_identity,
        ));
        assert_eq!(parts.destination.principal, Label::UNKNOWN);
    }

    #[test]
    fn service_labels_use_the_short_name_of_cluster_hosts() {
        let s = ServiceLabels::of("reviews.default.svc.cluster.local", "default");
        assert_eq!(s.name.as_str(), "reviews");
        let s = ServiceLabels::of("api.example.com", "");
        assert_eq!(s.name.as_str(), "api.example.com");
        assert_eq!(s.namespace, Label::UNKNOWN);
    }
}
