"""Nothing is changed silently on the way in (issue 14, finding 8): ``produce_batch`` refuses what
JSON cannot hold unless asked what to write, writes a pandas index only with ``index=True``,
refuses duplicate column names, writes binary as base64 (as Kafka Connect); event times that
cannot be used are bad records under ``on_error``; a tombstone stays null in the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
import math

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import riverbed as rb
from riverbed.exceptions import DecodeError, PlanError, SchemaError

MIN_MS = -62_135_596_800_000  # 0001-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


@pytest.fixture
def log(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as lg:
        yield lg


def values(topic: rb.Topic) -> list:
    return [None if v is None else json.loads(v) for v in topic.read().column("value").to_pylist()]


# -- non-finite floats ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize(
    "make",
    [
        lambda bad: pa.table({"id": [1, 2, 3], "x": [0.5, bad, 1.0]}),
        lambda bad: pd.DataFrame({"id": [1, 2, 3], "x": [0.5, bad, 1.0]}),
        lambda bad: pl.DataFrame({"id": [1, 2, 3], "x": [0.5, bad, 1.0]}),
        lambda bad: pa.table({"id": [1, 2, 3], "x": pa.array([0.5, bad, 1.0], pa.float32())}),
        lambda bad: pa.table({"id": [1, 2, 3], "x": [[0.5], [1.0, bad], []]}),
        lambda bad: pa.table({"id": [1, 2, 3], "x": [{"a": 0.5}, {"a": bad}, {"a": None}]}),
    ],
    ids=["arrow", "pandas", "polars", "float32", "list", "struct"],
)
def test_a_non_finite_float_is_an_error_naming_column_and_row(log, make, bad):
    t = log.topic("t", partitions=2)
    if isinstance(make(bad), pd.DataFrame) and math.isnan(bad):
        # pandas' NaN is its missing value (pyarrow reads it as null): written as null
        t.produce_batch(make(bad))
        assert sorted((r["id"], r["x"]) for r in values(t)) == [(1, 0.5), (2, None), (3, 1.0)]
        return
    with pytest.raises(SchemaError, match=r"column 'x' holds a NaN or infinite float at row 1"):
        t.produce_batch(make(bad))
    assert t.offsets() == {0: (0, 0), 1: (0, 0)}  # nothing written
    # asked for: null is written for it, and only for it
    t.produce_batch(make(bad), non_finite="null")
    got = sorted(values(t), key=lambda r: r["id"])
    assert [r["id"] for r in got] == [1, 2, 3]
    row1 = got[1]["x"]
    assert row1 is None or row1 == [1.0, None] or row1 == {"a": None}
    assert got[0]["x"] in (0.5, [0.5], {"a": 0.5})


def test_a_non_finite_value_or_key_column_is_refused_too(log):
    t = log.topic("t")
    with pytest.raises(SchemaError, match="column 'v' .* at row 2"):
        t.produce_batch(pa.table({"v": [1.0, 2.0, math.nan]}), value="v")
    with pytest.raises(SchemaError, match="column 'k' .* at row 0"):
        t.produce_batch(pa.table({"k": [math.inf], "v": ["a"]}), key="k", value="v")
    with pytest.raises(ValueError, match="non_finite must be"):
        t.produce_batch(pa.table({"v": [1.0]}), non_finite="zero")
    assert t.offsets() == {0: (0, 0)}


# -- pandas index -----------------------------------------------------------------------------


def test_a_pandas_index_is_written_only_with_index_true(log):
    df = pd.DataFrame({"x": [1, 2]}, index=pd.Index([10, 20], name="when"))
    t = log.topic("t")
    t.produce_batch(df)
    assert values(t) == [{"x": 1}, {"x": 2}]
    t.produce_batch(df, index=True)
    # what pandas itself writes for the index: reset_index()
    assert values(t)[2:] == df.reset_index().to_dict("records") == [{"when": 10, "x": 1}, {"when": 20, "x": 2}]
    t.produce_batch(pd.DataFrame({"x": [3]}, index=[7]), index=True)
    assert values(t)[4] == {"index": 7, "x": 3}
    assert not any("__index_level" in k for v in values(t) for k in v)
    with pytest.raises(ValueError, match="pandas"):
        t.produce_batch(pa.table({"x": [1]}), index=True)


# -- duplicate names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pd.DataFrame([[1, 2]], columns=["a", "a"]),
        pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]),
    ],
    ids=["pandas", "arrow"],
)
def test_duplicate_column_names_are_an_error(log, data):
    t = log.topic("t")
    with pytest.raises(SchemaError, match="'a' appears more than once"):
        t.produce_batch(data)
    assert t.offsets() == {0: (0, 0)}


# -- binary -----------------------------------------------------------------------------------


def test_binary_columns_are_base64_in_json_as_kafka_connect_writes_them(log):
    raw = [b"\x00\xff\xfe", b"", None, bytes(range(256))]
    t = log.topic("t")
    t.produce_batch(pa.table({"i": [0, 1, 2, 3], "b": pa.array(raw, pa.binary()), "l": pa.array(raw, pa.large_binary())}))
    got = values(t)
    want = [None if b is None else base64.b64encode(b).decode() for b in raw]
    assert [r["b"] for r in got] == want
    assert [r["l"] for r in got] == want
    assert [base64.b64decode(r["b"]) for r in got if r["b"] is not None] == [b for b in raw if b is not None]
    # a binary value column is written as it is (raw bytes), not encoded
    t2 = log.topic("t2")
    t2.produce_batch(pa.table({"v": [b"\x00\xff"]}), value="v")
    assert t2.read().column("value").to_pylist() == [b"\x00\xff"]
    # binary inside a list has no JSON form: refused, not hex
    with pytest.raises(SchemaError, match="binary values inside a list or struct"):
        t.produce_batch(pa.table({"x": pa.array([[b"a"]], pa.list_(pa.binary()))}))


# -- event times ------------------------------------------------------------------------------


def test_produce_batch_refuses_timestamps_outside_years_1_to_9999(log):
    t = log.topic("t")
    with pytest.raises(SchemaError, match=r"timestamp column 'ts' is 9223372036854775807 ms at row 1"):
        t.produce_batch(pa.table({"ts": [0, 2**63 - 1]}), timestamp="ts")
    with pytest.raises(SchemaError, match="at row 0"):
        t.produce_batch(pa.table({"ts": [MIN_MS - 1]}), timestamp="ts")
    t.produce_batch(pa.table({"ts": [MIN_MS, MAX_MS]}), timestamp="ts")
    assert t.offsets() == {0: (0, 2)}


def _extreme_events(log: rb.Log) -> rb.Topic:
    """Event times in the JSON values: a few good, the rest at or near ±2^63 (which would wrap
    window bounds), one a tombstone (a null value)."""
    t = log.topic("ev", partitions=1)
    for i, ts in enumerate([1_000, 2**63 - 1, 2_000, -(2**63), MAX_MS + 1, 61_000, MIN_MS - 1]):
        t.produce(json.dumps({"k": "a", "ts": ts, "v": i}), key="a", timestamp=0)
    t.produce(None, key="a", timestamp=0)
    return t


@pytest.mark.parametrize("kind", ["tumbling", "session"])
def test_event_times_out_of_range_are_bad_records_never_wrapped(log, kind):
    t = _extreme_events(log)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])
    win = rb.tumbling("1m") if kind == "tumbling" else rb.session("10s")

    def p():
        return rb.Pipeline.read(t, timestamp="ts", schema=schema).window(win, by="k").agg(n=rb.count(), s=rb.sum("v"))

    with pytest.raises(DecodeError, match=r"ev/0@1: .*the event-time column 'ts' is 9223372036854775807 ms, outside the years 1 to 9999"):
        p().collect(progress=False)
    res = p().on_error("skip").run(progress=False)
    got = sorted(zip(res.output.column("window_start").cast(pa.int64()).to_pylist(), res.output.column("n").to_pylist(), res.output.column("s").to_pylist()))
    # brute force over the good records only: v=0 at 1 s, v=2 at 2 s, v=5 at 61 s
    if kind == "tumbling":
        assert got == [(0, 2, 2), (60_000, 1, 5)]
    else:
        assert got == [(1_000, 2, 2), (61_000, 1, 5)]
    assert all(ws >= 0 for ws, _, _ in got)
    read = next(m for m in res.metrics if m["operator"].startswith("read"))
    assert read["errors"] == 5  # 4 out of range + the tombstone (no event time)


def test_a_tombstone_stays_null_in_the_dead_letter_topic(log):
    t = _extreme_events(log)
    dlq = log.topic("ev.dlq")
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])
    rb.Pipeline.read(t, timestamp="ts", schema=schema).on_error("dead_letter", dlq).collect(progress=False)
    dead = dlq.read()
    by_offset = {
        int(dict((h["key"], h["value"]) for h in hs)["riverbed.source.offset"]): v
        for hs, v in zip(dead.column("headers").to_pylist(), dead.column("value").to_pylist())
    }
    assert sorted(by_offset) == [1, 3, 4, 6, 7]
    assert by_offset[7] is None  # the tombstone: null, not {}
    assert json.loads(by_offset[1]) == {"k": "a", "ts": 2**63 - 1, "v": 1}


# -- float event times ------------------------------------------------------------------------


def test_a_float_event_time_with_a_fraction_is_a_bad_record_never_truncated(log):
    """JSON ``"ts": 1500.5`` into an int64 event-time column: a record that does not decode (it
    was truncated to 1500); a whole number written as a float (``2000.0``, ``3e3``) is exact."""
    t = log.topic("ev", partitions=1)
    for ts in ["1000", "1500.5", "2000.0", "3e3", "-0.25", "4000"]:
        t.produce('{"k": "a", "ts": ' + ts + ', "n": 1}', key="a", timestamp=0)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("n", pa.int64())])

    def p():
        return rb.Pipeline.read(t, timestamp="ts", schema=schema)

    with pytest.raises(DecodeError, match=r"ev/0@1: .*field 'ts' is 1500\.5 at row 0, not a whole number"):
        p().collect(progress=False)
    res = p().on_error("skip").run(progress=False)
    assert res.output.column("ts").to_pylist() == [1000, 2000, 3000, 4000]
    read = next(m for m in res.metrics if m["operator"].startswith("read"))
    assert read["errors"] == 2
    # any integer field, not only the event time
    t2 = log.topic("qty", partitions=1)
    t2.produce('{"q": 2.7}')
    t2.produce('{"q": 9007199254740993}')  # 2^53 + 1: exact, no float rounding on the way
    got = rb.Pipeline.read(t2, schema=pa.schema([("q", pa.int64())])).on_error("skip").collect(progress=False)
    assert got.column("q").to_pylist() == [9007199254740993]


def test_a_stream_whose_batches_change_type_is_refused_or_widened_never_misread():
    """pyarrow's reader passes a batch of another schema on unchecked, and the engine read its
    buffers as the first batch's types (int8 values read as int64, past the buffer's end). Now a
    categorical whose codes grow from int8 to int16 is widened (one key per value, as a table
    gives), and any other change of type is a TypeError naming the batch and column."""

    def categoricals():
        frames = [
            pd.DataFrame({"k": pd.Categorical(["a", "b", "a"]), "v": [1, 2, 3], "ts": [0, 1, 2]}),
            pd.DataFrame(
                {"k": pd.Categorical(["a", "c5", "c299"], categories=[f"c{i}" for i in range(300)] + ["a"]), "v": [4, 5, 6], "ts": [3, 4, 5]}
            ),
            pd.DataFrame({"k": pd.Categorical(["b", None, "a"], categories=["b", "a"]), "v": [7, 8, 9], "ts": [6, 7, 8]}),
        ]
        return (pa.RecordBatch.from_pandas(f, preserve_index=False) for f in frames)

    got = rb.Pipeline.read(categoricals(), timestamp="ts", lateness="1s").group_by("k").agg(n=rb.count(), s=rb.sum("v"))
    want = {"a": (4, 17), "b": (2, 9), "c5": (1, 5), "c299": (1, 6), None: (1, 8)}
    assert {r["k"]: (r["n"], r["s"]) for r in got.to_arrow().to_pylist()} == want

    first = pa.record_batch({"v": pa.array([1], pa.int64()), "ts": [0]})
    for later in (pa.array([1] * 1000, pa.int8()), pa.array([1] * 1000, pa.int32()), pa.array([1.5] * 1000)):
        drift = pa.record_batch({"v": later, "ts": pa.array(range(1, 1001), pa.int64())})
        # (a TypeError in the reader; the run reports it as a SchemaError of its stream source)
        with pytest.raises((TypeError, SchemaError), match=rf"batch 1 of the stream has 'v' {later.type} \(first batch: int64\)"):
            rb.Pipeline.read(iter([first, drift]), timestamp="ts").collect()
        reader = pa.RecordBatchReader.from_batches(first.schema, iter([first, drift]))
        with pytest.raises((TypeError, SchemaError), match="batch 1 of the stream"):
            rb.Pipeline.read(reader, timestamp="ts").collect()
    # with schema=, every batch is cast to it (the user asked)
    drift = pa.record_batch({"v": pa.array([2] * 3, pa.int8()), "ts": pa.array([1, 2, 3], pa.int64())})
    out = rb.Pipeline.read(iter([first, drift]), timestamp="ts", schema=first.schema).collect()
    assert out.column("v").to_pylist() == [1, 2, 2, 2]


def test_times_too_large_for_milliseconds_or_a_calendar_are_refused_not_wrapped(log):
    """A timestamp[s] record time past ±9.2e15 s overflowed to milliseconds and wrapped (2**62 s
    was written as 0 ms, 18446744073709552 s as 384 ms); a timestamp or date value no calendar
    date can show was written into the JSON value as arrow-json's error message."""
    t = log.topic("times", partitions=1)
    for secs in (18_446_744_073_709_552, -18_446_744_073_709_552, 2**62):
        tbl = pa.table({"v": ["x", "y"], "ts": pa.array([1, secs], pa.timestamp("s"))})
        with pytest.raises(SchemaError, match=rf"'ts' is {secs} s at row 1, outside the years 1 to 9999"):
            t.produce_batch(tbl, value="v", timestamp="ts")
    for col in (pa.array([0, 10**13], pa.timestamp("s")), pa.array([0, 2**31 - 1], pa.date32())):
        tbl = pa.table({"ts": pa.array([1, 2], pa.int64()), "other": col})
        with pytest.raises(SchemaError, match=r"column 'other' .* at row 1, a time no calendar date can show"):
            t.produce_batch(tbl, timestamp="ts")
    assert t.read().num_rows == 0
    # the largest times riverbed takes still go through
    t.produce_batch(pa.table({"ts": pa.array([253_402_300_799], pa.timestamp("s"))}), timestamp="ts")
    assert t.read().column("timestamp").cast(pa.int64()).to_pylist() == [253_402_300_799_000]


