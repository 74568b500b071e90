//! The rules themselves: a pure function from a [`Spec`] (and the hooks a previous run left,
//! read from `iptables-save`) to the text `iptables-restore --noflush` installs in one
//! transaction.
//!
//! The shape follows Istio's sidecar rules, so people who debug Istio pods read these at once:
//!
//! - `PREROUTING -> MIZZEN_INBOUND`: TCP arriving at the pod, on the captured ports, goes to
//!   `MIZZEN_IN_REDIRECT`, which redirects it to the inbound capture port (15006);
//! - `OUTPUT -> MIZZEN_OUTPUT`: TCP the pod sends goes to `MIZZEN_REDIRECT`, which redirects it
//!   to the outbound capture port (15001), unless it is
//!   - to an excluded port or range,
//!   - the proxy's own (UID or GID 1337): its upstream connections must leave the pod, or every
//!     request would loop back into the proxy,
//!   - on the loopback interface and not the proxy's: the app talking to itself is its business.
//!
//! The one loopback case that is captured: the proxy calling this pod's own address (a service
//! whose endpoint is this pod). Such packets never pass PREROUTING, so `MIZZEN_OUTPUT` sends them
//! through `MIZZEN_INBOUND`, where the inbound port rules (includes and excludes) apply as for
//! traffic from outside. Its calls to `127.0.0.1` (how the inbound side reaches the app) are
//! never captured.
//!
//! Istio adds the same loopback rules for the GID; for the GID only the plain skip is reachable
//! (any other UID on loopback has already returned), so only that one is written. Istio also
//! skips traffic from 127.0.0.6, the source it gives inbound passthrough connections; the
//! Mizzen proxy connects to the app from 127.0.0.1 as UID 1337, which the rules above already
//! skip.
//!
//! Only TCP is captured (DNS and other UDP go out as they are), as in Istio's default.
//!
//! Re-running is safe: the restore declares the four chains, which `--noflush` empties, and
//! deletes the `PREROUTING`/`OUTPUT` jumps a previous run added before adding them again, so the
//! built-in chains never hold two.

use super::spec::{Cidr, Port, Set, Spec};

pub const INBOUND: &str = "MIZZEN_INBOUND";
pub const IN_REDIRECT: &str = "MIZZEN_IN_REDIRECT";
pub const OUTPUT: &str = "MIZZEN_OUTPUT";
pub const REDIRECT: &str = "MIZZEN_REDIRECT";
/// The IPv6 guard's chain in ip6tables' `filter` table (see [`ipv6_guard`]).
pub const IPV6_INBOUND: &str = "MIZZEN_IPV6_INBOUND";

/// The jumps from the built-in chains, exactly as `iptables-save` prints them.
const INBOUND_HOOK: &str = "PREROUTING -p tcp -j MIZZEN_INBOUND";
const OUTPUT_HOOK: &str = "OUTPUT -p tcp -j MIZZEN_OUTPUT";
const IPV6_HOOK: &str = "INPUT -p tcp -j MIZZEN_IPV6_INBOUND";

/// How many of each jump from a built-in chain a previous run left behind (normally 0 or 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub inbound: usize,
    pub output: usize,
    pub ipv6_inbound: usize,
}

impl Hooks {
    /// Counts Mizzen's jumps in `iptables-save` (or `ip6tables-save`) output.
    pub fn from_save(save: &str) -> Self {
        let count = |hook: &str| {
            save.lines()
                .filter(|l| l.trim_end().strip_prefix("-A ") == Some(hook))
                .count()
        };
        Hooks {
            inbound: count(INBOUND_HOOK),
            output: count(OUTPUT_HOOK),
            ipv6_inbound: count(IPV6_HOOK),
        }
    }
}

/// The inbound ports that end in the proxy: `None` when inbound capture is off, `Some([])` for
/// "every port but the excluded ones", else exactly these.
fn inbound_ports(spec: &Spec) -> Option<Vec<Port>> {
    if matches!(spec.exclude_inbound_ports, Set::All) {
        return None;
    }
    match &spec.include_inbound_ports {
        Set::All => Some(Vec::new()),
        Set::Only(ports) => {
            let excluded = spec.exclude_inbound_ports.listed();
            let kept: Vec<Port> = ports
                .iter()
                .filter(|p| !excluded.contains(p))
                .copied()
                .collect();
            (!kept.is_empty()).then_some(kept)
        }
    }
}

