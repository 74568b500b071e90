//! Golden tests of the gateway render: every `tests/golden/gateway/<case>/input.yaml` renders to
//! `expected/gateway-<ns>.json` (the gateway config of each gateway namespace),
//! `expected/<ns>.json` (the sidecar config of each meshed namespace) and `expected/status.txt`
//! (the verdict on every object). The `fixture` case appends the shared Istio fixture
//! `gateway-and-cookie-match.yaml` to its input. `MIZZEN_UPDATE_GOLDEN=1 cargo test -p
//! mizzen-operator --test render_gateway` rewrites the expected files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use mizzen_operator::{
    Index, RenderSettings, Rendered, Renderer,
    apply::{Content, desired_config_maps},
    files::{file_settings, load_text},
    index::Changes,
    render,
    render::RenderWork,
};
use mizzen_proxy_config as pc;

const FIXTURE: &str = include_str!("../../../shared/fixtures/istio/gateway-and-cookie-match.yaml");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gateway")
}

fn input(case: &str) -> String {
    let mut text = std::fs::read_to_string(root().join(case).join("input.yaml")).unwrap();
    if case == "fixture" {
        text.push_str("\n---\n");
        text.push_str(FIXTURE);
    }
    text
}

fn load(text: &str) -> Index {
    let mut index = Index::new("mizzen-system");
    load_text(&mut index, text, "default", Path::new("input.yaml")).unwrap();
    index
}

fn settings() -> RenderSettings {
    file_settings(RenderSettings::default())
}

fn files_of(r: &Rendered) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for (ns, c) in &r.configs {
        files.insert(format!("{ns}.json"), c.config().to_json() + "\n");
    }
    for (ns, c) in &r.gateway_configs {
        files.insert(format!("gateway-{ns}.json"), c.config().to_json() + "\n");
    }
    let mut status = String::new();
    for (obj, st) in &r.statuses {
        status.push_str(&format!("{obj}: {}", st.reason));
        if !st.message.is_empty() {
            status.push_str(&format!(": {}", st.message));
        }
        status.push('\n');
    }
    files.insert("status.txt".into(), status);
    files
}

fn gateway(r: &Rendered) -> pc::GatewayConfig {
    r.gateway_configs["mizzen-ingress"]
        .config()
        .gateway
        .expect("a gateway config has a gateway section")
}

fn status<'a>(r: &'a Rendered, object: &str) -> &'a mizzen_operator::render::ObjectStatus {
    r.statuses
        .iter()
        .find(|(o, _)| o.to_string() == object)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no status for {object}"))
}

