"""Every timeout and duration of the public API, given NaN, -1, inf and 1e300 (issue 13, part 4):
each is a ``ValueError`` (``TypeError`` for a float where integer milliseconds are asked) that
names the argument, or, where ``inf`` means "no limit", works. Never pyo3's ``PanicException``
(a ``BaseException`` that ``except Exception`` does not catch), and a bad timeout given to
``stop()`` leaves the run's result to a later ``stop()``.
"""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa
import pytest

import riverbed as rb
from riverbed.testing import MockKafka

NAN, INF = float("nan"), float("inf")
BAD_TIMEOUTS = [NAN, -1, -1.5, 1e300, 10**30, -(10**30)]
BAD_DURATIONS = [NAN, -1, INF, -INF, 1e300, 10**30, "1e300s", dt.timedelta.max]
SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])


def refused(fn, value, arg: str) -> None:
    """``fn(value)`` raises ValueError or TypeError (PlanError for a window length that is not
    positive) naming ``arg``; a PanicException would escape ``pytest.raises`` and fail the test."""
    with pytest.raises((ValueError, TypeError, rb.exceptions.PlanError)) as e:
        fn(value)
    assert arg in str(e.value), f"{arg}={value!r}: {e.value}"


@pytest.fixture
def log(tmp_path):
    lg = rb.Log(tmp_path / "log", fsync="never", cleanup_interval=None)
    yield lg
    lg.close()


@pytest.fixture
def events(log):
    t = log.topic("events", partitions=2)
    t.produce_batch(pa.table({"k": ["a", "b"] * 5, "ts": list(range(10)), "v": [1.0] * 10}, schema=SCHEMA), key="k", timestamp="ts")
    return t


def test_durations_of_plans_and_windows(events, log, tmp_path):
    p = rb.Pipeline.read(events, timestamp="ts", schema=SCHEMA)
    table = pa.table({"k": ["a"], "ts": [1], "v": [1.0]}, schema=SCHEMA)
    cases = [
        ("lateness", lambda v: rb.Pipeline.read(events, lateness=v)),
        ("idle_timeout", lambda v: rb.Pipeline.read(events, idle_timeout=v)),
        ("size", lambda v: rb.tumbling(v)),
        ("grace", lambda v: rb.tumbling("1s", grace=v)),
        ("offset", lambda v: rb.tumbling("1s", offset=v)),
        ("size", lambda v: rb.hopping(v, "1s")),
        ("every", lambda v: rb.hopping("2s", v)),
        ("grace", lambda v: rb.hopping("2s", "1s", grace=v)),
        ("size", lambda v: rb.sliding(v)),
        ("grace", lambda v: rb.sliding("1s", grace=v)),
        ("gap", lambda v: rb.session(v)),
        ("grace", lambda v: rb.session("1s", grace=v)),
        ("period", lambda v: p.rolling(by="k", period=v, m=rb.mean("v"))),
        ("half_life", lambda v: p.ewm_mean("v", by="k", half_life=v)),
        ("tolerance", lambda v: p.join_asof(p, on="k", tolerance=v)),
        ("tolerance", lambda v: rb.training_set(p, p.select("k", "ts"), on="ts", by="k", tolerance=v)),
        ("lateness", lambda v: rb.training_set(table, p.select("k", "ts"), on="ts", by="k", lateness=v)),
        ("checkpoint_interval", lambda v: p.write(log.topic("o1")).run(name="x", checkpoint_interval=v, progress=False)),
        ("checkpoint_interval", lambda v: p.write(log.topic("o2")).start(name="y", checkpoint_interval=v)),
        ("fsync_interval", lambda v: rb.Log(tmp_path / "l2", fsync="interval", fsync_interval=v)),
        ("cleanup_interval", lambda v: rb.Log(tmp_path / "l3", cleanup_interval=v)),
        ("retention_ms", lambda v: log.topic("r1", retention_ms=v)),
        ("segment_ms", lambda v: log.topic("r2", segment_ms=v)),
        ("delete_retention_ms", lambda v: log.topic("r3", cleanup="compact", delete_retention_ms=v)),
    ]
    for arg, fn in cases:
        for v in BAD_DURATIONS:
            if arg.endswith("_ms") and v == dt.timedelta.max:
                continue  # a topic's retention may be as long as int64 ms hold (Kafka's too)
            refused(fn, v, arg)
    # join_interval bounds may be negative, but not NaN, infinite or absurd
    for arg, fn in [
        ("lower", lambda v: p.join_interval(p, on="k", lower=v, upper="1s")),
        ("upper", lambda v: p.join_interval(p, on="k", lower="-1s", upper=v)),
    ]:
        for v in [NAN, INF, -INF, 1e300, 10**30, -(10**30)]:
            refused(fn, v, arg)
    assert not p.running
    assert (tmp_path / "l2").exists() is False, "a refused Log must not create its directory"


