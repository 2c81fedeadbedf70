//! TLS for client connections: the rustls configuration built from [`TlsOptions`], the
//! handshake, and a session that the reading and the writing half of a connection share.
//!
//! A rustls connection is one state machine for both directions, so it sits behind a mutex.
//! The reader waits for the socket without holding it, then locks the state machine only to
//! decrypt what arrived. The writer locks it only to encrypt, and writes the records after
//! unlocking it. So neither half blocks the other while waiting on the socket.

use std::fmt;
use std::fs;
use std::io::{self, BufRead, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::{ClientError, TlsOptions};

/// ALPN protocol name of chorus protocol version 1 over TLS.
pub(crate) const ALPN_CHORUS: &[u8] = b"chorus/1";

/// Bytes read from the socket at a time during the handshake.
const HANDSHAKE_READ: usize = 16 * 1024;

/// Everything needed to start a TLS session, prepared before the TCP connection opens so that
/// an unreadable file fails without connecting.
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsConnector {
    /// Loads the files `options` names and chooses the server name for `addr` (`host:port`).
    pub(crate) fn new(options: &TlsOptions, addr: &str) -> Result<TlsConnector, ClientError> {
        let server_name = server_name(options, addr)?;
        if options.insecure_skip_verify_for_testing {
            tracing::warn!(
                addr,
                "TLS certificate verification is off (insecure_skip_verify_for_testing): the \
                 connection is encrypted, but the server is not authenticated"
            );
        }
        Ok(TlsConnector {
            config: client_config(options)?,
            server_name,
        })
    }
}

/// A TLS session over a blocking TCP socket, shared by the reader and the writer of one
/// connection.
pub(crate) struct TlsSession {
    socket: TcpStream,
    conn: Mutex<ClientConnection>,
    /// Records encrypted and not yet written to the socket. Its lock is held while they are
    /// written, which keeps records in order when both halves write.
    unsent: Mutex<Vec<u8>>,
}

impl TlsSession {
    /// Runs the handshake on `socket`, failing with [`ClientError::Timeout`] at `deadline`.
    ///
    /// Returns the session and any plaintext the server sent along with its last handshake
    /// records.
    pub(crate) fn handshake(
        socket: TcpStream,
        connector: TlsConnector,
        deadline: Instant,
    ) -> Result<(TlsSession, BytesMut), ClientError> {
        let mut conn = ClientConnection::new(connector.config, connector.server_name)
            .map_err(ClientError::Tls)?;
        let mut early = BytesMut::new();
        drive_handshake(&socket, &mut conn, deadline, &mut early)?;
        // Reads set their own timeouts later, and writes are not bounded.
        socket.set_read_timeout(None)?;
        socket.set_write_timeout(None)?;
        tracing::debug!(
            version = ?conn.protocol_version(),
            cipher_suite = ?conn.negotiated_cipher_suite().map(|suite| suite.suite()),
            alpn = ?conn.alpn_protocol().map(String::from_utf8_lossy),
            "TLS handshake done"
        );
        let session = TlsSession {
            socket,
            conn: Mutex::new(conn),
            unsent: Mutex::new(Vec::new()),
        };
        Ok((session, early))
    }

    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Reads once from the socket, decrypts what arrived and appends the plaintext to `buf`.
    ///
    /// The TLS bytes go to `scratch` first. A read that completes no record appends nothing. The end of the stream, or a close_notify alert after the last plaintext, is
    /// [`ClientError::Closed`].
    pub(crate) fn read(&self, scratch: &mut [u8], buf: &mut BytesMut) -> Result<(), ClientError> {
        if peer_closed(&mut lock(&self.conn)) {
            return Err(ClientError::Closed);
        }
        let read = crate::transport::read_socket(&self.socket, scratch)?;
        if read == 0 {
            return Err(ClientError::Closed);
        }

        let mut conn = lock(&self.conn);
        let fed = feed(&mut conn, &scratch[..read], buf);
        let wants_write = conn.wants_write();
        drop(conn);
        // Records rustls produced in reply, such as a KeyUpdate or an alert, go out now if the
        // writer is idle. Otherwise the writer sends them before its next records.
        if wants_write {
            self.try_send_pending();
        }
        fed
    }

    /// Encrypts `data` and writes it to the socket, after any records not yet written.
    pub(crate) fn write_all(&self, data: &[u8]) -> Result<(), ClientError> {
        let mut unsent = lock(&self.unsent);
        encrypt(&mut lock(&self.conn), data, &mut unsent)?;
        let written = (&self.socket).write_all(&unsent);
        // After a failed write the stream may end inside a record, so the session is unusable.
        // Clearing the buffer keeps it from growing while the caller notices.
        unsent.clear();
        written.map_err(ClientError::from)
    }

    /// Writes the records rustls has queued, without waiting for the writer or for room in the
    /// socket's send buffer. Whatever is left goes out with the next write.
    fn try_send_pending(&self) {
        let mut unsent = match self.unsent.try_lock() {
            Ok(unsent) => unsent,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        take_records(&mut lock(&self.conn), &mut unsent);
        write_without_blocking(&self.socket, &mut unsent);
    }
}

impl Drop for TlsSession {
    /// Sends a close_notify alert, best effort and without blocking, so the server can tell a
    /// closed session from a cut connection.
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(PoisonError::into_inner);
        conn.send_close_notify();
        let unsent = self
            .unsent
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        take_records(conn, unsent);
        write_without_blocking(&self.socket, unsent);
    }
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

/// Sends and receives handshake records until the handshake is done, then sends the last ones.
fn drive_handshake(
    socket: &TcpStream,
    conn: &mut ClientConnection,
    deadline: Instant,
    early: &mut BytesMut,
) -> Result<(), ClientError> {
    let mut scratch = vec![0u8; HANDSHAKE_READ];
    let mut received_any = false;
    loop {
        socket.set_write_timeout(Some(time_left(deadline)?))?;
        while conn.wants_write() {
            conn.write_tls(&mut &*socket).map_err(timeout_or_io)?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }

        socket.set_read_timeout(Some(time_left(deadline)?))?;
        let read = crate::transport::read_socket(socket, &mut scratch)?;
        if read == 0 {
            tracing::debug!(received_any, "connection closed during the TLS handshake");
            return Err(ClientError::Closed);
        }
        // A TLS server replies to a ClientHello with a handshake or an alert record. Anything
        // else, such as a chorus preamble, comes from a server without TLS on this port.
        if !received_any && !is_tls_record_type(scratch[0]) {
            return Err(ClientError::TlsNotOffered);
        }
        received_any = true;
        if let Err(e) = feed(conn, &scratch[..read], early) {
            // Sends the alert that explains the failure to the server, best effort.
            let mut alert = Vec::new();
            take_records(conn, &mut alert);
            write_without_blocking(socket, &mut alert);
            return Err(e);
        }
    }
}

/// Passes TLS bytes from the server to rustls and appends the plaintext they complete to
/// `plaintext`.
fn feed(
    conn: &mut ClientConnection,
    mut bytes: &[u8],
    plaintext: &mut BytesMut,
) -> Result<(), ClientError> {
    // rustls takes at most one record's worth of bytes per call, and every call either takes
    // some or ends the loop.
    while !bytes.is_empty() {
        let consumed = conn.read_tls(&mut bytes)?;
        conn.process_new_packets().map_err(ClientError::Tls)?;
        drain_plaintext(conn, plaintext)?;
        if consumed == 0 {
            // After a close_notify alert rustls takes no more bytes.
            break;
        }
    }
    Ok(())
}

/// Moves the decrypted plaintext out of rustls, emptying its receive buffer.
fn drain_plaintext(conn: &mut ClientConnection, plaintext: &mut BytesMut) -> io::Result<()> {
    let mut reader = conn.reader();
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            // The server sent close_notify and everything before it has been taken.
            return Ok(());
        }
        let len = chunk.len();
        plaintext.extend_from_slice(chunk);
        reader.consume(len);
    }
}