#[test]
fn every_case_renders_as_its_golden_files() {
    let update = std::env::var_os("MIZZEN_UPDATE_GOLDEN").is_some();
    let mut cases: Vec<String> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    cases.sort();
    assert!(cases.len() >= 5, "{cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let rendered = render(&load(&input(case)), &settings());
        let files = files_of(&rendered);
        let dir = root().join(case).join("expected");
        if update {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            continue;
        }
        let on_disk: BTreeMap<String, String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().path())
                    .map(|p| {
                        (
                            p.file_name().unwrap().to_string_lossy().into_owned(),
                            std::fs::read_to_string(&p).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if on_disk != files {
            failures.push(format!(
                "{case}: rendered output differs from expected/ (rerun with MIZZEN_UPDATE_GOLDEN=1 and review the diff)\n{}",
                files
                    .iter()
                    .filter(|(k, v)| on_disk.get(*k) != Some(v))
                    .map(|(k, v)| format!("--- {k}:\n{v}"))
                    .collect::<String>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_fixture_routes_its_host_and_cookie_to_productpage() {
    let r = render(&load(&input("fixture")), &settings());
    let g = gateway(&r);
    assert_eq!(g.servers.len(), 1);
    let s = &g.servers[0];
    assert_eq!(
        (s.gateway.as_str(), s.port, s.protocol),
        ("default/bookinfo-gateway", 80, pc::ServerProtocol::Http)
    );
    assert_eq!(s.selector["istio"], "ingressgateway");
    assert_eq!(s.virtual_hosts.len(), 1);
    let vh = &s.virtual_hosts[0];
    assert_eq!(vh.virtual_service, "default/bookinfo");
    assert_eq!(vh.hosts, ["test.techup.xy"]);
    let route = &vh.routes[0];
    assert_eq!(route.matches[0].headers[0].name, "cookie");
    let pc::HttpAction::Route(to) = &route.action else {
        panic!("{:?}", route.action)
    };
    assert_eq!(
        to[0].destination.host,
        "productpage.default.svc.cluster.local"
    );
    assert_eq!(to[0].destination.port, Some(9080));
    // The destination is in the gateway's services, as a sidecar would see it.
    let config = r.gateway_configs["mizzen-ingress"].config();
    assert!(
        config
            .service("productpage.default.svc.cluster.local")
            .is_some()
    );
    // The gateway-only VirtualService is not in the sidecars' config.
    let sidecar = r.configs["default"].config();
    let svc = sidecar
        .service("productpage.default.svc.cluster.local")
        .unwrap();
    assert!(svc.http_routes.is_empty());
    assert_eq!(
        status(&r, "VirtualService/default/bookinfo").reason,
        "Accepted"
    );
}

#[test]
fn servers_carry_tls_modes_redirects_and_their_kind_of_routes() {
    let r = render(&load(&input("tls-modes")), &settings());
    let g = gateway(&r);
    let port = |n: u16| g.servers.iter().find(|s| s.port == n).unwrap();
    assert!(port(80).https_redirect && port(80).tls.is_none());
    assert!(port(80).virtual_hosts.is_empty());
    let simple = port(443).tls.as_ref().unwrap();
    assert_eq!(simple.mode, pc::ServerTlsMode::Simple);
    assert_eq!(simple.credential_name.as_deref(), Some("shop-cert"));
    assert_eq!(port(443).virtual_hosts[0].hosts, ["shop.example.com"]);
    // The `/api` match is for port 8443 only.
    assert_eq!(port(443).virtual_hosts[0].routes.len(), 1);
    let mutual = port(8443).tls.as_ref().unwrap();
    assert_eq!(mutual.mode, pc::ServerTlsMode::Mutual);
    assert_eq!(mutual.subject_alt_names, ["spiffe://partners/client"]);
    assert_eq!(mutual.min_protocol_version, Some(pc::TlsVersion::V1_3));
    assert_eq!(port(8443).virtual_hosts[0].routes.len(), 2);
    assert_eq!(port(8443).virtual_hosts[0].routes[0].matches[0].port, None);
    let pass = port(9443);
    assert_eq!(
        pass.tls.as_ref().unwrap().mode,
        pc::ServerTlsMode::Passthrough
    );
    // SNI names the server does not serve are dropped.
    assert_eq!(pass.tls_routes.len(), 1);
    assert_eq!(
        pass.tls_routes[0].matches[0].sni_hosts,
        ["a.vault.example.com"]
    );
    assert!(pass.virtual_hosts.is_empty());
    assert_eq!(port(3306).tcp_routes.len(), 1);
    assert_eq!(port(3306).protocol, pc::ServerProtocol::Tcp);
}

#[test]
fn unresolved_bindings_are_reported_on_both_sides_and_the_rest_keeps_serving() {
    let r = render(&load(&input("binding-errors")), &settings());
    let unknown = status(&r, "VirtualService/shop/vs-unknown");
    assert!(!unknown.accepted);
    assert_eq!(unknown.reason, "UnknownGateway");
    assert!(
        unknown.message.contains("spec.gateways[0]"),
        "{}",
        unknown.message
    );
    assert!(
        unknown.message.contains("shop/missing"),
        "{}",
        unknown.message
    );

    let host = status(&r, "VirtualService/shop/vs-host");
    assert_eq!(host.reason, "HostNotServed");
    assert!(host.message.contains("spec.hosts[1]"), "{}", host.message);
    assert!(host.message.contains("nowhere.example.com"));
    let older = status(&r, "Gateway/shop/older");
    assert!(older.accepted, "{older:?}");
    assert!(
        older.message.contains("nowhere.example.com"),
        "{}",
        older.message
    );

    let newer = status(&r, "Gateway/shop/newer");
    assert!(!newer.accepted);
    assert_eq!(newer.reason, "PortConflict");
    assert!(
        newer.message.contains("spec.servers[0].port"),
        "{}",
        newer.message
    );
    assert!(newer.message.contains("port 8080"), "{}", newer.message);
    assert!(
        newer.message.contains("HTTP by Gateway shop/older"),
        "{}",
        newer.message
    );
    assert!(older.message.contains("shop/newer"), "{}", older.message);

    // The older Gateway keeps port 8080 with its routes (the unknown and the unserved
    // bindings' resolvable parts too); the newer one keeps its other port.
    let g = gateway(&r);
    let on = |n: u16| -> Vec<&str> {
        g.servers
            .iter()
            .filter(|s| s.port == n)
            .map(|s| s.gateway.as_str())
            .collect()
    };
    assert_eq!(on(8080), ["shop/older"]);
    assert_eq!(on(9090), ["shop/newer"]);
    let vhs: Vec<&str> = g
        .servers
        .iter()
        .find(|s| s.port == 8080)
        .unwrap()
        .virtual_hosts
        .iter()
        .map(|v| v.virtual_service.as_str())
        .collect();
    // Creation order; the same (here: none) creation time orders by namespace and name.
    assert_eq!(vhs, ["shop/vs-host", "shop/vs-ok", "shop/vs-unknown"]);
}

#[test]
fn server_host_namespaces_restrict_which_virtual_services_bind() {
    let r = render(&load(&input("namespace-restrictions")), &settings());
    let g = gateway(&r);
    let hosts = |port: u16, vs: &str| -> Vec<String> {
        g.servers
            .iter()
            .find(|s| s.port == port)
            .unwrap()
            .virtual_hosts
            .iter()
            .find(|v| v.virtual_service == vs)
            .map(|v| v.hosts.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        hosts(80, "shop/shop-ok"),
        ["*.shop.example.com", "any.example.com"]
    );
    assert_eq!(hosts(80, "edge/edge-ok"), ["edge.example.com"]);
    assert_eq!(hosts(8080, "edge/edge-ok"), ["edge.example.com"]);
    assert!(hosts(8080, "shop/shop-ok").is_empty());
    assert!(hosts(80, "other/shop-not-allowed").is_empty());
    assert!(hosts(80, "shop/private").is_empty());
    assert_eq!(
        status(&r, "VirtualService/other/shop-not-allowed").reason,
        "HostNotServed"
    );
    // Port and gateway narrowing per match: port 80 keeps the `port: 80` rule, the `mesh`-only
    // rule goes nowhere on the gateway.
    let server80 = g.servers.iter().find(|s| s.port == 80).unwrap();
    let names: Vec<&str> = server80.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["port-80-only", "shop/shop-ok/2"]);
}

#[test]
fn a_mesh_and_gateway_virtual_service_reaches_sidecars_and_the_gateway() {
    let r = render(&load(&input("mesh-and-gateway")), &settings());
    let sidecar = r.configs["shop"].config();
    let svc = sidecar.service("reviews.shop.svc.cluster.local").unwrap();
    let names: Vec<&str> = svc.http_routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["sidecars-only", "everyone"]);
    let g = gateway(&r);
    let routes: Vec<&str> = g.servers[0].virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(routes, ["gateway-only", "everyone"]);
    assert_eq!(
        g.servers[0].virtual_hosts[0].hosts,
        ["reviews.shop.svc.cluster.local"]
    );
    // The gateway sees the subsets the routes name.
    let gw_config = r.gateway_configs["mizzen-ingress"].config();
    let gw_svc = gw_config.service("reviews.shop.svc.cluster.local").unwrap();
    assert_eq!(gw_svc.subsets.len(), 2);
}

#[test]
fn the_gateway_config_map_follows_the_payload_rules_and_needs_its_namespace() {
    let index = load(&input("tls-modes"));
    let rendered = render(&index, &settings());
    let desired = desired_config_maps(&rendered, &index);
    let gw = desired
        .iter()
        .find(|d| d.name == pc::GATEWAY_CONFIG_MAP_NAME)
        .unwrap();
    assert_eq!(gw.namespace, "mizzen-ingress");
    assert_eq!(gw.key, pc::CONFIG_MAP_KEY);
    let Content::Config(config) = &gw.data else {
        panic!("a rendered config")
    };
    assert_eq!(gw.hash, config.hash);
    assert!(gw.to_config_map().data.is_some());

    // Above the gzip threshold the same config is stored compressed, and reads back equal.
    let small = RenderSettings {
        gzip_above_bytes: 64,
        ..settings()
    };
    let compressed = render(&index, &small);
    let cm = desired_config_maps(&compressed, &index)
        .into_iter()
        .find(|d| d.name == pc::GATEWAY_CONFIG_MAP_NAME)
        .unwrap()
        .to_config_map();
    let bytes = &cm.binary_data.unwrap()[pc::CONFIG_MAP_KEY].0;
    let json = pc::payload::decode(bytes).unwrap();
    assert_eq!(
        pc::ProxyConfig::from_json(json.as_bytes()).unwrap(),
        config.config()
    );

    // No gateway namespace in the cluster: nothing to write there.
    let without = load(&input("tls-modes").replace("name: mizzen-ingress", "name: elsewhere"));
    assert!(render(&without, &settings()).gateway_configs.is_empty());
}

#[test]
fn incremental_renders_of_gateway_configs_equal_full_renders() {
    let mut index = load(&input("tls-modes"));
    let mut renderer = Renderer::new(settings());
    let first = index.take_changes();
    renderer.render(&index, &first);
    let extra = load(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: extra, namespace: shop}\nspec:\n  hosts: [shop.example.com]\n  gateways: [edge]\n  http:\n  - route: [{destination: {host: web}}]\n",
    );
    for s in extra.resources() {
        index.apply_resource(s.resource.clone());
    }
    let changes: Changes = index.take_changes();
    let incremental = renderer.render(&index, &changes);
    let full = render(&index, &settings());
    assert_eq!(incremental, full);
    let g = gateway(&full);
    let port443 = g.servers.iter().find(|s| s.port == 443).unwrap();
    assert_eq!(port443.virtual_hosts.len(), 2);
}

/// A Gateway edit marks only the gateway configs: the incremental render assembles the gateway
/// config again and keeps every sidecar config (no service rebuilt, no config assembled), yet
/// gives exactly what a full render gives, statuses included (the bound VirtualService's
/// verdict follows the Gateway). Forcing everything, as a Gateway event once did, redoes it all.
#[test]
fn a_gateway_edit_re_renders_the_gateway_configs_only() {
    let mut text = input("mesh-and-gateway");
    text.push_str(
        "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web}\nspec: {ports: [{name: http, port: 80}]}\n",
    );
    let mut index = load(&text);
    let mut renderer = Renderer::new(settings());
    let first = index.take_changes();
    let before = renderer.render(&index, &first);
    let everything = renderer.work();
    assert_eq!(before.configs.len(), 2);
    assert_eq!(everything.configs_assembled, 2);
    assert_eq!(everything.gateway_configs_assembled, 1);
    assert!(everything.services_built >= 3, "{everything:?}");

    let edits = [
        // The server no longer serves the VirtualService's host: the gateway config loses it,
        // and the VirtualService is told why.
        text.replace("hosts: [\"*\"]", "hosts: [\"other.example.com\"]"),
        // The Gateway goes: nothing is served, and the VirtualService names a missing Gateway.
        text.replace("kind: Gateway\n", "kind: Gone\n"),
    ];
    for edited in edits {
        let mut reloaded = load(&edited);
        reloaded.take_changes();
        let gateway_ref = |i: &Index| {
            i.resources()
                .find(|s| s.object.kind == "Gateway")
                .map(|s| s.object.clone())
        };
        match gateway_ref(&reloaded) {
            Some(_) => {
                let gw = reloaded
                    .resources()
                    .find(|s| s.object.kind == "Gateway")
                    .unwrap()
                    .resource
                    .clone();
                index.apply_resource(gw);
            }
            None => index.delete_resource(&gateway_ref(&index).unwrap()),
        }
        let changes = index.take_changes();
        assert_eq!(
            changes,
            Changes {
                gateways: true,
                ..Changes::default()
            }
        );
        let after = renderer.render(&index, &changes);
        assert_eq!(after, render(&index, &settings()));
        assert_ne!(after.gateway_configs, before.gateway_configs);
        assert_ne!(after.statuses, before.statuses);
        assert_eq!(after.configs, before.configs);
        assert_eq!(
            renderer.work(),
            RenderWork {
                services_built: 0,
                configs_assembled: 0,
                gateway_configs_assembled: 1,
            }
        );
    }

    index.touch_all();
    let changes = index.take_changes();
    renderer.render(&index, &changes);
    assert_eq!(renderer.work(), everything);
}

/// A VirtualService edit rebuilds its host and assembles again only the configs that see it;
/// the namespace that does not keeps its config.
#[test]
fn an_edit_assembles_only_the_configs_it_changes() {
    let mut text = input("mesh-and-gateway");
    text.push_str(
        "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {istio-injection: enabled}}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: front, namespace: web, annotations: {networking.istio.io/exportTo: .}}\nspec: {ports: [{name: http, port: 80}]}\n",
    );
    let mut index = load(&text);
    let mut renderer = Renderer::new(settings());
    let first = index.take_changes();
    renderer.render(&index, &first);
    let front = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: front, namespace: web}\nspec: {hosts: [front], exportTo: [.], http: [{timeout: 3s, route: [{destination: {host: front}}]}]}\n";
    load_text(&mut index, front, "default", Path::new("edit.yaml")).unwrap();
    let changes = index.take_changes();
    let after = renderer.render(&index, &changes);
    assert_eq!(after, render(&index, &settings()));
    let work = renderer.work();
    assert_eq!(work.services_built, 1, "{work:?}");
    // `web` sees `front`; `shop` and the gateway namespace do not (exported to `web` only).
    assert_eq!(work.configs_assembled, 1, "{work:?}");
}
