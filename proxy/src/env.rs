//! The proxy's own settings, parsed once at start: listeners and timeouts from the command line,
//! the workload's identity from the environment the sidecar runs in. Nothing else in the crate
//! reads environment variables; tests build a [`Config`] directly or fake [`Strings`].

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

/// Where the values of the workload's identity come from.
pub trait Strings {
    fn get(&self, key: &str) -> Option<String>;
}

/// Reads the process environment.
pub struct Env;

impl Strings for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Strings for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
}

pub const ENV_POD_NAME: &str = "POD_NAME";
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const ENV_SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";

/// Who this proxy speaks for: the labels of Istio's metrics and the source of route matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub pod_name: String,
    pub namespace: String,
    pub service_account: String,
    /// The Deployment (or other owner) name; derived from the pod name when not given.
    pub name: String,
    pub app: String,
    pub version: String,
    /// Labels route matches test (`sourceLabels`): `app` and `version` at least.
    pub labels: BTreeMap<String, String>,
    /// Where the workload runs, when the command line says (otherwise the node agent tells).
    pub locality: Option<crate::balance::locality::Locality>,
}

/// What the command line may say about the workload (local mode has no pod).
#[derive(Clone, Debug, Default)]
pub struct WorkloadFlags {
    pub name: Option<String>,
    pub app: Option<String>,
    pub version: Option<String>,
    pub namespace: Option<String>,
    /// `region/zone/subzone`.
    pub locality: Option<String>,
}

impl Workload {
    /// This workload's SPIFFE identity in `trust_domain` (its namespace and service account;
    /// `default` when the pod names none, as Kubernetes does).
    pub fn spiffe_id(
        &self,
        trust_domain: &str,
    ) -> Result<mizzen_identity::SpiffeId, mizzen_identity::spiffe::SpiffeIdError> {
        let sa = if self.service_account.is_empty() {
            "default"
        } else {
            &self.service_account
        };
        mizzen_identity::SpiffeId::parse(&format!(
            "spiffe://{trust_domain}/ns/{}/sa/{sa}",
            self.namespace
        ))
    }

    pub fn from_strings(strings: &impl Strings, flags: &WorkloadFlags) -> Self {
        let pod_name = strings.get(ENV_POD_NAME).unwrap_or_default();
        let namespace = flags
            .namespace
            .clone()
            .or_else(|| strings.get(ENV_POD_NAMESPACE))
            .unwrap_or_else(|| "default".to_string());
        let service_account = strings
            .get(ENV_SERVICE_ACCOUNT)
            .unwrap_or_else(|| "default".to_string());
        let name = flags
            .name
            .clone()
            .unwrap_or_else(|| workload_of_pod(&pod_name));
        let app = flags.app.clone().unwrap_or_else(|| name.clone());
        let version = flags.version.clone().unwrap_or_default();
        let mut labels = BTreeMap::new();
        if !app.is_empty() {
            labels.insert("app".to_string(), app.clone());
        }
        if !version.is_empty() {
            labels.insert("version".to_string(), version.clone());
        }
        Self {
            pod_name,
            namespace,
            service_account,
            name,
            app,
            version,
            labels,
            locality: flags
                .locality
                .as_deref()
                .map(crate::balance::locality::Locality::parse)
                .filter(|l| !l.is_empty()),
        }
    }

    /// A gateway pod's workload: its labels (from the downward API) are the ones route matches
    /// and Gateway selectors test, and give `app` and `version` unless the flags do.
    pub fn for_gateway(
        strings: &impl Strings,
        flags: &WorkloadFlags,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let flags = WorkloadFlags {
            app: flags.app.clone().or_else(|| labels.get("app").cloned()),
            version: flags
                .version
                .clone()
                .or_else(|| labels.get("version").cloned()),
            ..flags.clone()
        };
        let mut w = Self::from_strings(strings, &flags);
        w.labels
            .extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        w
    }

    /// The SPIFFE identity this workload would present.
    pub fn principal(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

/// `reviews-v1-5d8f7c9b4-x2x9z` → `reviews-v1`: a Deployment's pods carry the ReplicaSet hash
/// and a random suffix.
fn workload_of_pod(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() > 2 {
        parts[..parts.len() - 2].join("-")
    } else {
        pod.to_string()
    }
}

/// An explicit outbound listener (local mode): connections here are addressed to `host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundListener {
    pub listen: SocketAddr,
    pub host: String,
    pub port: u16,
}

/// An explicit inbound listener (local mode): connections here go to the app at `app`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundListener {
    pub listen: SocketAddr,
    pub app: SocketAddr,
}

