//! Requests as an unmodified app makes them: `curl` in a client pod of the test's namespace
//! (through its sidecar), or `curl` on the host (from outside the cluster, to the ingress
//! gateway's port that the kind config maps to localhost).

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};

/// One response, as `curl` saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// HTTP status; 0 when no response came (refused, reset, timed out).
    pub status: u16,
    /// The demo's `x-demo-version` header, when present.
    pub version: Option<String>,
    pub seconds: f64,
}

/// Ends each request's output: status and time, after the response headers (`-D -`).
const END: &str = "MZ-END";

/// The curl command line (as shell words) of one request; extra arguments go before the URL.
fn curl_words(url: &str, extra: &[&str]) -> String {
    let mut words = vec![
        "curl".to_string(),
        "-s".into(),
        "-o".into(),
        "/dev/null".into(),
        "-D".into(),
        "-".into(),
        "--max-time".into(),
        "20".into(),
        "-w".into(),
        format!("'{END} %{{http_code}} %{{time_total}}\\n'"),
    ];
    words.extend(extra.iter().map(|a| format!("'{a}'")));
    words.push(format!("'{url}'"));
    words.join(" ")
}

/// Parses the output of any number of `curl_words` requests.
pub fn parse(output: &str) -> Vec<Reply> {
    let mut replies = Vec::new();
    let mut version = None;
    for line in output.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix(END) {
            let mut parts = rest.split_whitespace();
            let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let seconds = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
            replies.push(Reply {
                status,
                version: version.take(),
                seconds,
            });
        } else if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("x-demo-version")
        {
            version = Some(value.trim().to_string());
        }
    }
    replies
}

/// Runs `kubectl ARGS`; its stdout, or an error with its stderr.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .context("running kubectl")?;
    if !out.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The name of a running pod labelled `app=<app>` in `ns`.
pub async fn pod(client: &Client, ns: &str, app: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .and_then(|p| p.metadata.name.clone())
        .with_context(|| format!("no running pod app={app} in {ns}"))
}

/// `n` requests to `url` from the `client` container of `pod`, one after another, or all at
/// once when `parallel`.
pub fn from_pod(
    ns: &str,
    pod: &str,
    url: &str,
    n: usize,
    parallel: bool,
    extra: &[&str],
) -> anyhow::Result<Vec<Reply>> {
    let curl = curl_words(url, extra);
    let script = if parallel {
        format!(
            "for i in $(seq {n}); do {curl} > /tmp/r$i & done; wait; cat /tmp/r*; rm -f /tmp/r*"
        )
    } else {
        format!("for i in $(seq {n}); do {curl}; done")
    };
    let out = kubectl(&[
        "-n", ns, "exec", pod, "-c", "client", "--", "sh", "-c", &script,
    ])?;
    let replies = parse(&out);
    if replies.len() != n {
        bail!(
            "expected {n} replies from {pod}, parsed {}: {out}",
            replies.len()
        );
    }
    Ok(replies)
}

/// One request from this machine (outside the cluster).
pub fn from_host(url: &str, extra: &[&str]) -> anyhow::Result<Reply> {
    let script = curl_words(url, extra);
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .context("running curl")?;
    parse(&String::from_utf8_lossy(&out.stdout))
        .pop()
        .context("curl printed no reply")
}

/// Requests sent without pause from a client pod until dropped or [`Load::stop`]ped.
pub struct Load {
    child: Child,
    replies: Arc<Mutex<Vec<Reply>>>,
    reader: Option<JoinHandle<()>>,
}

impl Load {
    /// Starts the loop; `pause` is the shell `sleep` argument between requests (e.g. `0.1`).
    pub fn start(ns: &str, pod: &str, url: &str, pause: &str) -> anyhow::Result<Load> {
        let curl = curl_words(url, &[]);
        let script = format!("while true; do {curl}; sleep {pause}; done");
        let mut child = Command::new("kubectl")
            .args([
                "-n", ns, "exec", pod, "-c", "client", "--", "sh", "-c", &script,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl exec")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let replies = Arc::new(Mutex::new(Vec::new()));
        let sink = replies.clone();
        let reader = std::thread::spawn(move || {
            let mut block = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                block.push_str(&line);
                block.push('\n');
                if line.starts_with(END) {
                    sink.lock().unwrap().extend(parse(&block));
                    block.clear();
                }
            }
        });
        Ok(Load {
            child,
            replies,
            reader: Some(reader),
        })
    }

    /// The replies so far.
    pub fn replies(&self) -> Vec<Reply> {
        self.replies.lock().unwrap().clone()
    }

    /// Stops the loop and returns every reply.
    pub fn stop(mut self) -> Vec<Reply> {
        self.kill();
        self.replies()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Share of `replies` for which `f` holds, 0 to 1.
pub fn share(replies: &[Reply], f: impl Fn(&Reply) -> bool) -> f64 {
    if replies.is_empty() {
        return 0.0;
    }
    replies.iter().filter(|r| f(r)).count() as f64 / replies.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_headers_and_the_end_line() {
        let out = "HTTP/1.1 200 OK\r\nx-demo-version: v2\r\ncontent-length: 3\r\n\r\nMZ-END 200 0.012\n\
                   MZ-END 000 20.001\n\
                   HTTP/1.1 500 Internal Server Error\r\nX-Demo-Version: v1\r\n\r\nMZ-END 500 0.003\n";
        assert_eq!(
            parse(out),
            vec![
                Reply {
                    status: 200,
                    version: Some("v2".into()),
                    seconds: 0.012
                },
                Reply {
                    status: 0,
                    version: None,
                    seconds: 20.001
                },
                Reply {
                    status: 500,
                    version: Some("v1".into()),
                    seconds: 0.003
                },
            ]
        );
    }
}
