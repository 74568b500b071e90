//! The renderer: a pure function from the [`Index`] to one proxy config per meshed namespace,
//! plus the status of every object. No Kubernetes calls here.
//!
//! [`render`] does everything from scratch. [`Renderer`] keeps the rendered services of each
//! namespace (as JSON fragments) and each namespace's assembled config between calls, so a
//! change to one VirtualService re-renders only the hosts it names, and only the configs whose
//! services, policies or Sidecar changed are assembled again; a Gateway change
//! ([`Changes::gateways`]) redoes the gateway configs alone. The result is byte for byte what a
//! full render gives. [`Renderer::work`] tells how much a render did.
//!
//! Each gateway namespace ([`RenderSettings::gateway_namespaces`]) gets a config of the same
//! shape with a `gateway` section ([`gateway`]): the servers of every Gateway and the rules of
//! the VirtualServices bound to them, converted by the same [`routes`] code under a gateway
//! [`routes::Scope`]; its services are those a sidecar of that namespace would see.

mod catalog;
mod compress;
mod gateway;
mod inbound;
mod policy;
mod routes;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use mizzen_crds::{
    inventory::fqdn,
    networking::virtual_service as vs,
    resource::{MeshResource, ObjectRef},
    validate::{Code, Problem},
};
use mizzen_proxy_config::{self as pc, payload::Payload};

use crate::{
    hash::Fnv64,
    index::{Changes, Index, Stored},
};
pub use catalog::exported;
use catalog::{Catalog, Source};
pub use compress::CHUNK_SERVICES;
use compress::{Member, MemberCache};

/// The API server refuses a ConfigMap whose values add up to more than 1 MiB; 1 KiB of margin
/// (the object's metadata counts towards etcd's request limit). Checked against the stored
/// size ([`RenderedConfig::stored_bytes`]).
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024 - 1024;

/// What the renderer needs besides the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderSettings {
    /// Istio's root namespace: mesh-wide Sidecar, PeerAuthentication, policies, fallback
    /// DestinationRules.
    pub root_namespace: String,
    pub trust_domain: String,
    /// Configs whose stored form is larger than this are refused, never truncated.
    pub max_config_bytes: usize,
    /// Configs whose JSON is larger than this are stored gzip-compressed
    /// ([`pc::payload::GZIP_ABOVE_BYTES`]; tests lower it).
    pub gzip_above_bytes: usize,
    /// Services per gzip member of a compressed config, on average ([`CHUNK_SERVICES`]; see
    /// docs/operator.md, "Payload encoding").
    pub gzip_chunk_services: usize,
    /// File mode: when the input holds no Namespace objects, every namespace with objects is
    /// meshed.
    pub implicit_namespaces: bool,
    /// Namespaces of ingress gateway workloads: each that exists gets the gateway config
    /// (ConfigMap [`pc::GATEWAY_CONFIG_MAP_NAME`]).
    pub gateway_namespaces: Vec<String>,
}

/// The namespace the installed ingress gateway runs in.
pub const DEFAULT_GATEWAY_NAMESPACE: &str = "mizzen-ingress";

impl Default for RenderSettings {
    fn default() -> Self {
        Self {
            root_namespace: "mizzen-system".into(),
            trust_domain: "cluster.local".into(),
            max_config_bytes: MAX_CONFIG_BYTES,
            gzip_above_bytes: pc::payload::GZIP_ABOVE_BYTES,
            gzip_chunk_services: CHUNK_SERVICES,
            implicit_namespaces: false,
            gateway_namespaces: vec![DEFAULT_GATEWAY_NAMESPACE.into()],
        }
    }
}

/// The verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectStatus {
    pub accepted: bool,
    /// `Accepted` or `Invalid`, or why a gateway binding does not resolve (`UnknownGateway`,
    /// `HostNotServed`, `PortConflict`; see [`gateway`]).
    pub reason: &'static str,
    /// For an invalid object, its first problems (`spec.http[0].route: ...`); warnings for an
    /// accepted one; empty otherwise.
    pub message: String,
    pub generation: Option<i64>,
}

