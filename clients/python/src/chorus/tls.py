"""TLS settings of a connection, and the ``ssl.SSLContext`` built from them."""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from .errors import TlsError

log = logging.getLogger("chorus")

#: ALPN protocol name of chorus protocol version 1 over TLS, which chorusd's TLS listener selects.
ALPN_CHORUS = "chorus/1"

#: A file path, as ``str`` or ``pathlib.Path``.
PathLike = Union[str, "os.PathLike[str]"]

# OpenSSL's verification error for a certificate that does not name the expected host.
_X509_V_ERR_HOSTNAME_MISMATCH = 62

# First byte of each TLS record type: change_cipher_spec, alert, handshake, application_data.
_TLS_RECORD_TYPES = range(0x14, 0x18)


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of a connection; pass them to :func:`chorus.connect` as ``tls=``.

    The client offers TLS 1.2 and 1.3 and the ALPN protocol ``chorus/1``. Files are read at each
    connect, so renewed certificates take effect on the next connection.
    """

    #: PEM file with the CA certificates that may sign the server's certificate. ``None`` trusts
    #: the operating system's CA certificates, as Python's ``ssl`` module finds them.
    ca_file: Optional[PathLike] = None
    #: PEM files with the client's certificate chain (leaf first) and its private key, for
    #: servers that require client certificates (mutual TLS).
    client_cert: Optional[Tuple[PathLike, PathLike]] = None
    #: Name checked against the server's certificate and sent as SNI. ``None`` takes the host
    #: passed to ``connect``, which may be an IP address (checked against the certificate's IP
    #: addresses, and not sent as SNI).
    server_name: Optional[str] = None
    #: Accept any server certificate, so the connection is encrypted but the server is not
    #: authenticated. For tests against throwaway certificates only; every connect logs a
    #: warning.
    insecure_skip_verify_for_testing: bool = False


def server_hostname(options: TlsOptions, host: str) -> str:
    """Return the name to check the server's certificate against."""
    return options.server_name if options.server_name is not None else host


def ssl_context(options: TlsOptions, address: str) -> ssl.SSLContext:
    """Build the client context: trusted CAs, client certificate, versions and ALPN.

    Raises :class:`~chorus.errors.TlsError` when a file cannot be loaded. ``address`` is only
    used in the warning logged when verification is off.
    """
    if options.insecure_skip_verify_for_testing:
        log.warning(
            "TLS certificate verification is off (insecure_skip_verify_for_testing) for %s: "
            "the connection is encrypted, but the server is not authenticated",
            address,
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = _verifying_context(options.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols([ALPN_CHORUS])
    if options.client_cert is not None:
        chain_file, key_file = options.client_cert
        try:
            context.load_cert_chain(chain_file, key_file)
        except (OSError, ssl.SSLError) as e:
            raise TlsError(
                f"failed to load the TLS client certificate {os.fspath(chain_file)} and key "
                f"{os.fspath(key_file)}: {e}"
            ) from e
    return context


def _verifying_context(ca_file: Optional[PathLike]) -> ssl.SSLContext:
    """Return a context that checks the certificate chain and the server name."""
    if ca_file is None:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if not context.get_ca_certs() and not _has_default_verify_paths():
            raise TlsError(
                "no system CA certificates found to verify the server; pass "
                "TlsOptions(ca_file=...) with the CA that signed the server's certificate"
            )
        return context
    try:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca_file))
    except (OSError, ssl.SSLError) as e:
        raise TlsError(
            f"failed to load the TLS CA certificates from {os.fspath(ca_file)}: {e}"
        ) from e


def _has_default_verify_paths() -> bool:
    """Return whether OpenSSL's default CA file or directory exists.

    A context loads CAs from a directory lazily, so ``get_ca_certs`` can be empty while the
    directory contains usable certificates.
    """
    paths = ssl.get_default_verify_paths()
    return any(path is not None and os.path.exists(path) for path in (paths.cafile, paths.capath))


def is_tls_record(first_byte: int) -> bool:
    """Return whether ``first_byte`` can start a TLS record, as a TLS server's response does."""
    return first_byte in _TLS_RECORD_TYPES


def handshake_error(error: ssl.SSLError, address: str) -> TlsError:
    """Describe a failed TLS handshake with ``address`` (``host:port``) and what to do next."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = (error.verify_message or error.reason or str(error)).rstrip(".")
        if error.verify_code == _X509_V_ERR_HOSTNAME_MISMATCH:
            hint = "set TlsOptions(server_name=...) to a name the certificate holds"
        else:
            hint = "pass TlsOptions(ca_file=...) with the CA that signed the server's certificate"
        return TlsError(f"TLS certificate verification of {address} failed: {reason}; {hint}")
    if error.reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return TlsError(
            f"TLS handshake with {address} failed ({error.reason}): the server does not seem to "
            "speak TLS on this port; connect without tls, or to the server's TLS port"
        )
    return TlsError(f"TLS handshake with {address} failed: {error}")
