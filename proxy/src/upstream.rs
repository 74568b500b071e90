//! Upstreams: one per (service, subset, port) the proxy sends to, holding its endpoints, its
//! balancer, its connection pools and the state that outlives a request (requests in flight per
//! endpoint, retry budget). Rebuilt when the config or the endpoints change, keeping the pools
//! and per-endpoint state of what stayed.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use http::{
    HeaderValue, Request, Response, StatusCode, Uri, Version,
    uri::{Authority, PathAndQuery, Scheme},
};
use mizzen_identity::{ExpectedPeer, SpiffeId};
use mizzen_proxy_config::Destination;
use mizzen_proxy_config::{ClientTls, ClientTlsMode, Protocol, TrafficDistribution, TrafficPolicy};
use mizzen_resilience::{
    ResponseFlags, UpstreamError,
    circuit::{CircuitBreakers, ClusterLimits, overflow_response},
    outlier::{Outcome, SharedOutlier},
    retry::TriedLevels,
};
use tokio::time::Instant;

use crate::{
    balance::{
        self, Balancer,
        locality::{self, Locality, Plan, Site},
        warmup::Ramp,
    },
    config::Snapshot,
    endpoints::{Endpoint, EndpointSource},
    http::{
        body::{self, Body, BoxError},
        client::{Dial, Hop, MeshHop, Peer, Pool, PoolSettings},
    },
    mtls::{MeshTls, origination::Originator},
    proxy_protocol::{self, Downstream},
    telemetry::{PeerLabels, ServiceLabels},
};

/// The label the injector puts on meshed pods; auto mTLS sends mTLS to endpoints that carry it.
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamKey {
    pub host: String,
    pub subset: Option<String>,
    pub port: u16,
}

/// An endpoint and what the proxy tracks about it.
#[derive(Debug)]
pub struct EndpointState {
    pub endpoint: Endpoint,
    /// `host:port`.
    pub name: String,
    /// The same, as the request URI's authority (`None`: not a valid one; requests to it fail
    /// as a connection failure would).
    pub authority: Option<Authority>,
    /// Requests in flight (LEAST_REQUEST).
    pub active: AtomicUsize,
    /// The `destination_*` labels of responses from this endpoint.
    pub peer: PeerLabels,
    /// The server identities a mesh mTLS hop to it accepts (secure naming).
    pub expected: ExpectedPeer,
    /// When this upstream first had it (for `warmup`); kept across updates.
    pub joined: Instant,
}

/// The identities the server of `endpoint` may present over mesh mTLS, as Istio's secure
/// naming decides (only SPIFFE ids can match a mesh certificate; other names match nothing):
/// the DestinationRule's `subjectAltNames` when set; else the endpoint's own identity (its
/// pod's service account, a WorkloadEntry's) and its ServiceEntry's `subjectAltNames`
/// (`service_sans`); else — a ServiceEntry address, an endpoint the agent knows no account
/// for, no names given — any workload of the trust domain.
pub fn expected_peer(
    tls: Option<&ClientTls>,
    service_sans: &[String],
    endpoint: &Endpoint,
) -> ExpectedPeer {
    let spiffe = |sans: &[String]| -> Vec<SpiffeId> {
        sans.iter()
            .filter_map(|s| SpiffeId::parse(s).ok())
            .collect()
    };
    let exactly = |mut ids: Vec<SpiffeId>| {
        ids.sort();
        ids.dedup();
        ExpectedPeer::OneOf(ids)
    };
    match tls.map(|t| t.subject_alt_names.as_slice()) {
        Some(sans) if !sans.is_empty() => exactly(spiffe(sans)),
        _ if service_sans.is_empty() => ExpectedPeer::one_of(endpoint.identity.clone()),
        _ => {
            let mut ids = spiffe(service_sans);
            ids.extend(endpoint.identity.clone());
            exactly(ids)
        }
    }
}

/// Where a response came from, for telemetry: the endpoint, and the server identity its mesh
/// connection presented (`destination_principal`).
#[derive(Clone, Debug)]
pub struct UpstreamHost {
    pub endpoint: Arc<EndpointState>,
    pub principal: Peer,
}

/// Where the upstream service tells a request's report which [`UpstreamHost`] answered (the
/// last try's, when it answered; cleared as each try starts). A slot shared by the two rather than an extension of the response: an
/// extension map costs three allocations per response.
#[derive(Debug, Default)]
pub struct Origin(Mutex<Option<UpstreamHost>>);

