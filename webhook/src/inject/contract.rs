//! Every name, port, path and flag that injection writes into a pod and that the proxy
//! (`mizzen-proxy init`, `mizzen-proxy sidecar`, `mizzen-proxy wait-ready`), the node agent or
//! the operator read back. This module is the contract between them; `docs/injection.md` lists
//! the same values. Change one here only together with its reader.

/// The iptables init container.
pub const INIT_CONTAINER: &str = "mizzen-init";
/// The proxy container (a native sidecar in `initContainers`, or the first regular container).
pub const PROXY_CONTAINER: &str = "mizzen-proxy";

/// First argument of the init container: install the traffic redirection and exit.
pub const INIT_SUBCOMMAND: &str = "init";
/// First argument of the proxy container: run as a pod's sidecar.
pub const SIDECAR_SUBCOMMAND: &str = "sidecar";
/// The proxy binary, on the image's `PATH` (it is also the image's entrypoint).
pub const PROXY_BINARY: &str = "mizzen-proxy";
/// Subcommand of the postStart hook that blocks until the proxy is ready (legacy sidecar mode).
pub const WAIT_READY_SUBCOMMAND: &str = "wait-ready";

/// The proxy's user and group; iptables lets this UID's traffic bypass the redirection.
pub const PROXY_UID: i64 = 1337;
/// Where iptables sends inbound traffic.
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// Where iptables sends outbound traffic.
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// The proxy serves rewritten application probes here, under [`APP_HEALTH_PREFIX`].
pub const APP_PROBE_PORT: u16 = 15020;
/// The proxy's own readiness (`/healthz/ready`).
pub const HEALTH_PORT: u16 = 15021;
/// Prometheus metrics (`/stats/prometheus`).
pub const PROMETHEUS_PORT: u16 = 15090;
/// Inbound ports never redirected: the proxy's own.
pub const PROXY_INBOUND_PORTS: [u16; 3] = [APP_PROBE_PORT, HEALTH_PORT, PROMETHEUS_PORT];
/// Path of the proxy's readiness endpoint on [`HEALTH_PORT`].
pub const HEALTH_PATH: &str = "/healthz/ready";
/// Container port names of the proxy.
pub const PROMETHEUS_PORT_NAME: &str = "http-envoy-prom";
pub const HEALTH_PORT_NAME: &str = "health";
/// Rewritten probes go to `/app-health/<container>/<livez|readyz|startupz>`.
pub const APP_HEALTH_PREFIX: &str = "/app-health";

/// Flags of `mizzen-proxy init`, in the order they are written. Every flag is always passed;
/// an empty value means "none".
pub mod init_flags {
    pub const PROXY_UID: &str = "--proxy-uid";
    pub const INBOUND_CAPTURE_PORT: &str = "--inbound-capture-port";
    pub const OUTBOUND_CAPTURE_PORT: &str = "--outbound-capture-port";
    pub const INCLUDE_INBOUND_PORTS: &str = "--include-inbound-ports";
    pub const EXCLUDE_INBOUND_PORTS: &str = "--exclude-inbound-ports";
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "--include-outbound-ip-ranges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "--exclude-outbound-ip-ranges";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "--include-outbound-ports";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "--exclude-outbound-ports";
}

/// Environment of the proxy container.
pub mod env {
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
    pub const NODE_NAME: &str = "NODE_NAME";
    pub const POD_IP: &str = "POD_IP";
    pub const HOST_IP: &str = "HOST_IP";
    /// Path of the rendered proxy config (from the `mizzen-proxy-config` ConfigMap).
    pub const CONFIG: &str = "MIZZEN_CONFIG";
    /// Path of the node agent's Unix socket.
    pub const AGENT_SOCKET: &str = "MIZZEN_AGENT_SOCKET";
    /// Path of the projected service-account token (audience [`super::TOKEN_AUDIENCE`]).
    pub const TOKEN: &str = "MIZZEN_TOKEN";
    /// JSON object: rewritten probe path → the original probe. Absent when nothing was rewritten.
    pub const APP_PROBES: &str = "MIZZEN_APP_PROBES";
    /// The pod's `proxy.istio.io/config` annotation, verbatim. Absent when the pod has none.
    pub const PROXY_CONFIG: &str = "MIZZEN_PROXY_CONFIG";
    /// The pod's locality (`region/zone/subzone`) from its `istio-locality` label, which
    /// overrides its node's. Absent when the pod has no such label.
    pub const LOCALITY: &str = "MIZZEN_LOCALITY";
}

/// Istio's pod label that overrides the locality of the pod's node (`region.zone.subzone`).
pub const LOCALITY_LABEL: &str = "istio-locality";

/// Volumes added to the pod, and where the proxy mounts them.
pub const CONFIG_VOLUME: &str = "mizzen-config";
pub const CONFIG_CONFIGMAP: &str = "mizzen-proxy-config";
pub const CONFIG_DIR: &str = "/etc/mizzen/config";
pub const CONFIG_FILE: &str = "/etc/mizzen/config/config.json";

pub const CA_ROOT_VOLUME: &str = "mizzen-ca-root";
pub const CA_ROOT_CONFIGMAP: &str = "mizzen-ca-root-cert";
pub const CA_ROOT_DIR: &str = "/etc/mizzen/ca";

pub const AGENT_VOLUME: &str = "mizzen-agent";
pub const AGENT_DIR: &str = "/var/run/mizzen";
pub const AGENT_SOCKET: &str = "/var/run/mizzen/agent.sock";

pub const TOKEN_VOLUME: &str = "mizzen-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/tokens";
pub const TOKEN_FILE_NAME: &str = "mizzen-token";
pub const TOKEN_FILE: &str = "/var/run/secrets/tokens/mizzen-token";
/// The audience the node agent requires of the token.
pub const TOKEN_AUDIENCE: &str = "mizzen-ca";
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// The proxy's writable scratch space (its root filesystem is read-only).
pub const TMP_VOLUME: &str = "mizzen-tmp";
pub const TMP_DIR: &str = "/tmp";

/// Every volume injection adds, in the order they are added.
pub const VOLUMES: [&str; 5] = [
    CONFIG_VOLUME,
    CA_ROOT_VOLUME,
    AGENT_VOLUME,
    TOKEN_VOLUME,
    TMP_VOLUME,
];

/// Revision recorded in the status annotation (Istio's `istio.io/rev` default).
pub const DEFAULT_REVISION: &str = "default";

/// Labels and annotations read or written (Istio's names, so existing tooling works).
pub mod keys {
    /// `"false"` on the pod's labels or annotations opts the pod out.
    pub const INJECT: &str = "sidecar.istio.io/inject";
    /// JSON record of what was injected; its presence makes injection a no-op.
    pub const STATUS: &str = "sidecar.istio.io/status";
    /// `"false"` keeps the application's probes as they are.
    pub const REWRITE_PROBES: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
    pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
    pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
    pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
    pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
    pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
    pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
    pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
    pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
    pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
    pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
    pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
    /// Which container `kubectl logs` and `kubectl exec` pick when none is named.
    pub const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";
    /// Added by injection: the pod accepts Istio mutual TLS.
    pub const TLS_MODE: &str = "security.istio.io/tlsMode";
    pub const TLS_MODE_ISTIO: &str = "istio";
    pub const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
    pub const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
    pub const APP_NAME: &str = "app.kubernetes.io/name";
    pub const APP: &str = "app";
    pub const APP_VERSION: &str = "app.kubernetes.io/version";
    pub const VERSION: &str = "version";
}
