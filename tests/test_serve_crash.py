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
PARTITIONS = 3

PRODUCER = textwrap.dedent(
    """
    import sys, time
    from confluent_kafka import Producer
    import os
    bootstrap, topic, acked_path, stop_path = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
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
    i = 0
    while not os.path.exists(stop_path):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), partition=i % @PARTITIONS@, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        i += 1
        if i % 20 == 0:
            time.sleep(0.01)  # ~2,000 records/s: the run spans every kill
    left = p.flush(600)
    print("sent", i, "left", left, "errors", len(errors), errors[:3], flush=True)
    sys.exit(0 if left == 0 and not errors else 1)
    """
).replace("@PARTITIONS@", str(PARTITIONS))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(log_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """`riverbed serve` in a child process, once it prints its bootstrap address. Its output goes
    to files (a pipe nobody reads would block it once full)."""
    out = log_dir.parent / f"server-{time.monotonic_ns()}.out"
    with out.open("wb") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riverbed.cli", "--log", str(log_dir), "serve", "--listen", f"127.0.0.1:{port}",
             "--fsync", "batch", "--config", f"num.partitions={PARTITIONS}"],
            stdout=f, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if b"bootstrap servers" in out.read_bytes():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the server did not start: {out.read_text()}")


def test_acknowledged_records_survive_20_kills_exactly_once_in_order(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    port = free_port()
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    acked = tmp_path / "acked.txt"
    stop = tmp_path / "stop"
    rng = random.Random(7)
    server = start_server(log_dir, port)
    producer = subprocess.Popen(
        [sys.executable, str(script), f"127.0.0.1:{port}", "crash", str(acked), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.5, 2.0))
            server.send_signal(signal.SIGKILL)
            server.wait(30)
            server = start_server(log_dir, port)
        acked_during = len(acked.read_text().splitlines())
        stop.touch()
        out, _ = producer.communicate(timeout=600)
        assert producer.returncode == 0, out
    finally:
        if producer.poll() is None:
            producer.kill()
        server.send_signal(signal.SIGTERM)
        server.wait(60)

    acks = [tuple(int(x) for x in line.split()) for line in acked.read_text().splitlines()]
    summary = next(line for line in out.splitlines() if line.startswith("sent "))
    sent = int(summary.split()[1])
    assert len(acks) == sent, f"{len(acks)} of {sent} acknowledged: {out}"
    assert acked_during > 1000, f"only {acked_during} records were acknowledged while the broker was being killed"
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
