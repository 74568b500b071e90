//! The proxy's side of the workload API, shared by the tests: HTTP/1.1 over the agent's Unix
//! socket (or its TCP admin port), reading JSON lines as they arrive.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mizzen_identity::workload_api::{Event, SignRequest};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

/// The proxy's side of one stream.
pub struct Lines {
    pub status: StatusCode,
    body: Incoming,
    buffer: BytesMut,
}

impl Lines {
    pub async fn next(&mut self, within: Duration) -> Option<Event> {
        tokio::time::timeout(within, self.next_line())
            .await
            .expect("no event in time")
            .map(|line| Event::from_line(&line).unwrap())
    }

    pub async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                return Some(String::from_utf8(line.to_vec()).unwrap());
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
                _ => return None,
            }
        }
    }
}

pub async fn send(socket: &Path, method: &str, path: &str, body: Vec<u8>) -> Lines {
    let stream = UnixStream::connect(socket).await.unwrap();
    send_on(stream, method, path, body).await
}

/// One request on an open connection.
pub async fn send_on(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Lines {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "mizzen-agent")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    Lines {
        status,
        body: response.into_body(),
        buffer: BytesMut::new(),
    }
}

pub async fn ask(socket: &Path, csr_pem: &str, token: &str) -> Lines {
    let body = serde_json::to_vec(&SignRequest::new(csr_pem, token)).unwrap();
    send(socket, "POST", "/v1/identity", body).await
}
