//! Trace context: `x-request-id`, W3C `traceparent`/`tracestate` and B3 headers pass through
//! untouched; the proxy creates what is missing so every request carries an id and a trace.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::RngExt;

// Named once: a header looked up or inserted by a `&str` name is parsed every time.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// The two lower-case hex digits of every byte value.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0x0f]];
        b += 1;
    }
    pairs
};

/// Lower-case hex of `bytes` into `out` (twice as long); no allocation on the request path.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// A random UUID version 4 into `out`.
fn uuid_v4(out: &mut [u8; 36]) {
    let mut b = rand::rng().random::<u128>().to_le_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    out.fill(b'-');
    for (range, at) in [(0..4, 0), (4..6, 9), (6..8, 14), (8..10, 19), (10..16, 24)] {
        let len = 2 * range.len();
        hex_into(&b[range], &mut out[at..at + len]);
    }
}

/// A header value made by the proxy (hex digits and dashes), sharing `buf`'s allocation.
fn header_value(buf: &Bytes, range: std::ops::Range<usize>) -> HeaderValue {
    HeaderValue::from_maybe_shared(buf.slice(range))
        .expect("hex digits and dashes are a valid header value")
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

/// The trace-context headers a request arrived with (the first value of each).
#[derive(Default)]
struct Arrived {
    request_id: Option<HeaderValue>,
    traceparent: Option<HeaderValue>,
    b3_trace_id: Option<HeaderValue>,
    b3_span_id: Option<HeaderValue>,
}

impl Arrived {
    /// One pass over the request's few headers: cheaper than a hashed lookup per name, and
    /// most requests from an app carry none of these.
    fn of(headers: &HeaderMap) -> Self {
        let mut found = Self::default();
        for (name, value) in headers {
            let slot = if name == X_REQUEST_ID {
                &mut found.request_id
            } else if name == TRACEPARENT {
                &mut found.traceparent
            } else if name == B3_TRACE_ID {
                &mut found.b3_trace_id
            } else if name == B3_SPAN_ID {
                &mut found.b3_span_id
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        found
    }
}

/// Where the values the proxy makes sit in their one buffer.
const MADE_ID: std::ops::Range<usize> = 0..36;
const MADE_TP: std::ops::Range<usize> = 36..36 + TRACEPARENT_LEN;

/// Adds what is missing and returns the request id. What the proxy makes (request id,
/// traceparent, its B3 mirror) shares one allocation.
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let arrived = Arrived::of(headers);
    let b3_trace = arrived.b3_trace_id.as_ref().map(HeaderValue::as_bytes);
    let mut buf = [b'0'; MADE_TP.end];
    let make_id = arrived
        .request_id
        .as_ref()
        .is_none_or(HeaderValue::is_empty);
    if make_id {
        let id: &mut [u8; 36] = (&mut buf[MADE_ID]).try_into().expect("36 bytes");
        uuid_v4(id);
    }
    let make_tp = arrived.traceparent.is_none();
    if make_tp {
        // Continue a B3 trace when there is one, else start a new trace.
        let tp = &mut buf[MADE_TP];
        tp.copy_from_slice(b"00-00000000000000000000000000000000-0000000000000000-01");
        let mut rng = rand::rng();
        match b3_trace.filter(|t| is_b3_id(t, &[32, 16])) {
            Some(t) => tp[TRACE_ID.end - t.len()..TRACE_ID.end].copy_from_slice(t),
            None => hex_into(&rng.random::<u128>().to_le_bytes(), &mut tp[TRACE_ID]),
        }
        let b3_span = arrived.b3_span_id.as_ref().map(HeaderValue::as_bytes);
        match b3_span.filter(|s| is_b3_id(s, &[16])) {
            Some(s) => tp[SPAN_ID].copy_from_slice(s),
            None => hex_into(&rng.random::<u64>().to_le_bytes(), &mut tp[SPAN_ID]),
        }
    }
    // Mirror the W3C context into B3 for Zipkin-era applications: the traceparent made here,
    // or the caller's when it is well-formed.
    let mirror = match (b3_trace, &arrived.traceparent) {
        (Some(_), _) => None,
        (None, None) => Some((MADE_TP.start, true)),
        (None, Some(tp)) => parse_traceparent(tp.as_bytes()).map(|(_, _, sampled)| {
            buf[MADE_TP].copy_from_slice(tp.as_bytes());
            (MADE_TP.start, sampled)
        }),
    };
    if !make_id && !make_tp && mirror.is_none() {
        return arrived
            .request_id
            .unwrap_or_else(|| HeaderValue::from_static(""));
    }
    // Owned by the one allocation its slices count references to (a copy into a `Vec` would
    // take a second when first sliced).
    let made = Bytes::from_owner(buf);
    headers.reserve(5);
    // A header known to be absent is appended: the same result as inserting, without
    // looking for values to replace.
    let mut set = |name: HeaderName, value: HeaderValue, absent: bool| {
        if absent {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    };
    let request_id = match &arrived.request_id {
        Some(id) if !make_id => id.clone(),
        arrived_id => {
            let id = header_value(&made, MADE_ID);
            set(X_REQUEST_ID, id.clone(), arrived_id.is_none());
            id
        }
    };
    if make_tp {
        set(TRACEPARENT, header_value(&made, MADE_TP), true);
    }
    if let Some((at, sampled)) = mirror {
        let trace = at + TRACE_ID.start..at + TRACE_ID.end;
        let span = at + SPAN_ID.start..at + SPAN_ID.end;
        // Mirrored only when no B3 trace id arrived.
        set(B3_TRACE_ID, header_value(&made, trace), true);
        let span_absent = arrived.b3_span_id.is_none();
        set(B3_SPAN_ID, header_value(&made, span), span_absent);
        let sampled = if sampled { "1" } else { "0" };
        set(B3_SAMPLED, HeaderValue::from_static(sampled), false);
    }
    request_id
}

/// Whether `v` is a B3 id of one of the allowed hex lengths, lower-cased and not all zeros.
fn is_b3_id(v: &[u8], lens: &[usize]) -> bool {
    lens.contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && v.iter().any(|&b| b != b'0')
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
    fn replaces_an_empty_request_id_and_keeps_a_callers_complete_context() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        let id = ensure(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1);
        assert_eq!(h.get(X_REQUEST_ID).unwrap(), id);
        // Everything present: nothing is added or changed.
        let before = h.clone();
        assert_eq!(ensure(&mut h), id);
        assert_eq!(h, before);
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
