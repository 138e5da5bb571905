"""A consumer group of three confluent-kafka (librdkafka) consumers, each in its own process,
against `riverbed serve`: they split a 6-partition topic, rebalance when one is killed with
`kill -9` (evicted after its session timeout) and when one leaves cleanly, and together read
every record exactly once, with their offsets committed.

Each consumer writes "partition offset" for every record it reads, then commits that record
synchronously; the test kills a consumer only once everything produced so far is read and
committed, so any duplicate or missing offset is the broker's doing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import riverbed as rb

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "split6"
PARTITIONS = 6
PER_PHASE = 600
SESSION_MS = 6000  # the broker's group.min.session.timeout.ms, as Kafka's default

CHILD = textwrap.dedent(
    """
    import sys
    from confluent_kafka import Consumer
    bootstrap, topic, out_path, status_path = sys.argv[1:5]
    status = open(status_path, "a", buffering=1)
    def on_assign(c, parts):
        status.write("assigned " + " ".join(str(p.partition) for p in parts) + "\\n")
    def on_revoke(c, parts):
        status.write("revoked " + " ".join(str(p.partition) for p in parts) + "\\n")
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "split-group", "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "session.timeout.ms": @SESSION_MS@, "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
    })
    c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    out = open(out_path, "a", buffering=1)
    import signal
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    while not stop:
        m = c.poll(0.2)
        if m is None:
            continue
        if m.error():
            status.write("error " + str(m.error()) + "\\n")
            continue
        out.write(f"{m.partition()} {m.offset()}\\n")
        c.commit(message=m, asynchronous=False)
    c.close()
    status.write("closed\\n")
    """
).replace("@SESSION_MS@", str(SESSION_MS))


def read_lines(paths: list[Path]) -> list[tuple[int, int]]:
    out = []
    for p in paths:
        if p.exists():
            for line in p.read_text().splitlines():
                part, off = line.split()
                out.append((int(part), int(off)))
    return out


def wait_for(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def last_assignment(status: Path) -> list[int] | None:
    assigned = None
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("assigned"):
            assigned = [int(x) for x in line.split()[1:]]
        elif line.startswith("revoked"):
            assigned = None
    return assigned


def produce(server: rb.Server, phase: int) -> None:
    p = confluent_kafka.Producer({"bootstrap.servers": server.bootstrap, "enable.idempotence": True})
    for i in range(PER_PHASE):
        p.produce(TOPIC, value=f"{phase}:{i}".encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def test_three_processes_split_rebalance_and_read_everything_once(rb_broker: rb.Server, tmp_path: Path) -> None:
    rb_broker.log.topic(TOPIC, partitions=PARTITIONS)
    script = tmp_path / "member.py"
    script.write_text(CHILD)
    outs = [tmp_path / f"out{i}.txt" for i in range(3)]
    statuses = [tmp_path / f"status{i}.txt" for i in range(3)]
    procs = [
        subprocess.Popen([sys.executable, str(script), rb_broker.bootstrap, TOPIC, str(o), str(s)])
        for o, s in zip(outs, statuses)
    ]
    try:
        wait_for(
            lambda: all((last_assignment(s) or []) and len(last_assignment(s) or []) == 2 for s in statuses),
            60, "three members with two partitions each",
        )
        parts = sorted(p for s in statuses for p in last_assignment(s) or [])
        assert parts == list(range(PARTITIONS)), parts

        def all_read(n: int) -> bool:
            return len(read_lines(outs)) >= n

        produce(rb_broker, 0)
        wait_for(lambda: all_read(PER_PHASE), 60, "phase 0 read")
        time.sleep(0.5)  # let the last commits land

        # kill -9 one member: after its session timeout the other two take its partitions
        procs[2].send_signal(signal.SIGKILL)
        procs[2].wait(10)
        t_kill = time.monotonic()
        produce(rb_broker, 1)
        wait_for(lambda: all_read(2 * PER_PHASE), SESSION_MS / 1000 + 60, "phase 1 read after the kill")
        assert time.monotonic() - t_kill >= SESSION_MS / 1000 * 0.5, "the dead member's partitions moved before its session expired"
        wait_for(lambda: sorted(p for s in statuses[:2] for p in last_assignment(s) or []) == list(range(PARTITIONS)),
                 30, "two members with all six partitions")
        time.sleep(0.5)

        # one leaves cleanly: the last takes everything, at once (no session timeout to wait)
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0
        produce(rb_broker, 2)
        wait_for(lambda: all_read(3 * PER_PHASE), 60, "phase 2 read after the leave")
        time.sleep(1.0)
        assert last_assignment(statuses[0]) == list(range(PARTITIONS))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    got = Counter(read_lines(outs))
    ends = rb_broker.log.topic(TOPIC).offsets()
    want = Counter((p, o) for p in range(PARTITIONS) for o in range(ends[p][0], ends[p][1]))
    assert sum(e[1] for e in ends.values()) == 3 * PER_PHASE
    assert got == want, f"missing {sorted((want - got).keys())[:10]}, duplicated {sorted((got - want).keys())[:10]}"
    committed = rb_broker.log.topic(TOPIC).consumer(group="split-group").committed()
    assert committed == {p: ends[p][1] for p in range(PARTITIONS)}
