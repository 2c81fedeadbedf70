//! TLS for client and WebSocket listeners, with rustls driven by the worker's event loop.
//!
//! rustls does no I/O of its own: [`TlsStream`] moves TLS records between a rustls server
//! connection and the non-blocking socket, and offers plaintext `Read` and `Write` to the layers
//! above (the chorus framing, or WebSocket for `wss`). Certificates are loaded into
//! [`TlsConfigs`], which the server swaps on reload: new connections take the current
//! configuration and existing ones keep the one they started with.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use serde::{Deserialize, Serialize};

/// ALPN protocol name of chorus protocol version 1 over TLS.
pub const ALPN_CHORUS: &[u8] = b"chorus/1";

/// Plaintext bytes rustls may buffer per connection before writes report `WouldBlock`, so the
/// outbound queue limit still bounds memory.
const PLAINTEXT_BUFFER_LIMIT: usize = 64 * 1024;

/// TLS settings from the configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Addresses of TLS listeners for protocol clients (chorus over TLS).
    pub listen: Vec<std::net::SocketAddr>,
    /// Addresses of TLS listeners for WebSocket clients (`wss`).
    pub ws_listen: Vec<std::net::SocketAddr>,
    /// PEM file with the server certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// Lowest TLS version accepted: "1.3" (default) or "1.2".
    pub min_version: Option<String>,
    /// PEM file with the CAs that sign client certificates. When set, every TLS client must
    /// present a certificate signed by one of them (mutual TLS), as an origin that accepts only
    /// its own relays would require.
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Returns whether any TLS listener is configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.ws_listen.is_empty()
    }
}

/// Error that prevents loading the TLS settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A TLS listener is configured without a certificate or key file.
    #[error("tls.{0} is required when a TLS listener is configured")]
    Missing(&'static str),
    /// A PEM file could not be read or contains nothing usable.
    #[error("failed to load {what} from {path}: {reason}")]
    Load {
        /// Contents the file should have, for the message.
        what: &'static str,
        /// Path of the file.
        path: PathBuf,
        /// Cause of the failure.
        reason: String,
    },
    /// `tls.min_version` is not "1.2" or "1.3".
    #[error("tls.min_version must be \"1.2\" or \"1.3\", not {0:?}")]
    Version(String),
    /// rustls rejected the certificate, key or client CA set.
    #[error("invalid TLS configuration: {0}")]
    Rustls(String),
}

/// The server configurations in force: one for protocol clients and one for WebSocket clients,
/// which differ only in their ALPN protocol names.
#[derive(Debug, Clone)]
pub struct TlsConfigs {
    pub(crate) chorus: Arc<ServerConfig>,
    pub(crate) websocket: Arc<ServerConfig>,
}

impl TlsConfigs {
    /// Loads certificates and keys and builds both server configurations.
    pub fn load(config: &TlsConfig) -> Result<TlsConfigs, TlsError> {
        let cert_file = config
            .cert_file
            .as_deref()
            .ok_or(TlsError::Missing("cert_file"))?;
        let key_file = config
            .key_file
            .as_deref()
            .ok_or(TlsError::Missing("key_file"))?;
        let certs = load_certs(cert_file, "certificate chain")?;
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Load {
            what: "private key",
            path: key_file.to_owned(),
            reason: e.to_string(),
        })?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] =
            match config.min_version.as_deref().unwrap_or("1.3") {
                "1.3" => &[&rustls::version::TLS13],
                "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
                other => return Err(TlsError::Version(other.to_owned())),
            };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &config.client_ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in load_certs(path, "client CA certificates")? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Rustls(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut chorus = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;

        let mut websocket = chorus.clone();
        chorus.alpn_protocols = vec![ALPN_CHORUS.to_vec()];
        websocket.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsConfigs {
            chorus: Arc::new(chorus),
            websocket: Arc::new(websocket),
        })
    }
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let load_error = |reason: String| TlsError::Load {
        what,
        path: path.to_owned(),
        reason,
    };
    // Reading the file first gives a plain "not found" error instead of a PEM parser's.
    let pem = fs::read(path).map_err(|e| load_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(load_error("no PEM certificate found".into()));
    }
    Ok(certs)
}

/// A server-side TLS session over a non-blocking socket.
pub(crate) struct TlsStream {
    conn: ServerConnection,
    socket: TcpStream,
}

impl TlsStream {
    pub(crate) fn new(config: Arc<ServerConfig>, socket: TcpStream) -> io::Result<TlsStream> {
        let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(PLAINTEXT_BUFFER_LIMIT));
        Ok(TlsStream { conn, socket })
    }

    pub(crate) fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// Writes pending TLS records to the socket. Returns whether none are left.
    fn write_records(&mut self) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.socket) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads TLS records from the socket and processes them. Returns false at end of stream.
    fn read_records(&mut self) -> io::Result<bool> {
        let read = loop {
            match self.conn.read_tls(&mut self.socket) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if read == 0 {
            return Ok(false);
        }
        let processed = self.conn.process_new_packets();
        // Handshake messages and alerts produced by the records go out before anything else;
        // after an error this sends the alert that tells the client what went wrong.
        let flushed = self.write_records();
        if let Err(e) = processed {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("TLS error: {e}"),
            ));
        }
        flushed?;
        Ok(true)
    }
}

impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !self.read_records()? {
                // End of the socket: after a close_notify alert rustls reports a clean end
                // (Ok(0)); without one, the stream was cut, possibly inside a record.
                return match self.conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS stream ended without close_notify, possibly inside a record",
                    )),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
        }
    }
}

impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut accepted = self.conn.writer().write_vectored(bufs)?;
        if accepted == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // The plaintext buffer is full: make room by sending records, then try once more.
            if !self.write_records()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            accepted = self.conn.writer().write_vectored(bufs)?;
        }
        self.write_records()?;
        Ok(accepted)
    }

    /// Sends every pending TLS record; `WouldBlock` means some are left for the next
    /// writable event.
    fn flush(&mut self) -> io::Result<()> {
        if self.write_records()? {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }
}

impl TlsStream {
    /// Sends a close_notify alert, best effort.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.write_records();
    }
}
