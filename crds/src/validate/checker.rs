//! [`Checker`] walks a spec, keeps the current field path and collects problems; the checks
//! that recur across kinds (percentages, regexes, status codes, selectors, hosts) live here once.

use std::collections::BTreeSet;

use crate::{
    percent::Percent,
    selector::{self, WorkloadSelector, is_dns_label},
    string_match::StringMatch,
};

use super::{Code, Problem};

/// Collects [`Problem`]s under a field path that follows the walk.
#[derive(Debug, Default)]
pub struct Checker {
    path: String,
    problems: Vec<Problem>,
}

impl Checker {
    /// A checker whose paths start at `root` (usually `spec`).
    pub fn new(root: &str) -> Self {
        Self {
            path: root.to_string(),
            problems: Vec::new(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    fn scoped<R>(&mut self, segment: std::fmt::Arguments<'_>, f: impl FnOnce(&mut Self) -> R) -> R {
        let len = self.path.len();
        use std::fmt::Write;
        let _ = self.path.write_fmt(segment);
        let out = f(self);
        self.path.truncate(len);
        out
    }

    /// Runs `f` one field deeper: `spec` → `spec.http`.
    pub fn field<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        let dot = if self.path.is_empty() { "" } else { "." };
        self.scoped(format_args!("{dot}{name}"), f)
    }

    /// Runs `f` at a list element: `spec.http` → `spec.http[2]`.
    pub fn index<R>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scoped(format_args!("[{i}]"), f)
    }

    /// Runs `f` at a map entry: `headers` → `headers[cookie]`.
    pub fn key<R>(&mut self, key: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scoped(format_args!("[{key}]"), f)
    }

    /// Runs `f` for each element of the list field `name`.
    pub fn each<T>(&mut self, name: &str, items: &[T], mut f: impl FnMut(&mut Self, &T)) {
        self.field(name, |c| {
            for (i, item) in items.iter().enumerate() {
                c.index(i, |c| f(c, item));
            }
        });
    }

    /// Runs `f` on the field `name` when it is set.
    pub fn opt<T>(&mut self, name: &str, value: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        if let Some(v) = value {
            self.field(name, |c| f(c, v));
        }
    }

    pub fn error(&mut self, code: Code, message: impl Into<String>) {
        self.problems
            .push(Problem::error(code, self.path.clone(), message));
    }

    pub fn warn(&mut self, code: Code, message: impl Into<String>) {
        self.problems
            .push(Problem::warn(code, self.path.clone(), message));
    }

    /// Warns that field `name` is valid Istio that Mizzen does not implement; `why` says what
    /// happens instead.
    pub fn not_supported(&mut self, name: &str, why: impl Into<String>) {
        self.field(name, |c| c.warn(Code::NotSupported, why));
    }

    /// `field` must be set and non-empty.
    pub fn require(&mut self, name: &str, present: bool) {
        if !present {
            self.field(name, |c| c.error(Code::MissingField, "is required"));
        }
    }

    pub fn percent(&mut self, p: &Percent) {
        if !p.is_valid() {
            self.field("value", |c| {
                c.error(
                    Code::InvalidPercentage,
                    format!("must be between 0 and 100 (got {})", p.value),
                )
            });
        }
    }

    /// A regex must compile with the proxy's engine, matched against the whole input.
    pub fn regex(&mut self, pattern: &str) {
        if let Err(e) = compile_full_match(pattern) {
            self.error(
                Code::InvalidRegex,
                format!(
                    "invalid regular expression {pattern:?}: {}",
                    last_line(&e.to_string())
                ),
            );
        }
    }

    pub fn string_match(&mut self, m: &StringMatch) {
        match m.set_count() {
            0 => self.error(
                Code::MissingField,
                "one of exact, prefix or regex is required",
            ),
            1 => {}
            _ => self.error(
                Code::ConflictingFields,
                "only one of exact, prefix or regex may be set",
            ),
        }
        if let Some(re) = &m.regex {
            self.field("regex", |c| c.regex(re));
        }
    }

    pub fn http_status(&mut self, code: i64) {
        if !(100..=599).contains(&code) {
            self.error(
                Code::InvalidStatusCode,
                format!("HTTP status must be between 100 and 599 (got {code})"),
            );
        }
    }

    pub fn grpc_status(&mut self, status: &str) {
        if grpc_status_code(status).is_none() {
            self.error(
                Code::InvalidStatusCode,
                format!("unknown gRPC status {status:?}: use a code name such as UNAVAILABLE or a number 0-16"),
            );
        }
    }

    pub fn port(&mut self, port: i64) {
        if !(1..=65535).contains(&port) {
            self.error(
                Code::InvalidPort,
                format!("port must be between 1 and 65535 (got {port})"),
            );
        }
    }

    pub fn labels<'a>(&mut self, labels: impl IntoIterator<Item = (&'a String, &'a String)>) {
        for (k, v) in labels {
            self.key(k, |c| {
                for msg in [selector::label_key_error(k), selector::label_value_error(v)]
                    .into_iter()
                    .flatten()
                {
                    c.error(Code::InvalidSelector, msg);
                }
            });
        }
    }

    pub fn selector(&mut self, sel: &WorkloadSelector) {
        self.field("matchLabels", |c| c.labels(&sel.match_labels));
    }

