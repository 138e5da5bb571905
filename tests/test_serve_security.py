"""`riverbed serve` security, checked with real clients: SASL (PLAIN, SCRAM-SHA-256/512) from a
users file, TLS with a certificate made here by openssl, the refusal of an exposed anonymous
broker, and malformed input that must close only its own connection."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import riverbed as rb

confluent_kafka = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")

TIMEOUT = 30.0


def users_file(tmp_path: Path, text: str = "alice:s3cret:with:colons\nbob:hunter2\n", mode: int = 0o600) -> Path:
    f = tmp_path / "users.txt"
    f.write_text(text)
    f.chmod(mode)
    return f


def round_trip(bootstrap: str, topic: str, **conf: str) -> list[bytes]:
    """Produce three records and read them back with confluent-kafka under ``conf``."""
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, **conf})
    for i in range(3):
        p.produce(topic, value=f"v{i}".encode(), partition=0)
    assert p.flush(TIMEOUT) == 0
    c = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"g-{topic}", "auto.offset.reset": "earliest", **conf}
    )
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 3 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def auth_error(bootstrap: str, **conf: str) -> object:
    """The first error librdkafka reports for a producer under ``conf`` (None if none within the timeout)."""
    errors: list[object] = []
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "error_cb": errors.append, **conf})
    p.produce("denied", value=b"x")
    deadline = time.monotonic() + TIMEOUT
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    p.purge()
    return errors[0] if errors else None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_users_authenticate_and_a_wrong_password_is_an_authentication_error(tmp_path: Path, mechanism: str) -> None:
    with rb.serve(tmp_path / "log", "127.0.0.1:0", fsync="never", sasl_users=users_file(tmp_path)) as server:
        good = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
                "sasl.username": "alice", "sasl.password": "s3cret:with:colons"}
        assert round_trip(server.bootstrap, "secured", **good) == [b"v0", b"v1", b"v2"]
        bad = {**good, "sasl.password": "s3cret"}
        err = auth_error(server.bootstrap, **bad)
        assert err is not None and err.code() == confluent_kafka.KafkaError._AUTHENTICATION, err
        unknown = {**good, "sasl.username": "mallory"}
        err = auth_error(server.bootstrap, **unknown)
        assert err is not None and err.code() == confluent_kafka.KafkaError._AUTHENTICATION, err
        assert server.log.topics() == ["secured"], "a refused client created nothing"


def test_kafka_python_scram_and_a_client_without_sasl_is_turned_away(tmp_path: Path) -> None:
    with rb.serve(tmp_path / "log", "127.0.0.1:0", fsync="never", sasl_users=users_file(tmp_path)) as server:
        p = kafka.KafkaProducer(bootstrap_servers=server.bootstrap, security_protocol="SASL_PLAINTEXT",
                                sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob", sasl_plain_password="hunter2")
        p.send("kp", b"hello", partition=0).get(timeout=TIMEOUT)
        p.close()
        # a client that does not authenticate gets nothing but a closed connection
        err = auth_error(server.bootstrap)
        assert err is not None
        assert server.log.topic("kp").read().column("value").to_pylist() == [b"hello"]
        assert server.log.topics() == ["kp"]


def test_exposure_needs_authentication_or_an_explicit_allow(tmp_path: Path) -> None:
    log = rb.Log(tmp_path / "log", fsync="never")
    try:
        with pytest.raises(rb.exceptions.ServerError, match="allow_anonymous|allow-anonymous"):
            rb.serve(log, "0.0.0.0:0")
        with rb.serve(log, "0.0.0.0:0", allow_anonymous=True) as s:
            assert s.bootstrap.endswith(s.bootstrap.rsplit(":", 1)[1])
        with rb.serve(log, "0.0.0.0:0", sasl_users=users_file(tmp_path)):
            pass
        with pytest.raises(rb.exceptions.ServerError, match="users"):
            rb.serve(log, "127.0.0.1:0", sasl_users=users_file(tmp_path, mode=0o644))
        with pytest.raises(rb.exceptions.ServerError):
            rb.serve(log, "127.0.0.1:0", sasl_users=tmp_path / "missing.txt")
        with pytest.raises(rb.exceptions.ServerError, match="(?i)key"):
            rb.serve(log, "127.0.0.1:0", tls_cert=tmp_path / "cert.pem")
    finally:
        log.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_with_and_without_sasl(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    with rb.serve(tmp_path / "log", "127.0.0.1:0", fsync="never", tls_cert=cert, tls_key=key) as server:
        tls = {"security.protocol": "SSL", "ssl.ca.location": str(cert)}
        assert round_trip(server.bootstrap, "tls", **tls) == [b"v0", b"v1", b"v2"]
        # a plaintext client cannot talk to it; the broker stays up for the next one
        assert auth_error(server.bootstrap) is not None
        assert round_trip(server.bootstrap, "tls2", **tls) == [b"v0", b"v1", b"v2"]
    with rb.serve(tmp_path / "log2", "127.0.0.1:0", fsync="never", tls_cert=cert, tls_key=key,
                  sasl_users=users_file(tmp_path)) as server:
        both = {"security.protocol": "SASL_SSL", "ssl.ca.location": str(cert), "sasl.mechanism": "SCRAM-SHA-256",
                "sasl.username": "bob", "sasl.password": "hunter2"}
        assert round_trip(server.bootstrap, "both", **both) == [b"v0", b"v1", b"v2"]


def closed(sock: socket.socket) -> bool:
    sock.settimeout(TIMEOUT)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # garbage: a ~1.2 GB length prefix
        struct.pack(">i", 2**31 - 1) + b"\x00" * 16,  # a 2 GiB length prefix
        struct.pack(">i", -5),  # a negative length
        struct.pack(">i", 30) + b"\x00\x12\x00\x03\x00\x00",  # truncated frame, then the client closes
        struct.pack(">i", 8) + b"\x7f\x7f\x00\x00\x00\x00\x00\x01",  # unknown API key
    ],
    ids=["http", "2GiB", "negative", "truncated", "unknown-api"],
)
def test_malformed_input_closes_only_that_connection(rb_broker: rb.Server, payload: bytes) -> None:
    host, port = rb_broker.bootstrap.rsplit(":", 1)
    other = socket.create_connection((host, int(port)))
    bad = socket.create_connection((host, int(port)))
    bad.sendall(payload)
    if payload.startswith(struct.pack(">i", 30)):
        bad.shutdown(socket.SHUT_WR)
    assert closed(bad)
    bad.close()
    # the other connection (opened before) and new clients keep working
    api_versions = struct.pack(">hhih", 18, 0, 7, -1)
    other.sendall(struct.pack(">i", len(api_versions)) + api_versions)
    other.settimeout(TIMEOUT)
    size = struct.unpack(">i", other.recv(4, socket.MSG_WAITALL))[0]
    body = other.recv(size, socket.MSG_WAITALL)
    assert struct.unpack(">ih", body[:6]) == (7, 0)
    other.close()
    assert round_trip(rb_broker.bootstrap, "after-bad-input") == [b"v0", b"v1", b"v2"]