impl Origin {
    fn set(&self, host: UpstreamHost) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(host);
    }

    pub fn take(&self) -> Option<UpstreamHost> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Marks a request that must go over HTTP/1.1 (an upgrade), whatever the port's protocol.
#[derive(Clone, Copy, Debug)]
pub struct ForceHttp1;

/// The calling client's address, for source-IP hashing and a generated hash cookie (in the
/// request's extensions).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

pub struct Upstream {
    pub key: UpstreamKey,
    /// Envoy's cluster name: `outbound|<port>|<subset>|<host>`.
    pub cluster: String,
    /// The `destination_service*` labels of requests to it.
    pub service: ServiceLabels,
    pub endpoints: Vec<Arc<EndpointState>>,
    pub balancer: Balancer,
    /// How locality narrows the balancer's choice (`None`: it does not).
    locality: Option<Plan>,
    /// `warmup`'s ramp, and when the last endpoint to join finishes it.
    warmup: Option<(Ramp, Instant)>,
    /// The ServiceEntry's `subjectAltNames` the endpoints' expected identities were made with.
    sans: Vec<String>,
    pub policy: TrafficPolicy,
    pub protocol: Protocol,
    /// Circuit-breaking limits (`connectionPool`), shared by every route to this upstream.
    pub limits: Arc<ClusterLimits>,
    /// Ejections (`outlierDetection`), keyed by endpoint name.
    pub outlier: Option<SharedOutlier<String>>,
    pool: Arc<Pool>,
    /// This proxy's mesh mTLS, for endpoints that take it (see [`Upstream::mesh_hop`]).
    mesh_tls: Option<Arc<MeshTls>>,
    /// TLS origination (DestinationRule `SIMPLE` / `MUTUAL`), or why it cannot be made.
    originator: Option<Result<Arc<Originator>, String>>,
    generation: (u64, u64),
}

impl Upstream {
    /// Whether to speak HTTP/2 upstream: the way the caller spoke with `useClientProtocol`;
    /// else declared HTTP2/gRPC ports and `h2UpgradePolicy` always, undeclared ports the way
    /// the caller spoke.
    pub fn speaks_h2(&self, downstream: Version) -> bool {
        let pool = self.policy.connection_pool.as_ref();
        if pool.is_some_and(|p| p.use_client_protocol) {
            return downstream == Version::HTTP_2;
        }
        match self.protocol {
            Protocol::Http2 | Protocol::Grpc => true,
            Protocol::Http => self.pool.settings().h2,
            _ => self.pool.settings().h2 || downstream == Version::HTTP_2,
        }
    }

    /// A balanced endpoint (by `hash` when the balancer hashes) among those outlier detection
    /// has not ejected, in the locality the plan chooses (away from the levels in `tried` when
    /// the route retries to other localities, adding this one's); `None` when there is none.
    pub fn pick(&self, hash: Option<u64>, tried: Option<&TriedLevels>) -> Option<usize> {
        let eligible: Option<Vec<bool>> = self
            .outlier
            .as_ref()
            .map(|o| o.eligible(self.endpoints.iter().map(|e| &e.name)));
        let healthy = |i: usize| eligible.as_ref().is_none_or(|e| e[i]);
        let near = self.locality.as_ref().map(|plan| {
            let choice = plan.choose(
                healthy,
                rand::random::<u32>(),
                tried.map_or(0, TriedLevels::mask),
            );
            if let (Some(tried), Some(level)) = (tried, choice.and_then(|c| plan.level(c))) {
                tried.add(level);
            }
            (plan, choice)
        });
        let n = self.endpoints.len();
        let active = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
        let admit = |i| healthy(i) && near.is_none_or(|(plan, choice)| plan.admits(choice, i));
        if let Some((ramp, until)) = &self.warmup {
            let now = Instant::now();
            if now < *until {
                let age = |i: usize| now.saturating_duration_since(self.endpoints[i].joined);
                let scale = |i| ramp.factor(age(i));
                let random = rand::random::<u32>;
                return self
                    .balancer
                    .pick_scaled(n, hash, random, active, admit, scale);
            }
        }
        self.balancer
            .pick(n, hash, rand::random::<u32>, active, admit)
    }

