//! Reads the Istio annotations a pod may carry into [`PodOptions`], checking every value, so a
//! typo is refused with the annotation's name rather than turned into a broken pod.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::{InjectError, InjectSettings, contract, contract::keys, quantity};

/// What the pod's annotations ask of injection, checked and with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct PodOptions {
    pub traffic: Traffic,
    pub resources: Resources,
    pub rewrite_probes: bool,
    /// `proxy.istio.io/config`, verbatim.
    pub proxy_config: Option<String>,
    /// Where the pod runs, `region/zone/subzone`, from its `istio-locality` label (Istio's
    /// override of its node's locality); `None` without one.
    pub locality: Option<String>,
}

/// The flags of `mizzen-proxy init`, each a comma-separated list ("" for none, "*" for all).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traffic {
    pub include_inbound_ports: String,
    pub exclude_inbound_ports: String,
    pub include_outbound_ip_ranges: String,
    pub exclude_outbound_ip_ranges: String,
    pub include_outbound_ports: String,
    pub exclude_outbound_ports: String,
}

/// The proxy's resource requests and limits, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

/// The string value of `key` in a labels or annotations map. A YAML author may write
/// `sidecar.istio.io/inject: false` unquoted; booleans and numbers are read as their text.
pub fn meta_value(map: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    match map?.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl PodOptions {
    /// Reads the options from a pod's `metadata.annotations`.
    pub fn read(
        annotations: Option<&Map<String, Value>>,
        settings: &InjectSettings,
    ) -> Result<Self, InjectError> {
        let get = |key: &str| meta_value(annotations, key);
        let invalid = |key: &str, value: &str, reason: String| InjectError::InvalidAnnotation {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };

        // Traffic redirection.
        let list =
            |key: &'static str, default: &str, star: bool, item: fn(&str) -> Result<(), String>| {
                let Some(value) = get(key) else {
                    return Ok(default.to_string());
                };
                normalize_list(&value, star, item).map_err(|reason| invalid(key, &value, reason))
            };
        let mut exclude_inbound: Vec<String> = contract::PROXY_INBOUND_PORTS
            .iter()
            .map(u16::to_string)
            .collect();
        let user_excluded = list(keys::EXCLUDE_INBOUND_PORTS, "", false, check_port)?;
        for port in user_excluded.split(',').filter(|p| !p.is_empty()) {
            if !exclude_inbound.iter().any(|p| p == port) {
                exclude_inbound.push(port.to_string());
            }
        }
        let traffic = Traffic {
            include_inbound_ports: list(keys::INCLUDE_INBOUND_PORTS, "*", true, check_port)?,
            exclude_inbound_ports: exclude_inbound.join(","),
            include_outbound_ip_ranges: list(
                keys::INCLUDE_OUTBOUND_IP_RANGES,
                "*",
                true,
                check_cidr,
            )?,
            exclude_outbound_ip_ranges: list(
                keys::EXCLUDE_OUTBOUND_IP_RANGES,
                "",
                false,
                check_cidr,
            )?,
            include_outbound_ports: list(keys::INCLUDE_OUTBOUND_PORTS, "", false, check_port)?,
            exclude_outbound_ports: list(keys::EXCLUDE_OUTBOUND_PORTS, "", false, check_port)?,
        };

        // Resources: each annotation overrides its default; a request above a default limit
        // raises that limit, a request above a limit the pod set itself is refused.
        let quantity =
            |key: &'static str, default: &str| -> Result<(String, f64, bool), InjectError> {
                match get(key) {
                    Some(value) => {
                        let parsed = quantity::parse(value.trim())
                            .map_err(|e| invalid(key, &value, e.to_string()))?;
                        Ok((value.trim().to_string(), parsed, true))
                    }
                    None => {
                        let parsed = quantity::parse(default)
                            .map_err(|e| InjectError::Settings(e.to_string()))?;
                        Ok((default.to_string(), parsed, false))
                    }
                }
            };
        let defaults = &settings.resources;
        let cpu_request = quantity(keys::PROXY_CPU, &defaults.cpu_request)?;
        let memory_request = quantity(keys::PROXY_MEMORY, &defaults.memory_request)?;
        let cpu_limit = quantity(keys::PROXY_CPU_LIMIT, &defaults.cpu_limit)?;
        let memory_limit = quantity(keys::PROXY_MEMORY_LIMIT, &defaults.memory_limit)?;
        let fit = |request: &(String, f64, bool),
                   limit: (String, f64, bool),
                   limit_key: &str|
         -> Result<String, InjectError> {
            if request.1 <= limit.1 {
                Ok(limit.0)
            } else if limit.2 {
                Err(invalid(
                    limit_key,
                    &limit.0,
                    format!("the limit is below the request ({})", request.0),
                ))
            } else {
                Ok(request.0.clone())
            }
        };
        let resources = Resources {
            cpu_limit: fit(&cpu_request, cpu_limit, keys::PROXY_CPU_LIMIT)?,
            memory_limit: fit(&memory_request, memory_limit, keys::PROXY_MEMORY_LIMIT)?,
            cpu_request: cpu_request.0,
            memory_request: memory_request.0,
        };

        let rewrite_probes = match get(keys::REWRITE_PROBES).as_deref().map(str::trim) {
            None | Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(invalid(
                    keys::REWRITE_PROBES,
                    other,
                    "must be \"true\" or \"false\"".to_string(),
                ));
            }
        };

        let proxy_config = match get(keys::PROXY_CONFIG) {
            None => None,
            Some(text) => {
                let parsed: Result<Value, _> = serde_saphyr::from_str(&text);
                match parsed {
                    Ok(Value::Object(_)) => Some(text),
                    Ok(Value::Null) if text.trim().is_empty() => None,
                    Ok(_) => {
                        return Err(invalid(
                            keys::PROXY_CONFIG,
                            &text,
                            "must be a YAML or JSON mapping of ProxyConfig fields".to_string(),
                        ));
                    }
                    Err(e) => {
                        return Err(invalid(keys::PROXY_CONFIG, &text, format!("not YAML: {e}")));
                    }
                }
            }
        };

        Ok(Self {
            traffic,
            resources,
            rewrite_probes,
            proxy_config,
            locality: None,
        })
    }

    /// The options with the pod's `istio-locality` label (`region.zone.subzone`, dots as label
    /// values have no slashes) read from `labels`.
    pub fn located(self, labels: Option<&Map<String, Value>>) -> Self {
        let locality = meta_value(labels, contract::LOCALITY_LABEL)
            .filter(|v| !v.is_empty())
            .map(|v| v.replace('.', "/"));
        Self { locality, ..self }
    }
}

