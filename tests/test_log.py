"""General API of the embedded log: producing from every tabular input, reading, offsets,
time look-ups, consumers, topic management, reopening and tail-following."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import riverbed as rb
from conftest import read_all, reopen, segment_files, table_rows
from riverbed.exceptions import TopicNotFound

BASE_TS = 1_700_000_000_000
UTC = dt.timezone.utc


def ms(d: dt.datetime) -> int:
    return (d - dt.datetime(1970, 1, 1, tzinfo=UTC)) // dt.timedelta(milliseconds=1)


# --------------------------------------------------------------------------------------------
# produce
# --------------------------------------------------------------------------------------------


def test_produce_value_and_key_encodings(log):
    t = log.topic("t", partitions=1)
    cases = [
        (b"\x00raw", b"\x00raw"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
        ("ünïcode", "ünïcode".encode()),
        ({"a": [1, 2.5, None, True]}, b'{"a":[1,2.5,null,true]}'),
        (42, b"42"),
        ([], b"[]"),
        (None, None),
    ]
    for i, (value, stored) in enumerate(cases):
        assert t.produce(value, key=value, timestamp=BASE_TS) == (0, i)
    rows = read_all(t)[0]
    assert [r[3] for r in rows] == [s for _, s in cases]
    assert [r[2] for r in rows] == [s for _, s in cases]


def test_produce_timestamps_and_headers(log):
    t = log.topic("t", partitions=1)
    aware = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    naive = dt.datetime(2024, 5, 6, 7, 8, 9, 123000)  # UTC
    before = time.time_ns() // 1_000_000
    t.produce(b"a", timestamp=aware, headers={"s": "str", "b": b"\xff", "n": None, "j": {"x": 1}})
    t.produce(b"b", timestamp=naive, headers=[("dup", b"1"), ("dup", b"2")])
    t.produce(b"c", timestamp=None)
    t.produce(b"d", timestamp=-1000)
    after = time.time_ns() // 1_000_000
    rows = read_all(t)[0]
    assert rows[0][1] == ms(aware) == ms(naive.replace(tzinfo=UTC)) - 2 * 3_600_000
    assert rows[1][1] == ms(naive.replace(tzinfo=UTC))
    assert before <= rows[2][1] <= after
    assert rows[3][1] == -1000
    assert rows[0][4] == [("s", b"str"), ("b", b"\xff"), ("n", None), ("j", b'{"x":1}')]
    assert rows[1][4] == [("dup", b"1"), ("dup", b"2")]  # order and duplicates kept
    assert rows[2][4] == []


def _sample_frame(n=40, seed=0):
    rng = random.Random(seed)
    return {
        "key": [f"user-{rng.randrange(10)}" for _ in range(n)],
        "value": [f"payload-{i}-{rng.randrange(1000)}" for i in range(n)],
        "ts": [BASE_TS + rng.randrange(-10**6, 10**6) for _ in range(n)],
        "n": list(range(n)),
    }


def _check_produced(t, parts, offs, cols):
    rows = {(p, o): (ts, k, v) for p, o, ts, k, v, _ in table_rows(t.read())}
    parts, offs = list(parts), list(offs)
    assert len(set(zip(parts, offs))) == len(cols["value"])
    for i, (p, o) in enumerate(zip(parts, offs)):
        assert rows[(p, o)] == (cols["ts"][i], cols["key"][i].encode(), cols["value"][i].encode())
        assert p == t.partition_for(cols["key"][i])


@pytest.mark.parametrize("kind", ["table", "record_batch", "reader", "pandas", "polars", "chunked_table"])
def test_produce_batch_inputs(log, kind):
    cols = _sample_frame(seed=len(kind))
    tbl = pa.table({**cols, "ts": pa.array(cols["ts"], pa.int64())})
    data = {
        "table": lambda: tbl,
        "record_batch": lambda: tbl.to_batches()[0],
        "reader": lambda: pa.RecordBatchReader.from_batches(tbl.schema, tbl.to_batches(max_chunksize=7)),
        "pandas": lambda: pd.DataFrame(cols),
        "polars": lambda: pl.DataFrame(cols),
        "chunked_table": lambda: pa.Table.from_batches(tbl.to_batches(max_chunksize=9)),
    }[kind]()
    t = log.topic("t", partitions=3)
    parts, offs = t.produce_batch(data, key="key", value="value", timestamp="ts")
    assert isinstance(parts, pa.Array) and isinstance(offs, pa.Array)
    assert len(parts) == len(offs) == 40
    _check_produced(t, parts.to_pylist(), offs.to_pylist(), cols)


def test_produce_batch_pandas_datetime_column(log):
    stamps = pd.to_datetime([BASE_TS + 1, BASE_TS + 999, BASE_TS - 5], unit="ms", utc=True)
    df = pd.DataFrame({"v": ["a", "b", "c"], "when": stamps})
    t = log.topic("t")
    t.produce_batch(df, value="v", timestamp="when")
    assert [r[1] for r in read_all(t)[0]] == [BASE_TS + 1, BASE_TS + 999, BASE_TS - 5]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_produce_batch_timestamp_units(log, unit):
    exact_ns = 1_700_000_000_123_456_789
    per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
    arr = pa.array([exact_ns // per, -(exact_ns // per)], pa.timestamp(unit, tz="UTC"))
    t = log.topic("t")
    t.produce_batch(pa.table({"v": ["pos", "neg"], "ts": arr}), value="v", timestamp="ts")
    got = [r[1] for r in read_all(t)[0]]
    want_pos = (exact_ns // per) * per // 10**6
    want_neg = -((exact_ns // per) * per) // 10**6  # floor towards -inf
    assert got == [want_pos, want_neg]


def test_produce_batch_without_value_column_writes_json_rows(log):
    tbl = pa.table(
        {
            "i": pa.array([1, None, -(2**62)], pa.int64()),
            "f": [0.1, -2.5e10, None],
            "s": ['quote " back \\ nl \n é', None, ""],
            "b": [True, None, False],
            "l": [[1, 2], None, []],
            "st": [{"a": 1, "b": "x"}, None, {"a": None, "b": "y"}],
        }
    )
    t = log.topic("t", partitions=2)
    parts, offs = t.produce_batch(tbl)
    rows = {(p, o): v for p, o, _, _, v, _ in table_rows(t.read())}
    expected = tbl.to_pylist()
    for i, (p, o) in enumerate(zip(parts.to_pylist(), offs.to_pylist())):
        assert json.loads(rows[(p, o)]) == expected[i]


def test_produce_batch_non_binary_value_and_key_columns_as_json(log):
    tbl = pa.table({"k": pa.array([7, None, 9], pa.int32()), "v": [1.5, None, 3.0], "s": ["x", "y", "z"]})
    t = log.topic("t", partitions=1)
    t.produce_batch(tbl, key="k", value="v")
    t.produce_batch(tbl, key="s", value="k")
    rows = read_all(t)[0]
    assert [(r[2], r[3]) for r in rows] == [
        (b"7", b"1.5"),
        (None, None),
        (b"9", b"3.0"),
        (b"x", b"7"),
        (b"y", None),
        (b"z", b"9"),
    ]


def test_produce_batch_empty(log):
    t = log.topic("t", partitions=2)
    parts, offs = t.produce_batch(pa.table({"v": pa.array([], pa.string())}), value="v")
    assert len(parts) == len(offs) == 0
    assert t.offsets() == {0: (0, 0), 1: (0, 0)}


def test_produce_batch_large_spans_batches_and_segments(log, log_dir):
    t = log.topic("t", partitions=2, segment_bytes=64 * 1024)
    n = 20_000
    vals = [b"%06d" % i + b"z" * (i % 50) for i in range(n)]
    keys = [b"k%d" % (i % 97) for i in range(n)]
    parts, offs = t.produce_batch(pa.table({"k": keys, "v": vals}), key="k", value="v")
    assert len(segment_files(log_dir / "t", 0)) > 1
    got = {(p, o): (k, v) for p, o, _, k, v, _ in table_rows(t.read())}
    assert len(got) == n
    for i, (p, o) in enumerate(zip(parts.to_pylist(), offs.to_pylist())):
        assert got[(p, o)] == (keys[i], vals[i])


# --------------------------------------------------------------------------------------------
# read / offsets / time
# --------------------------------------------------------------------------------------------


@pytest.fixture
def stamped(log):
    """3 partitions, random (non-monotonic) timestamps, several segments; returns (topic, model)."""
    t = log.topic("t", partitions=3, segment_bytes=2048)
    rng = random.Random(42)
    model = {p: [] for p in range(3)}
    for i in range(600):
        ts = BASE_TS + rng.randrange(0, 100_000)
        p, o = t.produce(b"v%d" % i, key=b"k%d" % i, timestamp=ts)
        assert o == len(model[p])
        model[p].append((o, ts, b"k%d" % i, b"v%d" % i))
    return t, model


def test_offsets(stamped):
    t, model = stamped
    assert t.offsets() == {p: (0, len(rows)) for p, rows in model.items()}
    d = t.describe()
    assert d["name"] == "t" and d["config"]["partitions"] == 3
    assert [(x["partition"], x["earliest"], x["latest"]) for x in d["partitions"]] == [
        (p, 0, len(model[p])) for p in range(3)
    ]


def test_describe_sizes_match_files(stamped, log_dir):
    t, _ = stamped
    for x in t.describe()["partitions"]:
        files = segment_files(log_dir / "t", x["partition"])
        assert x["segments"] == len(files) > 1
        assert x["size_bytes"] == sum(f.stat().st_size for f in files)


def test_read_all_and_bounds(stamped):
    t, model = stamped
    assert {p: [r[:4] for r in rows] for p, rows in read_all(t).items()} == model

    def expect(lo, hi):
        return sorted((p, r[0]) for p, rows in model.items() for r in rows[lo:hi])

    def got(tbl):
        return sorted(zip(tbl.column("partition").to_pylist(), tbl.column("offset").to_pylist()))

    for lo, hi in [(0, 1), (5, 17), (0, 150), (100, 100), (150, 120)]:
        assert got(t.read(start=lo, end=hi)) == expect(lo, max(lo, hi)), (lo, hi)
    assert got(t.read(start=50)) == expect(50, None)
    assert got(t.read(end=30)) == expect(0, 30)
    assert t.read(start="latest").num_rows == 0
    assert got(t.read(start="earliest", end="latest")) == expect(0, None)
    # partition order, offset order within each
    tbl = t.read()
    pairs = list(zip(tbl.column("partition").to_pylist(), tbl.column("offset").to_pylist()))
    assert pairs == sorted(pairs)


def test_read_time_bounds(stamped):
    t, model = stamped
    lo_ts, hi_ts = BASE_TS + 20_000, BASE_TS + 60_000
    tbl = t.read(start=dt.datetime.fromtimestamp(lo_ts / 1000, UTC), end=dt.datetime.fromtimestamp(hi_ts / 1000, UTC))
    want = []
    for p, rows in model.items():
        first = next(r[0] for r in rows if r[1] >= lo_ts)
        end = next(r[0] for r in rows if r[1] >= hi_ts)
        want += [(p, o) for o in range(first, max(first, end))]
    assert sorted(zip(tbl.column("partition").to_pylist(), tbl.column("offset").to_pylist())) == sorted(want)


def test_offsets_for_times_brute_force(stamped):
    t, model = stamped
    rng = random.Random(1)
    probes = [BASE_TS - 1, BASE_TS, BASE_TS + 99_999, BASE_TS + 100_000] + [
        BASE_TS + rng.randrange(0, 100_000) for _ in range(150)
    ]
    for ts in probes:
        want = {p: next((r[0] for r in rows if r[1] >= ts), None) for p, rows in model.items()}
        assert t.offsets_for_times(ts) == want, ts
    d = dt.datetime.fromtimestamp((BASE_TS + 31_337) / 1000, UTC)
    assert t.offsets_for_times(d) == t.offsets_for_times(BASE_TS + 31_337)


def test_offsets_for_times_after_reopen(log):
    t = log.topic("t", partitions=1, segment_bytes=4096)
    rng = random.Random(3)
    model = []
    for i in range(60):
        n = rng.randrange(1, 30)
        ts = [BASE_TS + rng.randrange(0, 50_000) for _ in range(n)]
        _, offs = t.produce_batch(pa.table({"v": ["x" * rng.randrange(0, 60)] * n, "ts": pa.array(ts, pa.int64())}),
                                  value="v", timestamp="ts")
        model += list(zip(offs.to_pylist(), ts))
    lg = reopen(log)
    try:
        t = lg["t"]
        for probe in [BASE_TS + rng.randrange(-10, 50_010) for _ in range(200)]:
            assert t.offsets_for_times(probe) == {0: next((o for o, x in model if x >= probe), None)}
    finally:
        lg.close()


# --------------------------------------------------------------------------------------------
# consumers
# --------------------------------------------------------------------------------------------


def test_poll_batches_schema_and_max_records(stamped):
    t, model = stamped
    c = t.consumer()
    b = c.poll(max_records=25, timeout=0)
    assert isinstance(b, pa.RecordBatch)
    assert b.schema.names == ["topic", "partition", "offset", "timestamp", "key", "value", "headers"]
    assert b.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert b.num_rows == 25
    seen = table_rows(b)
    while True:
        b = c.poll(max_records=101, timeout=0)
        assert b.num_rows <= 101
        if b.num_rows == 0:
            break
        seen += table_rows(b)
    assert set(b.column("topic").to_pylist()) <= {"t"}
    assert sorted((p, o, ts, k, v) for p, o, ts, k, v, _ in seen) == sorted(
        (p, *r) for p, rows in model.items() for r in rows
    )


def test_consumer_iteration_yields_records(log):
    t = log.topic("t", partitions=2)
    want = []
    for i in range(10):
        ts = BASE_TS + 1000 * i  # whole seconds: exact in any float representation
        k = None if i == 3 else b"k%d" % i
        v = None if i == 5 else b"v%d" % i
        h = [("i", b"%d" % i), ("none", None)]
        p, o = t.produce(v, key=k, timestamp=ts, headers=h, partition=i % 2)
        want.append(rb.Record("t", p, o, ts, k, v, h))
    got = list(t.consumer().records(timeout=0.05))
    assert all(isinstance(r, rb.Record) for r in got)
    assert sorted(got, key=lambda r: (r.partition, r.offset)) == sorted(want, key=lambda r: (r.partition, r.offset))
    r = got[0]
    assert r == (r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)
    # plain iteration (stops after a 1 s idle poll)
    assert len(list(t.consumer())) == 10


def test_record_timestamps_are_exact(log):
    t = log.topic("t", partitions=1)
    stamps = [1001, 1_700_000_000_001, 1_700_000_000_123, 1_234_567_890_123] + list(range(BASE_TS, BASE_TS + 200))
    for ts in stamps:
        t.produce(b"x", timestamp=ts)
    got = [r.timestamp for r in t.consumer().records(timeout=0.05)]
    assert got == stamps


def test_record_iteration_with_extreme_timestamp(log):
    t = log.topic("t", partitions=1)
    t.produce(b"far", timestamp=300_000_000_000_000)  # year ~11476; read() returns it fine
    assert t.read().column("timestamp").cast(pa.int64()).to_pylist() == [300_000_000_000_000]
    (r,) = list(t.consumer().records(timeout=0.05))
    assert (r.value, r.timestamp) == (b"far", 300_000_000_000_000)


def test_concurrent_producers_and_consumer(log):
    t = log.topic("t", partitions=2, segment_bytes=4096)
    acked = {}
    lock = threading.Lock()

    def producer(w):
        for i in range(300):
            if i % 10 == 0:
                vals = [f"{w}-{i}-{j}" for j in range(5)]
                parts, offs = t.produce_batch(pa.table({"k": [str(w)] * 5, "v": vals}), key="k", value="v")
                with lock:
                    for p, o, v in zip(parts.to_pylist(), offs.to_pylist(), vals):
                        assert (p, o) not in acked
                        acked[(p, o)] = v.encode()
            else:
                v = f"{w}-{i}"
                po = t.produce(v, key=str(w))
                with lock:
                    assert po not in acked
                    acked[po] = v.encode()

    seen = []
    done = threading.Event()

    def consumer():
        c = t.consumer()
        while True:
            rows = table_rows(c.poll(timeout=0.1))
            if not rows and done.is_set():
                return
            seen.extend((p, o, v) for p, o, _, _, v, _ in rows)

    ct = threading.Thread(target=consumer)
    ct.start()
    workers = [threading.Thread(target=producer, args=(w,)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    ct.join(timeout=10)
    stored = {(p, o): v for p, o, _, _, v, _ in table_rows(t.read())}
    assert stored == acked
    assert len(acked) == 4 * (270 + 30 * 5)
    # offsets dense per partition
    for p, (lo, hi) in t.offsets().items():
        assert sorted(o for (pp, o) in stored if pp == p) == list(range(lo, hi))
    # the tailing consumer saw every record exactly once, in offset order per partition
    assert {(p, o): v for p, o, v in seen} == stored and len(seen) == len(stored)
    for p in (0, 1):
        offs = [o for pp, o, _ in seen if pp == p]
        assert offs == sorted(offs)
    # each producer's records of one partition are in its send order
    for w in range(4):
        mine = [(o, v) for (p, o), v in sorted(stored.items()) if v.startswith(b"%d-" % w)]
        idx = [tuple(int(x) for x in v.split(b"-")[1:]) for _, v in mine]
        assert idx == sorted(idx)


def test_tail_follow_poll_wakes_on_produce(log):
    t = log.topic("t", partitions=2)
    t.produce(b"old", partition=0)
    c = t.consumer(start="latest")
    assert c.position() == {0: 1, 1: 0}
    result = {}

    def waiter():
        b = c.poll(timeout=5)
        result["at"] = time.monotonic()
        result["rows"] = table_rows(b)

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.3)
    assert th.is_alive()  # it is waiting, not returning empty
    produced_at = time.monotonic()
    t.produce(b"new", partition=1, timestamp=BASE_TS)
    th.join(timeout=6)
    assert not th.is_alive()
    assert result["at"] - produced_at < 1.0
    assert [(r[0], r[1], r[4]) for r in result["rows"]] == [(1, 0, b"new")]


def test_poll_timeout_waits_when_idle(log):
    t = log.topic("t")
    c = t.consumer()
    t0 = time.monotonic()
    assert c.poll(timeout=0.3).num_rows == 0
    assert 0.25 <= time.monotonic() - t0 < 1.5


# --------------------------------------------------------------------------------------------
# topics, reopen, durability options
# --------------------------------------------------------------------------------------------


def test_topics_and_delete_topic(log, log_dir):
    a = log.topic("a", partitions=2)
    b = log.topic("b")
    a.produce(b"x", key=b"k")
    b.produce(b"y")
    assert sorted(log.topics()) == ["a", "b"]  # internal __consumer_offsets hidden
    c = a.consumer("g")
    c.poll(timeout=0)
    c.commit()
    c.close()
    log.delete_topic("a")
    assert log.topics() == ["b"]
    assert not (log_dir / "a").exists()
    with pytest.raises(TopicNotFound):
        log["a"]
    with pytest.raises(TopicNotFound):
        a.produce(b"into the void")  # the old handle is dead
    with pytest.raises(TopicNotFound):
        a.read()
    # recreated with a new config, empty, and without the old group's commits
    a2 = log.topic("a", partitions=3)
    assert a2.offsets() == {0: (0, 0), 1: (0, 0), 2: (0, 0)}
    assert a2.consumer("g").committed() == {0: None, 1: None, 2: None}
    assert [r["value"] for r in b.read().to_pylist()] == [b"y"]
    lg = reopen(log)
    try:
        assert sorted(lg.topics()) == ["a", "b"]
        assert lg["a"].partitions == 3
        assert lg["a"].consumer("g").committed() == {0: None, 1: None, 2: None}
    finally:
        lg.close()


def test_reopen_keeps_data_and_config(log_dir):
    with rb.Log(log_dir, fsync="never", cleanup_interval=None) as lg:
        t1 = lg.topic("one", partitions=3, segment_bytes=1024, retention_ms="2d")
        t2 = lg.topic("two", cleanup="compact", delete_retention_ms="5m")
        rng = random.Random(9)
        for i in range(200):
            t1.produce(rng.randbytes(rng.randrange(0, 50)), key=b"%d" % i, timestamp=BASE_TS + i,
                       headers={"h": b"%d" % i})
            t2.produce(b"v%d" % i, key=b"k%d" % (i % 5), timestamp=BASE_TS + i)
        snap = {"one": read_all(t1), "two": read_all(t2)}
        cfg = {"one": t1.config, "two": t2.config}
    assert lg.closed
    for _ in range(2):
        with rb.Log(log_dir, cleanup_interval=None) as lg:
            assert lg.open_report() == []
            assert sorted(lg.topics()) == ["one", "two"]
            for name in ("one", "two"):
                assert read_all(lg[name]) == snap[name]
                assert lg[name].config == cfg[name]
            assert cfg["one"]["retention_ms"] == 2 * 86_400_000
            assert cfg["two"]["delete_retention_ms"] == 300_000
            assert cfg["two"]["cleanup"] == "compact"
    with rb.Log(log_dir, cleanup_interval=None) as lg:
        p, o = lg["one"].produce(b"more", partition=1)
        assert o == len(snap["one"][1])


@pytest.mark.parametrize("fsync", ["never", "interval"])
def test_other_fsync_policies_flush_and_reopen(log_dir, fsync):
    interval = "50ms" if fsync == "interval" else None  # fsync_interval needs fsync="interval"
    with rb.Log(log_dir, fsync=fsync, fsync_interval=interval, cleanup_interval=None) as lg:
        t = lg.topic("t", partitions=2)
        for i in range(50):
            t.produce(b"%d" % i, partition=i % 2, timestamp=i)
        lg.flush()
        snap = read_all(t)
    with rb.Log(log_dir, cleanup_interval=None) as lg:
        assert read_all(lg["t"]) == snap
        assert [r[3] for r in snap[0]] == [b"%d" % i for i in range(0, 50, 2)]


def test_log_properties(log, log_dir):
    assert log.path == log_dir
    assert not log.closed
    log.topic("x", partitions=2)
    assert "x" in repr(log)
    assert repr(log["x"]) == "Topic('x', partitions=2)"
    assert log["x"].name == "x" and log["x"].partitions == 2
    assert "<table>" in log._repr_html_()


def test_close_wakes_a_blocked_poll(log):
    t = log.topic("t")
    c = t.consumer()
    result = {}

    def waiter():
        t0 = time.monotonic()
        try:
            result["rows"] = c.poll(timeout=5).num_rows
        except rb.exceptions.LogError as e:
            result["error"] = str(e)
        result["elapsed"] = time.monotonic() - t0

    th = threading.Thread(target=waiter)
    th.start()
    time.sleep(0.2)
    assert th.is_alive()
    log.close()
    th.join(timeout=3)
    assert not th.is_alive()
    assert result["elapsed"] < 1.5
    assert "closed" in result.get("error", "") or result.get("rows") == 0


def test_dropping_all_handles_releases_the_directory(log_dir):
    import gc

    lg = rb.Log(log_dir, fsync="never", cleanup_interval=None)
    t = lg.topic("t", partitions=2)
    t.produce(b"kept", partition=1, timestamp=5)
    c = t.consumer("g")
    assert c.poll(timeout=0).num_rows == 1
    del lg, t, c
    gc.collect()
    with rb.Log(log_dir, cleanup_interval=None) as lg:  # no LogLocked
        assert [(r["partition"], r["value"]) for r in lg["t"].read().to_pylist()] == [(1, b"kept")]
        # the dropped group member left the group, committing what it had read
        assert lg["t"].consumer("g").committed() == {0: 0, 1: 1}