    /// Tells outlier detection, when it is on, what a call to `ep` came to.
    pub fn record(&self, ep: &EndpointState, outcome: impl FnOnce() -> Outcome) {
        if let Some(o) = &self.outlier
            && let Some(t) = o.record(&ep.name, outcome())
        {
            tracing::info!(endpoint = %ep.name, cluster = %self.cluster, ejected_for = ?t, "endpoint ejected");
        }
    }

    /// How a new connection to an endpoint is made (`connectionPool.tcp.connectTimeout`,
    /// `tcpKeepalive`).
    pub fn dial(&self) -> Dial {
        self.pool.settings().dial
    }

    /// The TLS of the hop to `ep`: TLS origination for `SIMPLE` and `MUTUAL` (refused, never
    /// sent in plaintext, when its settings are unusable), else as [`Upstream::mesh_hop`].
    pub fn hop<'a>(&'a self, ep: &'a EndpointState) -> Result<Option<Hop<'a>>, UpstreamError> {
        match &self.originator {
            Some(Ok(tls)) => Ok(Some(Hop::Originate {
                tls,
                host: &self.key.host,
            })),
            Some(Err(why)) => Err(UpstreamError::connect_failure(format!(
                "{}: {why}",
                self.cluster
            ))),
            None => Ok(self.mesh_hop(ep)?.map(Hop::Mesh)),
        }
    }

    /// Whether the hop to `ep` is mesh mTLS, as Istio decides: the DestinationRule's
    /// `ISTIO_MUTUAL` always; unset (auto mTLS), when the endpoint runs a sidecar (the injected
    /// label `security.istio.io/tlsMode: istio`); `DISABLE` never. `SIMPLE` and `MUTUAL` are
    /// [`Upstream::hop`]'s (origination), and refused here rather than sent in plaintext.
    fn mesh_hop<'a>(&'a self, ep: &'a EndpointState) -> Result<Option<MeshHop<'a>>, UpstreamError> {
        let mode = self.policy.tls.as_ref().map(|t| t.mode).unwrap_or_default();
        let wanted = match mode {
            ClientTlsMode::IstioMutual => true,
            ClientTlsMode::Auto => {
                ep.endpoint.labels.get(TLS_MODE_LABEL).map(String::as_str) == Some("istio")
                    && self.mesh_tls.is_some()
            }
            ClientTlsMode::Disable => false,
            ClientTlsMode::Simple | ClientTlsMode::Mutual => {
                return Err(UpstreamError::connect_failure(format!(
                    "{}: TLS origination (DestinationRule tls.mode {mode:?}) is not supported",
                    self.cluster
                )));
            }
        };
        if !wanted {
            return Ok(None);
        }
        match self.mesh_tls.as_deref().filter(|t| t.ready()) {
            Some(tls) => Ok(Some(MeshHop {
                tls,
                host: &self.key.host,
                port: self.key.port,
                expected: &ep.expected,
            })),
            None => Err(UpstreamError::connect_failure(format!(
                "{}: mTLS required but this proxy has no workload certificate yet",
                self.cluster
            ))),
        }
    }
}

/// The upstreams of one host, told apart by subset and port (a handful at most).
type ByHost = HashMap<String, Vec<Arc<Upstream>>, foldhash::fast::RandomState>;

/// Every upstream in use, by host, then subset and port: looked up on every request without
/// building a key.
pub struct Upstreams {
    map: Mutex<ByHost>,
    place: Place,
    mesh_tls: Option<Arc<MeshTls>>,
    /// Single-address upstreams (original destinations, the app's ports), by address.
    passthrough: Mutex<HashMap<SocketAddr, Arc<Upstream>, foldhash::fast::RandomState>>,
    connect_timeout: Duration,
    breakers: CircuitBreakers,
    /// The config version the map was last pruned for.
    seen_version: std::sync::atomic::AtomicU64,
}

