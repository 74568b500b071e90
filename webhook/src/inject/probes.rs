//! Rewrites the kubelet's HTTP, gRPC and TCP probes of application containers to the proxy's
//! probe port, so they keep working when inbound traffic must be mutual TLS: the kubelet asks the
//! proxy (`httpGet` on [`APP_PROBE_PORT`] at `/app-health/<container>/<kind>`), and the proxy
//! runs the original probe against the application over the loopback interface. The originals
//! travel to the proxy in `MIZZEN_APP_PROBES`. `exec` probes run inside the container and are
//! left alone, as is any probe whose named port the container does not declare.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::contract::{APP_HEALTH_PREFIX, APP_PROBE_PORT};

/// The probe fields of a container and the path segment each is served under.
const PROBES: [(&str, &str); 3] = [
    ("livenessProbe", "livez"),
    ("readinessProbe", "readyz"),
    ("startupProbe", "startupz"),
];

/// An original probe, as the proxy runs it. Ports are numbers: named ports are resolved here,
/// where the container's port list is known.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppProbe {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc: Option<Grpc>,
    /// Seconds the proxy waits for the application (Kubernetes' default is 1).
    pub timeout_seconds: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    pub path: String,
    pub port: u16,
    /// `HTTP` or `HTTPS`.
    pub scheme: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TcpSocket {
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Grpc {
    pub port: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// Rewrites the probes of every container in `containers` (a pod's `spec.containers`) in place
/// and returns the originals by their new path.
pub fn rewrite(containers: &mut [Value]) -> BTreeMap<String, AppProbe> {
    let mut carried = BTreeMap::new();
    for container in containers.iter_mut() {
        let Some(container) = container.as_object_mut() else {
            continue;
        };
        let Some(name) = container
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            continue;
        };
        let ports = container.get("ports").cloned();
        for (field, segment) in PROBES {
            let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(original) = original_probe(probe, ports.as_ref()) else {
                continue;
            };
            let path = format!("{APP_HEALTH_PREFIX}/{name}/{segment}");
            probe.remove("httpGet");
            probe.remove("tcpSocket");
            probe.remove("grpc");
            probe.insert(
                "httpGet".to_string(),
                json!({ "path": path, "port": APP_PROBE_PORT, "scheme": "HTTP" }),
            );
            carried.insert(path, original);
        }
    }
    carried
}

/// The probe the proxy must run for `probe`, or `None` when it is not to be rewritten (exec,
/// unresolvable named port, already pointing at the proxy).
fn original_probe(probe: &Map<String, Value>, ports: Option<&Value>) -> Option<AppProbe> {
    let timeout_seconds = probe
        .get("timeoutSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let mut out = AppProbe {
        http_get: None,
        tcp_socket: None,
        grpc: None,
        timeout_seconds,
    };
    if let Some(h) = probe.get("httpGet") {
        let port = resolve_port(h.get("port")?, ports)?;
        if port == APP_PROBE_PORT {
            return None;
        }
        let http_headers = h
            .get("httpHeaders")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|hdr| {
                Some(HttpHeader {
                    name: text(hdr, "name")?,
                    value: text(hdr, "value").unwrap_or_default(),
                })
            })
            .collect();
        out.http_get = Some(HttpGet {
            path: text(h, "path").unwrap_or_else(|| "/".to_string()),
            port,
            scheme: text(h, "scheme").unwrap_or_else(|| "HTTP".to_string()),
            host: text(h, "host"),
            http_headers,
        });
    } else if let Some(t) = probe.get("tcpSocket") {
        out.tcp_socket = Some(TcpSocket {
            port: resolve_port(t.get("port")?, ports)?,
            host: text(t, "host"),
        });
    } else if let Some(g) = probe.get("grpc") {
        out.grpc = Some(Grpc {
            port: resolve_port(g.get("port")?, ports)?,
            service: text(g, "service"),
        });
    } else {
        return None;
    }
    Some(out)
}

/// A probe's port: a number, or the name of one of the container's ports.
fn resolve_port(port: &Value, ports: Option<&Value>) -> Option<u16> {
    match port {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Some(n);
            }
            ports?
                .as_array()?
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(s))?
                .get("containerPort")?
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_http_grpc_and_tcp_and_carries_the_originals() {
        let mut containers = vec![json!({
            "name": "app",
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                "periodSeconds": 3,
                "futureField": {"kept": true}
            },
            "livenessProbe": {"grpc": {"port": 9000, "service": "health"}, "timeoutSeconds": 5},
            "startupProbe": {"tcpSocket": {"port": 8080}, "failureThreshold": 30}
        })];
        let carried = rewrite(&mut containers);
        assert_eq!(
            containers[0]["readinessProbe"],
            json!({
                "httpGet": {"path": "/app-health/app/readyz", "port": 15020, "scheme": "HTTP"},
                "periodSeconds": 3,
                "futureField": {"kept": true}
            })
        );
        assert_eq!(
            containers[0]["livenessProbe"],
            json!({"httpGet": {"path": "/app-health/app/livez", "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 5})
        );
        assert_eq!(
            containers[0]["startupProbe"],
            json!({"httpGet": {"path": "/app-health/app/startupz", "port": 15020, "scheme": "HTTP"}, "failureThreshold": 30})
        );
        assert_eq!(
            serde_json::to_value(&carried).unwrap(),
            json!({
                "/app-health/app/livez": {"grpc": {"port": 9000, "service": "health"}, "timeoutSeconds": 5},
                "/app-health/app/readyz": {
                    "httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                    "timeoutSeconds": 1
                },
                "/app-health/app/startupz": {"tcpSocket": {"port": 8080}, "timeoutSeconds": 1}
            })
        );
    }

    #[test]
    fn leaves_exec_unresolvable_and_already_rewritten_probes() {
        let original = vec![json!({
            "name": "app",
            "livenessProbe": {"exec": {"command": ["true"]}},
            "readinessProbe": {"httpGet": {"path": "/", "port": "missing"}},
            "startupProbe": {"httpGet": {"path": "/app-health/app/startupz", "port": 15020}}
        })];
        let mut containers = original.clone();
        assert!(rewrite(&mut containers).is_empty());
        assert_eq!(containers, original);
    }
}
