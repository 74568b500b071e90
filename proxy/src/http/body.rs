//! The one body type of the data path, and a wrapper that counts the bytes of a body and
//! reports when it ends.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request and response bodies inside the proxy.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn boxed<B>(body: B) -> Body
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// How a counted body ended.
#[derive(Clone, Debug, Default)]
pub struct BodyEnd {
    /// Data bytes seen.
    pub bytes: u64,
    /// The body reached its end without error.
    pub complete: bool,
    /// `grpc-status` from the trailers, when there were any.
    pub grpc_status: Option<String>,
}

/// Told once when a counted body ends, fails or is dropped.
pub trait OnEnd: Send + Unpin + 'static {
    fn on_end(self, end: BodyEnd);
}

/// Counts data bytes and reports them once, to `E` (held in place: no box of its own).
pub struct Counted<E: OnEnd> {
    inner: Body,
    bytes: u64,
    grpc_status: Option<String>,
    on_end: Option<E>,
}

impl<E: OnEnd> Counted<E> {
    pub fn new(inner: Body, on_end: E) -> Self {
        Self {
            inner,
            bytes: 0,
            grpc_status: None,
            on_end: Some(on_end),
        }
    }

    fn finish(&mut self, complete: bool) {
        if let Some(cb) = self.on_end.take() {
            cb.on_end(BodyEnd {
                bytes: self.bytes,
                complete,
                grpc_status: self.grpc_status.take(),
            });
        }
    }
}

impl<E: OnEnd> HttpBody for Counted<E> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                } else if let Some(t) = frame.trailers_ref()
                    && let Some(v) = t
                        .get(super::headers::GRPC_STATUS)
                        .and_then(|v| v.to_str().ok())
                {
                    this.grpc_status = Some(v.to_string());
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<E: OnEnd> Drop for Counted<E> {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl<E: OnEnd> Counted<E> {
    pub fn boxed_body(self) -> Body {
        http_body_util::BodyExt::boxed_unsync(self)
    }
}
