//! Lookup tables built once per render from the valid objects of the index: services by host,
//! DestinationRules by namespace, VirtualServices by host, the default Sidecar of each namespace.
//! Istio's visibility rules (`exportTo`, Sidecar egress hosts) live here.

use std::collections::{BTreeMap, BTreeSet};

use mizzen_crds::{
    inventory::{fqdn, host_matches},
    networking::{
        destination_rule::{DestinationRuleSpec, Subset},
        service_entry::{Location, Resolution, ServiceEntrySpec},
        sidecar::{OutboundTrafficMode, SidecarSpec},
        virtual_service::VirtualServiceSpec,
        workload_entry::WorkloadEntrySpec,
    },
    resource::MeshResource,
};
use mizzen_proxy_config as pc;

use super::{RenderSettings, policy, routes};
use crate::index::{Index, ServiceRecord, Stored};

/// Istio's `exportTo`: empty or `*` is everywhere, `.` the owner's namespace, `~` nowhere,
/// otherwise the listed namespaces.
pub fn exported(export_to: &[String], owner: &str, client: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == client || (e == "." && owner == client))
}

/// Where a host comes from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    Kube(&'a ServiceRecord),
    Entry(&'a Stored, &'a ServiceEntrySpec),
}

impl Source<'_> {
    pub fn namespace(&self) -> &str {
        match self {
            Self::Kube(s) => &s.namespace,
            Self::Entry(s, _) => s.namespace(),
        }
    }

    fn visible_to(&self, client: &str) -> bool {
        match self {
            Self::Kube(s) => exported(&s.export_to, &s.namespace, client),
            Self::Entry(s, se) => exported(&se.export_to, s.namespace(), client),
        }
    }
}

struct DrEntry<'a> {
    host: String,
    /// `namespace/name`.
    name: String,
    spec: &'a DestinationRuleSpec,
}

pub struct VsEntry<'a> {
    pub stored: &'a Stored,
    pub spec: &'a VirtualServiceSpec,
    /// Hosts resolved against the VirtualService's namespace.
    pub hosts: Vec<String>,
}

/// A DestinationRule for a host as one client namespace sees it (several DRs for the same host
/// in one namespace are merged: subsets joined, the oldest policy wins).
#[derive(Default)]
pub struct FoundRule {
    pub policy: Option<pc::TrafficPolicy>,
    pub subsets: Vec<Subset>,
}

impl FoundRule {
    /// The subsets as the proxy gets them, each policy merged over the rule's.
    pub fn config_subsets(&self) -> Vec<pc::Subset> {
        self.subsets
            .iter()
            .map(|s| pc::Subset {
                name: s.name.clone(),
                labels: s.labels.clone(),
                policy: s
                    .traffic_policy
                    .as_ref()
                    .map(|p| policy::merge(self.policy.as_ref(), &policy::traffic_policy(p))),
            })
            .collect()
    }
}

pub struct Catalog<'a> {
    pub settings: &'a RenderSettings,
    /// Candidates per host: the Kubernetes Service first, then ServiceEntries, oldest first.
    pub hosts: BTreeMap<String, Vec<Source<'a>>>,
    drs: BTreeMap<String, Vec<DrEntry<'a>>>,
    vs_exact: BTreeMap<String, Vec<usize>>,
    vs_wild: Vec<usize>,
    pub vss: Vec<VsEntry<'a>>,
    /// VirtualServices bound to at least one Gateway (see [`routes::bound_gateways`]), oldest
    /// first: what the gateway renderer reads. A VirtualService bound to `mesh` as well is in
    /// `vss` too.
    pub bound: Vec<VsEntry<'a>>,
    delegates: BTreeMap<(String, String), &'a VirtualServiceSpec>,
    sidecars: BTreeMap<String, &'a SidecarSpec>,
    /// Sidecars with a `workloadSelector`, per namespace, oldest first.
    selected_sidecars: BTreeMap<String, Vec<(&'a Stored, &'a SidecarSpec)>>,
    workload_entries: Vec<(&'a Stored, &'a WorkloadEntrySpec)>,
}

