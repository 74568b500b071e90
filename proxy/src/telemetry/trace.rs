//! Trace context: `x-request-id`, W3C `traceparent`/`tracestate` and B3 headers pass through
//! untouched; the proxy creates what is missing so every request carries an id and a trace.

use http::{HeaderMap, HeaderName, HeaderValue};
use rand::RngExt;

// Named once: a header looked up or inserted by a `&str` name is parsed every time.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// Lower-case hex of `bytes` into `out` (twice as long); no allocation on the request path.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// A random UUID version 4, as the header value it becomes.
fn uuid_v4() -> HeaderValue {
    let mut b = rand::rng().random::<u128>().to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    for (range, at) in [(0..4, 0), (4..6, 9), (6..8, 14), (8..10, 19), (10..16, 24)] {
        let len = 2 * range.len();
        hex_into(&b[range], &mut out[at..at + len]);
    }
    header_value(&out)
}

fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).expect("hex digits and dashes are a valid header value")
}

fn is_hex(s: &[u8]) -> bool {
    s.iter().all(|b| b.is_ascii_hexdigit()) && s.iter().any(|&b| b != b'0')
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`: W3C's fixed layout for version 00.
const TRACEPARENT_LEN: usize = 55;
const TRACE_ID: std::ops::Range<usize> = 3..35;
const SPAN_ID: std::ops::Range<usize> = 36..52;

/// The trace id, span id and sampled flag of a well-formed `traceparent`.
fn parse_traceparent(v: &[u8]) -> Option<(&[u8], &[u8], bool)> {
    let ok = v.len() == TRACEPARENT_LEN
        && [v[2], v[35], v[52]] == [b'-'; 3]
        && is_hex(&v[TRACE_ID])
        && is_hex(&v[SPAN_ID]);
    ok.then(|| (&v[TRACE_ID], &v[SPAN_ID], v[54] & 1 == 1))
}

/// Adds what is missing and returns the request id.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let request_id = match headers.get(X_REQUEST_ID) {
        Some(id) if !id.is_empty() => id.clone(),
        _ => {
            let id = uuid_v4();
            headers.insert(X_REQUEST_ID, id.clone());
            id
        }
    };
    let mut made = None;
    if !headers.contains_key(TRACEPARENT) {
        // Continue a B3 trace when there is one, else start a new trace.
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
        let mut rng = rand::rng();
        match b3(headers, B3_TRACE_ID, &[32, 16]) {
            Some(t) => tp[TRACE_ID.end - t.len()..TRACE_ID.end].copy_from_slice(t),
            None => hex_into(&rng.random::<u128>().to_le_bytes(), &mut tp[TRACE_ID]),
        }
        match b3(headers, B3_SPAN_ID, &[16]) {
            Some(s) => tp[SPAN_ID].copy_from_slice(s),
            None => hex_into(&rng.random::<u64>().to_le_bytes(), &mut tp[SPAN_ID]),
        }
        headers.insert(TRACEPARENT, header_value(&tp));
        made = Some(tp);
    }
    if !headers.contains_key(B3_TRACE_ID) {
        // Mirror the W3C context into B3 for Zipkin-era applications.
        let b3 = match &made {
            Some(tp) => parse_traceparent(tp),
            None => headers
                .get(TRACEPARENT)
                .and_then(|v| parse_traceparent(v.as_bytes())),
        }
        .map(|(trace, span, sampled)| {
            [
                header_value(trace),
                header_value(span),
                HeaderValue::from_static(if sampled { "1" } else { "0" }),
            ]
        });
        if let Some([trace, span, sampled]) = b3 {
            headers.insert(B3_TRACE_ID, trace);
            headers.insert(B3_SPAN_ID, span);
            headers.insert(B3_SAMPLED, sampled);
        }
    }
    request_id
}

/// A B3 id header of one of the allowed hex lengths, lower-cased, or `None`.
fn b3<'h>(headers: &'h HeaderMap, name: HeaderName, lens: &[usize]) -> Option<&'h [u8]> {
    let v = headers.get(name)?.as_bytes();
    let ok = lens.contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && v.iter().any(|&b| b != b'0');
    ok.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_ids_and_traces_when_absent() {
        let mut h = HeaderMap::new();
        let id = ensure(&mut h);
        let id = id.to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(id.split('-').map(str::len).eq([8, 4, 4, 4, 12]), "{id}");
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert_eq!(h.get(X_REQUEST_ID).unwrap(), id);
        let tp = h.get(TRACEPARENT).unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1].len(), 32);
        assert_eq!(h.get(B3_TRACE_ID).unwrap(), parts[1]);
        assert_eq!(h.get(B3_SPAN_ID).unwrap(), parts[2]);
        assert_eq!(h.get(B3_SAMPLED).unwrap(), "1");
        assert_ne!(parts[1], "0".repeat(32));
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

    #[test]
    fn mirrors_a_callers_traceparent_into_b3_and_ignores_a_malformed_one() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        h.insert(TRACEPARENT, tp.parse().unwrap());
        ensure(&mut h);
        assert_eq!(
            h.get(B3_TRACE_ID).unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(h.get(B3_SPAN_ID).unwrap(), "00f067aa0ba902b7");
        assert_eq!(h.get(B3_SAMPLED).unwrap(), "0");
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, "00-short-00f067aa0ba902b7-01".parse().unwrap());
        ensure(&mut h);
        assert!(h.get(B3_TRACE_ID).is_none());
        assert_eq!(h.get(TRACEPARENT).unwrap(), "00-short-00f067aa0ba902b7-01");
    }
}