/// One namespace's config, as written to its ConfigMap. The JSON is assembled on demand from
/// the shared service fragments, so a render of many namespaces holds each service once. A
/// config large enough to be stored compressed holds the gzip members of its pieces (head,
/// chunks of services, tail), shared with other namespaces' configs and kept by the
/// [`Renderer`] between renders, and concatenates them on demand.
#[derive(Clone)]
pub struct RenderedConfig {
    /// Content hash of the JSON (16 hex digits), for the `mizzen.io/config-hash` annotation:
    /// the same JSON has the same hash however it is stored.
    pub hash: String,
    /// Size of [`RenderedConfig::json`].
    pub bytes: usize,
    /// Size of the stored form, [`RenderedConfig::payload`], as counted against the ConfigMap
    /// limit ([`Payload::stored_bytes`]).
    pub stored_bytes: usize,
    parts: Arc<Parts>,
    /// The gzip members of the stored form when it is compressed (shared with the renderer's
    /// cache); `None` when the JSON is stored as text.
    compressed: Option<Arc<[Member]>>,
}

/// The JSON of a config is `head`, the services separated by commas, and `tail`.
struct Parts {
    /// Up to and including `"services":[`, when there are services.
    head: String,
    services: Vec<Arc<Fragment>>,
    /// From the `]` closing the services, when there are any.
    tail: String,
}

impl RenderedConfig {
    /// Compact JSON of the [`pc::ProxyConfig`]: exactly what `serde_json::to_string` writes.
    pub fn json(&self) -> String {
        let p = &self.parts;
        let mut json = String::with_capacity(self.bytes);
        json.push_str(&p.head);
        for (i, f) in p.services.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&f.json);
        }
        json.push_str(&p.tail);
        json
    }

    /// What the ConfigMap stores: the JSON as text, or gzip-compressed when it is larger than
    /// [`RenderSettings::gzip_above_bytes`].
    pub fn payload(&self) -> Payload {
        match &self.compressed {
            Some(members) => Payload::from_members(members.iter().map(|m| &m[..])),
            None => Payload::Text(self.json()),
        }
    }

    /// How many gzip members the stored form holds; 0 when it is text.
    pub fn gzip_members(&self) -> usize {
        self.compressed.as_ref().map_or(0, |m| m.len())
    }

    pub fn config(&self) -> pc::ProxyConfig {
        pc::ProxyConfig::from_json(self.json().as_bytes()).expect("rendered configs always parse")
    }
}

impl PartialEq for RenderedConfig {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
            && self.bytes == other.bytes
            && self.stored_bytes == other.stored_bytes
            && self.json() == other.json()
    }
}

impl Eq for RenderedConfig {}

impl std::fmt::Debug for RenderedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedConfig")
            .field("hash", &self.hash)
            .field("bytes", &self.bytes)
            .field("stored_bytes", &self.stored_bytes)
            .finish_non_exhaustive()
    }
}

/// Everything one render produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Meshed namespaces, whether or not their config could be rendered.
    pub meshed: BTreeSet<String>,
    pub configs: BTreeMap<String, RenderedConfig>,
    /// The gateway config of each gateway namespace (with a `gateway` section).
    pub gateway_configs: BTreeMap<String, RenderedConfig>,
    pub statuses: BTreeMap<ObjectRef, ObjectStatus>,
    /// Why a meshed namespace has no config (its stored form is too large).
    pub problems: BTreeMap<String, Vec<String>>,
}

/// Renders everything from scratch.
pub fn render(index: &Index, settings: &RenderSettings) -> Rendered {
    Renderer::new(settings.clone()).render(
        index,
        &Changes {
            all: true,
            ..Changes::default()
        },
    )
}

struct Fragment {
    json: String,
    hash: u64,
    /// Where compressed chunks end ([`compress::boundary_hash`] of the host).
    boundary_hash: u32,
}

/// How much one render did: the part an incremental render saves shows here (tests and the
/// benchmark read it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderWork {
    /// Services built and serialised (once per distinct view of a host in this render).
    pub services_built: usize,
    /// Sidecar configs assembled anew; the others were kept from the previous render.
    pub configs_assembled: usize,
    /// Gateway configs assembled anew.
    pub gateway_configs_assembled: usize,
}

/// A renderer that remembers what it rendered, for incremental renders.
pub struct Renderer {
    settings: RenderSettings,
    /// Per meshed namespace, the JSON of each visible service.
    services: BTreeMap<String, BTreeMap<String, Arc<Fragment>>>,
    /// Per namespace, the sidecar and the gateway config the last render assembled (whether or
    /// not they were too large to write), to keep when nothing they read changed.
    configs: BTreeMap<String, RenderedConfig>,
    gateway_configs: BTreeMap<String, RenderedConfig>,
    work: RenderWork,
    /// Identical fragments shared across namespaces.
    interned: HashMap<u64, Arc<Fragment>>,
    /// The gzip members of the pieces of compressed configs, shared across namespaces and
    /// renders.
    members: MemberCache,
    valid: BTreeMap<ObjectRef, bool>,
}