impl Upstreams {
    /// `mesh_tls`: this proxy's mTLS for hops to meshed endpoints (`None`: plaintext only, as
    /// towards the local app).
    pub fn new(connect_timeout: Duration, mesh_tls: Option<Arc<MeshTls>>) -> Self {
        Self {
            map: Mutex::new(HashMap::default()),
            place: Place::default(),
            mesh_tls,
            passthrough: Mutex::new(HashMap::default()),
            connect_timeout,
            breakers: CircuitBreakers::new(),
            seen_version: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Where this proxy runs, for locality load balancing.
    pub fn placed(self, place: Place) -> Self {
        Self { place, ..self }
    }

    /// The upstream for a destination under `snap`, built or refreshed as needed.
    pub fn get(
        &self,
        snap: &Snapshot,
        source: &dyn EndpointSource,
        host: &str,
        subset: Option<&str>,
        port: u16,
    ) -> Arc<Upstream> {
        let generation = (snap.version, source.generation());
        let old = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            // A new config: forget upstreams of services it no longer has.
            if self.seen_version.swap(snap.version, Ordering::Relaxed) != snap.version {
                let config = snap.config();
                map.retain(|host, _| config.service(host).is_some());
                self.breakers.retain(|d| {
                    config.service(&d.host).is_some()
                        || d.subset.is_none() && d.host.parse::<IpAddr>().is_ok()
                });
            }
            match find(&map, host, subset, port) {
                Some(up) if up.generation == generation => return up.clone(),
                other => other.cloned(),
            }
        };
        let key = UpstreamKey {
            host: host.to_string(),
            subset: subset.map(str::to_string),
            port,
        };
        let service = snap.config().service(host);
        let subset_def = subset.and_then(|s| service.and_then(|svc| svc.subset(s)));
        let labels = subset_def.map(|s| s.labels.clone()).unwrap_or_default();
        let policy = subset_def
            .and_then(|s| s.policy.as_ref())
            .or_else(|| service.and_then(|s| s.policy.as_ref()))
            .map(|p| p.for_port(port))
            .unwrap_or_default();
        let protocol = service
            .and_then(|s| s.port(port))
            .map(|p| p.protocol)
            .unwrap_or_default();
        let endpoints = source.endpoints(host, port, &labels);
        let labels = ServiceLabels::of(host, service.map_or("", |s| s.namespace.as_str()));
        let here = self
            .place
            .locality
            .clone()
            .or_else(|| source.locality())
            .unwrap_or_default();
        let up = Arc::new(
            self.build(
                key,
                endpoints,
                Settings {
                    policy,
                    protocol,
                    labels,
                    here,
                    node: source.node(),
                    distribution: service.and_then(|s| s.traffic_distribution),
                    sans: service
                        .map(|s| s.subject_alt_names.clone())
                        .unwrap_or_default(),
                },
                generation,
                old,
            ),
        );
        self.insert(up.clone());
        up
    }

    fn insert(&self, up: Arc<Upstream>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let ups = map.entry(up.key.host.clone()).or_default();
        ups.retain(|u| u.key != up.key);
        ups.push(up);
    }

    /// An upstream of one address: the original destination of a connection to a host the
    /// config does not know (ALLOW_ANY), or an explicit local target.
    pub fn passthrough(&self, addr: SocketAddr) -> Arc<Upstream> {
        if let Some(up) = self
            .passthrough
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
        {
            return up.clone();
        }
        let key = UpstreamKey {
            host: addr.ip().to_string(),
            subset: None,
            port: addr.port(),
        };
        let ep = Endpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            labels: BTreeMap::new(),
            weight: 1,
            identity: None,
            locality: Default::default(),
            node: None,
        };
        let mut up = self.build(
            key,
            vec![ep],
            Settings::plain(
                TrafficPolicy::default(),
                Protocol::Unknown,
                ServiceLabels::of(&addr.ip().to_string(), ""),
            ),
            (0, 0),
            None,
        );
        up.cluster = "PassthroughCluster".to_string();
        let up = Arc::new(up);
        self.passthrough
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, up.clone());
        up
    }

    fn build(
        &self,
        key: UpstreamKey,
        endpoints: Vec<Endpoint>,
        settings: Settings,
        generation: (u64, u64),
        old: Option<Arc<Upstream>>,
    ) -> Upstream {
        let Settings {
            policy,
            protocol,
            labels: service,
            here,
            node,
            distribution,
            sans,
        } = settings;
        let pool = policy.connection_pool.clone().unwrap_or_default();
        let settings = PoolSettings {
            dial: Dial {
                timeout: pool
                    .connect_timeout_ms
                    .map(Duration::from_millis)
                    .unwrap_or(self.connect_timeout),
                keepalive: pool.tcp_keepalive,
            },
            idle_timeout: pool
                .idle_timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(60)),
            h2: pool.h2_upgrade,
            max_requests: pool.max_requests_per_connection.filter(|n| *n > 0),
            max_age: pool
                .max_connection_duration_ms
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            max_streams: pool.max_concurrent_streams.filter(|n| *n > 0),
        };
        let now = Instant::now();
        let states: Vec<Arc<EndpointState>> = endpoints
            .into_iter()
            .map(|endpoint| {
                let name = endpoint.authority();
                let joined = old
                    .as_ref()
                    .and_then(|o| o.endpoints.iter().find(|e| e.name == name))
                    .map_or(now, |e| e.joined);
                // An endpoint's state holds its expected identities, which `tls` and the
                // service's names decide too.
                old.as_ref()
                    .filter(|o| o.policy.tls == policy.tls && o.sans == sans)
                    .and_then(|o| o.endpoints.iter().find(|e| e.endpoint == endpoint))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(EndpointState {
                            peer: PeerLabels::of_endpoint(&endpoint.labels, &service.namespace),
                            expected: expected_peer(policy.tls.as_ref(), &sans, &endpoint),
                            authority: name.parse().ok(),
                            endpoint,
                            name,
                            active: AtomicUsize::new(0),
                            joined,
                        })
                    })
            })
            .collect();
        let names: Vec<String> = states.iter().map(|s| s.name.clone()).collect();
        let weights: Vec<u32> = states.iter().map(|s| s.endpoint.weight).collect();
        let balancer = Balancer::new(policy.load_balancer.as_ref(), &names, &weights);
        let sites: Vec<(Site<'_>, u32)> = states
            .iter()
            .map(|s| {
                let site = Site {
                    locality: &s.endpoint.locality,
                    node: s.endpoint.node.as_deref(),
                    labels: &s.endpoint.labels,
                };
                (site, s.endpoint.weight)
            })
            .collect();
        let (setting, failover) = locality::setting(
            policy.locality_lb.as_ref(),
            distribution,
            policy.outlier_detection.is_some(),
        );
        let locality = locality::plan(
            setting.as_deref(),
            failover,
            Site {
                locality: &here,
                node: node.as_deref(),
                labels: &self.place.labels,
            },
            &sites,
        );
        drop(sites);
        // Connections made under another `tls` (another mode, other expected names, other
        // files) are not reused: a new pool.
        let same_tls = |o: &Upstream| o.policy.tls == policy.tls;
        let pool = match &old {
            Some(o) if o.pool.settings() == settings && same_tls(o) => o.pool.clone(),
            _ => Arc::new(Pool::new(settings)),
        };
        let originator = match policy.tls.as_ref() {
            Some(t) if matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) => {
                let reuse = old
                    .as_ref()
                    .filter(|o| same_tls(o))
                    .and_then(|o| o.originator.clone());
                Some(reuse.unwrap_or_else(|| {
                    Originator::new(t).map(Arc::new).map_err(|e| {
                        tracing::error!(host = %key.host, port = key.port, error = %e, "TLS origination refused");
                        e.to_string()
                    })
                }))
            }
            _ => None,
        };
        let limits = self.breakers.limits(
            &Destination {
                host: key.host.clone(),
                subset: key.subset.clone(),
                port: Some(key.port),
            },
            policy.connection_pool.as_ref(),
            policy.retry_budget.as_ref(),
        );
        let outlier = policy.outlier_detection.as_ref().map(|od| {
            let reuse = old.as_ref().and_then(|o| o.outlier.clone()).filter(|_| {
                old.as_ref().map(|o| &o.policy.outlier_detection) == Some(&policy.outlier_detection)
            });
            let detector = reuse.unwrap_or_else(|| SharedOutlier::new(od.clone()));
            detector.set_endpoints(names.iter().cloned());
            detector
        });
        // A ramp only while some endpoint is in it: no clock read per request afterwards.
        let warmup = policy.warmup.as_ref().and_then(Ramp::new).and_then(|ramp| {
            let last = states.iter().map(|s| s.joined).max()?;
            let until = last + ramp.window();
            (until > now).then_some((ramp, until))
        });
        let cluster = format!(
            "outbound|{}|{}|{}",
            key.port,
            key.subset.as_deref().unwrap_or(""),
            key.host
        );
        Upstream {
            key,
            cluster,
            service,
            endpoints: states,
            balancer,
            locality,
            warmup,
            sans,
            policy,
            protocol,
            limits,
            outlier,
            pool,
            mesh_tls: self.mesh_tls.clone(),
            originator,
            generation,
        }
    }
}

