"""Bad input raises a clear exception and loses nothing already written."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat

import pyarrow as pa
import pytest

import riverbed as rb
from conftest import read_all, run_python
from riverbed.exceptions import (
    LogError,
    LogLocked,
    OffsetOutOfRange,
    RiverbedError,
    SchemaError,
    TopicConfigError,
    TopicNotFound,
)


class Filled:
    """A log with topic "data" (3 partitions) holding known records; ``check()`` re-reads all of it."""

    def __init__(self, log: rb.Log):
        self.log = log
        self.topic = log.topic("data", partitions=3, retention_ms="7d")
        for i in range(30):
            self.topic.produce(
                f"value-{i}", key=f"key-{i}", timestamp=1_700_000_000_000 + i, headers={"i": str(i)}
            )
        self.snapshot = read_all(self.topic)
        self.offsets = self.topic.offsets()
        assert sum(len(r) for r in self.snapshot.values()) == 30

    def check(self):
        t = self.log["data"]
        assert t.offsets() == self.offsets
        assert read_all(t) == self.snapshot


@pytest.fixture
def filled(log):
    f = Filled(log)
    yield f
    f.check()


def test_exception_hierarchy():
    for exc in (TopicNotFound, OffsetOutOfRange, LogLocked, TopicConfigError):
        assert issubclass(exc, LogError)
        assert issubclass(exc, RiverbedError)
    assert issubclass(SchemaError, RiverbedError)


def test_unknown_topic(filled):
    with pytest.raises(TopicNotFound, match="'nope'"):
        filled.log["nope"]
    with pytest.raises(TopicNotFound, match="'nope'"):
        filled.log.delete_topic("nope")
    assert filled.log.topics() == ["data"]
    filled.check()


def test_offset_out_of_range(filled):
    t = filled.topic
    with pytest.raises(OffsetOutOfRange, match="1000000000"):
        t.consumer(start=10**9)
    with pytest.raises(OffsetOutOfRange):
        t.consumer("g", start=10**9).poll(timeout=0)
    c = t.consumer()
    latest0 = filled.offsets[0][1]
    with pytest.raises(OffsetOutOfRange, match="1000000000"):
        c.seek(0, 10**9)
    with pytest.raises((OffsetOutOfRange, ValueError), match="-1"):
        c.seek(0, -1)
    with pytest.raises(OffsetOutOfRange):
        c.seek(0, latest0 + 1)
    with pytest.raises(OffsetOutOfRange):
        t.read(start=10**9)
    # the failed seeks did not move the consumer
    assert c.position() == {0: 0, 1: 0, 2: 0}
    assert c.poll(timeout=0).num_rows == 30
    filled.check()


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"key": object()}, TypeError, "key"),
        ({"key": float("nan")}, TypeError, "key"),
        ({"value": object()}, TypeError, "value"),
        ({"value": {1, 2}}, TypeError, "value"),
        ({"timestamp": "yesterday"}, TypeError, "timestamp"),
        ({"timestamp": 1.5}, TypeError, "timestamp"),
        ({"timestamp": True}, TypeError, "timestamp"),
        ({"timestamp": dt.date(2024, 1, 1)}, TypeError, "timestamp"),
        ({"headers": 5}, TypeError, "headers"),
        ({"headers": [1, 2]}, TypeError, "headers"),
        ({"headers": [("a", b"x", b"y")]}, TypeError, "headers"),
        ({"headers": {1: b"x"}}, TypeError, "header"),
        ({"headers": {"h": object()}}, TypeError, "header 'h'"),
        ({"partition": "0"}, TypeError, "partition"),
        ({"partition": 1.0}, TypeError, "partition"),
        ({"partition": True}, TypeError, "partition"),
        ({"partition": -1}, ValueError, "partition"),
        ({"partition": 3}, ValueError, "partition"),
    ],
)
def test_produce_wrong_types(filled, kwargs, exc, field):
    args = {"value": b"v", **kwargs}
    with pytest.raises(exc, match=field):
        filled.topic.produce(**args)
    filled.check()


@pytest.mark.parametrize(("kwargs", "field"), [({"timestamp": 2**70}, "timestamp"), ({"partition": 2**40}, "partition")])
def test_produce_out_of_range_ints_name_field(filled, kwargs, field):
    with pytest.raises((TypeError, ValueError), match=field):
        filled.topic.produce(b"v", **kwargs)
    filled.check()


def test_produce_batch_wrong_input_types(filled):
    t = filled.topic
    tbl = pa.table({"k": ["a"], "v": ["b"]})
    with pytest.raises(TypeError, match="data must be"):
        t.produce_batch([{"k": "a"}])
    with pytest.raises(TypeError, match="key"):
        t.produce_batch(tbl, key=5)
    with pytest.raises(TypeError, match="value"):
        t.produce_batch(tbl, value=["v"])
    with pytest.raises(TypeError, match="timestamp"):
        t.produce_batch(tbl, timestamp=1)
    filled.check()


@pytest.mark.parametrize("role", ["key", "value", "timestamp"])
def test_produce_batch_missing_column(filled, role):
    tbl = pa.table({"k": ["a", "b"], "v": ["x", "y"], "ts": pa.array([1, 2], pa.int64())})
    kwargs = {"key": "k", "value": "v", "timestamp": "ts", role: "no_such_column"}
    with pytest.raises(SchemaError, match="no_such_column") as ei:
        filled.topic.produce_batch(tbl, **kwargs)
    assert role in str(ei.value)
    filled.check()


def test_produce_batch_bad_timestamp_column(filled):
    t = filled.topic
    with pytest.raises(SchemaError, match="'ts'"):
        t.produce_batch(pa.table({"v": ["a"], "ts": ["2024-01-01"]}), value="v", timestamp="ts")
    with pytest.raises(SchemaError, match="'ts'"):
        t.produce_batch(pa.table({"v": ["a"], "ts": [1.5]}), value="v", timestamp="ts")
    # a null timestamp in a later chunk fails the whole call before anything is written
    tbl = pa.concat_tables(
        [
            pa.table({"v": ["a", "b"], "ts": pa.array([1, 2], pa.int64())}),
            pa.table({"v": ["c", "d"], "ts": pa.array([3, None], pa.int64())}),
        ]
    )
    assert tbl.column("ts").num_chunks == 2
    with pytest.raises(SchemaError, match="null"):
        t.produce_batch(tbl, value="v", timestamp="ts")
    filled.check()


def test_compacted_topic_rejects_keyless_rows_atomically(filled):
    t = filled.log.topic("compacted", partitions=2, cleanup="compact")
    tbl = pa.table({"k": ["a", "b", None, "d"], "v": ["1", "2", "3", "4"]})
    with pytest.raises(ValueError, match="row 2"):
        t.produce_batch(tbl, key="k", value="v")
    assert t.offsets() == {0: (0, 0), 1: (0, 0)}
    filled.check()


def test_second_writer_process_is_locked_out(filled, log_dir):
    out = run_python(
        """
        import sys
        import riverbed as rb
        try:
            rb.Log(sys.argv[1])
        except rb.exceptions.LogLocked as e:
            print("LOCKED", e)
        else:
            print("OPENED")
        """,
        log_dir,
    )
    assert out.stdout.startswith("LOCKED"), out.stdout
    assert f"pid {os.getpid()}" in out.stdout
    assert str(log_dir) in out.stdout
    # the holder is unaffected
    assert filled.topic.produce(b"still-mine", partition=0) == (0, filled.offsets[0][1])
    filled.offsets = filled.topic.offsets()
    filled.snapshot = read_all(filled.topic)


def test_lock_released_on_close(log_dir):
    lg = rb.Log(log_dir, cleanup_interval=None)
    lg.topic("t").produce(b"x", timestamp=7)
    with pytest.raises(LogLocked):
        rb.Log(log_dir)
    lg.close()
    out = run_python(
        """
        import sys, riverbed as rb
        with rb.Log(sys.argv[1]) as lg:
            print(lg["t"].read().to_pylist()[0]["value"].decode())
        """,
        log_dir,
    )
    assert out.stdout.strip() == "x"


def test_unwritable_directory_under_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    target = blocker / "log"
    with pytest.raises(LogError, match="file.txt"):
        rb.Log(target)
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_directory_permissions(tmp_path):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(LogError, match="ro"):
            rb.Log(parent / "log")
    finally:
        parent.chmod(0o700)


def test_config_contradicting_stored(filled):
    log = filled.log
    with pytest.raises(TopicConfigError, match="partitions"):
        log.topic("data", partitions=4)
    with pytest.raises(TopicConfigError, match="retention_ms"):
        log.topic("data", retention_ms="1d")
    with pytest.raises(TopicConfigError, match="cleanup"):
        log.topic("data", cleanup="compact")
    with pytest.raises(TopicConfigError, match="segment_bytes"):
        log.topic("data", segment_bytes=4096)
    # agreeing (or omitted) settings are fine, including the same duration spelled differently
    assert log.topic("data", partitions=3, retention_ms=7 * 86_400_000).partitions == 3
    assert log.topic("data", retention_ms=dt.timedelta(days=7)).partitions == 3
    assert log.topic("data").config["retention_ms"] == 7 * 86_400_000
    filled.check()


def test_config_contradicting_stored_after_reopen(log_dir):
    with rb.Log(log_dir, cleanup_interval=None) as lg:
        lg.topic("t", partitions=2, cleanup="compact").produce(b"v", key=b"k", timestamp=1)
    with rb.Log(log_dir, cleanup_interval=None) as lg:
        with pytest.raises(TopicConfigError, match="partitions"):
            lg.topic("t", partitions=1)
        with pytest.raises(TopicConfigError, match="cleanup"):
            lg.topic("t", cleanup="delete")
        t = lg.topic("t")
        assert t.config["cleanup"] == "compact" and t.partitions == 2
        assert [r["value"] for r in t.read().to_pylist()] == [b"v"]


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../evil", "sp ace", "ünï", "x" * 250, "a\x00b"])
def test_invalid_topic_names(filled, name):
    with pytest.raises(ValueError, match="topic name"):
        filled.log.topic(name)
    assert filled.log.topics() == ["data"]
    assert not (filled.log.path.parent / "evil").exists()
    filled.check()


def test_valid_topic_name_edge_cases(log):
    for name in ["a", "x" * 249, "A.b_c-D", "..."]:
        t = log.topic(name)
        t.produce(name.encode(), timestamp=1)
        assert log[name].read().column("value").to_pylist() == [name.encode()]
    assert sorted(log.topics()) == sorted(["a", "x" * 249, "A.b_c-D", "..."])


def test_topic_name_wrong_type(filled):
    with pytest.raises(TypeError, match="topic name"):
        filled.log.topic(5)
    filled.check()


def test_unknown_topic_setting(filled):
    with pytest.raises(TypeError, match="retention_hours"):
        filled.log.topic("new", retention_hours=5)
    with pytest.raises(TypeError, match="compression"):
        filled.log.topic("data", compression="zstd")
    assert filled.log.topics() == ["data"]
    filled.check()


@pytest.mark.parametrize(
    ("kwargs", "exc", "field"),
    [
        ({"partitions": 0}, ValueError, "partitions"),
        ({"partitions": "2"}, TypeError, "partitions"),
        ({"segment_bytes": 10}, ValueError, "segment_bytes"),
        ({"retention_ms": -1}, ValueError, "retention_ms"),
        ({"retention_ms": "soon"}, ValueError, "retention_ms"),
        ({"segment_ms": 0}, ValueError, "segment_ms"),
        ({"delete_retention_ms": 1.5j}, TypeError, "delete_retention_ms"),
        ({"cleanup": "shred"}, ValueError, "shred"),
    ],
)
def test_invalid_topic_settings(filled, kwargs, exc, field):
    with pytest.raises(exc, match=field):
        filled.log.topic("new", **kwargs)
    assert filled.log.topics() == ["data"]
    assert not (filled.log.path / "new").exists()
    filled.check()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"retention_bytes": -1}, "retention_bytes"), ({"segment_bytes": "1MB"}, "segment_bytes")],
)
def test_invalid_byte_settings_name_field(filled, kwargs, field):
    with pytest.raises((TypeError, ValueError), match=field):
        filled.log.topic("new", **kwargs)
    filled.check()


def test_bad_log_options(tmp_path):
    with pytest.raises(ValueError, match="fsync"):
        rb.Log(tmp_path / "a", fsync="sometimes")
    with pytest.raises(ValueError, match="fsync_interval"):
        rb.Log(tmp_path / "b", fsync="interval", fsync_interval="often")
    with pytest.raises(ValueError, match="cleanup_interval"):
        rb.Log(tmp_path / "c", cleanup_interval=-5)


def test_bad_consumer_arguments(filled):
    t = filled.topic
    with pytest.raises(ValueError, match="start"):
        t.consumer(start="middle")
    with pytest.raises(TypeError, match="start"):
        t.consumer(start=1.5)
    with pytest.raises(TypeError, match="group"):
        t.consumer(group=5)
    with pytest.raises(ValueError, match="group"):
        t.consumer(group="")
    c = t.consumer()
    with pytest.raises(ValueError, match="max_records"):
        c.poll(max_records=0)
    with pytest.raises(ValueError, match="timeout"):
        c.poll(timeout=-1)
    with pytest.raises(ValueError, match="partition 9"):
        c.seek(9, 0)
    filled.check()


def test_closed_log_rejects_operations(log):
    filled = Filled(log)
    c = filled.topic.consumer()
    log.close()
    assert log.closed
    for op in (lambda: log["data"], lambda: log.topic("data"), log.cleanup, lambda: c.poll(timeout=0)):
        with pytest.raises(LogError, match="closed"):
            op()
    log.close()  # idempotent
    with rb.Log(log.path, cleanup_interval=None) as lg:
        filled.log = lg
        filled.check()


def test_closed_log_rejects_writes_through_old_topic_handle(log_dir):
    lg = rb.Log(log_dir, cleanup_interval=None)
    t = lg.topic("t", partitions=1)
    t.produce(b"before", timestamp=1)
    lg.close()
    errors = 0
    for op in (
        lambda: t.produce(b"after-close", timestamp=2),
        lambda: t.produce_batch(pa.table({"v": ["after-close"]}), value="v"),
    ):
        try:
            op()
        except LogError:
            errors += 1
    with rb.Log(log_dir, cleanup_interval=None) as lg2:
        assert lg2["t"].read().column("value").to_pylist() == [b"before"]
    assert errors == 2


def test_a_sink_is_typed_and_says_where_it_writes(log):
    """write() hands the engine a _core.Sink the target built (no string-tagged tuple): a topic
    names itself and its key; anything that is neither a topic nor a callable is a TypeError."""
    from riverbed import _core

    out = log.topic("out")
    p = rb.Pipeline.read(pa.table({"k": ["a", "b"], "v": [1, 2]}))
    s = p.write(out, key="k")._sink
    assert isinstance(s, _core.Sink) and (s.kind, s.topic, s.key) == ("topic", "out", "k")
    assert repr(s) == 'Sink.topic("out", key="k")'
    got: list[pa.RecordBatch] = []
    s = p.write(got.append)._sink
    assert (s.kind, s.topic, s.func) == ("callback", None, got.append)
    p.write(got.append).run(progress=False)
    assert pa.Table.from_batches(got).to_pydict() == {"k": ["a", "b"], "v": [1, 2]}
    p.write(out, key="k").run(progress=False)
    written = out.read()
    assert sorted(zip(written.column("key").to_pylist(), map(json.loads, written.column("value").to_pylist()))) == [
        (b"a", {"k": "a", "v": 1}),
        (b"b", {"k": "b", "v": 2}),
    ]
    with pytest.raises(TypeError, match="callable taking a RecordBatch, got int"):
        _core.Sink.callback(42)
    with pytest.raises(TypeError, match="expected a Topic, a KafkaTopic or a callable"):
        p.write(42)
    with pytest.raises(TypeError, match="key must name a column"):
        p.write(out, key=3)
    with pytest.raises(TypeError, match="key applies to topics"):
        p.write(got.append, key="k")
