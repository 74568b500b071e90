//! A request body that can be sent again.
//!
//! [`ReplayBody`] streams the caller's body to the first try as it arrives (no added latency,
//! streaming requests keep streaming) while keeping a copy of what went by, up to a limit.
//! A later try gets a [`ReplayBody::try_clone`] that plays the copy back and then goes on
//! reading the caller's body where the earlier try left off. Once more than the limit has
//! gone by, or the caller's body failed, the copy is dropped and `try_clone` answers `None`:
//! that request is not retried.
//!
//! Only the newest reader reads on from the caller's body; an earlier try that is still
//! being written (an HTTP/1 upstream that answered before reading the whole request) gets an
//! error instead, so no two connections ever split one body between them.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

/// Bodies up to this size are kept for retries by default (64 KiB).
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// A body that records what it streams so a retry can send it again. See the module docs.
pub struct ReplayBody<B> {
    /// `None` for a body that had ended before it was wrapped (most requests have none):
    /// every try gets it empty, with nothing to share or record.
    shared: Option<Arc<Mutex<Shared<B>>>>,
    /// Which reader this is; only the newest (`Shared::newest`) reads from the source.
    generation: u64,
    /// Index of the next recorded chunk this reader plays back.
    pos: usize,
    trailers_sent: bool,
}

struct Shared<B> {
    /// The caller's body; `None` once it ended or failed.
    source: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    recorded: usize,
    limit: usize,
    replayable: bool,
    /// The caller's body has ended (not failed).
    ended: bool,
    /// The caller's size hint before anything was read.
    hint: SizeHint,
    newest: u64,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes of it for retries.
    pub fn new(body: B, limit: usize) -> Self {
        let hint = body.size_hint();
        if body.is_end_stream() {
            return Self::reader(None, 0);
        }
        let shared = Shared {
            source: Some(Box::pin(body)),
            chunks: Vec::new(),
            trailers: None,
            recorded: 0,
            limit,
            replayable: hint.lower() <= limit as u64,
            ended: false,
            hint,
            newest: 0,
        };
        Self::reader(Some(Arc::new(Mutex::new(shared))), 0)
    }
}

impl<B> ReplayBody<B> {
    fn reader(shared: Option<Arc<Mutex<Shared<B>>>>, generation: u64) -> Self {
        Self {
            shared,
            generation,
            pos: 0,
            trailers_sent: false,
        }
    }

    fn lock(&self) -> Option<MutexGuard<'_, Shared<B>>> {
        let shared = self.shared.as_ref()?;
        Some(shared.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A reader that sends the whole body again from its start, or `None` when the body is
    /// too large or failed.
    /// The new reader supersedes every earlier one.
    pub fn try_clone(&self) -> Option<Self> {
        let Some(mut shared) = self.lock() else {
            return Some(Self::reader(None, 0));
        };
        if !shared.replayable {
            return None;
        }
        shared.newest += 1;
        Some(Self::reader(self.shared.clone(), shared.newest))
    }

    /// Whether [`Self::try_clone`] would succeed now.
    pub fn is_replayable(&self) -> bool {
        self.lock().is_none_or(|s| s.replayable)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(shared) = this.shared.clone() else {
            return Poll::Ready(None);
        };
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());

        if this.pos < s.chunks.len() {
            let chunk = s.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if s.ended {
            if !this.trailers_sent {
                this.trailers_sent = true;
                if let Some(trailers) = s.trailers.clone() {
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
            }
            return Poll::Ready(None);
        }
        if this.generation != s.newest {
            return Poll::Ready(Some(Err("request body moved to a newer try".into())));
        }
        let Some(source) = s.source.as_mut() else {
            return Poll::Ready(Some(Err("request body failed on an earlier try".into())));
        };
        match source.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                s.ended = true;
                s.source = None;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                s.replayable = false;
                s.source = None;
                s.chunks.clear();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    if s.replayable {
                        s.recorded += chunk.len();
                        if s.recorded > s.limit {
                            s.replayable = false;
                            s.chunks = Vec::new();
                        } else {
                            s.chunks.push(chunk.clone());
                            this.pos = s.chunks.len();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        // Trailers end the body.
                        s.trailers = Some(trailers.clone());
                        s.ended = true;
                        s.source = None;
                        this.trailers_sent = true;
                        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                    }
                    // Neither data nor trailers: an unknown frame kind, nothing to forward.
                    Err(_) => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                },
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        let Some(s) = self.lock() else {
            return true;
        };
        s.ended && self.pos >= s.chunks.len() && (self.trailers_sent || s.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let Some(s) = self.lock() else {
            return SizeHint::with_exact(0);
        };
        if s.ended {
            let rest: usize = s.chunks.iter().skip(self.pos).map(Bytes::len).sum();
            SizeHint::with_exact(rest as u64)
        } else if self.pos == 0 && s.recorded == 0 {
            s.hint
        } else {
            SizeHint::default()
        }
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(s) = self.lock() else {
            return f.write_str("ReplayBody(empty)");
        };
        f.debug_struct("ReplayBody")
            .field("pos", &self.pos)
            .field("recorded", &s.recorded)
            .field("replayable", &s.replayable)
            .field("ended", &s.ended)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use http_body_util::{BodyExt, Full, StreamBody};

    fn chunks(
        parts: Vec<&'static str>,
    ) -> StreamBody<impl futures::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
        StreamBody::new(stream::iter(
            parts
                .into_iter()
                .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))),
        ))
    }