fn find<'m>(
    map: &'m ByHost,
    host: &str,
    subset: Option<&str>,
    port: u16,
) -> Option<&'m Arc<Upstream>> {
    map.get(host)?
        .iter()
        .find(|up| up.key.port == port && up.key.subset.as_deref() == subset)
}

/// The request's URI upstream: its path, and the authority the caller asked for (its URI's,
/// else its `Host`), as Envoy forwards it; the endpoint's address only when it named none.
fn upstream_uri(parts: &http::request::Parts, endpoint: &Authority) -> Result<Uri, BoxError> {
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| {
            let host = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            host.parse().ok()
        })
        .unwrap_or_else(|| endpoint.clone());
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = Some(
        parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    Ok(Uri::from_parts(uri)?)
}

/// What an upstream is built from besides its endpoints.
struct Settings {
    policy: TrafficPolicy,
    protocol: Protocol,
    labels: ServiceLabels,
    /// This proxy's locality and node.
    here: Locality,
    node: Option<String>,
    /// The Kubernetes Service's `trafficDistribution`.
    distribution: Option<TrafficDistribution>,
    /// The ServiceEntry's `subjectAltNames`.
    sans: Vec<String>,
}

impl Settings {
    /// An upstream with nothing but its policy, protocol and labels: no locality, no
    /// traffic distribution, no ServiceEntry names (a passthrough destination's).
    fn plain(policy: TrafficPolicy, protocol: Protocol, labels: ServiceLabels) -> Self {
        Self {
            policy,
            protocol,
            labels,
            here: Locality::default(),
            node: None,
            distribution: None,
            sans: Vec::new(),
        }
    }
}