# -- value fields named as the record's own columns ------------------------------------------


def _shadowing_records(produce) -> list[dict]:
    """Values with fields named key, timestamp and offset (and record_offset), keyed records."""
    sent = []
    for i in range(5):
        v = {"key": f"k{i}", "timestamp": "not the record's", "offset": -i, "record_offset": 100 + i, "v": i}
        produce(json.dumps(v).encode(), f"rk{i % 2}".encode(), 1_700_000_000_000 + 10 * i)
        sent.append(v)
    return sent


def _check_shadowing(out: pa.Table, sent: list[dict], raw: pa.Table) -> None:
    # the values' fields keep their names and values ...
    for c in ("key", "timestamp", "offset", "record_offset", "v"):
        assert out.column(c).to_pylist() == [v[c] for v in sent], c
    # ... and the record's own columns are there beside them, never hidden
    assert out.column("record_key").to_pylist() == raw.column("key").to_pylist()
    assert out.column("record_timestamp").to_pylist() == raw.column("timestamp").to_pylist()
    assert out.column("partition").to_pylist() == raw.column("partition").to_pylist()
    assert out.column("record_record_offset").to_pylist() == raw.column("offset").to_pylist()


def test_a_value_field_named_as_a_record_column_leaves_the_records_own_beside_it(log):
    """A JSON field `key`, `timestamp`, `partition` or `offset` used to replace the record's own
    column silently; the record's is now `record_<name>` (prefixed again while taken). Which
    timestamp is the event time is the user's to say: a window without `timestamp=` names both."""
    t = log.topic("shadow", partitions=1)
    sent = _shadowing_records(lambda v, k, ts: t.produce(v, key=k, timestamp=ts))
    out = rb.Pipeline.read(t).collect()
    _check_shadowing(out, sent, t.read())
    with pytest.raises(PlanError, match="timestamp='record_timestamp' for the record's"):
        rb.Pipeline.read(t).window(rb.tumbling("1s")).agg(n=rb.count()).collect()
    w = rb.Pipeline.read(t, timestamp="record_timestamp").window(rb.tumbling("20ms")).agg(n=rb.count()).collect()
    assert w.column("n").to_pylist() == [2, 2, 1]


def test_a_kafka_value_field_named_as_a_record_column_leaves_the_records_own_beside_it():
    from riverbed.testing import MockKafka

    m = MockKafka(brokers=1)
    try:
        t = m.kafka(timeout=10).create_topic("shadow", partitions=1)
        sent = _shadowing_records(lambda v, k, ts: t.produce(v, key=k, timestamp=ts))
        out = rb.Pipeline.read(t).collect()
        _check_shadowing(out, sent, t.read())
    finally:
        m.stop()
