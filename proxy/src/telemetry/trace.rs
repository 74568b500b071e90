//! Trace context: `x-request-id`, W3C `traceparent`/`tracestate` and B3 headers pass through
//! untouched; the proxy creates what is missing so every request carries an id and a trace.

use http::{HeaderMap, HeaderValue};
use rand::RngExt;

pub const X_REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";
pub const B3_TRACE_ID: &str = "x-b3-traceid";
pub const B3_SPAN_ID: &str = "x-b3-spanid";
pub const B3_SAMPLED: &str = "x-b3-sampled";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random UUID version 4.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// Adds what is missing and returns the request id.
pub fn ensure(headers: &mut HeaderMap) -> String {
    let request_id = match headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => {
            let id = uuid_v4();
            if let Ok(v) = HeaderValue::from_str(&id) {
                headers.insert(X_REQUEST_ID, v);
            }
            id
        }
    };
    if !headers.contains_key(TRACEPARENT) {
        // Continue a B3 trace when there is one, else start a new trace.
        let b3_trace = headers
            .get(B3_TRACE_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .filter(|t| is_hex(t, 32) || is_hex(t, 16))
            .map(|t| format!("{t:0>32}"));
        let b3_span = headers
            .get(B3_SPAN_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .filter(|s| is_hex(s, 16));
        let mut rng = rand::rng();
        let trace = b3_trace.unwrap_or_else(|| hex(&rng.random::<[u8; 16]>()));
        let span = b3_span.unwrap_or_else(|| hex(&rng.random::<[u8; 8]>()));
        let value = format!("00-{trace}-{span}-01");
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(TRACEPARENT, v);
        }
    }
    if !headers.contains_key(B3_TRACE_ID) {
        // Mirror the W3C context into B3 for Zipkin-era applications.
        let tp = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(tp) = tp {
            let parts: Vec<&str> = tp.split('-').collect();
            if parts.len() == 4 && is_hex(parts[1], 32) && is_hex(parts[2], 16) {
                let sampled = if parts[3].ends_with('1') { "1" } else { "0" };
                for (k, v) in [
                    (B3_TRACE_ID, parts[1]),
                    (B3_SPAN_ID, parts[2]),
                    (B3_SAMPLED, sampled),
                ] {
                    if let Ok(v) = HeaderValue::from_str(v) {
                        headers.insert(k, v);
                    }
                }
            }
        }
    }
    request_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_ids_and_traces_when_absent() {
        let mut h = HeaderMap::new();
        let id = ensure(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(h.get(X_REQUEST_ID).unwrap(), id.as_str());
        let tp = h.get(TRACEPARENT).unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1].len(), 32);
        assert_eq!(h.get(B3_TRACE_ID).unwrap(), parts[1]);
    }

    #[test]
    fn keeps_what_the_caller_sent() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, "abc".parse().unwrap());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.insert(TRACEPARENT, tp.parse().unwrap());
        h.insert("tracestate", "congo=t61rcWkgMzE".parse().unwrap());
        assert_eq!(ensure(&mut h), "abc");
        assert_eq!(h.get(TRACEPARENT).unwrap(), tp);
        assert_eq!(h.get("tracestate").unwrap(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn continues_a_b3_trace() {
        let mut h = HeaderMap::new();
        h.insert(B3_TRACE_ID, "463ac35c9f6413ad".parse().unwrap());
        h.insert(B3_SPAN_ID, "a2fb4a1d1a96d312".parse().unwrap());
        ensure(&mut h);
        assert_eq!(
            h.get(TRACEPARENT).unwrap(),
            "00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-01"
        );
        assert_eq!(h.get(B3_TRACE_ID).unwrap(), "463ac35c9f6413ad");
    }
}
