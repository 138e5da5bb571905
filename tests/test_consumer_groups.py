"""Consumer groups: range assignment, durable commits (across processes), clean handover,
positions, seeking and start specs."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter

import pytest

import riverbed as rb
from conftest import run_python, table_rows
from riverbed.exceptions import OffsetOutOfRange

BASE_TS = 1_700_000_000_000


def fill(topic, n: int, tag: str = "v") -> dict[int, list[tuple[int, bytes]]]:
    """Produce ``n`` records to every partition (timestamps BASE_TS + 10*i); returns {p: [(offset, value)]}."""
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(topic.partitions)}
    for i in range(n):
        for p in range(topic.partitions):
            v = f"{tag}-{p}-{i}".encode()
            got_p, o = topic.produce(v, partition=p, timestamp=BASE_TS + 10 * i)
            assert got_p == p
            out[p].append((o, v))
    return out


def drain(consumer, max_records: int = 10_000) -> list[tuple]:
    rows = []
    while True:
        b = consumer.poll(max_records=max_records, timeout=0)
        if b.num_rows == 0:
            return rows
        rows.extend(table_rows(b))


def test_range_assignment_two_members(log):
    t = log.topic("t", partitions=4)
    a = t.consumer("g")
    assert a.assignment() == [0, 1, 2, 3]
    b = t.consumer("g")
    assert a.assignment() == [0, 1]
    assert b.assignment() == [2, 3]
    assert a.group == b.group == "g"
    b.close()
    assert a.assignment() == [0, 1, 2, 3]
    a.close()


@pytest.mark.parametrize(("partitions", "members", "expected"), [
    (5, 2, [[0, 1, 2], [3, 4]]),
    (7, 3, [[0, 1, 2], [3, 4], [5, 6]]),
    (2, 3, [[0], [1], []]),
])
def test_range_assignment_uneven(log, partitions, members, expected):
    t = log.topic("t", partitions=partitions)
    cs = [t.consumer("g") for _ in range(members)]
    assert [c.assignment() for c in cs] == expected
    for c in cs:
        c.close()


def test_groups_are_independent(log):
    t = log.topic("t", partitions=2)
    data = fill(t, 5)
    a = t.consumer("g1")
    b = t.consumer("g2")
    assert a.assignment() == b.assignment() == [0, 1]
    ra, rb_ = drain(a), drain(b)
    want = sorted((p, o, v) for p, rows in data.items() for o, v in rows)
    assert sorted((r[0], r[1], r[4]) for r in ra) == want
    assert sorted((r[0], r[1], r[4]) for r in rb_) == want


def test_poll_commit_close_then_resume_in_new_process(log, log_dir):
    t = log.topic("t", partitions=4)
    before = fill(t, 25, "before")
    a = t.consumer("g")
    b = t.consumer("g")
    assert (a.assignment(), b.assignment()) == ([0, 1], [2, 3])
    ra, rb_ = drain(a, 7), drain(b, 7)
    assert sorted((r[0], r[1], r[4]) for r in ra) == sorted((p, o, v) for p in (0, 1) for o, v in before[p])
    assert sorted((r[0], r[1], r[4]) for r in rb_) == sorted((p, o, v) for p in (2, 3) for o, v in before[p])
    a.commit()
    b.commit()
    assert a.committed() == b.committed() == {p: 25 for p in range(4)}
    assert a.position() == {0: 25, 1: 25}
    assert b.position() == {2: 25, 3: 25}
    a.close()
    b.close()
    after = fill(t, 3, "after")
    log.close()

    out = run_python(
        """
        import json, sys
        import riverbed as rb
        log = rb.Log(sys.argv[1], cleanup_interval=None)
        c = log["t"].consumer("g")
        committed = c.committed()
        rows = []
        while True:
            b = c.poll(timeout=0)
            if b.num_rows == 0:
                break
            d = b.to_pydict()
            rows += [[p, o, v.decode()] for p, o, v in zip(d["partition"], d["offset"], d["value"])]
        print(json.dumps({"committed": {str(k): v for k, v in committed.items()}, "rows": rows}))
        c.commit()
        log.close()
        """,
        log_dir,
    )
    res = json.loads(out.stdout)
    assert res["committed"] == {str(p): 25 for p in range(4)}
    assert sorted(map(tuple, res["rows"])) == sorted((p, o, v.decode()) for p, rows in after.items() for o, v in rows)

    # and the child's commit is durable for us
    with rb.Log(log_dir, cleanup_interval=None) as lg:
        c = lg["t"].consumer("g")
        assert c.committed() == {p: 28 for p in range(4)}
        assert c.poll(timeout=0).num_rows == 0


def test_commit_is_only_what_was_polled(log):
    t = log.topic("t", partitions=2)
    fill(t, 10)
    c = t.consumer("g")
    b = c.poll(max_records=3, timeout=0)
    assert b.num_rows == 3
    pos = c.position()
    counts = Counter(table_rows(b)[i][0] for i in range(3))
    assert pos == {0: counts[0], 1: counts[1]}
    c.commit()
    assert c.committed() == pos
    c.close()
    c2 = t.consumer("g")
    rows = drain(c2)
    got = sorted((r[0], r[1]) for r in rows)
    assert got == sorted((p, o) for p in (0, 1) for o in range(pos[p], 10))


def test_close_commits_positions(log):
    t = log.topic("t", partitions=2)
    fill(t, 6)
    c = t.consumer("g")
    assert len(drain(c)) == 12
    c.close()  # no explicit commit: close commits (Kafka auto-commit on close)
    c2 = t.consumer("g")
    assert c2.committed() == {0: 6, 1: 6}
    assert c2.poll(timeout=0).num_rows == 0


def test_handover_on_join_covers_every_record_once(log):
    t = log.topic("t", partitions=4)
    rng = random.Random(3)
    for i in range(600):
        t.produce(f"v{i}", key=rng.randbytes(6))
    total = {(p, o) for p, (lo, hi) in t.offsets().items() for o in range(lo, hi)}
    assert len(total) == 600

    seen: Counter = Counter()
    a = t.consumer("g")
    for _ in range(4):
        for r in table_rows(a.poll(max_records=29, timeout=0)):
            seen[(r[0], r[1])] += 1
    assert 0 < sum(seen.values()) < 600
    b = t.consumer("g")  # rebalance: a keeps [0, 1], b takes [2, 3] where a left them
    assert (a.assignment(), b.assignment()) == ([0, 1], [2, 3])
    while True:
        n = 0
        for c in (b, a):
            rows = table_rows(c.poll(max_records=rng.randrange(1, 50), timeout=0))
            n += len(rows)
            for r in rows:
                assert r[0] in c.assignment()
                seen[(r[0], r[1])] += 1
        if n == 0:
            break
    assert set(seen) == total
    assert max(seen.values()) == 1, [k for k, v in seen.items() if v > 1][:5]


def test_handover_on_leave_covers_every_record_once(log):
    t = log.topic("t", partitions=4)
    fill(t, 50)
    seen: Counter = Counter()
    a, b = t.consumer("g"), t.consumer("g")
    for c in (a, b):
        for r in table_rows(c.poll(max_records=33, timeout=0)):
            seen[(r[0], r[1])] += 1
    b.close()  # a takes over [2, 3] at b's position
    assert a.assignment() == [0, 1, 2, 3]
    for r in drain(a, 17):
        seen[(r[0], r[1])] += 1
    assert set(seen) == {(p, o) for p in range(4) for o in range(50)}
    assert max(seen.values()) == 1


def test_position_committed_seek(log):
    t = log.topic("t", partitions=3)
    fill(t, 20)
    c = t.consumer("g")
    assert c.committed() == {0: None, 1: None, 2: None}
    assert c.position() == {0: 0, 1: 0, 2: 0}
    c.seek(1, 15)
    assert c.position() == {0: 0, 1: 15, 2: 0}
    c.seek(2, 20)  # latest is a valid position
    rows = drain(c)
    got = sorted((r[0], r[1]) for r in rows)
    assert got == [(0, o) for o in range(20)] + [(1, o) for o in range(15, 20)]
    assert c.position() == {0: 20, 1: 20, 2: 20}
    c.seek(0, 3)
    assert [r[1] for r in drain(c)] == list(range(3, 20))
    with pytest.raises(OffsetOutOfRange):
        c.seek(0, 21)
    with pytest.raises((OffsetOutOfRange, ValueError)):
        c.seek(0, -1)
    assert c.position() == {0: 20, 1: 20, 2: 20}
    # committed() is the group's view, unaffected by positions until commit()
    assert c.committed() == {0: None, 1: None, 2: None}
    c.seek(2, 7)
    c.commit()
    assert c.committed() == {0: 20, 1: 20, 2: 7}


def test_seek_to_partition_not_assigned_fails(log):
    t = log.topic("t", partitions=4)
    fill(t, 3)
    a, b = t.consumer("g"), t.consumer("g")
    with pytest.raises(ValueError, match="not assigned"):
        a.seek(3, 0)
    b.seek(3, 1)
    assert b.position() == {2: 0, 3: 1}


def test_seek_to_time_vs_brute_force(log):
    t = log.topic("t", partitions=3)
    rng = random.Random(8)
    stamps: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for i in range(300):
        p = rng.randrange(3)
        ts = BASE_TS + rng.randrange(0, 10_000)  # not monotonic
        t.produce(b"x", partition=p, timestamp=ts)
        stamps[p].append(ts)
    c = t.consumer("g")
    for ts in [BASE_TS - 1, BASE_TS + 1234, BASE_TS + 5000, BASE_TS + 9_999, BASE_TS + 10_000]:
        want = {p: next((o for o, x in enumerate(s) if x >= ts), len(s)) for p, s in stamps.items()}
        c.seek_to_time(ts)
        assert c.position() == want, ts
        c.seek_to_time(dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc))
        assert c.position() == want, ts
    c.seek_to_time(BASE_TS + 5000)
    rows = drain(c)
    want = sorted((p, o) for p, s in stamps.items()
                  for o in range(next((o for o, x in enumerate(s) if x >= BASE_TS + 5000), len(s)), len(s)))
    assert sorted((r[0], r[1]) for r in rows) == want


def test_start_specs(log):
    t = log.topic("t", partitions=2)
    fill(t, 10)  # timestamps BASE_TS + 10*i
    latest = t.consumer("g-latest", start="latest")
    assert latest.position() == {0: 10, 1: 10}
    assert latest.poll(timeout=0).num_rows == 0
    t.produce(b"new", partition=1)
    assert [(r[0], r[1], r[4]) for r in drain(latest)] == [(1, 10, b"new")]

    off = t.consumer("g-off", start=4)
    assert off.position() == {0: 4, 1: 4}
    assert sorted((r[0], r[1]) for r in drain(off)) == [(0, o) for o in range(4, 10)] + [(1, o) for o in range(4, 11)]

    when = dt.datetime.fromtimestamp((BASE_TS + 55) / 1000, dt.timezone.utc)  # between i=5 and i=6
    timed = t.consumer("g-time", start=when)
    assert timed.position() == {0: 6, 1: 6}
    naive = t.consumer(start=when.replace(tzinfo=None))  # naive datetimes are UTC
    assert naive.position() == {0: 6, 1: 6}
    future = t.consumer(start=dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc))
    assert future.position() == {0: 10, 1: 11}

    earliest = t.consumer("g-earliest")
    assert earliest.position() == {0: 0, 1: 0}


def test_start_applies_only_without_committed_offset(log):
    t = log.topic("t", partitions=2)
    fill(t, 10)
    c = t.consumer("g")
    c.seek(0, 3)
    c.seek(1, 8)
    c.commit()
    c.close()
    for start in ("latest", "earliest", 1):
        c = t.consumer("g", start=start)
        assert c.position() == {0: 3, 1: 8}, start
        c.close()


def test_standalone_consumers_keep_no_group_state(log):
    t = log.topic("t", partitions=2)
    fill(t, 4)
    c = t.consumer()
    assert c.group is None
    assert c.assignment() == [0, 1]
    assert len(drain(c)) == 8
    with pytest.raises(ValueError, match="group"):
        c.commit()
    c.close()
    assert t.consumer().position() == {0: 0, 1: 0}


def test_consumer_after_retention_moves_to_earliest(log):
    t = log.topic("t", partitions=1, segment_bytes=1024, retention_bytes=2048)
    c = t.consumer("g")
    assert c.position() == {0: 0}
    for i in range(100):
        t.produce(b"x" * 100, partition=0, timestamp=BASE_TS + i)
    log.cleanup()
    earliest = t.offsets()[0][0]
    assert earliest > 0
    rows = drain(c)
    assert [r[1] for r in rows] == list(range(earliest, 100))


def test_members_joining_and_leaving_concurrently_with_producer(log):
    """Members poll in threads while others join and leave and a producer writes: every record
    is delivered to exactly one member exactly once (handover commits on every rebalance)."""
    import threading
    import time

    t = log.topic("t", partitions=6)
    n = 4000
    seen: Counter = Counter()
    lock = threading.Lock()
    produced = threading.Event()
    errors = []

    def member(delay, life):
        try:
            time.sleep(delay)
            c = t.consumer("g")
            t0 = time.monotonic()
            while time.monotonic() - t0 < life:
                b = c.poll(max_records=50, timeout=0.02)
                with lock:
                    for p, o in zip(b.column("partition").to_pylist(), b.column("offset").to_pylist()):
                        seen[(p, o)] += 1
                    if produced.is_set() and sum(seen.values()) >= n:
                        break
            c.close()
        except Exception as e:  # pragma: no cover - surfaced below
            errors.append(e)

    plan = [(0, 30), (0.02, 0.15), (0.05, 30), (0.1, 0.2), (0.15, 30), (0.3, 0.1)]
    threads = [threading.Thread(target=member, args=a) for a in plan]
    for th in threads:
        th.start()
    for i in range(n):
        t.produce(b"%d" % i, key=b"%d" % i)
    produced.set()
    for th in threads:
        th.join(timeout=20)
    assert not errors, errors
    assert not any(th.is_alive() for th in threads)
    assert set(seen) == {(p, o) for p, (lo, hi) in t.offsets().items() for o in range(lo, hi)}
    assert sum(seen.values()) == n
    assert max(seen.values()) == 1