impl<'a> Catalog<'a> {
    /// Tables over the objects of `index` that `valid` accepts.
    pub fn new(
        index: &'a Index,
        settings: &'a RenderSettings,
        valid: impl Fn(&Stored) -> bool,
    ) -> Self {
        let mut c = Catalog {
            settings,
            hosts: BTreeMap::new(),
            drs: BTreeMap::new(),
            vs_exact: BTreeMap::new(),
            vs_wild: Vec::new(),
            vss: Vec::new(),
            bound: Vec::new(),
            delegates: BTreeMap::new(),
            sidecars: BTreeMap::new(),
            selected_sidecars: BTreeMap::new(),
            workload_entries: Vec::new(),
        };
        for svc in index.services() {
            c.hosts
                .entry(svc.host())
                .or_default()
                .push(Source::Kube(svc));
        }
        let mut stored: Vec<&Stored> = index.resources().filter(|s| valid(s)).collect();
        stored.sort_by(|a, b| a.order.cmp(&b.order));
        for s in stored {
            let ns = s.namespace();
            match &s.resource {
                MeshResource::ServiceEntry(se) => {
                    for h in &se.spec.hosts {
                        c.hosts
                            .entry(fqdn(h, ns))
                            .or_default()
                            .push(Source::Entry(s, &se.spec));
                    }
                }
                MeshResource::DestinationRule(dr) => {
                    c.drs.entry(ns.to_string()).or_default().push(DrEntry {
                        host: fqdn(&dr.spec.host, ns),
                        name: format!("{ns}/{}", s.object.name),
                        spec: &dr.spec,
                    });
                }
                MeshResource::VirtualService(vs) => {
                    if vs.spec.hosts.is_empty() {
                        c.delegates
                            .insert((ns.to_string(), s.object.name.clone()), &vs.spec);
                        continue;
                    }
                    let hosts: Vec<String> = vs.spec.hosts.iter().map(|h| fqdn(h, ns)).collect();
                    if !routes::bound_gateways(&vs.spec, ns).is_empty() {
                        c.bound.push(VsEntry {
                            stored: s,
                            spec: &vs.spec,
                            hosts: hosts.clone(),
                        });
                    }
                    if !routes::applies_to_mesh(&vs.spec.gateways) {
                        // Routes bound to gateways only are for the gateway renderer.
                        continue;
                    }
                    let i = c.vss.len();
                    for h in &hosts {
                        if h.contains('*') {
                            if !c.vs_wild.contains(&i) {
                                c.vs_wild.push(i);
                            }
                        } else {
                            let e = c.vs_exact.entry(h.clone()).or_default();
                            if !e.contains(&i) {
                                e.push(i);
                            }
                        }
                    }
                    c.vss.push(VsEntry {
                        stored: s,
                        spec: &vs.spec,
                        hosts,
                    });
                }
                MeshResource::Sidecar(sc) if sc.spec.workload_selector.is_none() => {
                    c.sidecars.entry(ns.to_string()).or_insert(&sc.spec);
                }
                MeshResource::Sidecar(sc) => c
                    .selected_sidecars
                    .entry(ns.to_string())
                    .or_default()
                    .push((s, &sc.spec)),
                MeshResource::WorkloadEntry(we) => c.workload_entries.push((s, &we.spec)),
                _ => {}
            }
        }
        c
    }

    /// The Sidecar that scopes `client`: its own namespace-wide one, else the root namespace's.
    fn sidecar(&self, client: &str) -> Option<(&'a SidecarSpec, bool)> {
        self.sidecars.get(client).map(|s| (*s, false)).or_else(|| {
            self.sidecars
                .get(&self.settings.root_namespace)
                .map(|s| (*s, true))
        })
    }

