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
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    for (range, at) in [(0..4, 0), (4..6, 9), (6..8, 14), (8..10, 19), (10..16, 24)] {
        let len = 2 * range.len();
        hex_into(&b[range], &mut out[at..at + len]);
    }
    HeaderValue::from_bytes(&out).expect("hex digits and dashes are a valid header value")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
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
    if !headers.contains_key(TRACEPARENT) {
        // Continue a B3 trace when there is one, else start a new trace.
        // `00-<32 hex trace>-<16 hex span>-01`
        let mut tp = *b"00-00000000000000000000000000000000-0000000000000000-01";
        let mut rng = rand::rng();
        match b3(headers, B3_TRACE_ID, &[32, 16]) {
            Some(t) => tp[3 + 32 - t.len()..35].copy_from_slice(t),
            None => hex_into(&rng.random::<[u8; 16]>(), &mut tp[3..35]),
        }
        match b3(headers, B3_SPAN_ID, &[16]) {
            Some(s) => tp[36..52].copy_from_slice(s),
            None => hex_into(&rng.random::<[u8; 8]>(), &mut tp[36..52]),
        }
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_bytes(&tp).expect("hex digits are a valid header value"),
        );
    }
    if !headers.contains_key(B3_TRACE_ID) {
        // Mirror the W3C context into B3 for Zipkin-era applications.
        let b3 = headers.get(TRACEPARENT).and_then(|tp| {
            let tp = tp.to_str().ok()?;
            let mut parts = tp.split('-');
            let (_, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            (parts.next().is_none() && is_hex(trace, 32) && is_hex(span, 16)).then(|| {
                let sampled = if flags.ends_with('1') { "1" } else { "0" };
                [
                    HeaderValue::from_str(trace),
                    HeaderValue::from_str(span),
                    Ok(HeaderValue::from_static(sampled)),
                ]
            })
        });
        if let Some([Ok(trace), Ok(span), Ok(sampled)]) = b3 {
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
        && v.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
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
        assert!(
            id.split('-').map(str::len).eq([8, 4, 4, 4, 12]),
            "{id}"
        );
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
}