/// Checks every comma-separated item and writes the list back without spaces or empty items.
/// `*` alone is accepted where `star` is set.
fn normalize_list(
    value: &str,
    star: bool,
    item: fn(&str) -> Result<(), String>,
) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed == "*" {
        return if star {
            Ok("*".to_string())
        } else {
            Err("\"*\" is not allowed here; list the values".to_string())
        };
    }
    let mut out: Vec<&str> = Vec::new();
    for part in trimmed.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "*" {
            return Err("\"*\" must stand alone".to_string());
        }
        item(part)?;
        if !out.contains(&part) {
            out.push(part);
        }
    }
    Ok(out.join(","))
}

fn check_port(text: &str) -> Result<(), String> {
    match text.parse::<u32>() {
        Ok(1..=65535) => Ok(()),
        _ => Err(format!("{text:?} is not a port number (1 to 65535)")),
    }
}

fn check_cidr(text: &str) -> Result<(), String> {
    let bad =
        || format!("{text:?} is not an IP range in CIDR form (such as 10.0.0.0/8 or fd00::/8)");
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max && !prefix.starts_with('+') => Ok(()),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read(annotations: Value) -> Result<PodOptions, InjectError> {
        PodOptions::read(annotations.as_object(), &InjectSettings::default())
    }

    #[test]
    fn defaults_without_annotations() {
        let o = read(json!({})).unwrap();
        assert_eq!(
            o.traffic,
            Traffic {
                include_inbound_ports: "*".into(),
                exclude_inbound_ports: "15020,15021,15090".into(),
                include_outbound_ip_ranges: "*".into(),
                exclude_outbound_ip_ranges: "".into(),
                include_outbound_ports: "".into(),
                exclude_outbound_ports: "".into(),
            }
        );
        assert_eq!(
            o.resources,
            Resources {
                cpu_request: "10m".into(),
                memory_request: "40Mi".into(),
                cpu_limit: "2000m".into(),
                memory_limit: "256Mi".into(),
            }
        );
        assert!(o.rewrite_probes);
        assert_eq!(o.proxy_config, None);
    }

    #[test]
    fn traffic_lists_are_checked_and_tidied() {
        let o = read(json!({
            keys::EXCLUDE_INBOUND_PORTS: " 9090, 15021,,8080 ",
            keys::INCLUDE_INBOUND_PORTS: "80,443",
            keys::EXCLUDE_OUTBOUND_IP_RANGES: "10.96.0.0/12, 169.254.169.254/32,fd00::/8",
            keys::INCLUDE_OUTBOUND_PORTS: "5432",
        }))
        .unwrap();
        assert_eq!(
            o.traffic.exclude_inbound_ports,
            "15020,15021,15090,9090,8080"
        );
        assert_eq!(o.traffic.include_inbound_ports, "80,443");
        assert_eq!(
            o.traffic.exclude_outbound_ip_ranges,
            "10.96.0.0/12,169.254.169.254/32,fd00::/8"
        );
        assert_eq!(o.traffic.include_outbound_ports, "5432");
        assert_eq!(
            read(json!({keys::INCLUDE_INBOUND_PORTS: ""}))
                .unwrap()
                .traffic
                .include_inbound_ports,
            ""
        );
    }

    #[test]
    fn bad_traffic_values_name_the_annotation() {
        let cases = [
            (
                keys::EXCLUDE_INBOUND_PORTS,
                "80,http",
                "\"http\" is not a port number (1 to 65535)",
            ),
            (
                keys::INCLUDE_OUTBOUND_PORTS,
                "70000",
                "\"70000\" is not a port number (1 to 65535)",
            ),
            (
                keys::EXCLUDE_OUTBOUND_PORTS,
                "*",
                "\"*\" is not allowed here; list the values",
            ),
            (
                keys::INCLUDE_INBOUND_PORTS,
                "80,*",
                "\"*\" must stand alone",
            ),
            (
                keys::EXCLUDE_OUTBOUND_IP_RANGES,
                "10.0.0.1",
                "\"10.0.0.1\" is not an IP range in CIDR form (such as 10.0.0.0/8 or fd00::/8)",
            ),
            (
                keys::INCLUDE_OUTBOUND_IP_RANGES,
                "10.0.0.0/33",
                "\"10.0.0.0/33\" is not an IP range in CIDR form (such as 10.0.0.0/8 or fd00::/8)",
            ),
        ];
        for (key, value, reason) in cases {
            let err = read(json!({ key: value })).unwrap_err();
            assert_eq!(
                err,
                InjectError::InvalidAnnotation {
                    key: key.into(),
                    value: value.into(),
                    reason: reason.into()
                },
                "{key}={value}"
            );
        }
    }

    #[test]
    fn resources_follow_annotations_and_keep_requests_within_limits() {
        let o = read(json!({
            keys::PROXY_CPU: "100m",
            keys::PROXY_MEMORY: "128Mi",
            keys::PROXY_CPU_LIMIT: "500m",
            keys::PROXY_MEMORY_LIMIT: "1Gi",
        }))
        .unwrap();
        assert_eq!(
            o.resources,
            Resources {
                cpu_request: "100m".into(),
                memory_request: "128Mi".into(),
                cpu_limit: "500m".into(),
                memory_limit: "1Gi".into(),
            }
        );
        // A request above the default limit raises the limit to the request.
        let o = read(json!({ keys::PROXY_CPU: "3", keys::PROXY_MEMORY: "512Mi" })).unwrap();
        assert_eq!(
            (
                o.resources.cpu_limit.as_str(),
                o.resources.memory_limit.as_str()
            ),
            ("3", "512Mi")
        );
        // A limit the pod set below its own request is refused.
        let err = read(json!({ keys::PROXY_MEMORY: "512Mi", keys::PROXY_MEMORY_LIMIT: "256Mi" }))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation sidecar.istio.io/proxyMemoryLimit: \"256Mi\": the limit is below the request (512Mi)"
        );
        let err = read(json!({ keys::PROXY_CPU: "lots" })).unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation sidecar.istio.io/proxyCPU: \"lots\": \"lots\" is not a Kubernetes quantity (examples: 100m, 0.5, 128Mi, 1Gi)"
        );
    }

    #[test]
    fn probe_rewriting_switch_and_proxy_config() {
        assert!(
            !read(json!({ keys::REWRITE_PROBES: "false" }))
                .unwrap()
                .rewrite_probes
        );
        assert!(
            read(json!({ keys::REWRITE_PROBES: "true" }))
                .unwrap()
                .rewrite_probes
        );
        assert!(read(json!({ keys::REWRITE_PROBES: "no" })).is_err());
        let cfg = "holdApplicationUntilProxyStarts: true\nconcurrency: 2\n";
        assert_eq!(
            read(json!({ keys::PROXY_CONFIG: cfg }))
                .unwrap()
                .proxy_config
                .as_deref(),
            Some(cfg)
        );
        assert_eq!(
            read(json!({ keys::PROXY_CONFIG: "{\"concurrency\": 2}" }))
                .unwrap()
                .proxy_config
                .as_deref(),
            Some("{\"concurrency\": 2}")
        );
        let err = read(json!({ keys::PROXY_CONFIG: "- a list" })).unwrap_err();
        assert!(
            err.to_string().contains("must be a YAML or JSON mapping"),
            "{err}"
        );
    }

    #[test]
    fn unquoted_yaml_values_read_as_text() {
        let map = json!({"a": false, "b": 3, "c": "x", "d": null});
        assert_eq!(meta_value(map.as_object(), "a").as_deref(), Some("false"));
        assert_eq!(meta_value(map.as_object(), "b").as_deref(), Some("3"));
        assert_eq!(meta_value(map.as_object(), "c").as_deref(), Some("x"));
        assert_eq!(meta_value(map.as_object(), "d"), None);
    }
}
