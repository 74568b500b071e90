//! Prometheus text from the mesh's pods, read through the API server's pod proxy (no port
//! forwarding, nothing exposed).

use anyhow::Context;
use kube::Client;

/// `GET /api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}`.
pub async fn scrape(
    client: &Client,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    let uri = format!("/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy{path}");
    let request = http_request(&uri)?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("scraping {uri}"))
}

fn http_request(uri: &str) -> anyhow::Result<http::Request<Vec<u8>>> {
    Ok(http::Request::get(uri).body(Vec::new())?)
}

/// The sum of every sample of `name` whose labels include all of `labels`.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// The distinct values of label `label` among the samples of `name`.
pub fn label_values(text: &str, name: &str, label: &str) -> Vec<String> {
    let prefix = format!("{name}{{");
    let key = format!("{label}=\"");
    let mut values: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let start = l.find(&key)? + key.len();
            let end = l[start..].find('"')?;
            Some(l[start..start + end].to_string())
        })
        .collect();
    values.sort();
    values.dedup();
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE istio_requests counter\n\
        istio_requests_total{reporter=\"source\",response_code=\"200\"} 7\n\
        istio_requests_total{reporter=\"destination\",response_code=\"200\",source_principal=\"spiffe://cluster.local/ns/a/sa/default\"} 3\n\
        istio_requests_total{reporter=\"destination\",response_code=\"500\",source_principal=\"unknown\"} 2\n\
        mizzen_agent_certificate_renewals_total{result=\"ok\"} 4\n";

    #[test]
    fn sums_and_label_values() {
        assert_eq!(sum(TEXT, "istio_requests_total", &[]), 12.0);
        assert_eq!(
            sum(TEXT, "istio_requests_total", &[("reporter", "destination")]),
            5.0
        );
        assert_eq!(
            sum(
                TEXT,
                "mizzen_agent_certificate_renewals_total",
                &[("result", "ok")]
            ),
            4.0
        );
        assert_eq!(
            label_values(TEXT, "istio_requests_total", "source_principal"),
            ["spiffe://cluster.local/ns/a/sa/default", "unknown"]
        );
    }
}