impl Renderer {
    pub fn new(settings: RenderSettings) -> Self {
        Self {
            settings,
            services: BTreeMap::new(),
            configs: BTreeMap::new(),
            gateway_configs: BTreeMap::new(),
            work: RenderWork::default(),
            interned: HashMap::new(),
            members: MemberCache::default(),
            valid: BTreeMap::new(),
        }
    }

    pub fn settings(&self) -> &RenderSettings {
        &self.settings
    }

    /// How many gzip members this renderer has compressed so far: the misses of its member
    /// cache (a piece already compressed for another namespace or an earlier render is
    /// reused).
    pub fn compressed_members(&self) -> u64 {
        self.members.compressed()
    }

    /// How many gzip members the renderer keeps: those the last render used.
    pub fn cached_members(&self) -> usize {
        self.members.len()
    }

    /// What the last render did.
    pub fn work(&self) -> RenderWork {
        self.work
    }

    /// Renders after `changes` (from [`Index::take_changes`]); with `changes.all` everything.
    pub fn render(&mut self, index: &Index, changes: &Changes) -> Rendered {
        let mut changes = changes.clone();
        let statuses = statuses(index, &self.settings);
        // Objects whose verdict flipped change what is rendered, like an edit would.
        let root = self.settings.root_namespace.clone();
        let mut valid = BTreeMap::new();
        for s in index.resources() {
            let ok = statuses.get(&s.object).is_none_or(|st| st.accepted);
            if self.valid.get(&s.object) != Some(&ok) {
                changes.record(s, s.namespace() == root);
            }
            valid.insert(s.object.clone(), ok);
        }
        self.valid = valid;
        let catalog = Catalog::new(index, &self.settings, |s| {
            statuses.get(&s.object).is_none_or(|st| st.accepted)
        });
        let gateways = gateway::Gateways::new(index, &catalog, |s| {
            statuses.get(&s.object).is_none_or(|st| st.accepted)
        });

        let mut meshed: BTreeSet<String> = index
            .namespaces()
            .filter(|n| n.meshed)
            .map(|n| n.name.clone())
            .collect();
        if self.settings.implicit_namespaces && index.namespaces().next().is_none() {
            meshed = index.namespaces_with_objects();
        }
        // A gateway namespace gets its config once it exists (a ConfigMap cannot be written
        // into a missing namespace); in file mode without Namespace objects, always.
        let implicit = self.settings.implicit_namespaces && index.namespaces().next().is_none();
        let gateway_namespaces: BTreeSet<String> = self
            .settings
            .gateway_namespaces
            .iter()
            .filter(|ns| implicit || index.namespace(ns).is_some())
            .cloned()
            .collect();
        let namespaces: BTreeSet<String> = meshed.union(&gateway_namespaces).cloned().collect();
        self.services.retain(|ns, _| namespaces.contains(ns));
        self.configs.retain(|ns, _| meshed.contains(ns));
        self.gateway_configs
            .retain(|ns, _| gateway_namespaces.contains(ns));
        self.work = RenderWork::default();
        self.members.begin_render();
        let policies = Policies::new(index, &self.settings);
        let mut memo: HashMap<(String, View), Arc<Fragment>> = HashMap::new();

        let mut out = Rendered {
            statuses,
            ..Rendered::default()
        };
        gateways.merge_statuses(&mut out.statuses);
        for ns in &namespaces {
            let full =
                changes.all || changes.namespaces.contains(ns) || !self.services.contains_key(ns);
            let cache = self.services.entry(ns.clone()).or_default();
            let hosts: Vec<String> = if full {
                cache.clear();
                catalog.visible_hosts(ns)
            } else {
                changes.hosts.iter().cloned().collect()
            };
            // Whether this namespace's services differ from the last render's.
            let mut services_changed = full;
            for host in hosts {
                match view(&catalog, ns, &host) {
                    Some(v) => {
                        let key = (host.clone(), v);
                        let frag = match memo.get(&key) {
                            Some(f) => f.clone(),
                            None => {
                                let svc = build_service(&catalog, &host, &key.1);
                                self.work.services_built += 1;
                                let f = intern(&mut self.interned, &svc);
                                memo.insert(key, f.clone());
                                f
                            }
                        };
                        let same = cache
                            .get(&host)
                            .is_some_and(|old| Arc::ptr_eq(old, &frag) || old.json == frag.json);
                        services_changed |= !same;
                        cache.insert(host, frag);
                    }
                    None => {
                        services_changed |= cache.remove(&host).is_some();
                    }
                }
            }
            let cache = &self.services[ns];
            // A sidecar config reads its services, its namespace's (and the root's) policies
            // and Sidecar, and mesh-wide settings: a change to any of those but the services
            // marks the namespace (or everything), so an unmarked namespace whose services are
            // the same keeps its config. A gateway config also reads every Gateway and every
            // VirtualService bound to one (whose changes mark hosts).
            if meshed.contains(ns) {
                let kept = self.configs.get(ns).filter(|_| !services_changed).cloned();
                let mut config = kept.unwrap_or_else(|| {
                    self.work.configs_assembled += 1;
                    assemble(&catalog, &policies, ns, cache, None)
                });
                // Also for a kept config: marks its members as used, so the cache keeps them.
                encode(&mut self.members, &self.settings, &mut config);
                self.configs.insert(ns.clone(), config.clone());
                match too_large(&self.settings, &config, "proxy config", ns) {
                    Some(p) => out.problems.entry(ns.clone()).or_default().push(p),
                    None => {
                        out.configs.insert(ns.clone(), config);
                    }
                }
            }
            if gateway_namespaces.contains(ns) {
                let unchanged = !services_changed && !changes.gateways && changes.hosts.is_empty();
                let kept = self.gateway_configs.get(ns).filter(|_| unchanged).cloned();
                let mut config = kept.unwrap_or_else(|| {
                    self.work.gateway_configs_assembled += 1;
                    let section = gateways.config(&catalog, ns);
                    assemble(&catalog, &policies, ns, cache, Some(&section))
                });
                encode(&mut self.members, &self.settings, &mut config);
                self.gateway_configs.insert(ns.clone(), config.clone());
                match too_large(&self.settings, &config, "gateway config", ns) {
                    Some(p) => out.problems.entry(ns.clone()).or_default().push(p),
                    None => {
                        out.gateway_configs.insert(ns.clone(), config);
                    }
                }
            }
        }
        self.members.end_render();
        self.interned.retain(|_, f| Arc::strong_count(f) > 1);
        out.meshed = meshed;
        out
    }
}

