//! HTTP: the server side of every listener, the client pool towards upstreams, and the request
//! paths between them.

pub mod body;
pub mod client;
pub mod head_wait;
pub mod headers;
pub mod idle;
pub mod inbound;
pub mod mirror;
pub mod outbound;
pub mod policy;
pub mod report;
pub mod server;
pub mod upgrade;
pub mod xfcc;