    /// Checks `exportTo`: each entry `.`, `*` or a namespace name (and `~`, "no namespace", when
    /// `allow_none`, which only ServiceEntry allows); no duplicates; `*` and `~` stand alone.
    pub fn export_to(&mut self, export_to: &[String], allow_none: bool) {
        self.field("exportTo", |c| {
            let mut seen = BTreeSet::new();
            for (i, e) in export_to.iter().enumerate() {
                c.index(i, |c| {
                    match e.as_str() {
                        "." | "*" => {}
                        "~" if allow_none => {}
                        "~" => c.error(
                            Code::InvalidValue,
                            "\"~\" (visible to no namespace) is only allowed on a ServiceEntry",
                        ),
                        ns if !is_dns_label(ns) => c.error(
                            Code::InvalidValue,
                            format!("exportTo entries are \".\", \"*\" or a namespace name (got {ns:?})"),
                        ),
                        _ => {}
                    }
                    if !seen.insert(e.as_str()) {
                        c.error(Code::InvalidValue, format!("duplicate exportTo entry {e:?}"));
                    }
                });
            }
            if export_to.len() > 1 {
                for (special, meaning) in [("*", "every namespace"), ("~", "no namespace")] {
                    if seen.contains(special) && (special != "~" || allow_none) {
                        c.error(
                            Code::ConflictingFields,
                            format!(
                                "{special:?} exports to {meaning} and cannot be combined with other entries (got {export_to:?})"
                            ),
                        );
                    }
                }
            }
        });
    }

    /// A service host: an FQDN or short name, optionally with one leading `*` wildcard label.
    pub fn host(&mut self, host: &str) {
        if let Some(msg) = host_error(host) {
            self.error(Code::InvalidHost, msg);
        }
    }
}

/// Compiles `pattern` so that it must match the whole input, with the limits the proxy uses.
pub fn compile_full_match(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// The regex crate's message ends with the reason (`error: unclosed group`); keep that line.
fn last_line(s: &str) -> String {
    s.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// gRPC status names and numbers (`UNAVAILABLE`, `14`).
pub fn grpc_status_code(status: &str) -> Option<u8> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    if let Ok(n) = status.parse::<u8>() {
        return (n <= 16).then_some(n);
    }
    NAMES.iter().position(|n| *n == status).map(|i| i as u8)
}

/// Why `host` is not a valid Istio service host, if it is not.
pub fn host_error(host: &str) -> Option<String> {
    if host.is_empty() {
        return Some("host must not be empty".into());
    }
    if host == "*" {
        return None;
    }
    let rest = host.strip_prefix("*.").unwrap_or(host);
    if rest.contains('*') {
        return Some(format!(
            "host {host:?} is invalid: a wildcard may only be the whole first label (*.example.com)"
        ));
    }
    if host.len() > 253 {
        return Some(format!("host {host:?} is longer than 253 characters"));
    }
    // Hosts are case-insensitive DNS names; IPs are allowed where Istio allows them.
    let lower = rest.to_ascii_lowercase();
    if lower.parse::<std::net::IpAddr>().is_ok() {
        return (rest != host).then(|| {
            format!("host {host:?} is invalid: a wildcard cannot stand in front of an IP address")
        });
    }
    if !lower
        .trim_end_matches('.')
        .split('.')
        .all(selector::is_dns_label)
    {
        return Some(format!("host {host:?} is not a valid DNS name"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_walk() {
        let mut c = Checker::new("spec");
        c.field("http", |c| {
            c.index(0, |c| {
                c.field("route", |c| {
                    c.index(1, |c| {
                        c.field("weight", |c| c.error(Code::InvalidWeight, "bad"))
                    })
                })
            })
        });
        c.field("x", |c| {
            c.key("cookie", |c| c.warn(Code::InvalidValue, "hm"))
        });
        let p = c.into_problems();
        assert_eq!(p[0].to_string(), "spec.http[0].route[1].weight: bad");
        assert_eq!(p[1].path, "spec.x[cookie]");
    }

    #[test]
    fn regex_is_full_match_with_the_proxy_engine() {
        let re = compile_full_match("^(.*;?)?(user=b-nova)(;.*)?").unwrap();
        assert!(re.is_match("user=b-nova"));
        assert!(re.is_match("a=1; user=b-nova"));
        assert!(!re.is_match("user=other"));
        assert!(!compile_full_match("/api").unwrap().is_match("/api/x"));
        let mut c = Checker::new("spec");
        c.regex("(unclosed");
        c.regex("a(?=b)");
        assert_eq!(c.problems().len(), 2);
        assert!(c.problems()[0].message.contains("(unclosed"));
    }

    #[test]
    fn hosts() {
        for ok in [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*.example.com",
            "*",
            "10.0.0.1",
            "Example.COM",
        ] {
            assert_eq!(host_error(ok), None, "{ok}");
        }
        for bad in [
            "",
            "a.*.com",
            "foo*",
            "under_score.com",
            "-lead.com",
            "*.10.0.0.1",
            "*.::1",
        ] {
            assert!(host_error(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn grpc_codes() {
        assert_eq!(grpc_status_code("UNAVAILABLE"), Some(14));
        assert_eq!(grpc_status_code("4"), Some(4));
        assert_eq!(grpc_status_code("17"), None);
        assert_eq!(grpc_status_code("unavailable"), None);
    }
}