/// Why `config` (the `what` of namespace `ns`) cannot be written, if its stored form is over
/// the limit: it is refused, never truncated.
fn too_large(
    settings: &RenderSettings,
    config: &RenderedConfig,
    what: &str,
    ns: &str,
) -> Option<String> {
    if config.stored_bytes <= settings.max_config_bytes {
        return None;
    }
    let form = if config.compressed.is_some() {
        format!(
            "{} bytes gzip-compressed ({} bytes of JSON)",
            config.stored_bytes, config.bytes
        )
    } else {
        format!("{} bytes", config.stored_bytes)
    };
    Some(format!(
        "the {what} of namespace {ns} is {form}, over the limit of {} bytes: it was not written (scope it with a Sidecar's egress hosts or exportTo)",
        settings.max_config_bytes
    ))
}

/// Sets the stored form of `config`: text, or the gzip members of its pieces.
fn encode(members: &mut MemberCache, settings: &RenderSettings, config: &mut RenderedConfig) {
    if !pc::payload::compresses(config.bytes, settings.gzip_above_bytes) {
        // Text: the JSON itself, assembled only when written.
        config.stored_bytes = config.bytes;
        return;
    }
    let members = members.members(&config.parts, settings.gzip_chunk_services);
    let gzip_bytes = members.iter().map(|m| m.len()).sum();
    config.stored_bytes = pc::payload::base64_len(gzip_bytes);
    config.compressed = Some(members.into());
}

fn intern(table: &mut HashMap<u64, Arc<Fragment>>, svc: &pc::Service) -> Arc<Fragment> {
    let json = serde_json::to_string(svc).expect("services always serialise");
    let hash = Fnv64::of(json.as_bytes());
    if let Some(f) = table.get(&hash)
        && f.json == json
    {
        return f.clone();
    }
    let f = Arc::new(Fragment {
        json,
        hash,
        boundary_hash: compress::boundary_hash(&svc.host),
    });
    table.insert(hash, f.clone());
    f
}