    #[tokio::test]
    async fn replays_a_small_body() {
        let template = ReplayBody::new(chunks(vec!["hello ", "world"]), 64);
        let first = template.try_clone().unwrap();
        assert_eq!(first.collect().await.unwrap().to_bytes(), "hello world");
        let again = template.try_clone().unwrap();
        assert_eq!(again.collect().await.unwrap().to_bytes(), "hello world");
    }

    #[tokio::test]
    async fn a_replay_continues_where_a_partial_read_stopped() {
        let template = ReplayBody::new(chunks(vec!["a", "b", "c"]), 64);
        let mut first = template.try_clone().unwrap();
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "a");
        drop(first);
        let second = template.try_clone().unwrap();
        assert_eq!(second.collect().await.unwrap().to_bytes(), "abc");
        let third = template.try_clone().unwrap();
        assert_eq!(third.collect().await.unwrap().to_bytes(), "abc");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_stream_once_and_are_not_replayable() {
        let template = ReplayBody::new(chunks(vec!["0123456789", "0123456789"]), 15);
        let first = template.try_clone().unwrap();
        assert_eq!(first.collect().await.unwrap().to_bytes().len(), 20);
        assert!(template.try_clone().is_none());
        assert!(!template.is_replayable());
    }

    #[tokio::test]
    async fn a_known_large_body_is_not_replayable_from_the_start() {
        let body = ReplayBody::new(Full::new(Bytes::from(vec![0u8; 100])), 10);
        assert!(body.try_clone().is_none());
        assert_eq!(body.size_hint().exact(), Some(100));
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 100);
    }

    #[tokio::test]
    async fn an_older_reader_cannot_take_data_from_a_newer_one() {
        let template = ReplayBody::new(chunks(vec!["a", "b"]), 64);
        let mut old = template.try_clone().unwrap();
        assert_eq!(
            old.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        let new = template.try_clone().unwrap();
        // The old reader may not read on: "b" belongs to the new try.
        assert!(old.frame().await.unwrap().is_err());
        assert_eq!(new.collect().await.unwrap().to_bytes(), "ab");
    }

    #[tokio::test]
    async fn trailers_are_replayed() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-timeout", "1S".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"msg"))),
            Ok(Frame::trailers(trailers.clone())),
        ];
        let template = ReplayBody::new(StreamBody::new(stream::iter(frames)), 64);
        for _ in 0..2 {
            let got = template.try_clone().unwrap().collect().await.unwrap();
            assert_eq!(got.trailers(), Some(&trailers));
            assert_eq!(got.to_bytes(), "msg");
        }
    }

    #[tokio::test]
    async fn empty_bodies_end_at_once() {
        let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 64);
        assert!(body.is_end_stream());
        assert!(body.try_clone().unwrap().is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        for _ in 0..2 {
            let got = body.try_clone().unwrap().collect().await.unwrap();
            assert!(got.trailers().is_none());
            assert!(got.to_bytes().is_empty());
        }
    }
}
