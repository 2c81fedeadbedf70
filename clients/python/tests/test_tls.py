"""The client over TLS against a real chorusd TLS listener on 127.0.0.1.

Certificates are generated for each test: a CA, a server certificate for ``localhost`` and
127.0.0.1 signed by it, and an unrelated CA that must not be trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from certs import Issued, issue_server, make_authority

import chorus
from chorus import Earliest, TlsOptions, sync
from chorus.tls import ALPN_CHORUS

from chorusd import Chorusd

pytestmark = pytest.mark.broker

HOST = "127.0.0.1"


@dataclass
class TlsBroker:
    """A broker with a plain and a TLS listener, and the CA files of the test."""

    broker: Chorusd
    tls_port: int
    ca_file: Path
    other_ca_file: Path


def tls_config(server: Issued) -> str:
    return (
        "[tls]\n"
        f'listen = ["{HOST}:0"]\n'
        f'cert_file = "{server.cert_file}"\n'
        f'key_file = "{server.key_file}"\n'
    )


@pytest.fixture
def tls_broker(make_broker: Callable[..., Chorusd], tmp_path: Path) -> TlsBroker:
    authority = make_authority(tmp_path, "test-ca")
    other = make_authority(tmp_path, "other-ca")
    server = issue_server(authority, tmp_path, "server", ["localhost"], [HOST])
    broker = make_broker(config=tls_config(server))
    return TlsBroker(broker, broker.tls_port(), authority.cert_file, other.cert_file)


async def test_publish_and_subscribe_over_tls(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file)
    async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as subscriber:
        subscription = await subscriber.subscribe("tls/chat", Earliest())
        async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as publisher:
            ack = await publisher.publish("tls/chat", "over TLS")
        event = await subscription.receive(timeout=10)
    assert event.offset == ack.offset
    assert event.text == "over TLS"


async def test_tls_comment_reaches_plain_subscriber(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file)
    async with await chorus.connect(HOST, tls_broker.broker.port) as plain:
        subscription = await plain.subscribe("tls/mixed", Earliest())
        async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as publisher:
            await publisher.publish("tls/mixed", "from TLS")
        event = await subscription.receive(timeout=10)
    assert event.text == "from TLS"


async def test_tls_offers_chorus_alpn(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file)
    async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as conn:
        assert conn.alpn_protocol == ALPN_CHORUS


async def test_plain_connection_has_no_alpn(tls_broker: TlsBroker) -> None:
    async with await chorus.connect(HOST, tls_broker.broker.port) as conn:
        assert conn.alpn_protocol is None


async def test_server_name_matching_certificate_connects(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file, server_name="localhost")
    async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as conn:
        assert await conn.ping() >= 0.0


async def test_server_name_not_in_certificate_fails(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file, server_name="other.example")
    with pytest.raises(chorus.TlsError) as raised:
        await chorus.connect(HOST, tls_broker.tls_port, tls=tls)
    message = str(raised.value)
    assert "certificate verification" in message
    assert "other.example" in message


async def test_wrong_ca_fails_verification(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.other_ca_file)
    with pytest.raises(chorus.TlsError) as raised:
        await chorus.connect(HOST, tls_broker.tls_port, tls=tls)
    message = str(raised.value)
    assert f"TLS certificate verification of {HOST}:{tls_broker.tls_port} failed" in message
    assert "ca_file" in message


async def test_system_roots_reject_test_ca(tls_broker: TlsBroker) -> None:
    with pytest.raises(chorus.TlsError) as raised:
        await chorus.connect(HOST, tls_broker.tls_port, tls=TlsOptions())
    assert "certificate verification" in str(raised.value)


async def test_skip_verification_connects_and_warns(
    tls_broker: TlsBroker, caplog: pytest.LogCaptureFixture
) -> None:
    tls = TlsOptions(insecure_skip_verify_for_testing=True)
    with caplog.at_level(logging.WARNING, logger="chorus"):
        async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as conn:
            ack = await conn.publish("tls/insecure", "unverified")
    assert ack.offset == 0
    assert "insecure_skip_verify_for_testing" in caplog.text


async def test_plaintext_client_on_tls_port_fails_clearly(tls_broker: TlsBroker) -> None:
    with pytest.raises(chorus.TlsError) as raised:
        await chorus.connect(HOST, tls_broker.tls_port, connect_timeout=10)
    assert "expects TLS" in str(raised.value)


async def test_tls_client_on_plain_port_fails_clearly(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file)
    with pytest.raises(chorus.TlsError) as raised:
        await chorus.connect(HOST, tls_broker.broker.port, tls=tls, connect_timeout=10)
    assert "does not seem to speak TLS" in str(raised.value)


def test_sync_connection_over_tls(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file)
    with sync.connect(HOST, tls_broker.tls_port, tls=tls) as conn:
        ack = conn.publish("tls/sync", "blocking")
        subscription = conn.subscribe("tls/sync", Earliest())
        event = subscription.receive(timeout=10)
    assert event.offset == ack.offset


async def test_subscriber_over_tls(tls_broker: TlsBroker) -> None:
    tls = TlsOptions(ca_file=tls_broker.ca_file)
    async with chorus.Subscriber(HOST, tls_broker.tls_port, "tls/sub", Earliest(), tls=tls) as sub:
        async with await chorus.connect(HOST, tls_broker.tls_port, tls=tls) as publisher:
            await publisher.publish("tls/sub", "resumable")
        event = await sub.receive(timeout=10)
    assert event.text == "resumable"


async def test_missing_ca_file_fails_before_connecting(tmp_path: Path) -> None:
    tls = TlsOptions(ca_file=tmp_path / "missing-ca.pem")
    # Port 9 (discard) on loopback: nothing listens there, so reaching it would fail otherwise.
    with pytest.raises(chorus.TlsError) as raised:
        await chorus.connect(HOST, 9, tls=tls)
    assert "failed to load the TLS CA certificates" in str(raised.value)
    assert "missing-ca.pem" in str(raised.value)