/// A namespace's config from cached service fragments; the hash covers every part.
fn assemble(
    catalog: &Catalog<'_>,
    policies: &Policies<'_>,
    ns: &str,
    services: &BTreeMap<String, Arc<Fragment>>,
    gateway: Option<&pc::GatewayConfig>,
) -> RenderedConfig {
    let settings = catalog.settings;
    let mesh = pc::MeshConfig {
        trust_domain: settings.trust_domain.clone(),
        cluster_domain: mizzen_crds::inventory::CLUSTER_DOMAIN.into(),
        outbound_traffic_policy: catalog.outbound_policy(ns),
        default_retry: pc::Retry::istio_default(),
        default_mtls: policies.mesh_mtls,
    };
    let inbound = policies.inbound(ns);
    let mut head = format!(
        "{{\"format\":{},\"namespace\":{},\"mesh\":{}",
        serde_json::to_string(pc::FORMAT).expect("strings serialise"),
        serde_json::to_string(ns).expect("strings serialise"),
        serde_json::to_string(&mesh).expect("mesh serialises"),
    );
    let mut tail = format!(
        ",\"inbound\":{}",
        serde_json::to_string(&inbound).expect("inbound serialises")
    );
    if let Some(g) = gateway {
        tail.push_str(",\"gateway\":");
        tail.push_str(&serde_json::to_string(g).expect("gateway serialises"));
    } else {
        let hosts: Vec<&str> = services.keys().map(String::as_str).collect();
        let scopes = catalog.sidecar_scopes(ns, &hosts);
        if !scopes.is_empty() {
            tail.push_str(",\"sidecarScopes\":");
            tail.push_str(&serde_json::to_string(&scopes).expect("scopes serialise"));
        }
    }
    tail.push('}');
    // The hash covers the head and tail without the brackets of `services`, as it always has,
    // so that the annotation of an unchanged config stays the same.
    let mut hash = Fnv64::new();
    hash.write(head.as_bytes());
    let services: Vec<Arc<Fragment>> = services
        .values()
        .map(|f| {
            hash.write(&f.hash.to_le_bytes());
            f.clone()
        })
        .collect();
    hash.write(tail.as_bytes());
    if !services.is_empty() {
        head.push_str(",\"services\":[");
        tail.insert(0, ']');
    }
    let commas = services.len().saturating_sub(1);
    let bytes =
        head.len() + tail.len() + commas + services.iter().map(|f| f.json.len()).sum::<usize>();
    RenderedConfig {
        hash: hash.hex(),
        bytes,
        stored_bytes: bytes,
        parts: Arc::new(Parts {
            head,
            services,
            tail,
        }),
        compressed: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Status

fn summary(problems: &[&Problem]) -> String {
    const SHOWN: usize = 3;
    let mut msg = problems
        .iter()
        .take(SHOWN)
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        msg.push_str(&format!(" (and {} more)", problems.len() - SHOWN));
    }
    msg
}

/// The verdict on every object: its own validation, plus the subsets its routes name.
pub fn statuses(index: &Index, settings: &RenderSettings) -> BTreeMap<ObjectRef, ObjectStatus> {
    // Subsets are checked against the valid DestinationRules, with the ServiceEntries that
    // define their hosts (so a rule in a ServiceEntry's namespace is found there).
    let rules = Catalog::new(index, settings, |s| {
        s.is_valid()
            && matches!(
                s.resource,
                MeshResource::DestinationRule(_) | MeshResource::ServiceEntry(_)
            )
    });
    index
        .resources()
        .filter(|s| !matches!(s.resource, MeshResource::Canary(_)))
        .map(|s| {
            let mut problems: Vec<Problem> = s.problems.clone();
            if s.is_valid()
                && let MeshResource::VirtualService(v) = &s.resource
            {
                problems.extend(subset_problems(&rules, s.namespace(), &v.spec));
            }
            let errors: Vec<&Problem> = problems.iter().filter(|p| p.is_error()).collect();
            let warnings: Vec<&Problem> = problems.iter().filter(|p| !p.is_error()).collect();
            let status = if errors.is_empty() {
                ObjectStatus {
                    accepted: true,
                    reason: "Accepted",
                    message: summary(&warnings),
                    generation: s.generation(),
                }
            } else {
                ObjectStatus {
                    accepted: false,
                    reason: "Invalid",
                    message: summary(&errors),
                    generation: s.generation(),
                }
            };
            (s.object.clone(), status)
        })
        .collect()
}

/// Routes naming a subset no DestinationRule (as seen from the VirtualService's namespace)
/// defines for the destination host.
fn subset_problems(rules: &Catalog<'_>, ns: &str, spec: &vs::VirtualServiceSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut check = |path: String, d: &vs::Destination| {
        let Some(subset) = d.subset.as_deref().filter(|s| !s.is_empty()) else {
            return;
        };
        let host = fqdn(&d.host, ns);
        let svc_ns = rules
            .hosts
            .get(&host)
            .and_then(|s| s.first())
            .map_or(ns, Source::namespace);
        let defined = rules.subsets(ns, &host, svc_ns).contains(&subset);
        if !defined {
            out.push(Problem::error(
                Code::UnknownSubset,
                format!("{path}.destination.subset"),
                format!("subset {subset:?} is not defined by any DestinationRule for host {host}"),
            ));
        }
    };
    for (i, r) in spec.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            check(format!("spec.http[{i}].route[{j}]"), &d.destination);
        }
        if let Some(m) = &r.mirror {
            check(format!("spec.http[{i}].mirror"), m);
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            check(format!("spec.http[{i}].mirrors[{j}]"), &m.destination);
        }
    }
    for (i, r) in spec.tcp.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            check(format!("spec.tcp[{i}].route[{j}]"), &d.destination);
        }
    }
    for (i, r) in spec.tls.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            check(format!("spec.tls[{i}].route[{j}]"), &d.destination);
        }
    }
    // The `mirror` path above ends in `.mirror.destination.subset`; trim the extra segment.
    for p in &mut out {
        p.path = p.path.replace(".mirror.destination.", ".mirror.");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Services

/// Istio's protocol selection for a Kubernetes Service port: `appProtocol` first, then the port
/// name's prefix (`http`, `http-web`, `grpc-api`, ...).
pub fn port_protocol(name: &str, app_protocol: Option<&str>) -> pc::Protocol {
    fn parse(p: &str) -> Option<pc::Protocol> {
        Some(match p.to_ascii_lowercase().as_str() {
            "http" | "grpc-web" | "kubernetes.io/ws" => pc::Protocol::Http,
            "http2" | "kubernetes.io/h2c" => pc::Protocol::Http2,
            "grpc" => pc::Protocol::Grpc,
            "https" | "kubernetes.io/wss" => pc::Protocol::Https,
            "tls" => pc::Protocol::Tls,
            "tcp" | "mongo" | "mysql" | "redis" => pc::Protocol::Tcp,
            _ => return None,
        })
    }
    if let Some(p) = app_protocol.and_then(parse) {
        return p;
    }
    let lower = name.to_ascii_lowercase();
    if lower == "grpc-web" || lower.starts_with("grpc-web-") {
        return pc::Protocol::Http;
    }
    let prefix = lower.split('-').next().unwrap_or_default();
    parse(prefix).unwrap_or(pc::Protocol::Unknown)
}

/// A ServiceEntry port's declared protocol; `None` for UDP, which the proxy does not carry.
fn entry_protocol(p: Option<&str>) -> Option<pc::Protocol> {
    Some(match p.map(str::to_ascii_uppercase).as_deref() {
        None | Some("") => pc::Protocol::Unknown,
        Some("HTTP" | "GRPC-WEB") => pc::Protocol::Http,
        Some("HTTP2") => pc::Protocol::Http2,
        Some("GRPC") => pc::Protocol::Grpc,
        Some("HTTPS") => pc::Protocol::Https,
        Some("TLS") => pc::Protocol::Tls,
        Some("UDP") => return None,
        Some(_) => pc::Protocol::Tcp,
    })
}

/// Everything about a client namespace that shapes how it sees one host. Clients with equal
/// views get the same service, so it is built (and serialised) once per view.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct View {
    source: usize,
    own_namespace: bool,
    rule: Option<(String, Vec<usize>)>,
    /// The client namespace's rules for selected workloads (positions in its list; empty when
    /// it has none, so that clients without them still share one view).
    workload_rules: Option<(String, Vec<usize>)>,
    virtual_services: Vec<usize>,
}