def test_pipeline_stop_and_wait(events):
    p = rb.Pipeline.read(events, timestamp="ts", schema=SCHEMA).start(follow=False)
    for v in BAD_TIMEOUTS:
        refused(p.wait, v, "timeout")
        refused(p.stop, v, "timeout")
    refused(p.wait, "1s", "timeout")  # a string is not seconds
    assert p.wait(INF) is True  # inf: no limit; a bounded run ends
    res = p.stop(INF)  # the result survived every refused call
    assert res.output.num_rows == 10
    # a following run: stop(inf) waits as long as stopping takes
    p = rb.Pipeline.read(events, timestamp="ts", schema=SCHEMA).start()
    assert p.wait(0.05) is False
    for v in BAD_TIMEOUTS:
        refused(p.stop, v, "timeout")
    assert p.running
    assert p.stop(INF).output.num_rows == 10
    with pytest.raises(RuntimeError, match="not started, or stop\\(\\) already returned"):
        p.stop()
    assert p.wait(0) is True  # stopped: over
    for v in BAD_TIMEOUTS:
        refused(p.wait, v, "timeout")
    with pytest.raises(RuntimeError, match="not started"):
        rb.Pipeline.read(events, timestamp="ts", schema=SCHEMA).wait(0)
    # a table maintained in the background stops the same way
    table = rb.Pipeline.read(events, timestamp="ts", schema=SCHEMA).to_table("k").start()
    deadline = time.monotonic() + 30
    while table.to_arrow().num_rows < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    for v in BAD_TIMEOUTS:
        refused(table.stop, v, "timeout")
    assert table.running
    table.stop(INF)
    assert not table.running
    assert sorted(table.to_arrow().column("k").to_pylist()) == ["a", "b"]


def test_log_consumer_poll_and_records(events):
    c = events.consumer()
    for v in BAD_TIMEOUTS:
        refused(lambda t: c.poll(timeout=t), v, "timeout")
        refused(lambda t: next(c.records(timeout=t)), v, "timeout")
    assert c.poll(max_records=100, timeout=INF).num_rows == 10  # inf: until records come
    assert c.poll(timeout=0.0).num_rows == 0
    c.seek(0, 0)
    assert next(c.records(timeout=INF)).partition == 0


def test_native_calls_refuse_too():
    """The facade checks with the same function as the native module, whose calls cannot panic."""
    from riverbed import _core

    for v in [NAN, -1.0, 1e300]:
        with pytest.raises(ValueError, match="^t:"):
            _core.timeout_seconds("t", v)
    assert _core.timeout_seconds("t", INF) is None
    assert _core.timeout_seconds("t", None) is None
    assert _core.timeout_seconds("t", 2.5) == 2.5
    with pytest.raises(ValueError, match="must be finite"):
        _core.timeout_seconds("t", INF, False)


def test_kafka_timeouts():
    with MockKafka() as mock:
        for v in [NAN, -1, INF, 1e300, 10**30]:
            refused(lambda t: rb.Kafka(mock.bootstrap_servers, timeout=t), v, "timeout")
        kafka = mock.kafka(timeout=5)
        t = kafka.create_topic("t", partitions=1)
        t.produce(b"x", timestamp=1)
        for v in BAD_TIMEOUTS:
            refused(lambda s: t.read(timeout=s), v, "timeout")
        with pytest.raises(ValueError, match="auto_commit= has no effect without group="):
            t.consumer(auto_commit=False)
        c = t.consumer(start="earliest")
        try:
            for v in BAD_TIMEOUTS:
                refused(lambda s: c.poll(timeout=s), v, "timeout")
            assert c.poll(timeout=INF).num_rows == 1  # inf: until a record comes
        finally:
            c.close()
        assert t.read(timeout=0.5).num_rows == 1


def test_test_driver_times(rb_driver):
    p = rb.Pipeline.read(pa.table({"k": ["a"], "ts": [1], "v": [1.0]}, schema=SCHEMA), timestamp="ts")
    d = rb_driver(p.window(rb.tumbling("1s"), by="k").agg(n=rb.count()))
    for v in [NAN, INF, 1e300, 10**30, -(10**30)]:
        refused(lambda t: d.advance_watermark(t), v, "advance_watermark")
        refused(lambda t: d.send(0, {"k": "a", "ts": 5, "v": 1.0}, timestamp=t), v, "send")
    d.send(0, {"k": "a", "ts": 5, "v": 1.0})
    d.advance_watermark(2_000)
    assert d.output().to_pylist() == [{"k": "a", "window_start": 0, "window_end": 1000, "n": 1}]
