//! The live view: a pure [`render`] of a [`Snapshot`] into text, redrawn every second on the
//! terminal (ANSI: alternate screen, home, clear), or one [`summary_line`] a second when there
//! is no terminal or `--no-ui` was given.

use std::fmt::Write;
use std::io::Write as _;
use std::time::Duration;

use crate::driver::Counts;
use crate::stats::{IdentityRow, ServiceRow, Window};

/// Everything one frame shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    /// Good renders of the directory so far (1 = the first).
    pub renders: u64,
    pub driver: Counts,
    /// The last [`crate::stats::WINDOW`] seconds.
    pub recent: Window,
    /// Since the start (the split and the identities).
    pub total: Window,
    /// The canary's state, with `--canary`.
    pub canary: Option<String>,
}

/// Width of a full split bar.
const BAR: usize = 30;

/// The full screen.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Mizzen local mesh · up {}s · config renders: {} · Ctrl-C stops",
        s.elapsed.as_secs(),
        s.renders
    );
    let _ = writeln!(
        out,
        "driver: {} sent, {} ok, {} failed\n",
        s.driver.sent, s.driver.ok, s.driver.failed
    );
    let _ = writeln!(
        out,
        "{:<40} {:>7} {:>8} {:>9} {:>9}",
        "SERVICE (last 5s)", "RPS", "SUCCESS", "P50", "P99"
    );
    if s.recent.services.is_empty() {
        let _ = writeln!(out, "  (no requests yet)");
    }
    for row in &s.recent.services {
        let _ = writeln!(
            out,
            "{:<40} {:>7.1} {:>8} {:>9} {:>9}",
            row.service,
            row.rps,
            percent(row.success_rate),
            millis(row.p50_ms),
            millis(row.p99_ms)
        );
    }
    let _ = writeln!(out, "\nSPLIT BY VERSION (last 5s, since start)");
    for row in s.recent.services.iter().filter(|r| r.versions.len() > 1) {
        let since = s.total.service(&row.service);
        let _ = writeln!(out, "  {}", row.service);
        for (version, share) in shares(row) {
            let total = since
                .map(shares)
                .and_then(|v| v.into_iter().find(|(n, _)| *n == version))
                .map_or(0.0, |(_, s)| s);
            let filled = (share * BAR as f64).round() as usize;
            let _ = writeln!(
                out,
                "    {version:<8} {}{} {:>5.1}%  ({:.1}% since start)",
                "█".repeat(filled.min(BAR)),
                "·".repeat(BAR - filled.min(BAR)),
                share * 100.0,
                total * 100.0
            );
        }
    }
    let _ = writeln!(out, "\nmTLS IDENTITIES (as the serving sidecars saw them)");
    let width = |f: fn(&IdentityRow) -> &str, title: &str| {
        s.total
            .identities
            .iter()
            .map(|(id, _)| f(id).len())
            .chain([title.len()])
            .max()
            .unwrap_or_default()
    };
    let src = width(|id| &id.source_principal, "SOURCE");
    let dst = width(|id| &id.destination_principal, "DESTINATION");
    let _ = writeln!(
        out,
        "  {:<src$} {:<dst$} {:<10} {:>7}",
        "SOURCE", "DESTINATION", "POLICY", "REQS"
    );
    for (id, n) in &s.total.identities {
        let _ = writeln!(
            out,
            "  {:<src$} {:<dst$} {:<10} {:>7}",
            id.source_principal, id.destination_principal, id.security_policy, n
        );
    }
    if let Some(canary) = &s.canary {
        let _ = writeln!(out, "\nCANARY  {canary}");
    }
    out
}

