//! The address a connection was sent to before iptables redirected it to the proxy.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use nix::sys::socket::{getsockopt, sockopt::OriginalDst};
use tokio::net::TcpStream;

/// `SO_ORIGINAL_DST` of a redirected IPv4 connection; `None` when the connection was not
/// redirected (or the socket cannot say).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let addr = getsockopt(stream, OriginalDst).ok()?;
    let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    let port = u16::from_be(addr.sin_port);
    Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}