    /// The Sidecars with a `workloadSelector` among `client`'s, oldest first.
    fn selected(&self, client: &str) -> &[(&'a Stored, &'a SidecarSpec)] {
        self.selected_sidecars
            .get(client)
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `sidecar`'s egress hosts (none: everything) include `host` of namespace `ns`
    /// for a workload of `client`.
    fn egress_allows(sidecar: Option<&SidecarSpec>, client: &str, host: &str, ns: &str) -> bool {
        let Some(sidecar) = sidecar.filter(|s| !s.egress.is_empty()) else {
            return true;
        };
        sidecar.egress.iter().flat_map(|l| &l.hosts).any(|h| {
            let Some((want_ns, dns)) = h.split_once('/') else {
                return false;
            };
            let ns_ok = match want_ns {
                "*" => true,
                "." => ns == client,
                "~" => false,
                n => n == ns,
            };
            ns_ok && (dns == "*" || host_matches(&dns.to_ascii_lowercase(), host) || dns == host)
        })
    }

    /// The outbound traffic policy for `client`'s proxies.
    pub fn outbound_policy(&self, client: &str) -> pc::OutboundTrafficPolicy {
        Self::policy_of(self.sidecar(client).map(|(s, _)| s))
    }

    /// The outbound traffic policy `sidecar` sets (none: the mesh's, ALLOW_ANY).
    fn policy_of(sidecar: Option<&SidecarSpec>) -> pc::OutboundTrafficPolicy {
        match sidecar.and_then(|s| s.outbound_traffic_policy.as_ref()) {
            None => pc::OutboundTrafficPolicy::AllowAny,
            Some(p) => match p.mode.unwrap_or_default() {
                OutboundTrafficMode::AllowAny => pc::OutboundTrafficPolicy::AllowAny,
                OutboundTrafficMode::RegistryOnly => pc::OutboundTrafficPolicy::RegistryOnly,
            },
        }
    }

    /// With Sidecars for selected workloads in `client`: each of them (oldest first), then
    /// the default, with the hosts of `hosts` (what the config carries) each one sees. Empty
    /// without such Sidecars: the config's services and mesh policy are then the default's.
    pub fn sidecar_scopes(&self, client: &str, hosts: &[&str]) -> Vec<pc::SidecarScope> {
        let selected = self.selected(client);
        if selected.is_empty() {
            return Vec::new();
        }
        let seen_by = |sidecar: Option<&SidecarSpec>| -> Vec<String> {
            hosts
                .iter()
                .filter(|h| {
                    self.visible(client, h).is_some_and(|(_, src)| {
                        Self::egress_allows(sidecar, client, h, src.namespace())
                    })
                })
                .map(|h| h.to_string())
                .collect()
        };
        let mut scopes: Vec<pc::SidecarScope> = selected
            .iter()
            .map(|(stored, spec)| pc::SidecarScope {
                name: format!("{}/{}", stored.namespace(), stored.object.name),
                selector: spec.workload_selector.as_ref().map(|w| w.labels.clone()),
                hosts: seen_by(Some(spec)),
                outbound_traffic_policy: Self::policy_of(Some(spec)),
            })
            .collect();
        let default = self.sidecar(client).map(|(s, _)| s);
        scopes.push(pc::SidecarScope {
            name: String::new(),
            selector: None,
            hosts: seen_by(default),
            outbound_traffic_policy: Self::policy_of(default),
        });
        scopes
    }

    /// The source of `host` that `client` sees, if any, with its position among the host's
    /// candidates: the one its default Sidecar shows, else the one a Sidecar for selected
    /// workloads shows (the config carries what any of them sees).
    pub fn visible(&self, client: &str, host: &str) -> Option<(usize, Source<'a>)> {
        let sources = self.hosts.get(host)?;
        let first = |shows: &dyn Fn(&str) -> bool| {
            sources
                .iter()
                .copied()
                .enumerate()
                .find(|(_, s)| s.visible_to(client) && shows(s.namespace()))
        };
        let default = self.sidecar(client).map(|(s, _)| s);
        let by_default = first(&|ns| Self::egress_allows(default, client, host, ns));
        let selected = self.selected(client);
        if by_default.is_some() || selected.is_empty() {
            return by_default;
        }
        first(&|ns| {
            selected
                .iter()
                .any(|(_, s)| Self::egress_allows(Some(s), client, host, ns))
        })
    }

    pub fn source(&self, host: &str, i: usize) -> Source<'a> {
        self.hosts[host][i]
    }