/// Everything the proxy needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The rendered config file (`config.json` in the mounted ConfigMap).
    pub config_path: PathBuf,
    /// 15001 in a pod; `None` in local mode.
    pub outbound_capture: Option<SocketAddr>,
    /// 15006 in a pod; `None` in local mode.
    pub inbound_capture: Option<SocketAddr>,
    pub outbound: Vec<OutboundListener>,
    pub inbound: Vec<InboundListener>,
    pub admin: Option<SocketAddr>,
    pub health: Option<SocketAddr>,
    pub prometheus: Option<SocketAddr>,
    pub drain: Duration,
    /// A client that has not sent a whole request head this long after its first byte is
    /// disconnected (slowloris).
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle this long is closed (Envoy's default: 1 h).
    pub idle_timeout: Duration,
    /// Request heads larger than this get 431.
    pub max_header_bytes: usize,
    /// Fallback re-read of the config file, besides change notifications.
    pub poll_interval: Duration,
    /// Connect timeout when the DestinationRule sets none (Istio: 10 s).
    pub connect_timeout: Duration,
    pub workload: Workload,
    /// Write one JSON access log line per request on stdout.
    pub access_log: bool,
    /// Mesh mTLS: inbound connections per PeerAuthentication, outbound to meshed endpoints.
    /// Set from files (local mode, benchmarks); otherwise made from the node agent's
    /// certificates when `agent` is set.
    pub tls: Option<std::sync::Arc<crate::mtls::MeshTls>>,
    /// The node agent: this workload's certificate and the endpoints of services.
    pub agent: Option<AgentSettings>,
    /// Gateway mode: serve the config's Gateway servers that select this pod.
    pub gateway: Option<GatewaySettings>,
}

/// What gateway mode needs besides a sidecar's settings.
#[derive(Clone, Debug)]
pub struct GatewaySettings {
    /// The pod's labels: a Gateway server is served when its selector is a subset of them.
    pub labels: BTreeMap<String, String>,
    /// Where the credentials syncer writes each TLS Secret: `<dir>/<credentialName>/tls.crt`,
    /// `tls.key`, `ca.crt`.
    pub credentials_dir: PathBuf,
    /// The address the server ports are bound on.
    pub bind: IpAddr,
    /// Server ports listened on elsewhere than `bind:port` (tests, local mode; port 0 takes
    /// a free port, see `Bound::gateway`).
    pub port_map: BTreeMap<u16, SocketAddr>,
}

impl GatewaySettings {
    /// Where the server port `port` is listened on.
    pub fn listen_addr(&self, port: u16) -> SocketAddr {
        self.port_map
            .get(&port)
            .copied()
            .unwrap_or(SocketAddr::new(self.bind, port))
    }
}

/// One `--port-map PORT=LISTEN_ADDR` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub port: u16,
    pub listen: SocketAddr,
}

/// One `--label KEY=VALUE` flag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelFlag {
    pub key: String,
    pub value: String,
}

/// Parses the downward API's labels file: one `key="value"` per line, the value quoted with
/// Go's escapes (`\"`, `\\`, `\n`, `\t`). Blank lines are skipped.
pub fn parse_labels_file(text: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || ParseError::LabelsLine(i + 1, line.to_string());
        let (key, quoted) = line.split_once('=').ok_or_else(bad)?;
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .ok_or_else(bad)?;
        let mut value = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                value.push(c);
                continue;
            }
            value.push(match chars.next().ok_or_else(bad)? {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
        }
        labels.insert(key.trim().to_string(), value);
    }
    Ok(labels)
}

/// Where the node agent is and how the proxy proves who it is.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// The agent's Unix socket (`MIZZEN_AGENT_SOCKET`).
    pub socket: PathBuf,
    /// The projected service-account token, audience `mizzen-ca` (`MIZZEN_TOKEN`).
    pub token_file: PathBuf,
}

impl Config {
    /// Defaults of a sidecar in a pod.
    pub fn sidecar(config_path: PathBuf, workload: Workload) -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Self {
            config_path,
            outbound_capture: Some(any(15001)),
            inbound_capture: Some(any(15006)),
            outbound: Vec::new(),
            inbound: Vec::new(),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 15000))),
            health: Some(any(15021)),
            prometheus: Some(any(15090)),
            drain: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
            max_header_bytes: 60 * 1024,
            poll_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            workload,
            access_log: true,
            tls: None,
            agent: None,
            gateway: None,
        }
    }

    /// Defaults of an ingress gateway in a pod: no capture ports and no sidecar listeners;
    /// the server ports come from the config's `gateway` section.
    pub fn gateway(config_path: PathBuf, workload: Workload, settings: GatewaySettings) -> Self {
        Self {
            outbound_capture: None,
            inbound_capture: None,
            gateway: Some(settings),
            ..Self::sidecar(config_path, workload)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error(
        "{0:?} is not LISTEN_ADDR=HOST:PORT (e.g. 127.0.0.1:18080=reviews.default.svc.cluster.local:9080)"
    )]
    Outbound(String),
    #[error("{0:?} is not LISTEN_ADDR=APP_ADDR (e.g. 127.0.0.1:19080=127.0.0.1:9080)")]
    Inbound(String),
    #[error("{0:?} is not PORT=LISTEN_ADDR (e.g. 80=127.0.0.1:0)")]
    PortMapping(String),
    #[error("{0:?} is not KEY=VALUE (e.g. istio=ingressgateway)")]
    Label(String),
    #[error("labels file, line {0}: {1:?} is not key=\"value\"")]
    LabelsLine(usize, String),
}