/// Where this proxy runs: its locality (when set here, rather than learnt from the node
/// agent) and its labels (`failoverPriority`).
#[derive(Clone, Debug, Default)]
pub struct Place {
    pub locality: Option<Locality>,
    pub labels: BTreeMap<String, String>,
}

/// The bottom of the request stack: picks an endpoint and sends the request to it.
#[derive(Clone)]
pub struct UpstreamService {
    pub upstream: Arc<Upstream>,
    /// Told where each response came from (`None`: nobody reports it, as for mirrors).
    pub origin: Option<Arc<Origin>>,
}

impl UpstreamService {
    /// Sends to `upstream`, telling `origin` where each response came from.
    pub fn new(upstream: Arc<Upstream>, origin: Option<Arc<Origin>>) -> Self {
        Self { upstream, origin }
    }
}

/// Decrements an endpoint's in-flight count when the call ends, however it ends.
struct InFlight(Arc<EndpointState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> tower::Service<Request<B>> for UpstreamService
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Everything up to the first wait is done here, so the future holds only what the
        // send needs (not the request twice, as parts and whole).
        let up = self.upstream.clone();
        // A new try: an earlier try's endpoint is not where this one's answer comes from (a
        // try that fails reports no upstream host, as when the endpoint rode on the response).
        if let Some(origin) = &self.origin {
            origin.take();
        }
        let (hash, set_cookie) = up
            .balancer
            .hash_key()
            .and_then(|key| {
                let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
                balance::request_hash(key, req.headers(), req.uri().query(), client)
            })
            .map_or((None, None), |(hash, set_cookie)| (Some(hash), set_cookie));
        let Some(i) = up.pick(hash, req.extensions().get::<TriedLevels>()) else {
            return Box::pin(std::future::ready(Ok(
                mizzen_resilience::reply::local_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy upstream",
                    ResponseFlags::UH,
                ),
            )));
        };
        let ep = up.endpoints[i].clone();
        let h2 = req.extensions().get::<ForceHttp1>().is_none() && up.speaks_h2(req.version());
        let Some(endpoint) = ep.authority.clone() else {
            let error = UpstreamError::connect_failure(format!(
                "endpoint {} is not a valid address",
                ep.name
            ));
            return Box::pin(std::future::ready(Err(error.into())));
        };
        let (mut parts, body) = req.into_parts();
        if h2 {
            parts.uri = match upstream_uri(&parts, &endpoint) {
                Ok(uri) => uri,
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            };
            parts.version = Version::HTTP_2;
        } else {
            // The pool puts it in origin form, with `Host` (else the endpoint's address).
            parts.version = Version::HTTP_11;
        }
        // A request without a body (most) goes with the empty body, which costs no box.
        let body = if body.is_end_stream() {
            body::empty()
        } else {
            body::boxed(body)
        };
        // The caller's connection, when the destination takes a PROXY protocol header; a
        // request that did not come with one (a mirror's copy) is announced as unknown.
        let proxy_header = up.policy.proxy_protocol.map(|version| {
            proxy_protocol::header(version, parts.extensions.get::<Downstream>().copied())
        });
        let req = Request::from_parts(parts, body);
        ep.active.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(ep);
        let wire = Wire {
            endpoint,
            h2,
            proxy_header,
        };
        Box::pin(send(up, self.origin.clone(), guard, wire, req, set_cookie))
    }
}

