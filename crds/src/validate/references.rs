//! Checks across objects: every host, subset and gateway a resource names must exist in the
//! input, as `istioctl analyze` reports `ReferencedResourceNotFound`.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    inventory::{Entry, Inventory, fqdn, host_matches},
    networking::{DestinationRuleSpec, virtual_service::Destination},
    resource::MeshResource,
};

use super::{Checker, Code, Finding};

/// What the input defines that references can point at.
struct Targets<'a> {
    /// Resolved hosts of Services and ServiceEntries (patterns for the latter).
    hosts: Vec<String>,
    /// DestinationRules by resolved host pattern.
    rules: Vec<(String, &'a DestinationRuleSpec)>,
    /// `namespace/name` of every Gateway.
    gateways: BTreeSet<String>,
}

impl<'a> Targets<'a> {
    fn new(inv: &'a Inventory) -> Self {
        let mut hosts: Vec<String> = inv.services.iter().map(|s| s.fqdn()).collect();
        let mut rules = Vec::new();
        let mut gateways = BTreeSet::new();
        for e in inv.mesh() {
            let ns = &e.object.namespace;
            match &e.resource {
                MeshResource::ServiceEntry(se) => {
                    hosts.extend(se.spec.hosts.iter().map(|h| fqdn(h, ns)))
                }
                MeshResource::DestinationRule(dr) => {
                    rules.push((fqdn(&dr.spec.host, ns), &dr.spec))
                }
                MeshResource::Gateway(_) => {
                    gateways.insert(format!("{ns}/{}", e.object.name));
                }
                _ => {}
            }
        }
        Self {
            hosts,
            rules,
            gateways,
        }
    }

    fn host_known(&self, host: &str) -> bool {
        self.hosts
            .iter()
            .any(|h| host_matches(h, host) || host_matches(host, h))
    }

    fn subset_known(&self, host: &str, subset: &str) -> bool {
        self.rules
            .iter()
            .any(|(h, dr)| host_matches(h, host) && dr.subsets.iter().any(|s| s.name == subset))
    }
}

fn destination(c: &mut Checker, t: &Targets<'_>, ns: &str, d: &Destination) {
    let host = fqdn(&d.host, ns);
    if !t.host_known(&host) {
        c.field("host", |c| {
            c.error(
                Code::ReferencedResourceNotFound,
                format!(
                    "host {:?} ({host}) matches no Service or ServiceEntry in the input",
                    d.host
                ),
            )
        });
    }
    if let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty())
        && !t.subset_known(&host, subset)
    {
        c.field("subset", |c| {
            c.error(
                Code::UnknownSubset,
                format!("subset {subset:?} is not defined by any DestinationRule for host {host}"),
            )
        });
    }
}

fn gateway(c: &mut Checker, t: &Targets<'_>, ns: &str, name: &str) {
    if name == "mesh" {
        return;
    }
    let key = if name.contains('/') {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    if !t.gateways.contains(&key) {
        c.error(
            Code::ReferencedResourceNotFound,
            format!("gateway {name:?} ({key}) is not in the input"),
        );
    }
}

fn check_entry(e: &Entry, t: &Targets<'_>, inv: &Inventory) -> Vec<super::Problem> {
    let ns = e.object.namespace.as_str();
    let mut c = Checker::new("spec");
    match &e.resource {
        MeshResource::VirtualService(vs) => {
            let s = &vs.spec;
            c.field("gateways", |c| {
                for (i, g) in s.gateways.iter().enumerate() {
                    c.index(i, |c| gateway(c, t, ns, g));
                }
            });
            c.each("http", &s.http, |c, r| {
                c.each("match", &r.r#match, |c, m| {
                    c.field("gateways", |c| {
                        for (i, g) in m.gateways.iter().enumerate() {
                            c.index(i, |c| gateway(c, t, ns, g));
                        }
                    })
                });
                c.each("route", &r.route, |c, d| {
                    c.field("destination", |c| destination(c, t, ns, &d.destination))
                });
                c.opt("mirror", r.mirror.as_ref(), |c, d| destination(c, t, ns, d));
                c.each("mirrors", &r.mirrors, |c, m| {
                    c.field("destination", |c| destination(c, t, ns, &m.destination))
                });
            });
            c.each("tcp", &s.tcp, |c, r| {
                c.each("route", &r.route, |c, d| {
                    c.field("destination", |c| destination(c, t, ns, &d.destination))
                })
            });
            c.each("tls", &s.tls, |c, r| {
                c.each("route", &r.route, |c, d| {
                    c.field("destination", |c| destination(c, t, ns, &d.destination))
                })
            });
        }
        MeshResource::DestinationRule(dr) => {
            let host = fqdn(&dr.spec.host, ns);
            if !t.host_known(&host) {
                c.field("host", |c| {
                    c.error(
                        Code::ReferencedResourceNotFound,
                        format!(
                            "host {:?} ({host}) matches no Service or ServiceEntry in the input",
                            dr.spec.host
                        ),
                    )
                });
            }
            subsets_select_pods(&mut c, inv, &host, &dr.spec);
        }
        MeshResource::Canary(canary) => {
            let s = &canary.spec;
            let host = fqdn(&s.service, ns);
            if !t.host_known(&host) {
                c.field("service", |c| {
                    c.error(
                        Code::ReferencedResourceNotFound,
                        format!("service {:?} ({host}) is not in the input", s.service),
                    )
                });
            }
            for (field, subset) in [
                ("stableSubset", &s.stable_subset),
                ("canarySubset", &s.canary_subset),
            ] {
                if !subset.is_empty() && !t.subset_known(&host, subset) {
                    c.field(field, |c| {
                        c.error(Code::UnknownSubset, format!("subset {subset:?} is not defined by any DestinationRule for host {host}"))
                    });
                }
            }
        }
        _ => {}
    }
    c.into_problems()
}

/// A subset whose labels select no pod of its Service is a warning, when the input has workloads
/// for that Service at all (otherwise the pods are simply not in the input).
fn subsets_select_pods(c: &mut Checker, inv: &Inventory, host: &str, dr: &DestinationRuleSpec) {
    let Some(svc) = inv.services.iter().find(|s| s.fqdn() == host) else {
        return;
    };
    if svc.selector.is_empty() {
        return;
    }
    let pods: Vec<&BTreeMap<String, String>> = inv
        .workloads
        .iter()
        .filter(|w| {
            w.namespace == svc.namespace
                && svc.selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))
        })
        .map(|w| &w.labels)
        .collect();
    if pods.is_empty() {
        return;
    }
    c.each("subsets", &dr.subsets, |c, s| {
        if !pods
            .iter()
            .any(|labels| s.labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
        {
            c.field("labels", |c| {
                c.warn(
                    Code::ReferencedResourceNotFound,
                    format!(
                        "subset {:?} selects none of the workloads of Service {}",
                        s.name, svc.name
                    ),
                )
            });
        }
    });
}

/// Every reference problem in the input, and a warning for each object defined twice.
pub fn check(inv: &Inventory) -> Vec<Finding> {
    let targets = Targets::new(inv);
    let mut out = Vec::new();
    let mut seen: BTreeMap<_, &str> = BTreeMap::new();
    for e in inv.mesh() {
        if let Some(first) = seen.insert(&e.object, &e.origin) {
            out.push(Finding::new(
                e,
                super::Problem::warn(
                    Code::DuplicateResource,
                    "",
                    format!("also defined in {first}; the last definition wins"),
                ),
            ));
        }
        out.extend(
            check_entry(e, &targets, inv)
                .into_iter()
                .map(|p| Finding::new(e, p)),
        );
    }
    out
}