fn view(catalog: &Catalog<'_>, client: &str, host: &str) -> Option<View> {
    let (source, src) = catalog.visible(client, host)?;
    let svc_ns = src.namespace();
    Some(View {
        source,
        own_namespace: svc_ns == client,
        rule: catalog.rule_key(client, host, svc_ns),
        workload_rules: Some(catalog.workload_rule_ids(client, host))
            .filter(|ids| !ids.is_empty())
            .map(|ids| (client.to_string(), ids)),
        virtual_services: catalog.virtual_services(client, host),
    })
}

/// What the proxies seeing `host` through `view` get.
fn build_service(catalog: &Catalog<'_>, host: &str, view: &View) -> pc::Service {
    let source = catalog.source(host, view.source);
    let mut svc = match source {
        Source::Kube(k) => pc::Service {
            host: host.to_string(),
            aliases: if view.own_namespace {
                vec![
                    k.name.clone(),
                    format!("{}.{}", k.name, k.namespace),
                    format!("{}.{}.svc", k.name, k.namespace),
                ]
            } else {
                vec![
                    format!("{}.{}", k.name, k.namespace),
                    format!("{}.{}.svc", k.name, k.namespace),
                ]
            },
            namespace: k.namespace.clone(),
            addresses: k.cluster_ips.clone(),
            ports: k
                .ports
                .iter()
                .filter(|p| p.transport.eq_ignore_ascii_case("TCP"))
                .map(|p| pc::ServicePort {
                    number: p.port,
                    name: p.name.clone(),
                    protocol: port_protocol(&p.name, p.app_protocol.as_deref()),
                    target_port: p.target_port,
                })
                .collect(),
            location: pc::Location::MeshInternal,
            resolution: if k.headless {
                pc::Resolution::Passthrough
            } else {
                pc::Resolution::Endpoints
            },
            traffic_distribution: k.traffic_distribution,
            ..pc::Service::default()
        },
        Source::Entry(stored, se) => pc::Service {
            host: host.to_string(),
            namespace: stored.namespace().to_string(),
            addresses: se.addresses.clone(),
            ports: se
                .ports
                .iter()
                .filter_map(|p| {
                    Some(pc::ServicePort {
                        number: u16::try_from(p.number).ok()?,
                        name: p.name.clone(),
                        protocol: entry_protocol(p.protocol.as_deref())?,
                        target_port: p
                            .target_port
                            .and_then(|t| u16::try_from(t).ok())
                            .filter(|t| u32::from(*t) != p.number),
                    })
                })
                .collect(),
            location: catalog::entry_location(se),
            resolution: catalog::entry_resolution(se),
            endpoints: catalog.entry_endpoints(stored, se),
            subject_alt_names: se.subject_alt_names.clone(),
            ..pc::Service::default()
        },
    };

    if let Some((ns, ids)) = &view.rule {
        let rule = catalog.rule(ns, ids);
        svc.subsets = rule.config_subsets();
        svc.policy = rule.policy;
    }
    if let Some((client, ids)) = &view.workload_rules {
        svc.workload_rules = catalog.workload_rules(client, ids);
    }

    for v in view.virtual_services.iter().map(|i| &catalog.vss[*i]) {
        let r = vs_routes(catalog, v, routes::Scope::Mesh);
        svc.http_routes.extend(r.http);
        svc.tcp_routes.extend(r.tcp);
        svc.tls_routes.extend(r.tls);
    }
    svc
}