/// How a balanced request goes out: to which endpoint, over which HTTP version, and with which
/// PROXY protocol header first on a new connection.
struct Wire {
    endpoint: Authority,
    h2: bool,
    proxy_header: Option<Arc<[u8]>>,
}

/// Sends a request to the endpoint it was balanced to (in flight under `guard`), feeds the
/// outcome to outlier detection, tells `origin` where the response came from, and sets the
/// hash cookie made for the request, if any.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn holds its arguments twice (see `outbound::respond`)"
)]
fn send(
    up: Arc<Upstream>,
    origin: Option<Arc<Origin>>,
    guard: InFlight,
    wire: Wire,
    req: Request<Body>,
    set_cookie: Option<HeaderValue>,
) -> impl Future<Output = Result<Response<Body>, BoxError>> + Send + 'static {
    // An `async` block rather than an `async fn`: that would hold its arguments twice.
    async move {
        let Wire {
            endpoint,
            h2,
            proxy_header,
        } = wire;
        let ep = &guard.0;
        // HTTP/1.1 carries one request per connection at a time: `maxConnections` bounds them,
        // waiting requests count as pending and overflow is shed with 503 UO.
        let _connection = if h2 {
            None
        } else {
            match up.limits.acquire_connection().await {
                Ok(permit) => Some(permit),
                Err(_) => return Ok(overflow_response()),
            }
        };
        let hop = up.hop(ep)?;
        let result = up.pool.send(&endpoint, h2, hop, proxy_header, req).await;
        up.record(ep, || match &result {
            Ok((r, _)) => Outcome::of_response(r),
            Err(e) => Outcome::of_error(e.as_ref()),
        });
        let (mut resp, principal) = result?;
        // The upstream's hop-by-hop headers (`Connection: keep-alive`, `Keep-Alive`, ...)
        // describe its connection to this proxy, not the caller's (Envoy drops them too);
        // a protocol switch keeps its `Connection: upgrade`.
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            crate::http::headers::strip_hop_by_hop(resp.headers_mut());
        }
        if let Some(cookie) = set_cookie {
            resp.headers_mut().append(http::header::SET_COOKIE, cookie);
        }
        if let Some(origin) = origin {
            origin.set(UpstreamHost {
                endpoint: guard.0.clone(),
                principal,
            });
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(identity: Option<&str>) -> Endpoint {
        Endpoint {
            host: "10.0.0.1".into(),
            port: 8080,
            labels: BTreeMap::new(),
            weight: 1,
            identity: identity.map(|id| SpiffeId::parse(id).unwrap()),
            locality: Default::default(),
            node: None,
        }
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// A try that fails reports no upstream host, even after an earlier try of the same
    /// request answered (a 503 retried into a refused connection): each try clears the slot
    /// its endpoint is reported through.
    /// The DestinationRule's connection settings reach the pool that dials the endpoints.
    #[test]
    fn connection_pool_settings_reach_the_pool() {
        let upstreams = Upstreams::new(Duration::from_secs(10), None);
        let keepalive = mizzen_proxy_config::TcpKeepalive {
            probes: Some(3),
            time_ms: Some(300_000),
            interval_ms: None,
        };
        let build = |pool: mizzen_proxy_config::ConnectionPool| {
            upstreams.build(
                UpstreamKey {
                    host: "a".into(),
                    subset: None,
                    port: 80,
                },
                vec![endpoint(None)],
                Settings::plain(
                    TrafficPolicy {
                        connection_pool: Some(pool),
                        ..Default::default()
                    },
                    Protocol::Http,
                    ServiceLabels::of("a", "default"),
                ),
                (0, 0),
                None,
            )
        };
        let up = build(mizzen_proxy_config::ConnectionPool {
            connect_timeout_ms: Some(250),
            tcp_keepalive: Some(keepalive),
            max_connection_duration_ms: Some(60_000),
            max_concurrent_streams: Some(100),
            use_client_protocol: true,
            ..Default::default()
        });
        assert_eq!(up.pool.settings().max_streams, Some(100));
        assert!(up.speaks_h2(Version::HTTP_2) && !up.speaks_h2(Version::HTTP_11));
        assert_eq!(
            up.dial(),
            Dial {
                timeout: Duration::from_millis(250),
                keepalive: Some(keepalive),
            }
        );
        assert_eq!(up.pool.settings().max_age, Some(Duration::from_secs(60)));
        // Unset: the proxy's connect timeout, no keepalive, no maximum age.
        let up = build(mizzen_proxy_config::ConnectionPool::default());
        assert_eq!(up.dial(), Dial::new(Duration::from_secs(10)));
        assert_eq!(up.pool.settings().max_age, None);
        assert_eq!(up.pool.settings().max_streams, None);
    }

    #[tokio::test]
    async fn a_failed_try_clears_the_endpoint_an_earlier_try_reported() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tower::Service;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = [0; 1024];
            let _ = conn.read(&mut head).await.unwrap();
            conn.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await
                .unwrap();
            // The listener closes with this task: the next try is refused.
        });
        let upstreams = Upstreams::new(Duration::from_secs(1), None);
        let origin = Arc::new(Origin::default());
        let mut service = UpstreamService::new(upstreams.passthrough(addr), Some(origin.clone()));
        let request = || Request::get("/").body(body::empty()).unwrap();

        let first = service.call(request()).await.unwrap();
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
        server.await.unwrap();
        let reported = origin
            .0
            .lock()
            .unwrap()
            .as_ref()
            .map(|h| h.endpoint.name.clone());
        assert_eq!(reported, Some(addr.to_string()));

        let second = service.call(request()).await;
        assert!(second.is_err(), "the retry's connection is refused");
        assert!(
            origin.take().is_none(),
            "the failed try reports no upstream host"
        );
    }

    #[test]
    fn secure_naming_prefers_subject_alt_names_then_the_endpoint_identity() {
        const B: &str = "spiffe://cluster.local/ns/shop/sa/b";
        const C: &str = "spiffe://cluster.local/ns/shop/sa/c";
        // Unknown identity, no DestinationRule names: any workload of the trust domain.
        assert_eq!(expected_peer(None, &[], &endpoint(None)), ExpectedPeer::Any);
        // The endpoint's own identity.
        assert_eq!(
            expected_peer(None, &[], &endpoint(Some(B))),
            ExpectedPeer::OneOf(vec![id(B)])
        );
        // subjectAltNames win; names that are not SPIFFE ids cannot match a mesh certificate.
        let tls = ClientTls {
            mode: ClientTlsMode::IstioMutual,
            subject_alt_names: vec![C.into(), "api.example.com".into(), C.into()],
            ..Default::default()
        };
        assert_eq!(
            expected_peer(Some(&tls), &[], &endpoint(Some(B))),
            ExpectedPeer::OneOf(vec![id(C)])
        );
        let only_dns = ClientTls {
            subject_alt_names: vec!["api.example.com".into()],
            ..tls.clone()
        };
        assert_eq!(
            expected_peer(Some(&only_dns), &[], &endpoint(None)),
            ExpectedPeer::OneOf(Vec::new())
        );
        // An empty list is no list.
        let empty = ClientTls::default();
        assert_eq!(
            expected_peer(Some(&empty), &[], &endpoint(None)),
            ExpectedPeer::Any
        );
        // A ServiceEntry's names join the endpoint's own, and bound an endpoint of unknown
        // identity; the DestinationRule's still replace them.
        let entry = [C.to_string(), "vm.example.com".to_string()];
        assert_eq!(
            expected_peer(None, &entry, &endpoint(Some(B))),
            ExpectedPeer::OneOf(vec![id(B), id(C)])
        );
        assert_eq!(
            expected_peer(Some(&empty), &entry, &endpoint(None)),
            ExpectedPeer::OneOf(vec![id(C)])
        );
        let dns_only = ["vm.example.com".to_string()];
        assert_eq!(
            expected_peer(None, &dns_only, &endpoint(None)),
            ExpectedPeer::OneOf(Vec::new())
        );
        assert_eq!(
            expected_peer(Some(&tls), &entry, &endpoint(None)),
            ExpectedPeer::OneOf(vec![id(C)])
        );
    }
}
