//! The JSON of what injection adds: the iptables init container, the proxy container and the
//! volumes they use. Names and paths come from [`super::contract`].

use serde_json::{Value, json};

use super::{
    InjectSettings,
    annotations::{PodOptions, Resources},
    contract::{self, env, init_flags},
};

fn resources(r: &Resources) -> Value {
    json!({
        "requests": { "cpu": r.cpu_request, "memory": r.memory_request },
        "limits": { "cpu": r.cpu_limit, "memory": r.memory_limit },
    })
}

/// `mizzen-init`: installs the iptables redirection and exits. It needs NET_ADMIN and NET_RAW
/// (and root to use them), nothing else.
pub fn init_container(options: &PodOptions, settings: &InjectSettings) -> Value {
    let t = &options.traffic;
    let args = [
        contract::INIT_SUBCOMMAND,
        init_flags::PROXY_UID,
        &contract::PROXY_UID.to_string(),
        init_flags::INBOUND_CAPTURE_PORT,
        &contract::INBOUND_CAPTURE_PORT.to_string(),
        init_flags::OUTBOUND_CAPTURE_PORT,
        &contract::OUTBOUND_CAPTURE_PORT.to_string(),
        init_flags::INCLUDE_INBOUND_PORTS,
        &t.include_inbound_ports,
        init_flags::EXCLUDE_INBOUND_PORTS,
        &t.exclude_inbound_ports,
        init_flags::INCLUDE_OUTBOUND_IP_RANGES,
        &t.include_outbound_ip_ranges,
        init_flags::EXCLUDE_OUTBOUND_IP_RANGES,
        &t.exclude_outbound_ip_ranges,
        init_flags::INCLUDE_OUTBOUND_PORTS,
        &t.include_outbound_ports,
        init_flags::EXCLUDE_OUTBOUND_PORTS,
        &t.exclude_outbound_ports,
    ]
    .map(str::to_string);
    json!({
        "name": contract::INIT_CONTAINER,
        "image": settings.proxy_image,
        "args": args,
        "resources": resources(&options.resources),
        "securityContext": {
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": path } } })
}

fn value_env(name: &str, value: &str) -> Value {
    json!({ "name": name, "value": value })
}

fn health_probe(period: i64, failure_threshold: i64) -> Value {
    json!({
        "httpGet": { "path": contract::HEALTH_PATH, "port": contract::HEALTH_PORT, "scheme": "HTTP" },
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failure_threshold,
    })
}

/// `mizzen-proxy`. `app_probes` is the JSON of the rewritten probes' originals, if any.
pub fn proxy_container(
    options: &PodOptions,
    settings: &InjectSettings,
    app_probes: Option<String>,
) -> Value {
    let mut envs = vec![
        field_env(env::POD_NAME, "metadata.name"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::SERVICE_ACCOUNT, "spec.serviceAccountName"),
        field_env(env::NODE_NAME, "spec.nodeName"),
        field_env(env::POD_IP, "status.podIP"),
        field_env(env::HOST_IP, "status.hostIP"),
        value_env(env::CONFIG, contract::CONFIG_FILE),
        value_env(env::AGENT_SOCKET, contract::AGENT_SOCKET),
        value_env(env::TOKEN, contract::TOKEN_FILE),
    ];
    if let Some(probes) = app_probes {
        envs.push(value_env(env::APP_PROBES, &probes));
    }
    if let Some(config) = &options.proxy_config {
        envs.push(value_env(env::PROXY_CONFIG, config));
    }
    if let Some(locality) = &options.locality {
        envs.push(value_env(env::LOCALITY, locality));
    }
    let mut container = json!({
        "name": contract::PROXY_CONTAINER,
        "image": settings.proxy_image,
        "args": [contract::SIDECAR_SUBCOMMAND],
        "ports": [
            { "name": contract::PROMETHEUS_PORT_NAME, "containerPort": contract::PROMETHEUS_PORT, "protocol": "TCP" },
            { "name": contract::HEALTH_PORT_NAME, "containerPort": contract::HEALTH_PORT, "protocol": "TCP" },
        ],
        "env": envs,
        "resources": resources(&options.resources),
        // Up to ten minutes for the first certificate and config; the app waits for it.
        "startupProbe": health_probe(1, 600),
        "readinessProbe": health_probe(15, 4),
        "securityContext": {
            "runAsUser": contract::PROXY_UID,
            "runAsGroup": contract::PROXY_UID,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": contract::CONFIG_VOLUME, "mountPath": contract::CONFIG_DIR, "readOnly": true },
            { "name": contract::CA_ROOT_VOLUME, "mountPath": contract::CA_ROOT_DIR, "readOnly": true },
            { "name": contract::AGENT_VOLUME, "mountPath": contract::AGENT_DIR },
            { "name": contract::TOKEN_VOLUME, "mountPath": contract::TOKEN_DIR, "readOnly": true },
            { "name": contract::TMP_VOLUME, "mountPath": contract::TMP_DIR },
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    });
    let c = container.as_object_mut().expect("built as an object");
    if settings.native_sidecar {
        // A native sidecar: started before the app, stopped after it, never keeps a Job alive.
        c.insert("restartPolicy".into(), json!("Always"));
    } else {
        // The first regular container: the kubelet starts the next one only when this hook
        // returns, which it does once the proxy is ready.
        c.insert(
            "lifecycle".into(),
            json!({ "postStart": { "exec": { "command": [contract::PROXY_BINARY, contract::WAIT_READY_SUBCOMMAND] } } }),
        );
    }
    container
}

/// The volumes the proxy mounts, in [`contract::VOLUMES`] order.
pub fn volumes() -> [Value; 5] {
    [
        json!({ "name": contract::CONFIG_VOLUME, "configMap": { "name": contract::CONFIG_CONFIGMAP } }),
        json!({ "name": contract::CA_ROOT_VOLUME, "configMap": { "name": contract::CA_ROOT_CONFIGMAP, "optional": true } }),
        json!({ "name": contract::AGENT_VOLUME, "hostPath": { "path": contract::AGENT_DIR, "type": "Directory" } }),
        json!({
            "name": contract::TOKEN_VOLUME,
            "projected": { "sources": [{ "serviceAccountToken": {
                "audience": contract::TOKEN_AUDIENCE,
                "expirationSeconds": contract::TOKEN_EXPIRATION_SECONDS,
                "path": contract::TOKEN_FILE_NAME,
            } }] },
        }),
        json!({ "name": contract::TMP_VOLUME, "emptyDir": {} }),
    ]
}
