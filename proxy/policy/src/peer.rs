//! PeerAuthentication: which mutual-TLS mode a workload's inbound port runs in.
//!
//! Istio resolves three levels, narrowest first: the workload-selector policy (its port-level
//! mode, then its own mode), the namespace-wide policy, then the mesh default (the root
//! namespace's namespace-wide policy, which the operator has already folded into
//! [`MeshConfig::default_mtls`](mizzen_proxy_config::MeshConfig)). `UNSET` at any level inherits
//! from the next broader one. Where several policies share a level the oldest wins; the
//! operator renders policies oldest first, so here that is the first one in the list.
//!
//! The result is resolved once per config into a [`PeerPolicy`]; a connection only looks up its
//! port.

use std::collections::BTreeMap;

use mizzen_proxy_config::{InboundConfig, PeerAuthMode, selects};

/// A resolved mutual-TLS mode: never `UNSET`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MtlsMode {
    /// Plaintext only: a TLS ClientHello is passed to the application as bytes.
    Disable,
    /// Mutual TLS and plaintext, told apart on the first bytes of the connection.
    Permissive,
    /// Mutual TLS only: plaintext connections are refused.
    Strict,
}

impl MtlsMode {
    /// The mode `m` sets, or `parent` when `m` is `UNSET`.
    fn inherit(m: PeerAuthMode, parent: MtlsMode) -> MtlsMode {
        match m {
            PeerAuthMode::Unset => parent,
            PeerAuthMode::Disable => MtlsMode::Disable,
            PeerAuthMode::Permissive => MtlsMode::Permissive,
            PeerAuthMode::Strict => MtlsMode::Strict,
        }
    }

    /// Istio's name, as used in `connection_security_policy` and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Disable => "DISABLE",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }

    /// Whether a plaintext connection may be served.
    pub fn accepts_plaintext(self) -> bool {
        self != MtlsMode::Strict
    }

    /// Whether a mutual-TLS connection is terminated by the proxy.
    pub fn accepts_mtls(self) -> bool {
        self != MtlsMode::Disable
    }
}

/// The effective PeerAuthentication of one workload: a mode per port, built once per config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    mode: MtlsMode,
    /// Ports the workload policy names, sorted: usually none or a handful, so a binary search
    /// over a vector beats a map.
    ports: Vec<(u16, MtlsMode)>,
    /// The policies that decided, narrowest last (for the effective-config log).
    sources: Vec<String>,
}

impl PeerPolicy {
    /// Resolves the policies of `inbound` for a workload with `labels`. `mesh_default` is
    /// `MeshConfig::default_mtls`; `UNSET` there means Istio's default, PERMISSIVE.
    pub fn new(
        inbound: &InboundConfig,
        mesh_default: PeerAuthMode,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let mut mode = MtlsMode::inherit(mesh_default, MtlsMode::Permissive);
        let mut sources = Vec::new();
        // Namespace-wide: the first policy without selector. Its port-level settings are
        // ignored, as in Istio (validation there requires a selector for them).
        if let Some(ns) = inbound
            .peer_authentication
            .iter()
            .find(|p| p.selector.is_none())
        {
            mode = MtlsMode::inherit(ns.mode, mode);
            sources.push(ns.name.clone());
        }
        let mut ports = Vec::new();
        if let Some(w) = inbound
            .peer_authentication
            .iter()
            .find(|p| p.selector.is_some() && selects(&p.selector, labels))
        {
            mode = MtlsMode::inherit(w.mode, mode);
            // BTreeMap iteration keeps the vector sorted by port.
            ports = w
                .ports
                .iter()
                .map(|(port, m)| (*port, MtlsMode::inherit(*m, mode)))
                .collect();
            sources.push(w.name.clone());
        }
        Self {
            mode,
            ports,
            sources,
        }
    }

    /// The mode for connections to the workload's `port` (the container port, after the
    /// inbound redirect).
    pub fn mode(&self, port: u16) -> MtlsMode {
        match self.ports.binary_search_by_key(&port, |(p, _)| *p) {
            Ok(i) => self.ports[i].1,
            Err(_) => self.mode,
        }
    }

    /// The mode of ports the workload policy does not name.
    pub fn default_mode(&self) -> MtlsMode {
        self.mode
    }

    /// `<namespace>/<name>` of the namespace-wide and workload policies that applied, broadest
    /// first; empty when only the mesh default did.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }
}

#[cfg(test)]
mod tests {
    use mizzen_proxy_config::PeerAuthentication;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn pa(
        name: &str,
        selector: Option<&[(&str, &str)]>,
        mode: PeerAuthMode,
        ports: &[(u16, PeerAuthMode)],
    ) -> PeerAuthentication {
        PeerAuthentication {
            name: format!("ns/{name}"),
            selector: selector.map(labels),
            mode,
            ports: ports.iter().copied().collect(),
        }
    }

