//! The byte stream under the chorus framing: a TCP socket, or a TLS session over one.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use bytes::BytesMut;

use crate::tls::TlsSession;
use crate::ClientError;

/// A connection's byte stream, shared by its reader and writer rather than cloned, so that a
/// connection uses one file descriptor.
#[derive(Clone, Debug)]
pub(crate) enum Transport {
    Plain(Arc<TcpStream>),
    Tls(Arc<TlsSession>),
}

impl Transport {
    pub(crate) fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(stream) => stream,
            Transport::Tls(session) => session.socket(),
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Reads once from the socket and appends the plaintext received to `buf`, using `scratch`
    /// for the bytes read. The end of the stream is [`ClientError::Closed`], and a read that
    /// outlasts the socket's read timeout is [`ClientError::Timeout`].
    pub(crate) fn read(&self, scratch: &mut [u8], buf: &mut BytesMut) -> Result<(), ClientError> {
        match self {
            Transport::Plain(stream) => match read_socket(stream, scratch)? {
                0 => Err(ClientError::Closed),
                read => {
                    buf.extend_from_slice(&scratch[..read]);
                    Ok(())
                }
            },
            Transport::Tls(session) => session.read(scratch, buf),
        }
    }

    /// Writes all of `data`, blocking until the socket takes it.
    pub(crate) fn write_all(&self, data: &[u8]) -> Result<(), ClientError> {
        match self {
            Transport::Plain(stream) => (&**stream).write_all(data).map_err(ClientError::from),
            Transport::Tls(session) => session.write_all(data),
        }
    }
}

/// Reads once from `socket` into `scratch`, retrying after a signal, and turns a timeout into
/// [`ClientError::Timeout`].
pub(crate) fn read_socket(socket: &TcpStream, scratch: &mut [u8]) -> Result<usize, ClientError> {
    loop {
        match (&*socket).read(scratch) {
            Ok(read) => return Ok(read),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ClientError::Timeout)
            }
            Err(e) => return Err(ClientError::Io(e)),
        }
    }
}
