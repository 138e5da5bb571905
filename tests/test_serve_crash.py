"""Durability of `riverbed serve` under `kill -9`: a confluent-kafka producer in another process
(acks=all, idempotence on) writes while the broker process is killed with SIGKILL and restarted
on the same port 20 times. Every record the producer saw acknowledged is in the log exactly
once, and each partition holds the producer's records in the order it sent them."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import riverbed as rb

pytest.importorskip("confluent_kafka")

KILLS = 20
RECORDS = 20_000
PARTITIONS = 3

PRODUCER = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Producer
    bootstrap, topic, acked_path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    acked = open(acked_path, "a", buffering=1)
    errors = []
    def done(err, msg):
        if err is None:
            acked.write(f"{msg.partition()} {msg.value().decode()}\\n")
        else:
            errors.append(str(err))
    p = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "message.timeout.ms": 600000, "linger.ms": 2, "reconnect.backoff.ms": 20,
        "reconnect.backoff.max.ms": 200, "retry.backoff.ms": 20,
    })
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=i % @PARTITIONS@, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if i % 50 == 0:
            time.sleep(0.002)
    left = p.flush(600)
    print("left", left, "errors", len(errors), errors[:3], flush=True)
    sys.exit(0 if left == 0 and not errors else 1)
    """
).replace("@PARTITIONS@", str(PARTITIONS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(log_dir: Path, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "riverbed.cli", "--log", str(log_dir), "serve", "--listen", f"127.0.0.1:{port}",
         "--fsync", "batch", "--config", f"num.partitions={PARTITIONS}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "bootstrap servers" in line:
            return proc
        if not line and proc.poll() is not None:
            break
        if "LogLocked" in line:
            break
    err = proc.stderr.read() if proc.stderr else ""
    proc.kill()
    raise AssertionError(f"the server did not start: {err}")


def test_acknowledged_records_survive_20_kills_exactly_once_in_order(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    port = free_port()
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    acked = tmp_path / "acked.txt"
    rng = random.Random(7)
    server = start_server(log_dir, port)
    producer = subprocess.Popen(
        [sys.executable, str(script), f"127.0.0.1:{port}", "crash", str(acked), str(RECORDS)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.0))
            server.send_signal(signal.SIGKILL)
            server.wait(30)
            server = start_server(log_dir, port)
        out, _ = producer.communicate(timeout=600)
        assert producer.returncode == 0, out
    finally:
        if producer.poll() is None:
            producer.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    acks = [tuple(int(x) for x in line.split()) for line in acked.read_text().splitlines()]
    assert len(acks) == RECORDS, f"{len(acks)} of {RECORDS} acknowledged"
    with rb.Log(log_dir) as log:
        table = log.topic("crash").read()
    parts = table.column("partition").to_pylist()
    values = [int(v) for v in table.column("value").to_pylist()]
    offsets = table.column("offset").to_pylist()
    stored = Counter(values)
    dup = [v for v, c in stored.items() if c > 1]
    assert not dup, f"{len(dup)} records stored twice, e.g. {dup[:5]}"
    missing = [v for p, v in acks if v not in stored]
    assert not missing, f"{len(missing)} acknowledged records missing, e.g. {missing[:5]}"
    for p in range(PARTITIONS):
        mine = [v for q, o, v in sorted(zip(parts, offsets, values)) if q == p]
        assert mine == sorted(mine), f"partition {p} out of order"
        assert all(v % PARTITIONS == p for v in mine)
