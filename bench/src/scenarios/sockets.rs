//! Client sockets: source addresses spread over 127.0.0.0/8, small receive buffers for slow
//! readers, and the open-file limit that bounds how many connections one process holds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Source addresses used when connecting to a loopback broker: 127.0.0.2 to 127.0.0.251.
///
/// Linux picks a connection's ephemeral port per source address, so spreading sources gives
/// each its own port range (32768-60999 by default, about 28,000 ports) and lets one broker
/// address take far more connections than one source could open.
const SOURCE_ADDRESSES: u32 = 250;

/// Descriptors kept free for publishers, listeners and files beside the connections.
pub(crate) const SPARE_DESCRIPTORS: u64 = 64;

/// Resolves `server` to one socket address.
pub(crate) fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    server
        .to_socket_addrs()
        .with_context(|| format!("invalid server address {server:?}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("server address {server:?} resolved to no address"))
}

/// Returns the source address for connection number `conn`, or `None` when the broker is not
/// on an IPv4 loopback address and the kernel should choose.
pub(crate) fn source_for(server: SocketAddr, conn: usize) -> Option<IpAddr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let host = 2 + (conn as u32 % SOURCE_ADDRESSES);
            Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | host)))
        }
        _ => None,
    }
}

/// Creates a socket for `server`, bound to `source` when given and with a receive buffer of
/// `rcvbuf` bytes when given; the caller connects it.
pub(crate) fn new_socket(
    server: SocketAddr,
    source: Option<IpAddr>,
    rcvbuf: Option<usize>,
) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(size) = rcvbuf {
        // Set before connecting, so the window announced in the handshake already reflects it.
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = source {
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    Ok(socket)
}

/// Starts a non-blocking connect; the connection completes when the socket becomes writable.
pub(crate) fn connect_nonblocking(
    server: SocketAddr,
    source: Option<IpAddr>,
) -> io::Result<mio::net::TcpStream> {
    let socket = new_socket(server, source, None)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&SockAddr::from(server)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(mio::net::TcpStream::from_std(TcpStream::from(socket)))
}

/// Opens a blocking connection within `timeout`, with the given receive buffer size.
pub(crate) fn connect_blocking(
    server: SocketAddr,
    rcvbuf: Option<usize>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = new_socket(server, None, rcvbuf)?;
    socket.connect_timeout(&SockAddr::from(server), timeout)?;
    let stream = TcpStream::from(socket);
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Open-file limit of this process after trying to raise it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct FileLimit {
    /// Soft limit in force.
    pub(crate) soft: u64,
    /// Hard limit, the most an unprivileged raise can reach.
    pub(crate) hard: u64,
}

impl FileLimit {
    /// Returns how many connections fit beside the spare descriptors.
    pub(crate) fn connections(self) -> u64 {
        self.soft.saturating_sub(SPARE_DESCRIPTORS)
    }
}

/// Raises the soft open-file limit to the hard limit and returns both.
pub(crate) fn raise_file_limit() -> io::Result<FileLimit> {
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok(FileLimit { soft, hard })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_sources_cycle_over_250_addresses() {
        let server: SocketAddr = "127.0.0.1:7400".parse().unwrap();
        assert_eq!(source_for(server, 0), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(
            source_for(server, 249),
            Some("127.0.0.251".parse().unwrap())
        );
        assert_eq!(source_for(server, 250), Some("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn other_servers_get_no_source() {
        let server: SocketAddr = "[::1]:7400".parse().unwrap();
        assert_eq!(source_for(server, 3), None);
    }
}
