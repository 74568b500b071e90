//! Responses the proxy makes itself (Envoy's "local replies"): 504 on timeout, 503 on overflow,
//! fault aborts. Layers are generic over the response body, so the body type says how to make
//! one from bytes.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Full, combinators};

use crate::flags::ResponseFlags;

/// A response body the proxy can build from a short text.
pub trait LocalReply: Sized {
    fn from_bytes(bytes: Bytes) -> Self;
}

impl LocalReply for Full<Bytes> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
    }
}

impl<E: 'static> LocalReply for combinators::BoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes).map_err(|never| match never {}).boxed()
    }
}

impl<E: 'static> LocalReply for combinators::UnsyncBoxBody<Bytes, E> {
    fn from_bytes(bytes: Bytes) -> Self {
        Full::new(bytes)
            .map_err(|never| match never {})
            .boxed_unsync()
    }
}

/// Local replies go in the left arm.
impl<L: LocalReply, R> LocalReply for Either<L, R> {
    fn from_bytes(bytes: Bytes) -> Self {
        Either::Left(L::from_bytes(bytes))
    }
}

/// Envoy's body for a whole-request or per-try timeout.
pub const UPSTREAM_TIMEOUT: &str = "upstream request timeout";
/// Envoy's body when a circuit breaker sheds a request.
pub const OVERFLOW: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
/// Envoy's body for an injected HTTP abort.
pub const FAULT_ABORT: &str = "fault filter abort";

/// A plain-text local reply carrying `flags`.
pub fn local_reply<B: LocalReply>(
    status: StatusCode,
    text: &'static str,
    flags: ResponseFlags,
) -> Response<B> {
    let mut response = Response::new(B::from_bytes(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    flags.insert_into(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_reply_has_status_text_and_flags() {
        let resp: Response<Full<Bytes>> = local_reply(
            StatusCode::GATEWAY_TIMEOUT,
            UPSTREAM_TIMEOUT,
            ResponseFlags::UT,
        );
        assert_eq!(resp.status(), 504);
        assert_eq!(resp.headers()[header::CONTENT_LENGTH], "24");
        assert_eq!(ResponseFlags::from(&resp), ResponseFlags::UT);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "upstream request timeout");
    }

    #[tokio::test]
    async fn boxed_and_either_bodies() {
        let b: combinators::UnsyncBoxBody<Bytes, std::io::Error> =
            LocalReply::from_bytes(Bytes::from_static(b"x"));
        assert_eq!(b.collect().await.unwrap().to_bytes(), "x");
        let e: Either<Full<Bytes>, http_body_util::Empty<Bytes>> =
            LocalReply::from_bytes(Bytes::from_static(b"y"));
        assert_eq!(e.collect().await.unwrap().to_bytes(), "y");
    }
}