    fn inbound(policies: Vec<PeerAuthentication>) -> InboundConfig {
        InboundConfig {
            peer_authentication: policies,
            ..Default::default()
        }
    }

    use MtlsMode::*;
    use PeerAuthMode as P;

    #[test]
    fn mesh_default_applies_without_policies_and_unset_means_permissive() {
        let app = labels(&[("app", "a")]);
        let p = PeerPolicy::new(&InboundConfig::default(), P::Strict, &app);
        assert_eq!((p.mode(80), p.default_mode()), (Strict, Strict));
        assert!(p.sources().is_empty());
        let p = PeerPolicy::new(&InboundConfig::default(), P::Unset, &app);
        assert_eq!(p.mode(80), Permissive);
    }

    /// Each row: mesh default, namespace policy, workload policy (mode, port 8080's mode), and
    /// the expected modes of port 8080 and of any other port.
    #[test]
    fn precedence_matrix() {
        type Row = (P, Option<P>, Option<(P, Option<P>)>, MtlsMode, MtlsMode);
        let rows: &[Row] = &[
            (P::Permissive, Some(P::Strict), None, Strict, Strict),
            (P::Strict, Some(P::Unset), None, Strict, Strict),
            (P::Strict, Some(P::Disable), None, Disable, Disable),
            (
                P::Permissive,
                Some(P::Strict),
                Some((P::Disable, None)),
                Disable,
                Disable,
            ),
            (
                P::Permissive,
                Some(P::Strict),
                Some((P::Unset, None)),
                Strict,
                Strict,
            ),
            (
                P::Strict,
                None,
                Some((P::Unset, Some(P::Disable))),
                Disable,
                Strict,
            ),
            (
                P::Permissive,
                Some(P::Strict),
                Some((P::Unset, Some(P::Unset))),
                Strict,
                Strict,
            ),
            (
                P::Permissive,
                Some(P::Strict),
                Some((P::Disable, Some(P::Unset))),
                Disable,
                Disable,
            ),
            (
                P::Disable,
                None,
                Some((P::Strict, Some(P::Permissive))),
                Permissive,
                Strict,
            ),
        ];
        let app = labels(&[("app", "a"), ("version", "v1")]);
        for (i, (mesh, ns, wl, on_8080, other)) in rows.iter().enumerate() {
            let mut policies = Vec::new();
            if let Some(m) = ns {
                policies.push(pa("ns-wide", None, *m, &[]));
            }
            if let Some((m, port)) = wl {
                let ports: Vec<_> = port.iter().map(|p| (8080, *p)).collect();
                policies.push(pa("wl", Some(&[("app", "a")]), *m, &ports));
            }
            let p = PeerPolicy::new(&inbound(policies), *mesh, &app);
            assert_eq!(p.mode(8080), *on_8080, "row {i}: port 8080");
            assert_eq!(p.mode(9090), *other, "row {i}: other port");
        }
    }

    #[test]
    fn workload_policy_must_select_the_pod_and_the_oldest_wins() {
        let policies = vec![
            pa("ns-wide", None, P::Strict, &[]),
            pa("other-app", Some(&[("app", "b")]), P::Disable, &[]),
            pa("first", Some(&[("app", "a")]), P::Permissive, &[]),
            pa("second", Some(&[("app", "a")]), P::Disable, &[]),
            pa("ns-wide-newer", None, P::Disable, &[]),
        ];
        let p = PeerPolicy::new(&inbound(policies), P::Permissive, &labels(&[("app", "a")]));
        assert_eq!(p.default_mode(), Permissive);
        assert_eq!(p.sources(), ["ns/ns-wide", "ns/first"]);
        let policies = vec![pa("other-app", Some(&[("app", "b")]), P::Disable, &[])];
        let p = PeerPolicy::new(&inbound(policies), P::Strict, &labels(&[("app", "a")]));
        assert_eq!(p.default_mode(), Strict);
    }

    #[test]
    fn namespace_wide_port_levels_are_ignored() {
        let policies = vec![pa("ns-wide", None, P::Strict, &[(8080, P::Disable)])];
        let p = PeerPolicy::new(&inbound(policies), P::Permissive, &labels(&[]));
        assert_eq!(p.mode(8080), Strict);
    }

    #[test]
    fn modes_say_what_they_accept() {
        assert!(!Strict.accepts_plaintext() && Strict.accepts_mtls());
        assert!(Permissive.accepts_plaintext() && Permissive.accepts_mtls());
        assert!(Disable.accepts_plaintext() && !Disable.accepts_mtls());
        assert_eq!(Permissive.as_str(), "PERMISSIVE");
    }
}