/// Returns whether the server sent close_notify and no plaintext is left to read.
fn peer_closed(conn: &mut ClientConnection) -> bool {
    matches!(conn.reader().into_first_chunk(), Ok([]))
}

/// Encrypts `data` into records appended to `out`, with any records queued before them.
fn encrypt(
    conn: &mut ClientConnection,
    mut data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ClientError> {
    take_records(conn, out);
    while !data.is_empty() {
        // rustls encrypts up to its send buffer limit per call; taking the records empties it.
        let accepted = conn.writer().write(data)?;
        take_records(conn, out);
        if accepted == 0 {
            let message = "the TLS session accepts no more data, because it was closed";
            return Err(io::Error::new(io::ErrorKind::WriteZero, message).into());
        }
        data = &data[accepted..];
    }
    Ok(())
}

/// Moves every record rustls has queued to `out`.
fn take_records(conn: &mut ClientConnection, out: &mut Vec<u8>) {
    while conn.wants_write() {
        // Writing to a Vec never fails, and each call moves at least one queued record.
        if conn.write_tls(out).is_err() {
            return;
        }
    }
}

/// Writes as much of `unsent` as the socket takes now and removes it from the front.
///
/// The socket is switched to non-blocking mode for the write. Callers hold the lock that
/// orders writes, and reads happen on the calling thread or not at all, so no other call on
/// the socket runs during the switch.
fn write_without_blocking(socket: &TcpStream, unsent: &mut Vec<u8>) {
    if unsent.is_empty() || socket.set_nonblocking(true).is_err() {
        return;
    }
    let mut written = 0;
    while written < unsent.len() {
        match (&*socket).write(&unsent[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::debug!(error = %e, "TLS records not written");
                }
                break;
            }
        }
    }
    unsent.drain(..written);
    if let Err(e) = socket.set_nonblocking(false) {
        tracing::debug!(error = %e, "failed to make the socket blocking again");
    }
}