    /// Istio's DestinationRule lookup: the client's namespace, then the service's, then the
    /// root namespace; within one, an exact host beats the longest matching wildcard. Returns
    /// the namespace and the positions of the rules that apply (several for one host merge).
    pub fn rule_key(
        &self,
        client: &str,
        host: &str,
        service_ns: &str,
    ) -> Option<(String, Vec<usize>)> {
        let mut seen = BTreeSet::new();
        for ns in [client, service_ns, self.settings.root_namespace.as_str()] {
            if !seen.insert(ns) {
                continue;
            }
            let Some(list) = self.drs.get(ns) else {
                continue;
            };
            let candidates = list.iter().enumerate().filter(|(_, d)| {
                d.spec.workload_selector.is_none()
                    && host_matches(&d.host, host)
                    && (ns == client || exported(&d.spec.export_to, ns, client))
            });
            let Some(best) = candidates
                .clone()
                .max_by_key(|(_, d)| (!d.host.contains('*'), d.host.len()))
                .map(|(_, d)| d.host.as_str())
            else {
                continue;
            };
            let ids = candidates
                .filter(|(_, d)| d.host == best)
                .map(|(i, _)| i)
                .collect();
            return Some((ns.to_string(), ids));
        }
        None
    }

    /// The rules `rule_key` found, merged: subsets joined (first wins on a name), the oldest
    /// rule's traffic policy.
    pub fn rule(&self, ns: &str, ids: &[usize]) -> FoundRule {
        let mut found = FoundRule::default();
        for d in ids.iter().map(|i| &self.drs[ns][*i]) {
            if found.policy.is_none() {
                found.policy = d.spec.traffic_policy.as_ref().map(policy::traffic_policy);
            }
            for s in &d.spec.subsets {
                if !found.subsets.iter().any(|f| f.name == s.name) {
                    found.subsets.push(s.clone());
                }
            }
        }
        found
    }

    /// The DestinationRules with a `workloadSelector` in `client`'s namespace for `host` (they
    /// apply nowhere else), as positions in its list: the most specific host first (an exact
    /// host, then the longest wildcard), the oldest first among equals. A proxy takes the first
    /// that selects it; the namespace-wide lookup ([`Self::rule_key`]) skips them.
    pub fn workload_rule_ids(&self, client: &str, host: &str) -> Vec<usize> {
        let Some(list) = self.drs.get(client) else {
            return Vec::new();
        };
        let mut ids: Vec<usize> = list
            .iter()
            .enumerate()
            .filter(|(_, d)| d.spec.workload_selector.is_some() && host_matches(&d.host, host))
            .map(|(i, _)| i)
            .collect();
        // Stable: the oldest first within one host.
        ids.sort_by_key(|i| {
            let h = &list[*i].host;
            (h.contains('*'), std::cmp::Reverse(h.len()))
        });
        ids
    }

    /// The rules `workload_rule_ids` found in `client`'s namespace, each on its own (Istio does
    /// not merge rules of different selectors, nor these with the namespace's).
    pub fn workload_rules(&self, client: &str, ids: &[usize]) -> Vec<pc::WorkloadRule> {
        ids.iter()
            .map(|i| {
                let d = &self.drs[client][*i];
                let rule = self.rule(client, &[*i]);
                pc::WorkloadRule {
                    name: d.name.clone(),
                    selector: d
                        .spec
                        .workload_selector
                        .as_ref()
                        .map(|s| s.match_labels.clone())
                        .unwrap_or_default(),
                    subsets: rule.config_subsets(),
                    policy: rule.policy,
                }
            })
            .collect()
    }

