//! Scale benchmark (run by `bench/operator.sh`; not a timed test): 1,000 Services with 3 subsets
//! and 2 routes each, in 50 meshed namespaces. Measures the full render, the incremental render
//! after one VirtualService changes, peak RSS, and the largest ConfigMap (its JSON and what is
//! stored: gzip above `GZIP_ABOVE_BYTES`, as members of chunks of services). Renders include
//! compressing the configs that are stored compressed, since the size check needs the stored
//! size. Then the same at other chunk sizes, for the trade between ratio and time.

use std::time::{Duration, Instant};

use mizzen_operator::{Index, RenderSettings, Rendered, Renderer, index::Changes};
use mizzen_proxy_config::payload::{self, Payload};
use serde_json::{Value, json};

const NAMESPACES: usize = 50;
const SERVICES: usize = 1000;

fn namespace(i: usize) -> String {
    format!("ns-{i:02}")
}

fn virtual_service(ns: &str, name: &str, canary: u32) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"hosts": [name], "http": [
            {"name": "canary-users", "match": [{"headers": {"x-user-group": {"exact": "canary"}}}],
             "route": [{"destination": {"host": name, "subset": "v3"}}], "timeout": "3s"},
            {"name": "split", "route": [
                {"destination": {"host": name, "subset": "v1"}, "weight": 100 - canary},
                {"destination": {"host": name, "subset": "v2"}, "weight": canary}],
             "retries": {"attempts": 2, "perTryTimeout": "1s", "retryOn": "5xx,connect-failure"}}
        ]}
    })
}

fn documents() -> Vec<Value> {
    let mut docs = Vec::new();
    for n in 0..NAMESPACES {
        docs.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace(n), "uid": format!("uid-{n}"), "labels": {"istio-injection": "enabled"}}}));
    }
    for s in 0..SERVICES {
        let ns = namespace(s % NAMESPACES);
        let name = format!("svc-{s:04}");
        docs.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": format!("10.{}.{}.{}", s / 65536, (s / 256) % 256, s % 256),
                     "ports": [{"name": "http", "port": 8080, "targetPort": 9080}]}}));
        docs.push(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"host": name, "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
                {"name": "v3", "labels": {"version": "v3"}}]}}),
        );
        docs.push(virtual_service(&ns, &name, 10));
    }
    docs
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn everything() -> Changes {
    Changes {
        all: true,
        ..Changes::default()
    }
}

/// Timings of full renders and of incremental renders after one VirtualService change each.
struct Run {
    fulls: Vec<Duration>,
    incrementals: Vec<Duration>,
    /// Building what the writer sends for the 50 changed ConfigMaps after each change.
    assembles: Vec<Duration>,
    /// Gzip members compressed by each incremental render.
    recompressed: Vec<u64>,
    /// Members compressed by a full render, and held after it.
    full_members: (u64, usize),
    renderer: Renderer,
    rendered: Rendered,
}

