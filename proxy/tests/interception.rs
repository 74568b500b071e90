//! Transparent interception as in a pod, with the rules `mizzen-proxy init` installs (nothing
//! hand-written): two network namespaces joined by a veth pair play the app's pod
//! (10.247.0.2, fd00:4d5a::2) and a peer pod (10.247.0.3, fd00:4d5a::3). In the app's namespace
//! the test runs `mizzen-proxy init`, the sidecar as UID 1337, and an app server; unmodified
//! `curl` clients then show that
//!
//! - outbound: the app's call to the peer goes through the proxy (its access log and metrics
//!   count it as `reporter="source"`), exactly once (no loop);
//! - inbound: the peer's call to the app's port reaches the app through 15006 (the app sees it
//!   come from 127.0.0.1, the proxy logs it as `reporter="destination"`);
//! - UID 1337's own traffic, the app's loopback traffic, an excluded inbound port and an
//!   excluded outbound port bypass the proxy;
//! - over IPv6, which the proxy does not capture, the peer is refused on captured ports and let
//!   through on excluded ones;
//! - running `init` again leaves one jump per built-in chain; a bad flag fails naming the value.
//!
//! Skipped, saying why, where the machine cannot do this (not root, or no `ip`, iptables,
//! `setpriv`, `curl`, `python3`). Every wait is bounded; the namespaces (and with them the veth
//! pair) and every process are removed at the end, also when an assertion fails.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

const APP_IP: &str = "10.247.0.2";
const PEER_IP: &str = "10.247.0.3";
const APP_IP6: &str = "fd00:4d5a::2";
const PEER_IP6: &str = "fd00:4d5a::3";
/// App ports: captured inbound, and excluded with `--exclude-inbound-ports`.
const APP_PORT: u16 = 9001;
const APP_EXCLUDED_PORT: u16 = 9002;
/// Peer ports: a mesh service captured outbound, and one excluded with
/// `--exclude-outbound-ports`.
const PEER_PORT: u16 = 8081;
const PEER_EXCLUDED_PORT: u16 = 8082;

/// Answers 200 to every GET on `[::]:PORT` (dual stack).
const HTTP_SERVER: &str = r#"
import http.server, socket, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
Server(("::", int(sys.argv[1])), Handler).serve_forever()
"#;