    /// The subsets a client would find for `host` (for reference checks): the namespace-wide
    /// rule's, and those of the rules for selected workloads.
    pub fn subsets(&self, client: &str, host: &str, service_ns: &str) -> Vec<&'a str> {
        let shared = self.rule_key(client, host, service_ns);
        let selected = self.workload_rule_ids(client, host);
        shared
            .iter()
            .flat_map(|(ns, ids)| ids.iter().map(move |i| &self.drs[ns][*i]))
            .chain(selected.iter().map(|i| &self.drs[client][*i]))
            .flat_map(|d| d.spec.subsets.iter().map(|s| s.name.as_str()))
            .collect()
    }

    /// VirtualServices (positions in `vss`) for `host` that `client` sees, in Istio's merge
    /// order.
    pub fn virtual_services(&self, client: &str, host: &str) -> Vec<usize> {
        let mut idx: Vec<usize> = self.vs_exact.get(host).cloned().unwrap_or_default();
        idx.extend(
            self.vs_wild
                .iter()
                .filter(|i| self.vss[**i].hosts.iter().any(|p| host_matches(p, host))),
        );
        idx.sort_unstable();
        idx.dedup();
        idx.retain(|i| {
            let v = &self.vss[*i];
            exported(&v.spec.export_to, v.stored.namespace(), client)
        });
        idx
    }

    pub fn delegate(&self, ns: &str, name: &str) -> Option<&'a VirtualServiceSpec> {
        self.delegates
            .get(&(ns.to_string(), name.to_string()))
            .copied()
    }

    /// Every host `client` can see.
    pub fn visible_hosts(&self, client: &str) -> Vec<String> {
        self.hosts
            .keys()
            .filter(|h| self.visible(client, h).is_some())
            .cloned()
            .collect()
    }

    /// Endpoints of a ServiceEntry: its own, plus the WorkloadEntries it selects.
    pub fn entry_endpoints(&self, stored: &Stored, se: &ServiceEntrySpec) -> Vec<pc::Endpoint> {
        let ns = stored.namespace();
        let td = &self.settings.trust_domain;
        let endpoint = |w: &WorkloadEntrySpec| {
            Some(pc::Endpoint {
                address: w.address.clone().filter(|a| !a.is_empty())?,
                ports: w
                    .ports
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), u16::try_from(*v).ok()?)))
                    .collect(),
                labels: w.labels.clone(),
                weight: w.weight,
                identity: w
                    .service_account
                    .as_ref()
                    .map(|sa| format!("spiffe://{td}/ns/{ns}/sa/{sa}")),
                locality: w.locality.clone().filter(|l| !l.is_empty()),
            })
        };
        let mut out: Vec<pc::Endpoint> = se.endpoints.iter().filter_map(endpoint).collect();
        if let Some(sel) = &se.workload_selector {
            out.extend(
                self.workload_entries
                    .iter()
                    .filter(|(s, w)| s.namespace() == ns && sel.matches(&w.labels))
                    .filter_map(|(_, w)| endpoint(w)),
            );
        }
        out
    }
}

pub fn entry_location(se: &ServiceEntrySpec) -> pc::Location {
    match se.location.unwrap_or_default() {
        Location::MeshExternal => pc::Location::MeshExternal,
        Location::MeshInternal => pc::Location::MeshInternal,
    }
}

pub fn entry_resolution(se: &ServiceEntrySpec) -> pc::Resolution {
    match se.resolution.unwrap_or_default() {
        Resolution::None => pc::Resolution::Passthrough,
        Resolution::Static => pc::Resolution::Endpoints,
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => pc::Resolution::Dns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_to_follows_istio() {
        assert!(exported(&[], "a", "b"));
        assert!(exported(&["*".into()], "a", "b"));
        assert!(exported(&[".".into()], "a", "a"));
        assert!(!exported(&[".".into()], "a", "b"));
        assert!(exported(&["b".into()], "a", "b"));
        assert!(!exported(&["~".into()], "a", "a"));
    }
}