/// `fulls` full renders, then `edits` incremental ones; `round` varies the edited weights so
/// that every run changes something.
fn run(index: &mut Index, settings: &RenderSettings, fulls: usize, edits: u32, round: u32) -> Run {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..fulls {
        let mut r = Renderer::new(settings.clone());
        let start = Instant::now();
        let out = r.render(index, &everything());
        times.push(start.elapsed());
        last = Some((r, out));
    }
    let (mut renderer, rendered) = last.unwrap();
    let full_members = (renderer.compressed_members(), renderer.cached_members());
    index.take_changes();
    let (mut incrementals, mut assembles, mut recompressed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..edits {
        let s = (i as usize * 37) % SERVICES;
        // 11 to 99, never the generated 10 nor the previous round's weight.
        let weight = 11 + (i + 20 * round) % 89;
        let vs = virtual_service(&namespace(s % NAMESPACES), &format!("svc-{s:04}"), weight);
        let before = renderer.compressed_members();
        let start = Instant::now();
        index.apply_document(&vs, "default").unwrap();
        let changes = index.take_changes();
        let out = renderer.render(index, &changes);
        incrementals.push(start.elapsed());
        recompressed.push(renderer.compressed_members() - before);
        assert_eq!(out.configs.len(), NAMESPACES);
        // Every namespace sees the changed host, so all 50 ConfigMaps are written: their stored
        // form is built (one at a time, as the writer does: the members concatenated).
        let start = Instant::now();
        let bytes: usize = out
            .configs
            .values()
            .map(|c| c.payload().as_bytes().len())
            .sum();
        assembles.push(start.elapsed());
        assert!(bytes > 0);
    }
    Run {
        fulls: times,
        incrementals,
        assembles,
        recompressed,
        full_members,
        renderer,
        rendered,
    }
}

fn main() {
    let docs = documents();
    let start = Instant::now();
    let mut index = Index::new("mizzen-system");
    for d in &docs {
        index.apply_document(d, "default").unwrap();
    }
    let load = start.elapsed();
    drop(docs);

    let settings = RenderSettings::default();
    let Run {
        fulls,
        incrementals,
        assembles,
        recompressed,
        full_members,
        mut renderer,
        rendered,
    } = run(&mut index, &settings, 5, 20, 0);
    let invalid = rendered.statuses.values().filter(|s| !s.accepted).count();
    assert_eq!(invalid, 0, "every generated object is valid");
    assert_eq!(
        rendered.configs.len(),
        NAMESPACES,
        "{:?}",
        rendered.problems
    );
    // The incremental result is the full result, stored bytes included.
    let check = Renderer::new(settings.clone()).render(&index, &everything());
    let current = renderer.render(&index, &Changes::default());
    assert_eq!(current, check);
    for (ns, c) in &current.configs {
        assert_eq!(c.payload(), check.configs[ns].payload(), "{ns}");
    }
    let largest = current.configs.values().max_by_key(|c| c.bytes).unwrap();
    let largest_payload = largest.payload();
    let gzip_bytes = match &largest_payload {
        Payload::Gzip(b) => Some(b.len()),
        Payload::Text(_) => None,
    };
    // What the proxy does with it: decompress and parse.
    let start = Instant::now();
    let json = payload::decode(largest_payload.as_bytes()).unwrap();
    let decoded = mizzen_proxy_config::ProxyConfig::from_json(json.as_bytes()).unwrap();
    let decode_time = start.elapsed();
    assert_eq!(json, largest.json());
    drop((json, decoded));
    let (largest_json, largest_stored) = (largest.bytes, largest.stored_bytes);
    let members = largest.gzip_members();
    let services_per_config = largest.config().services.len();
    drop((current, check, rendered));

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |n: usize| n as f64 * 100.0 / 1_048_576.0;
    println!(
        "objects: {} namespaces, {} services, {} DestinationRules (3 subsets), {} VirtualServices (2 routes)",
        NAMESPACES, SERVICES, SERVICES, SERVICES
    );
    println!("index load: {:.1} ms", ms(load));
    println!(
        "full render (median of 5): {:.1} ms (min {:.1}, max {:.1})",
        ms(median(fulls.clone())),
        ms(*fulls.iter().min().unwrap()),
        ms(*fulls.iter().max().unwrap())
    );
    println!(
        "incremental render after one VirtualService change (median of 20): {:.2} ms (max {:.2})",
        ms(median(incrementals.clone())),
        ms(*incrementals.iter().max().unwrap())
    );
    println!(
        "building the stored payloads of the 50 changed ConfigMaps after it (median of 20): {:.2} ms (max {:.2})",
        ms(median(assembles.clone())),
        ms(*assembles.iter().max().unwrap())
    );
    println!("services per namespace config: {services_per_config}");
    println!(
        "gzip members: {members} per config (head, chunks of about {} services, tail); a full render compressed {} distinct members for the 50 configs and keeps {}; an incremental render compressed {} (median; max {})",
        settings.gzip_chunk_services,
        full_members.0,
        full_members.1,
        median(recompressed.clone()),
        recompressed.iter().max().unwrap()
    );
    println!(
        "largest config, JSON: {largest_json} bytes ({:.1}% of 1 MiB)",
        pct(largest_json)
    );
    match gzip_bytes {
        Some(gz) => println!(
            "largest ConfigMap, stored: {largest_stored} bytes counted (gzip {gz} bytes, as base64 {largest_stored}; {:.1}% of the 1 MiB limit; JSON/gzip {:.1}x)",
            pct(largest_stored),
            largest_json as f64 / gz as f64
        ),
        None => println!(
            "largest ConfigMap, stored as text: {largest_stored} bytes ({:.1}% of the 1 MiB limit)",
            pct(largest_stored)
        ),
    }
    println!(
        "proxy side: decompressing and parsing the largest config: {:.1} ms",
        ms(decode_time)
    );
    println!(
        "peak RSS (VmHWM): {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
    drop(renderer);

    println!(
        "chunk size (services per gzip member, on average): full render (median of 3) / incremental (median of 10) / largest stored / JSON/gzip"
    );
    for (round, chunk) in [4, 8, 32, 1000].into_iter().enumerate() {
        let settings = RenderSettings {
            gzip_chunk_services: chunk,
            ..RenderSettings::default()
        };
        let r = run(&mut index, &settings, 3, 10, round as u32 + 1);
        let c = r.rendered.configs.values().max_by_key(|c| c.bytes).unwrap();
        let gz = c.payload().as_bytes().len();
        println!(
            "  {chunk:>4}: {:.1} ms / {:.2} ms / {} bytes ({:.1}%) / {:.1}x",
            ms(median(r.fulls)),
            ms(median(r.incrementals)),
            c.stored_bytes,
            pct(c.stored_bytes),
            c.bytes as f64 / gz as f64
        );
    }
}