/// The two namespaces and everything started in them; dropping it removes them all.
struct Lab {
    app: String,
    peer: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.app, &self.peer] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Lab {
    /// Creates the namespaces, or says why this machine cannot.
    fn new() -> Result<Lab, String> {
        for tool in ["ip", "setpriv", "curl", "python3"] {
            if !have(tool) {
                return Err(format!("{tool} is not installed"));
            }
        }
        if ![
            "iptables-nft-restore",
            "iptables-legacy-restore",
            "iptables-restore",
        ]
        .iter()
        .any(|t| have(t))
        {
            return Err("iptables is not installed".into());
        }
        // Unique per run and per test: namespace and interface names are global to the host.
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let app = format!("mzi{id}a");
        ip(&["netns", "add", &app])
            .map_err(|e| format!("cannot create a network namespace (not root?): {e}"))?;
        let mut lab = Lab {
            app: app.clone(),
            peer: String::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        let peer = format!("mzi{id}p");
        ip(&["netns", "add", &peer])?;
        lab.peer = peer.clone();
        let (veth_app, veth_peer) = (format!("mzi{id}va"), format!("mzi{id}vp"));
        ip(&[
            "link", "add", &veth_app, "netns", &app, "type", "veth", "peer", "name", &veth_peer,
            "netns", &peer,
        ])?;
        for (ns, dev, v4, v6) in [
            (&app, &veth_app, APP_IP, APP_IP6),
            (&peer, &veth_peer, PEER_IP, PEER_IP6),
        ] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            // nodad: usable at once, not after duplicate address detection.
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        // The proxy (UID 1337) reads its config from here.
        let _ = Command::new("chmod")
            .args(["a+rx"])
            .arg(lab.dir.path())
            .status();
        Ok(lab)
    }

    fn exec(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts a long-running process in `ns`, its stdout and stderr going to the log `name`.
    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) {
        let log = File::create(self.log(name)).unwrap();
        let child = Self::exec(ns, args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// A plain HTTP server (the "app") on `[::]:port`, also taking IPv4: 200 to every GET, and
    /// a log line on stderr with the client's address.
    fn serve(&mut self, ns: &str, port: u16) {
        let ns = ns.to_string();
        self.spawn(
            &ns,
            &format!("server-{port}.log"),
            &["python3", "-u", "-c", HTTP_SERVER, &port.to_string()],
        );
    }

    /// `curl` from `ns` (as root, or as the proxy's UID): the HTTP status, `000` when the
    /// connection failed.
    fn curl(ns: &str, as_proxy: bool, url: &str) -> String {
        let mut args = vec![];
        if as_proxy {
            args.extend(["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"]);
        }
        args.extend([
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
            "--max-time",
            "5",
            url,
        ]);
        let out = Self::exec(ns, &args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn init(&self, args: &[&str]) -> Output {
        let mut all = vec![env!("CARGO_BIN_EXE_mizzen-proxy"), "init"];
        all.extend(args);
        Self::exec(&self.app, &all).output().unwrap()
    }

    /// `iptables-save -t nat` of both variants (whichever `init` picked) in the app namespace.
    fn nat_rules(&self) -> String {
        ["iptables-nft-save", "iptables-legacy-save"]
            .iter()
            .filter_map(|save| Self::exec(&self.app, &[save, "-t", "nat"]).output().ok())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .collect()
    }
}

/// The injector's flags for a pod annotated with `excludeInboundPorts: "9002"` and
/// `excludeOutboundPorts: "8082"`.
fn init_flags() -> Vec<String> {
    [
        ("--proxy-uid", "1337"),
        ("--inbound-capture-port", "15006"),
        ("--outbound-capture-port", "15001"),
        ("--include-inbound-ports", "*"),
        (
            "--exclude-inbound-ports",
            &format!("15020,15021,15090,{APP_EXCLUDED_PORT}"),
        ),
        ("--include-outbound-ip-ranges", "*"),
        ("--exclude-outbound-ip-ranges", ""),
        ("--include-outbound-ports", ""),
        ("--exclude-outbound-ports", &PEER_EXCLUDED_PORT.to_string()),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v.to_string()])
    .collect()
}

fn wait_for(what: &str, deadline: Instant, mut ok: impl FnMut() -> bool) {
    while !ok() {
        assert!(Instant::now() < deadline, "{what} never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `(path, reporter)` of every access log line the proxy wrote.
fn access_log(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some((
                v.get("path")?.as_str()?.to_string(),
                v.get("reporter")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn init_rules_send_an_unmodified_clients_traffic_through_the_proxy() {
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!(
                "SKIPPED init_rules_send_an_unmodified_clients_traffic_through_the_proxy: {why}"
            );
            return;
        }
    };
    let (app, peer) = (lab.app.clone(), lab.peer.clone());

    // A bad value fails before anything is installed, naming itself.
    let bad = lab.init(&["--include-inbound-ports", "http"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("\"http\" is not a port number"), "{stderr}");

    // Twice, as a restarted init container would: the second run replaces the first.
    let flags = init_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    for run in 1..=2 {
        let out = lab.init(&flags);
        assert!(
            out.status.success(),
            "init run {run} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let nat = lab.nat_rules();
    assert_eq!(
        nat.matches("-A PREROUTING -p tcp -j MIZZEN_INBOUND")
            .count(),
        1,
        "{nat}"
    );
    assert_eq!(
        nat.matches("-A OUTPUT -p tcp -j MIZZEN_OUTPUT").count(),
        1,
        "{nat}"
    );

    // The sidecar: no services but the peer's, plaintext, access log on.
    let config = lab.dir.path().join("config.json");
    std::fs::write(
        &config,
        format!(
            r#"{{"format":"mizzen.io/proxy-config/v1","namespace":"default","services":[
            {{"host":"peer.default.svc.cluster.local","aliases":["peer"],"namespace":"default",
             "addresses":["{PEER_IP}"],"ports":[{{"number":{PEER_PORT},"name":"http","protocol":"HTTP"}}],
             "endpoints":[{{"address":"{PEER_IP}","ports":{{"http":{PEER_PORT}}}}}]}}]}}"#
        ),
    )
    .unwrap();
    let _ = Command::new("chmod").arg("a+r").arg(&config).status();
    lab.serve(&app, APP_PORT);
    lab.serve(&app, APP_EXCLUDED_PORT);
    lab.serve(&peer, PEER_PORT);
    lab.serve(&peer, PEER_EXCLUDED_PORT);
    let cfg = config.to_str().unwrap().to_string();
    lab.spawn(
        &app,
        "proxy.log",
        &[
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            env!("CARGO_BIN_EXE_mizzen-proxy"),
            "sidecar",
            "--config",
            &cfg,
            "--concurrency",
            "1",
            "--workload-name",
            "app-v1",
            "--app",
            "app",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let up = |ns: &str, url: &str| Lab::curl(ns, false, url) == "200";
    wait_for("the proxy", deadline, || {
        up(&app, "http://127.0.0.1:15021/healthz/ready")
    });
    for port in [APP_PORT, APP_EXCLUDED_PORT] {
        wait_for("an app server", deadline, || {
            up(&app, &format!("http://127.0.0.1:{port}/up"))
        });
    }
    for port in [PEER_PORT, PEER_EXCLUDED_PORT] {
        wait_for("a peer server", deadline, || {
            up(&peer, &format!("http://127.0.0.1:{port}/up"))
        });
    }

    let from_app =
        |path: &str, port: u16| Lab::curl(&app, false, &format!("http://{PEER_IP}:{port}{path}"));
    let from_peer = |host: &str, port: u16, path: &str| {
        Lab::curl(&peer, false, &format!("http://{host}:{port}{path}"))
    };
    assert_eq!(from_app("/outbound-captured", PEER_PORT), "200");
    assert_eq!(from_app("/outbound-excluded", PEER_EXCLUDED_PORT), "200");
    assert_eq!(
        Lab::curl(
            &app,
            true,
            &format!("http://{PEER_IP}:{PEER_PORT}/from-proxy-uid")
        ),
        "200"
    );
    assert_eq!(
        Lab::curl(
            &app,
            false,
            &format!("http://127.0.0.1:{APP_PORT}/loopback")
        ),
        "200"
    );
    assert_eq!(from_peer(APP_IP, APP_PORT, "/inbound-captured"), "200");
    assert_eq!(
        from_peer(APP_IP, APP_EXCLUDED_PORT, "/inbound-excluded"),
        "200"
    );
    // IPv6: refused (reset) where IPv4 would be captured, let through where excluded.
    assert_eq!(
        from_peer(&format!("[{APP_IP6}]"), APP_PORT, "/inbound-ipv6"),
        "000"
    );
    assert_eq!(
        from_peer(
            &format!("[{APP_IP6}]"),
            APP_EXCLUDED_PORT,
            "/inbound-ipv6-excluded"
        ),
        "200"
    );

    // The proxy saw exactly the captured requests, each once.
    let log_path = lab.log("proxy.log");
    let expected = vec![
        ("/outbound-captured".to_string(), "source".to_string()),
        ("/inbound-captured".to_string(), "destination".to_string()),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = access_log(&log_path);
    while seen.len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        seen = access_log(&log_path);
    }
    let mut sorted_seen = seen.clone();
    sorted_seen.sort();
    let mut sorted_expected = expected.clone();
    sorted_expected.sort();
    assert_eq!(
        sorted_seen,
        sorted_expected,
        "proxy log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    // The app got the captured request from the proxy (127.0.0.1), the excluded one straight
    // from the peer.
    let app_log = std::fs::read_to_string(lab.log(&format!("server-{APP_PORT}.log"))).unwrap();
    let line = app_log
        .lines()
        .find(|l| l.contains("/inbound-captured"))
        .unwrap_or_else(|| panic!("app log:\n{app_log}"));
    assert!(line.contains("127.0.0.1"), "{line}");
    let excluded_log =
        std::fs::read_to_string(lab.log(&format!("server-{APP_EXCLUDED_PORT}.log"))).unwrap();
    let line = excluded_log
        .lines()
        .find(|l| l.contains("/inbound-excluded"))
        .unwrap_or_else(|| panic!("app log:\n{excluded_log}"));
    assert!(line.contains(PEER_IP), "{line}");

    // And counted them in Istio's metrics.
    let out = Lab::exec(
        &app,
        &[
            "curl",
            "-s",
            "--max-time",
            "5",
            "http://127.0.0.1:15090/stats/prometheus",
        ],
    )
    .output()
    .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .collect();
    assert!(
        requests.iter().any(|l| l.contains("reporter=\"source\"")
            && l.contains("destination_service=\"peer.default.svc.cluster.local\"")
            && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("reporter=\"destination\"") && l.ends_with(" 1")),
        "{metrics}"
    );
}