/// One line: the driver and each service's rate, success and split.
pub fn summary_line(s: &Snapshot) -> String {
    let mut out = format!(
        "{}s driver ok={} failed={}",
        s.elapsed.as_secs(),
        s.driver.ok,
        s.driver.failed
    );
    for row in &s.recent.services {
        let name = row.service.split('.').next().unwrap_or(&row.service);
        let _ = write!(
            out,
            " | {name} {:.1}rps {} p99={}",
            row.rps,
            percent(row.success_rate),
            millis(row.p99_ms)
        );
        if row.versions.len() > 1 {
            let split: Vec<String> = shares(row)
                .into_iter()
                .map(|(v, s)| format!("{v}:{:.0}%", s * 100.0))
                .collect();
            let _ = write!(out, " [{}]", split.join(" "));
        }
    }
    if let Some(canary) = &s.canary {
        let _ = write!(out, " | canary {canary}");
    }
    out
}

/// Each version's share of the service's requests (0 to 1).
fn shares(row: &ServiceRow) -> Vec<(String, f64)> {
    let total: f64 = row.versions.values().sum();
    row.versions
        .iter()
        .map(|(v, n)| (v.clone(), if total > 0.0 { n / total } else { 0.0 }))
        .collect()
}

fn percent(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}%"))
}

fn millis(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}ms"))
}

/// The terminal: the alternate screen while the view runs, the normal one back after.
pub struct Screen {
    live: bool,
}

impl Screen {
    /// `live`: redraw full frames on the alternate screen; otherwise print summary lines.
    pub fn new(live: bool) -> Self {
        if live {
            print!("\x1b[?1049h\x1b[?25l");
            let _ = std::io::stdout().flush();
        }
        Screen { live }
    }

    pub fn show(&self, s: &Snapshot) {
        if self.live {
            print!("\x1b[H\x1b[2J{}", render(s));
        } else {
            println!("{}", summary_line(s));
        }
        let _ = std::io::stdout().flush();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        if self.live {
            print!("\x1b[?25h\x1b[?1049l");
            let _ = std::io::stdout().flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn snapshot() -> Snapshot {
        let reviews = ServiceRow {
            service: "reviews.bookinfo.svc.cluster.local".into(),
            rps: 20.0,
            success_rate: Some(99.5),
            p50_ms: Some(1.3),
            p99_ms: Some(4.0),
            versions: BTreeMap::from([
                ("v1".into(), 80.0),
                ("v2".into(), 10.0),
                ("v3".into(), 10.0),
            ]),
        };
        let window = Window {
            seconds: 5.0,
            services: vec![reviews],
            identities: vec![(
                IdentityRow {
                    source_principal: "spiffe://cluster.local/ns/bookinfo/sa/productpage".into(),
                    destination_principal: "spiffe://cluster.local/ns/bookinfo/sa/reviews".into(),
                    security_policy: "mutual_tls".into(),
                },
                100.0,
            )],
        };
        Snapshot {
            elapsed: Duration::from_secs(12),
            renders: 2,
            driver: Counts {
                sent: 240,
                ok: 239,
                failed: 1,
            },
            recent: window.clone(),
            total: window,
            canary: Some("Progressing, canary weight 20%".into()),
        }
    }

    #[test]
    fn the_screen_shows_rates_split_identities_and_canary() {
        let text = render(&snapshot());
        assert!(text.contains("up 12s · config renders: 2"), "{text}");
        assert!(
            text.contains("driver: 240 sent, 239 ok, 1 failed"),
            "{text}"
        );
        let row = text
            .lines()
            .find(|l| l.starts_with("reviews.bookinfo"))
            .unwrap();
        for part in ["20.0", "99.5%", "1.3ms", "4.0ms"] {
            assert!(row.contains(part), "{row}");
        }
        let v1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("v1"))
            .unwrap();
        assert!(v1.contains(&"█".repeat(24)) && v1.contains("80.0%"), "{v1}");
        assert!(text.contains("sa/productpage"), "{text}");
        assert!(text.contains("mutual_tls"), "{text}");
        assert!(
            text.contains("CANARY  Progressing, canary weight 20%"),
            "{text}"
        );
    }

    #[test]
    fn the_plain_line_is_one_line_with_the_split() {
        let line = summary_line(&snapshot());
        assert_eq!(
            line,
            "12s driver ok=239 failed=1 | reviews 20.0rps 99.5% p99=4.0ms [v1:80% v2:10% v3:10%] \
             | canary Progressing, canary weight 20%"
        );
    }
}