impl std::str::FromStr for PortMapping {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::PortMapping(s.to_string());
        let (port, listen) = s.split_once('=').ok_or_else(bad)?;
        Ok(Self {
            port: port.parse().map_err(|_| bad())?,
            listen: listen.parse().map_err(|_| bad())?,
        })
    }
}

impl std::str::FromStr for LabelFlag {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok(Self {
                key: k.to_string(),
                value: v.to_string(),
            }),
            _ => Err(ParseError::Label(s.to_string())),
        }
    }
}

impl std::str::FromStr for OutboundListener {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::Outbound(s.to_string());
        let (listen, target) = s.split_once('=').ok_or_else(bad)?;
        let (host, port) = target.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            listen: listen.parse().map_err(|_| bad())?,
            host: host.to_string(),
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

impl std::str::FromStr for InboundListener {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseError::Inbound(s.to_string());
        let (listen, app) = s.split_once('=').ok_or_else(bad)?;
        Ok(Self {
            listen: listen.parse().map_err(|_| bad())?,
            app: app.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_comes_from_env_and_flags() {
        let env: BTreeMap<String, String> = [
            (ENV_POD_NAME, "reviews-v2-5d8f7c9b4-x2x9z"),
            (ENV_POD_NAMESPACE, "shop"),
            (ENV_SERVICE_ACCOUNT, "reviews"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let w = Workload::from_strings(
            &env,
            &WorkloadFlags {
                app: Some("reviews".into()),
                version: Some("v2".into()),
                ..Default::default()
            },
        );
        assert_eq!(w.name, "reviews-v2");
        assert_eq!(w.namespace, "shop");
        assert_eq!(w.app, "reviews");
        assert_eq!(w.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(
            w.principal("cluster.local"),
            "spiffe://cluster.local/ns/shop/sa/reviews"
        );
        let local = Workload::from_strings(&BTreeMap::new(), &WorkloadFlags::default());
        assert_eq!(local.namespace, "default");
    }

    #[test]
    fn parses_explicit_listeners() {
        let o: OutboundListener = "127.0.0.1:18080=serviceb.default.svc.cluster.local:8080"
            .parse()
            .unwrap();
        assert_eq!(o.host, "serviceb.default.svc.cluster.local");
        assert_eq!(o.port, 8080);
        assert!("127.0.0.1:1=:80".parse::<OutboundListener>().is_err());
        let i: InboundListener = "127.0.0.1:19080=127.0.0.1:9080".parse().unwrap();
        assert_eq!(i.app.port(), 9080);
        assert!("nonsense".parse::<InboundListener>().is_err());
        let m: PortMapping = "443=127.0.0.1:0".parse().unwrap();
        assert_eq!((m.port, m.listen.port()), (443, 0));
        assert!("x=127.0.0.1:0".parse::<PortMapping>().is_err());
        let l: LabelFlag = "istio=ingressgateway".parse().unwrap();
        assert_eq!(
            (l.key.as_str(), l.value.as_str()),
            ("istio", "ingressgateway")
        );
        assert!("=x".parse::<LabelFlag>().is_err());
    }

    #[test]
    fn reads_the_downward_api_labels_file_and_gateway_workload() {
        let text = concat!(
            "app=\"istio-ingressgateway\"\n",
            "istio=\"ingressgateway\"\n\n",
            "note=\"a \\\"b\\\" \\\\ c\"\n",
        );
        let labels = parse_labels_file(text).unwrap();
        assert_eq!(labels["istio"], "ingressgateway");
        assert_eq!(labels["note"], "a \"b\" \\ c");
        let err = parse_labels_file("ok=\"1\"\nbroken").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let w = Workload::for_gateway(&BTreeMap::new(), &WorkloadFlags::default(), &labels);
        assert_eq!(w.app, "istio-ingressgateway");
        assert_eq!(w.labels["istio"], "ingressgateway");
    }
}
