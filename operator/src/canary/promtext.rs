//! A small reader of the Prometheus text exposition format (and OpenMetrics text, which the
//! proxies' prometheus-client writes), enough to pull the canary's counters and histogram buckets
//! out of a scrape of `/stats/prometheus`.
//!
//! It reads sample lines only: `name{label="value",...} value [timestamp] [# exemplar]`.
//! Comments (`# TYPE`, `# HELP`, `# EOF`) and blank lines are skipped, and so is any line it
//! cannot read: a scrape is judged by the series the canary needs, and one odd line from another
//! exporter must not hide them. [`parse_line`] says why a line was refused, for tests and logs.

/// One sample: a metric name, its labels in the order written, and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a sample line could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no metric name at the start of the line")]
    MissingName,
    #[error("label set is not closed with '}}'")]
    UnclosedLabels,
    #[error("label {0:?} has no '=\"value\"'")]
    BadLabel(String),
    #[error("label {0:?} has an unterminated value")]
    UnterminatedValue(String),
    #[error("no value after the series")]
    MissingValue,
    #[error("value {0:?} is not a number")]
    BadValue(String),
}

/// Every sample of a scrape, skipping comments and lines that cannot be read.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter_map(|line| parse_line(line).ok().flatten())
        .collect()
}

/// One line: `Ok(None)` for a comment or a blank line, the sample, or why it is not one.
pub fn parse_line(line: &str) -> Result<Option<Sample>, LineError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let name_len = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    if name_len == 0 || line.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(LineError::MissingName);
    }
    let (name, mut rest) = line.split_at(name_len);
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = read_labels(after_brace, &mut labels)?;
    }
    let value = rest
        .split_whitespace()
        .next()
        .ok_or(LineError::MissingValue)?;
    Ok(Some(Sample {
        name: name.to_string(),
        labels,
        value: parse_value(value)?,
    }))
}

/// Reads `a="x",b="y"}` into `labels` and returns what follows the closing brace.
fn read_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(String, String)>,
) -> Result<&'a str, LineError> {
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        if rest.is_empty() {
            return Err(LineError::UnclosedLabels);
        }
        let eq = rest.find('=').ok_or(LineError::UnclosedLabels)?;
        let key = rest[..eq].trim();
        if key.is_empty() || key.contains(['}', ',', '"']) {
            return Err(LineError::BadLabel(key.to_string()));
        }
        let quoted = rest[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| LineError::BadLabel(key.to_string()))?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(LineError::UnterminatedValue(key.to_string())),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err(LineError::UnterminatedValue(key.to_string())),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        rest = &quoted[end + 1..];
    }
}

fn parse_value(s: &str) -> Result<f64, LineError> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| LineError::BadValue(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openmetrics_from_prometheus_client() {
        let text = "# HELP istio_requests Requests handled.\n\
                    # TYPE istio_requests counter\n\
                    istio_requests_total{reporter=\"destination\",response_code=\"200\"} 3\n\
                    istio_request_duration_milliseconds_bucket{le=\"0.5\",reporter=\"destination\"} 0\n\
                    istio_request_duration_milliseconds_bucket{le=\"+Inf\"} 7 1700000000000\n\
                    up 1 # {trace_id=\"abc\"} 1.0\n\
                    # EOF\n";
        let s = parse(text);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "istio_requests_total");
        assert_eq!(s[0].label("response_code"), Some("200"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].label("le"), Some("0.5"));
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[2].value, 7.0);
        assert_eq!(
            (s[3].name.as_str(), s[3].labels.len(), s[3].value),
            ("up", 0, 1.0)
        );
    }

    #[test]
    fn unescapes_label_values_and_accepts_spaces_and_trailing_commas() {
        let s = parse_line(r#"m{a="x\"y", b = "back\\slash\nline",} +Inf"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            s.labels,
            vec![
                ("a".to_string(), "x\"y".to_string()),
                ("b".to_string(), "back\\slash\nline".to_string())
            ]
        );
        assert!(s.value.is_infinite());
        assert!(parse_line("m NaN").unwrap().unwrap().value.is_nan());
        assert_eq!(parse_line("m{} 1.5e3").unwrap().unwrap().value, 1500.0);
        assert_eq!(parse_line("   ").unwrap(), None);
    }

    #[test]
    fn refuses_broken_lines_and_skips_them_in_a_scrape() {
        assert_eq!(parse_line("{a=\"b\"} 1"), Err(LineError::MissingName));
        assert_eq!(parse_line("m{a=\"b\" 1"), Err(LineError::UnclosedLabels));
        assert_eq!(
            parse_line("m{a=\"b"),
            Err(LineError::UnterminatedValue("a".into()))
        );
        assert_eq!(parse_line("m{a=\"b\","), Err(LineError::UnclosedLabels));
        assert_eq!(parse_line("m{a=b} 1"), Err(LineError::BadLabel("a".into())));
        assert_eq!(parse_line("m{a=\"b\"}"), Err(LineError::MissingValue));
        assert_eq!(
            parse_line("m twelve"),
            Err(LineError::BadValue("twelve".into()))
        );
        let s = parse("broken{ 1\ngood 2\nm{a=\"b\" 3\n");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].name, "good");
    }
}