/// The rules of one VirtualService as the proxies of one scope get them.
struct VsRoutes {
    http: Vec<pc::HttpRoute>,
    tcp: Vec<pc::TcpRoute>,
    tls: Vec<pc::TlsRoute>,
}

/// The rules of `v` that apply in `scope`, in order, with delegates resolved: the one
/// conversion both sidecars and gateways use.
fn vs_routes(
    catalog: &Catalog<'_>,
    v: &catalog::VsEntry<'_>,
    scope: routes::Scope<'_>,
) -> VsRoutes {
    let vns = v.stored.namespace();
    let vname = &v.stored.object.name;
    let mut http = Vec::new();
    for (i, rule) in v.spec.http.iter().enumerate() {
        match &rule.delegate {
            None => http.extend(routes::http_route(rule, scope, vns, vname, i)),
            Some(d) => {
                let dns = d.namespace.as_deref().unwrap_or(vns);
                if let Some(child) = catalog.delegate(dns, &d.name) {
                    for (j, r) in routes::resolve_delegate(rule, &child.http)
                        .iter()
                        .enumerate()
                    {
                        http.extend(routes::http_route(r, scope, dns, &d.name, j));
                    }
                }
            }
        }
    }
    VsRoutes {
        http,
        tcp: v
            .spec
            .tcp
            .iter()
            .filter_map(|r| routes::tcp_route(r, scope, vns))
            .collect(),
        tls: v
            .spec
            .tls
            .iter()
            .filter_map(|r| routes::tls_route(r, scope, vns))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound and mesh

/// The valid security policies and Sidecars of each namespace, oldest first: read once per
/// render.
struct Policies<'a> {
    settings: &'a RenderSettings,
    by_namespace: BTreeMap<&'a str, Vec<&'a Stored>>,
    mesh_mtls: pc::PeerAuthMode,
}

impl<'a> Policies<'a> {
    fn new(index: &'a Index, settings: &'a RenderSettings) -> Self {
        let mut by_namespace: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
        for s in index.resources().filter(|s| s.is_valid()) {
            if matches!(
                s.resource,
                MeshResource::PeerAuthentication(_)
                    | MeshResource::AuthorizationPolicy(_)
                    | MeshResource::RequestAuthentication(_)
            ) {
                by_namespace.entry(s.namespace()).or_default().push(s);
            }
        }
        for list in by_namespace.values_mut() {
            list.sort_by(|a, b| a.order.cmp(&b.order));
        }
        // The mesh-wide mTLS mode: the root namespace's PeerAuthentication without selector,
        // else Istio's PERMISSIVE.
        let mesh_mtls = by_namespace
            .get(settings.root_namespace.as_str())
            .into_iter()
            .flatten()
            .find_map(|s| match &s.resource {
                MeshResource::PeerAuthentication(p) if p.spec.selector.is_none() => {
                    Some(inbound::mtls_mode(p.spec.mtls.as_ref()))
                }
                _ => None,
            })
            .filter(|m| *m != pc::PeerAuthMode::Unset)
            .unwrap_or(pc::PeerAuthMode::Permissive);
        Self {
            settings,
            by_namespace,
            mesh_mtls,
        }
    }

    fn inbound(&self, ns: &str) -> pc::InboundConfig {
        let settings = self.settings;
        let mut out = pc::InboundConfig::default();
        let root = settings.root_namespace.as_str();
        // Policies of the root namespace apply to every namespace, before the namespace's own.
        let scopes: Vec<&str> = if ns == root { vec![ns] } else { vec![root, ns] };
        for scope in scopes {
            for s in self.by_namespace.get(scope).into_iter().flatten() {
                let name = &s.object.name;
                match &s.resource {
                    MeshResource::PeerAuthentication(p) if scope == ns => {
                        out.peer_authentication
                            .push(inbound::peer_authentication(ns, name, &p.spec));
                    }
                    MeshResource::AuthorizationPolicy(p) => {
                        out.authorization.extend(inbound::authorization_policy(
                            scope,
                            name,
                            p.metadata.annotations.as_ref(),
                            &p.spec,
                            &settings.trust_domain,
                        ));
                    }
                    MeshResource::RequestAuthentication(p) => {
                        out.request_authentication
                            .extend(inbound::request_authentication(scope, name, &p.spec));
                    }
                    _ => {}
                }
            }
        }
        // Namespace-wide first, then by selector (stable within each group).
        out.peer_authentication
            .sort_by_key(|p| p.selector.is_some());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_follow_istio() {
        assert_eq!(port_protocol("http", None), pc::Protocol::Http);
        assert_eq!(port_protocol("http-web", None), pc::Protocol::Http);
        assert_eq!(port_protocol("HTTP2-x", None), pc::Protocol::Http2);
        assert_eq!(port_protocol("grpc-api", None), pc::Protocol::Grpc);
        assert_eq!(port_protocol("grpc-web", None), pc::Protocol::Http);
        assert_eq!(port_protocol("https", None), pc::Protocol::Https);
        assert_eq!(port_protocol("tls-x", None), pc::Protocol::Tls);
        assert_eq!(port_protocol("tcp", None), pc::Protocol::Tcp);
        assert_eq!(port_protocol("web", None), pc::Protocol::Unknown);
        assert_eq!(port_protocol("httpx", None), pc::Protocol::Unknown);
        assert_eq!(port_protocol("web", Some("grpc")), pc::Protocol::Grpc);
        assert_eq!(port_protocol("tcp", Some("http")), pc::Protocol::Http);
        assert_eq!(
            port_protocol("x", Some("kubernetes.io/h2c")),
            pc::Protocol::Http2
        );
        assert_eq!(entry_protocol(Some("UDP")), None);
        assert_eq!(entry_protocol(Some("mongo")), Some(pc::Protocol::Tcp));
    }
}
