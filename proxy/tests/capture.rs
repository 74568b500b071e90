//! Capture as in a pod: inside a network namespace the test creates, iptables redirects the
//! app's connections to a service's virtual IP to the proxy on 15001 (skipping the proxy's own
//! UID 1337, as `mizzen-proxy init` will), and connections arriving at the pod's address to
//! 15006; the proxy finds the original destination with `SO_ORIGINAL_DST`. Skipped, saying
//! why, where the machine cannot do this (not root, no `ip`/`iptables`/`setpriv`/`curl`/
//! `python3`).

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Netns {
    name: String,
    children: Vec<Child>,
    /// A second namespace playing another pod (for inbound traffic).
    peer: Option<String>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if let Some(peer) = &self.peer {
            let _ = Command::new("ip").args(["netns", "del", peer]).status();
        }
    }
}

impl Netns {
    fn exec(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    fn run(&self, args: &[&str]) -> bool {
        self.exec(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn spawn(&mut self, args: &[&str]) {
        let child = self
            .exec(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// `curl` from inside the namespace as root (so its traffic is captured): status code.
    fn curl(&self, url: &str, extra: &[&str]) -> String {
        let out = self
            .exec(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
            ])
            .args(extra)
            .arg(url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn setup() -> Result<Netns, String> {
    for tool in ["ip", "iptables", "setpriv", "curl", "python3"] {
        if !have(tool) {
            return Err(format!("{tool} is not installed"));
        }
    }
    let name = format!("mzcap{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &name])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Err("cannot create a network namespace (not root?)".into());
    }
    let peer = format!("{name}p");
    let ok = Command::new("ip")
        .args(["netns", "add", &peer])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let ns = Netns {
        name: name.clone(),
        children: Vec::new(),
        peer: ok.then_some(peer.clone()),
    };
    if !ok {
        return Err("cannot create a second network namespace".into());
    }
    let veth = format!("mzv{}", std::process::id() % 100_000);
    let host_steps: &[&[&str]] = &[
        &[
            "ip", "link", "add", &veth, "netns", &name, "type", "veth", "peer", "name", "eth0",
            "netns", &peer,
        ],
        &[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            "10.244.0.2/24",
            "dev",
            &veth,
        ],
        &["ip", "-n", &name, "link", "set", &veth, "up"],
        &[
            "ip",
            "-n",
            &peer,
            "addr",
            "add",
            "10.244.0.3/24",
            "dev",
            "eth0",
        ],
        &["ip", "-n", &peer, "link", "set", "eth0", "up"],
        &["ip", "-n", &peer, "link", "set", "lo", "up"],
    ];
    for step in host_steps {
        let ok = Command::new(step[0])
            .args(&step[1..])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("`{}` failed", step.join(" ")));
        }
    }
    let steps: &[&[&str]] = &[
        &["ip", "link", "set", "lo", "up"],
        &["ip", "addr", "add", "10.96.0.10/32", "dev", "lo"],
        &["ip", "addr", "add", "10.96.0.99/32", "dev", "lo"],
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "10.96.0.0/16",
            "-m",
            "owner",
            "!",
            "--uid-owner",
            "1337",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "-d",
            "10.244.0.2",
            "--dport",
            "9000",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ],
    ];
    for step in steps {
        if !ns.run(step) {
            return Err(format!("`{}` failed in the namespace", step.join(" ")));
        }
    }
    Ok(ns)
}

#[test]
fn capture_finds_the_original_destination_outbound_and_inbound() {
    let mut ns = match setup() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED capture_finds_the_original_destination_outbound_and_inbound: {why}");
            return;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        r#"{"format":"mizzen.io/proxy-config/v1","namespace":"default","services":[
            {"host":"serviceb.default.svc.cluster.local","aliases":["serviceb"],"namespace":"default",
             "addresses":["10.96.0.10"],"ports":[{"number":8080,"name":"http","protocol":"HTTP"}],
             "endpoints":[{"address":"127.0.0.1","ports":{"http":9000}}]}]}"#,
    )
    .unwrap();
    // The proxy runs as UID 1337 and must read its config.
    let _ = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(dir.path())
        .status();
    let bin = env!("CARGO_BIN_EXE_mizzen-proxy");
    let cfg = config.to_str().unwrap().to_string();
    ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        "9000",
        "--bind",
        "127.0.0.1",
    ]);
    ns.spawn(&[
        "python3",
        "-m",
        "http.server",
        "9001",
        "--bind",
        "10.96.0.99",
    ]);
    ns.spawn(&[
        "setpriv",
        "--reuid=1337",
        "--regid=1337",
        "--clear-groups",
        bin,
        "sidecar",
        "--config",
        &cfg,
        "--no-access-log",
        "--concurrency",
        "1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    while ns.curl("http://127.0.0.1:15021/healthz/ready", &[]) != "200"
        || ns.curl("http://127.0.0.1:9000/", &[]) != "200"
        || ns.curl("http://10.96.0.99:9001/", &["--noproxy", "*"]) != "200"
    {
        assert!(Instant::now() < deadline, "proxy or backends never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // By virtual IP (no Host the config knows): the service owning 10.96.0.10:8080.
    assert_eq!(ns.curl("http://10.96.0.10:8080/", &[]), "200");
    // By alias, as an app would call it.
    assert_eq!(
        ns.curl(
            "http://serviceb:8080/",
            &["--resolve", "serviceb:8080:10.96.0.10"]
        ),
        "200"
    );
    // An address no service has: passed through to the original destination (ALLOW_ANY).
    assert_eq!(ns.curl("http://10.96.0.99:9001/", &[]), "200");
    // Inbound: another pod calls this pod's address on the app's port; the proxy on 15006
    // forwards to the app on 127.0.0.1:9000.
    let peer = ns.peer.clone().unwrap();
    let from_peer = |url: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &peer,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["--max-time", "5", url])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(from_peer("http://10.244.0.2:9000/"), "200");
    // The proxy counted them as outbound requests.
    let out = ns
        .exec(&["curl", "-s", "http://127.0.0.1:15090/stats/prometheus"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics.contains("destination_service=\"serviceb.default.svc.cluster.local\""),
        "{metrics}"
    );
    assert!(metrics.contains("reporter=\"destination\""), "{metrics}");
}