/// The rules of one chain, appended in order.
struct Chain<'a> {
    name: &'a str,
    out: &'a mut Vec<String>,
}

impl Chain<'_> {
    fn add(&mut self, rule: impl AsRef<str>) {
        self.out.push(format!("-A {} {}", self.name, rule.as_ref()));
    }
}

/// The `nat` table for `iptables-restore --noflush` (IPv4). CIDRs of the other family are left
/// out (see [`ipv6_guard`] for IPv6).
pub fn nat_v4(spec: &Spec, previous: &Hooks) -> String {
    let v4 = |set: &Set<Cidr>| -> Set<Cidr> {
        match set {
            Set::All => Set::All,
            Set::Only(c) => Set::Only(c.iter().filter(|c| c.is_ipv4()).copied().collect()),
        }
    };
    let include_ranges = v4(&spec.include_outbound_ip_ranges);
    let exclude_ranges = v4(&spec.exclude_outbound_ip_ranges);

    let mut lines = vec!["*nat".to_string()];
    for chain in [INBOUND, IN_REDIRECT, OUTPUT, REDIRECT] {
        lines.push(format!(":{chain} - [0:0]"));
    }
    for _ in 0..previous.inbound {
        lines.push(format!("-D {INBOUND_HOOK}"));
    }
    for _ in 0..previous.output {
        lines.push(format!("-D {OUTPUT_HOOK}"));
    }
    let mut rules = Vec::new();
    let mut hooks = Vec::new();

    // Inbound.
    let inbound = inbound_ports(spec);
    if let Some(ports) = &inbound {
        Chain {
            name: IN_REDIRECT,
            out: &mut rules,
        }
        .add(format!(
            "-p tcp -j REDIRECT --to-ports {}",
            spec.inbound_capture_port
        ));
        let mut chain = Chain {
            name: INBOUND,
            out: &mut rules,
        };
        if ports.is_empty() {
            for port in spec.exclude_inbound_ports.listed() {
                chain.add(format!("-p tcp --dport {port} -j RETURN"));
            }
            chain.add(format!("-p tcp -j {IN_REDIRECT}"));
        } else {
            for port in ports {
                chain.add(format!("-p tcp --dport {port} -j {IN_REDIRECT}"));
            }
        }
        hooks.push(format!("-A {INBOUND_HOOK}"));
    }

    // Outbound.
    let redirect_all = matches!(include_ranges, Set::All);
    let mut redirects: Vec<String> = Vec::new();
    if !matches!(spec.exclude_outbound_ip_ranges, Set::All) {
        for port in spec.include_outbound_ports.listed() {
            redirects.push(format!("-p tcp --dport {port} -j {REDIRECT}"));
        }
        if matches!(spec.include_outbound_ports, Set::All) || redirect_all {
            redirects.push(format!("-j {REDIRECT}"));
        } else {
            for cidr in include_ranges.listed() {
                redirects.push(format!("-d {cidr} -j {REDIRECT}"));
            }
        }
    }
    if matches!(spec.exclude_outbound_ports, Set::All) {
        redirects.clear();
    }
    if inbound.is_some() || !redirects.is_empty() {
        let (uid, gid) = (spec.proxy_uid, spec.proxy_gid);
        let mut chain = Chain {
            name: OUTPUT,
            out: &mut rules,
        };
        for port in spec.exclude_outbound_ports.listed() {
            chain.add(format!("-p tcp --dport {port} -j RETURN"));
        }
        if inbound.is_some() {
            chain.add(format!(
                "-o lo ! -d 127.0.0.1/32 -m owner --uid-owner {uid} -j {INBOUND}"
            ));
        }
        chain.add(format!("-o lo -m owner ! --uid-owner {uid} -j RETURN"));
        chain.add(format!("-m owner --uid-owner {uid} -j RETURN"));
        chain.add(format!("-m owner --gid-owner {gid} -j RETURN"));
        if !redirects.is_empty() {
            for cidr in exclude_ranges.listed() {
                chain.add(format!("-d {cidr} -j RETURN"));
            }
            for rule in &redirects {
                chain.add(rule);
            }
            Chain {
                name: REDIRECT,
                out: &mut rules,
            }
            .add(format!(
                "-p tcp -j REDIRECT --to-ports {}",
                spec.outbound_capture_port
            ));
        }
        hooks.push(format!("-A {OUTPUT_HOOK}"));
    }

    lines.extend(rules);
    lines.extend(hooks);
    lines.push("COMMIT".to_string());
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// The IPv6 guard, for `ip6tables-restore --noflush`: the proxy captures IPv4 only (its capture
/// listeners are IPv4 and it reads `SO_ORIGINAL_DST`, not the IPv6 variant), so a pod that also
/// has an IPv6 address would let a peer reach the app's captured ports over IPv6 past the proxy,
/// and past STRICT mTLS and authorization. The guard refuses new inbound IPv6 connections to the
/// ports IPv4 would capture (a TCP reset, so clients fall back at once), and lets through
/// loopback, replies to the pod's own connections, and the excluded ports. Outbound IPv6 is
/// left alone: it leaves the pod as it would without a sidecar (not in the proxy's metrics,
/// not mTLS). `None` when inbound capture is off.
pub fn ipv6_guard(spec: &Spec, previous: &Hooks) -> Option<String> {
    let ports = inbound_ports(spec)?;
    let mut lines = vec!["*filter".to_string(), format!(":{IPV6_INBOUND} - [0:0]")];
    for _ in 0..previous.ipv6_inbound {
        lines.push(format!("-D {IPV6_HOOK}"));
    }
    let mut chain = Chain {
        name: IPV6_INBOUND,
        out: &mut lines,
    };
    chain.add("-i lo -j RETURN");
    chain.add("-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN");
    if ports.is_empty() {
        for port in spec.exclude_inbound_ports.listed() {
            chain.add(format!("-p tcp --dport {port} -j RETURN"));
        }
        chain.add("-p tcp -j REJECT --reject-with tcp-reset");
    } else {
        for port in &ports {
            chain.add(format!(
                "-p tcp --dport {port} -j REJECT --reject-with tcp-reset"
            ));
        }
    }
    lines.push(format!("-A {IPV6_HOOK}"));
    lines.push("COMMIT".to_string());
    let mut text = lines.join("\n");
    text.push('\n');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[(&str, &str)]) -> Spec {
        let mut s = Spec::injector_default();
        for (flag, value) in args {
            match *flag {
                "include-inbound-ports" => s.include_inbound_ports = value.parse().unwrap(),
                "exclude-inbound-ports" => s.exclude_inbound_ports = value.parse().unwrap(),
                "include-outbound-ip-ranges" => {
                    s.include_outbound_ip_ranges = value.parse().unwrap()
                }
                "exclude-outbound-ip-ranges" => {
                    s.exclude_outbound_ip_ranges = value.parse().unwrap()
                }
                "include-outbound-ports" => s.include_outbound_ports = value.parse().unwrap(),
                "exclude-outbound-ports" => s.exclude_outbound_ports = value.parse().unwrap(),
                other => panic!("unknown flag {other}"),
            }
        }
        s
    }

    /// Golden files: `testdata/<name>.rules`. `MIZZEN_UPDATE_GOLDEN=1` rewrites them (review the
    /// diff).
    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/init/testdata")
            .join(format!("{name}.rules"));
        if std::env::var_os("MIZZEN_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(actual, expected, "{} differs", path.display());
    }

    #[test]
    fn injector_defaults_capture_everything_but_the_proxy_ports() {
        golden(
            "default",
            &nat_v4(&Spec::injector_default(), &Hooks::default()),
        );
    }

    #[test]
    fn pod_annotations_narrow_the_capture() {
        let s = spec(&[
            ("include-inbound-ports", "8080,9090,15021"),
            ("exclude-inbound-ports", "15020,15021,15090,9090"),
            (
                "include-outbound-ip-ranges",
                "10.96.0.0/12,10.244.0.0/16,fd00::/8",
            ),
            ("exclude-outbound-ip-ranges", "10.96.0.1/32,fd00::1/128"),
            ("include-outbound-ports", "5432"),
            ("exclude-outbound-ports", "3306,6379"),
        ]);
        golden("narrow", &nat_v4(&s, &Hooks::default()));
    }

    #[test]
    fn empty_values_turn_each_direction_off() {
        let no_inbound = spec(&[("include-inbound-ports", "")]);
        golden("outbound-only", &nat_v4(&no_inbound, &Hooks::default()));
        let no_outbound = spec(&[("include-outbound-ip-ranges", "")]);
        golden("inbound-only", &nat_v4(&no_outbound, &Hooks::default()));
        let nothing = spec(&[
            ("include-inbound-ports", ""),
            ("include-outbound-ip-ranges", ""),
        ]);
        golden("nothing", &nat_v4(&nothing, &Hooks::default()));
        // `*` on an exclude list is "exclude everything".
        let excluded = spec(&[
            ("exclude-inbound-ports", "*"),
            ("exclude-outbound-ip-ranges", "*"),
        ]);
        assert_eq!(
            nat_v4(&excluded, &Hooks::default()),
            nat_v4(&nothing, &Hooks::default())
        );
        // Every included inbound port excluded: no inbound capture.
        let all_excluded = spec(&[
            ("include-inbound-ports", "15021"),
            ("include-outbound-ip-ranges", ""),
        ]);
        assert_eq!(
            nat_v4(&all_excluded, &Hooks::default()),
            nat_v4(&nothing, &Hooks::default())
        );
    }

    #[test]
    fn include_outbound_ports_alone_capture_those_ports_anywhere() {
        let s = spec(&[
            ("include-inbound-ports", ""),
            ("include-outbound-ip-ranges", ""),
            ("include-outbound-ports", "80,443"),
        ]);
        golden("outbound-ports", &nat_v4(&s, &Hooks::default()));
    }

    #[test]
    fn a_rerun_replaces_its_jumps_instead_of_adding_more() {
        let save = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n\
                    :MIZZEN_INBOUND - [0:0]\n\
                    -A PREROUTING -p tcp -j MIZZEN_INBOUND\n\
                    -A OUTPUT -p tcp -j MIZZEN_OUTPUT\n\
                    -A OUTPUT -p tcp -j MIZZEN_OUTPUT\n\
                    -A MIZZEN_INBOUND -p tcp -j MIZZEN_IN_REDIRECT\nCOMMIT\n";
        let previous = Hooks::from_save(save);
        assert_eq!(
            previous,
            Hooks {
                inbound: 1,
                output: 2,
                ipv6_inbound: 0
            }
        );
        golden("rerun", &nat_v4(&Spec::injector_default(), &previous));
    }

    #[test]
    fn other_capture_ports_and_uid() {
        let mut s = Spec::injector_default();
        s.proxy_uid = 2000;
        s.proxy_gid = 3000;
        s.inbound_capture_port = 16006;
        s.outbound_capture_port = 16001;
        let text = nat_v4(&s, &Hooks::default());
        assert!(text.contains("-A MIZZEN_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006\n"));
        assert!(text.contains("-A MIZZEN_REDIRECT -p tcp -j REDIRECT --to-ports 16001\n"));
        assert!(text.contains("-A MIZZEN_OUTPUT -m owner --uid-owner 2000 -j RETURN\n"));
        assert!(text.contains("-A MIZZEN_OUTPUT -m owner --gid-owner 3000 -j RETURN\n"));
    }

    #[test]
    fn ipv6_guard_refuses_what_ipv4_would_capture() {
        golden(
            "ipv6-guard",
            &ipv6_guard(&Spec::injector_default(), &Hooks::default()).unwrap(),
        );
        let listed = spec(&[("include-inbound-ports", "8080,9090")]);
        golden(
            "ipv6-guard-ports",
            &ipv6_guard(
                &listed,
                &Hooks {
                    ipv6_inbound: 1,
                    ..Hooks::default()
                },
            )
            .unwrap(),
        );
        assert_eq!(
            ipv6_guard(&spec(&[("include-inbound-ports", "")]), &Hooks::default()),
            None
        );
    }
}