/// Returns whether `byte` starts a TLS record: change_cipher_spec, alert, handshake or
/// application data.
fn is_tls_record_type(byte: u8) -> bool {
    (0x14..=0x17).contains(&byte)
}

fn time_left(deadline: Instant) -> Result<Duration, ClientError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ClientError::Timeout);
    }
    Ok(left)
}

fn timeout_or_io(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Code run under these locks only moves bytes through rustls and the socket, and leaves
    // the state consistent if it panics halfway.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Builds the rustls client configuration: trusted CAs, client certificate and ALPN.
fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(ClientError::Tls)?;
    let builder = if options.insecure_skip_verify_for_testing {
        let verifier = Arc::new(AcceptAnyCertificate { provider });
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
    } else {
        builder.with_root_certificates(trusted_roots(options.ca_file.as_deref())?)
    };
    let mut config = match &options.client_cert {
        Some((chain_file, key_file)) => {
            let chain = load_certs(chain_file, "client certificate chain")?;
            let key = load_key(key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::TlsSetup {
                    what: "client certificate and key",
                    path: Some(chain_file.clone()),
                    source: io::Error::new(io::ErrorKind::InvalidData, e),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_CHORUS.to_vec()];
    Ok(Arc::new(config))
}

/// Returns the CAs in `ca_file`, or the system's when there is none.
fn trusted_roots(ca_file: Option<&Path>) -> Result<Arc<RootCertStore>, ClientError> {
    let Some(path) = ca_file else {
        return system_roots();
    };
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificates")? {
        roots.add(cert).map_err(|e| ClientError::TlsSetup {
            what: "CA certificates",
            path: Some(path.to_owned()),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
    }
    Ok(Arc::new(roots))
}

/// Returns the operating system's CA certificates, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, ClientError> {
    // The outcome is kept as text because io::Error is not Clone.
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "failed to load some of the system's CA certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        tracing::debug!(added, ignored, "loaded the system's CA certificates");
        if roots.is_empty() {
            return Err("no usable CA certificate found; pass a CA file instead".to_owned());
        }
        Ok(Arc::new(roots))
    });
    roots.clone().map_err(|reason| ClientError::TlsSetup {
        what: "CA certificates",
        path: None,
        source: io::Error::new(io::ErrorKind::NotFound, reason),
    })
}

fn load_certs(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let setup_error = |source: io::Error| ClientError::TlsSetup {
        what,
        path: Some(path.to_owned()),
        source,
    };
    // Reading the file first gives a plain "not found" error instead of a PEM parser's.
    let pem = fs::read(path).map_err(setup_error)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| setup_error(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    if certs.is_empty() {
        let message = "no PEM certificate found";
        return Err(setup_error(io::Error::new(
            io::ErrorKind::InvalidData,
            message,
        )));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    let setup_error = |source: io::Error| ClientError::TlsSetup {
        what: "client private key",
        path: Some(path.to_owned()),
        source,
    };
    let pem = fs::read(path).map_err(setup_error)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| setup_error(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// Returns the name to verify the certificate against: the configured one, or the host part
/// of `addr`.
fn server_name(options: &TlsOptions, addr: &str) -> Result<ServerName<'static>, ClientError> {
    let name = match &options.server_name {
        Some(name) => name.as_str(),
        None => host_of(addr).ok_or_else(|| ClientError::InvalidAddress(addr.to_owned()))?,
    };
    ServerName::try_from(name.to_owned())
        .map_err(|_| ClientError::InvalidServerName(name.to_owned()))
}

/// Returns the host of `host:port`, without the brackets of an IPv6 address.
pub(crate) fn host_of(addr: &str) -> Option<&str> {
    let (host, _port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// Certificate verifier of [`TlsOptions::insecure_skip_verify_for_testing`]: it accepts every
/// certificate, but still checks the handshake signatures, so the session keys are bound to the
/// certificate the server presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_port() {
        assert_eq!(host_of("127.0.0.1:7400"), Some("127.0.0.1"));
        assert_eq!(host_of("chorus.example:7400"), Some("chorus.example"));
    }

    #[test]
    fn host_of_strips_ipv6_brackets() {
        assert_eq!(host_of("[::1]:7400"), Some("::1"));
    }

    #[test]
    fn host_of_rejects_address_without_host() {
        assert_eq!(host_of(":7400"), None);
        assert_eq!(host_of("7400"), None);
    }

    #[test]
    fn server_name_defaults_to_host() {
        let name = server_name(&TlsOptions::default(), "localhost:7400").unwrap();
        assert_eq!(name.to_str(), "localhost");
    }

    #[test]
    fn server_name_of_ip_address_is_ip() {
        let name = server_name(&TlsOptions::default(), "[::1]:7400").unwrap();
        assert!(matches!(name, ServerName::IpAddress(_)), "{name:?}");
    }

    #[test]
    fn configured_server_name_wins() {
        let options = TlsOptions {
            server_name: Some("chorus.internal".to_owned()),
            ..TlsOptions::default()
        };
        let name = server_name(&options, "127.0.0.1:7400").unwrap();
        assert_eq!(name.to_str(), "chorus.internal");
    }

    #[test]
    fn invalid_server_name_is_rejected() {
        let options = TlsOptions {
            server_name: Some("not a name".to_owned()),
            ..TlsOptions::default()
        };
        let error = server_name(&options, "127.0.0.1:7400").unwrap_err();
        assert!(
            matches!(error, ClientError::InvalidServerName(_)),
            "{error}"
        );
    }

    #[test]
    fn missing_ca_file_is_setup_error() {
        let options = TlsOptions {
            ca_file: Some("/nonexistent/chorus-ca.pem".into()),
            ..TlsOptions::default()
        };
        let error = client_config(&options).unwrap_err();
        assert!(
            matches!(&error, ClientError::TlsSetup { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "cannot load the TLS CA certificates from /nonexistent/chorus-ca.pem"
        );
    }

    #[test]
    fn ca_file_without_certificates_is_setup_error() {
        let dir = std::env::temp_dir().join(format!("chorus-client-tls-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty-ca.pem");
        fs::write(&path, "no certificates here\n").unwrap();
        let options = TlsOptions {
            ca_file: Some(path.clone()),
            ..TlsOptions::default()
        };
        let error = client_config(&options).unwrap_err();
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            matches!(&error, ClientError::TlsSetup { source, .. } if source.kind() == io::ErrorKind::InvalidData),
            "{error:?}"
        );
    }

    #[test]
    fn tls_record_types_are_recognized() {
        assert!(is_tls_record_type(0x15));
        assert!(is_tls_record_type(0x16));
        assert!(!is_tls_record_type(b'C'));
    }

    #[test]
    fn config_offers_chorus_alpn() {
        let options = TlsOptions {
            insecure_skip_verify_for_testing: true,
            ..TlsOptions::default()
        };
        let config = client_config(&options).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"chorus/1".to_vec()]);
    }
}
