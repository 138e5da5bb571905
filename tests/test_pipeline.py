"""Pipelines end to end: every kind of source, the stateless operators, UDFs, the group-by
changelog, topic sinks, decode errors, and follow mode (``start``/``stop``) on live topics.
References are computed independently in plain Python."""

from __future__ import annotations

import json
import random
import re
import time
import traceback

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import riverbed as rb
from riverbed.exceptions import DecodeError, PlanError

BASE = 1_700_000_000_000
col = rb.col


def _rows(n: int = 200, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"k": rng.choice(["a", "b", "c", "d"]), "ts": BASE + 10 * i, "v": rng.randint(-100, 100), "x": round(rng.uniform(0, 10), 3)}
        for i in range(n)
    ]


SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64()), ("x", pa.float64())])
ROWS = _rows()
TABLE = pa.Table.from_pylist(ROWS, schema=SCHEMA)


def sorted_rows(tbl: pa.Table, by: str = "ts") -> list[dict]:
    return sorted(tbl.to_pylist(), key=lambda r: (r[by], repr(r)))


def op_metrics(metrics: list[dict], name: str) -> dict:
    ms = [m for m in metrics if name in m["operator"]]
    assert len(ms) == 1, f"expected one {name} operator in {metrics}"
    return ms[0]


# -- sources ---------------------------------------------------------------------------------------


def test_read_table():
    p = rb.Pipeline.read(TABLE, timestamp="ts")
    assert p.schema == SCHEMA
    out = p.collect()
    assert out.schema == SCHEMA
    assert sorted_rows(out) == ROWS


def test_read_record_batch_rechunked():
    batch = TABLE.combine_chunks().to_batches()[0]
    res = rb.Pipeline.read(batch, timestamp="ts", batch_size=7).run()
    assert sorted_rows(res.output) == ROWS
    assert op_metrics(res.metrics, "read")["records_out"] == len(ROWS)


def test_read_pandas():
    df = TABLE.to_pandas()
    out = rb.Pipeline.read(df, timestamp="ts").collect()
    assert out.column_names == SCHEMA.names
    assert sorted_rows(out) == ROWS


def test_read_polars():
    pl = pytest.importorskip("polars")
    df = pl.from_arrow(TABLE)
    out = rb.Pipeline.read(df, timestamp="ts").collect()
    assert sorted_rows(out) == ROWS
    back = rb.Pipeline.read(df, timestamp="ts").to_polars()
    assert isinstance(back, pl.DataFrame) and back.height == len(ROWS)


def test_read_iterator_of_dicts():
    n = 25_000  # more than one 10,000-record chunk
    rows = ({"k": "abc"[i % 3], "ts": BASE + i, "v": i} for i in range(n))
    p = rb.Pipeline.read(rows, timestamp="ts")
    assert p.schema.names == ["k", "ts", "v"]
    out = p.collect()
    assert out.num_rows == n
    assert out.sort_by("ts").column("v").to_pylist() == list(range(n))


def test_read_iterator_of_dicts_with_schema():
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])
    rows = iter([{"k": "a", "ts": 1, "v": 1}, {"k": "b", "ts": 2, "v": 2, "extra": 9}, {"ts": 3, "v": None}])
    out = rb.Pipeline.read(rows, timestamp="ts", schema=schema).collect()
    assert out.schema == schema
    assert sorted_rows(out) == [{"k": "a", "ts": 1, "v": 1.0}, {"k": "b", "ts": 2, "v": 2.0}, {"k": None, "ts": 3, "v": None}]


def test_read_list_of_dicts_is_rerunnable():
    p = rb.Pipeline.read(ROWS, timestamp="ts")
    assert sorted_rows(p.collect()) == ROWS
    assert sorted_rows(p.collect()) == ROWS


def test_read_iterator_of_batches():
    batches = TABLE.to_batches(max_chunksize=13)
    assert len(batches) > 3

    def gen():
        yield from batches

    out = rb.Pipeline.read(gen(), timestamp="ts").collect()
    assert sorted_rows(out) == ROWS


def test_read_record_batch_reader():
    reader = pa.RecordBatchReader.from_batches(SCHEMA, TABLE.to_batches(max_chunksize=50))
    out = rb.Pipeline.read(reader, timestamp="ts").collect()
    assert sorted_rows(out) == ROWS


def test_read_rejects_unknown_inputs():
    with pytest.raises(TypeError):
        rb.Pipeline.read("not a source")
    with pytest.raises(TypeError):
        rb.Pipeline.read(42)
    with pytest.raises(ValueError, match="format"):
        rb.Pipeline.read(TABLE, format="avro")
    with pytest.raises(ValueError, match="lateness"):
        rb.Pipeline.read(TABLE, timestamp="ts", lateness="-1s")
    with pytest.raises(ValueError):
        rb.Pipeline.read(iter([]))  # empty and no schema


def test_read_log_topic_json(log):
    t = log.topic("quotes", partitions=3)
    produced = []
    rng = random.Random(3)
    for i in range(60):
        sym = rng.choice(["AAPL", "MSFT", "NVDA"])
        value = {"sym": sym, "px": round(rng.uniform(10, 20), 2), "n": i}
        p, o = t.produce(value, key=sym, timestamp=BASE + i * 100)
        produced.append((p, o, BASE + i * 100, sym.encode(), value))
    pipe = rb.Pipeline.read(t)
    schema = pipe.schema
    # inferred value columns (their order is the engine's choice), then the record's metadata
    assert sorted(schema.names[:3]) == ["n", "px", "sym"]
    assert schema.names[3:] == ["key", "timestamp", "partition", "offset"]
    assert schema.field("sym").type == pa.string() and schema.field("px").type == pa.float64()
    assert schema.field("n").type == pa.int64()
    assert schema.field("key").type == pa.binary()
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert schema.field("partition").type == pa.int32() and schema.field("offset").type == pa.int64()
    out = pipe.collect()
    got = sorted(
        (r["partition"], r["offset"], r["timestamp"], r["key"], {"sym": r["sym"], "px": r["px"], "n": r["n"]})
        for r in _with_int_ts(out).to_pylist()
    )
    assert got == sorted(produced)


def _with_int_ts(tbl: pa.Table) -> pa.Table:
    i = tbl.column_names.index("timestamp")
    return tbl.set_column(i, "timestamp", tbl.column("timestamp").cast(pa.int64()))


def test_read_log_topic_json_with_schema_and_value_field_keeps_its_name_beside_the_records_key(log):
    t = log.topic("events")
    for i in range(10):
        t.produce({"key": f"inner-{i}", "amount": i}, key=f"outer-{i}", timestamp=BASE + i)
    schema = pa.schema([("key", pa.string()), ("amount", pa.float64())])
    out = rb.Pipeline.read(t, schema=schema).collect()
    # the value's `key` keeps the name; the record's key is beside it (it used to be dropped)
    assert out.column_names == ["key", "amount", "record_key", "timestamp", "partition", "offset"]
    assert out.schema.field("amount").type == pa.float64()
    rows = sorted(zip(out.column("key").to_pylist(), out.column("record_key").to_pylist()))
    assert rows == sorted((f"inner-{i}", f"outer-{i}".encode()) for i in range(10))


def test_read_log_topic_raw(log):
    t = log.topic("raw", partitions=2)
    produced = {}
    for i in range(20):
        value = bytes([i, 255 - i]) * 3 if i % 2 else f"not json {i}".encode()
        p, o = t.produce(value, key=None if i % 5 == 0 else f"k{i}", timestamp=BASE + i)
        produced[(p, o)] = (value, None if i % 5 == 0 else f"k{i}".encode(), BASE + i)
    out = _with_int_ts(rb.Pipeline.read(t, format="raw").collect())
    assert out.column_names == ["value", "key", "timestamp", "partition", "offset"]
    assert out.schema.field("value").type == pa.binary()
    got = {(r["partition"], r["offset"]): (r["value"], r["key"], r["timestamp"]) for r in out.to_pylist()}
    assert got == produced


def test_topic_windows_on_record_timestamps(log):
    t = log.topic("clicks", partitions=2)
    for i in range(100):
        t.produce({"page": "/a" if i % 3 else "/b"}, key=str(i % 7), timestamp=BASE + i * 250)
    out = rb.Pipeline.read(t).window(rb.tumbling("5s"), by="page").agg(n=rb.count()).collect()
    exp: dict = {}
    for i in range(100):
        page = "/a" if i % 3 else "/b"
        w = (BASE + i * 250) // 5000 * 5000
        exp[(page, w)] = exp.get((page, w), 0) + 1
    got = {(r["page"], r["window_start"]): r["n"] for r in out.set_column(1, "window_start", out.column("window_start").cast(pa.int64())).to_pylist()}
    assert got == exp


# -- decode errors -------------------------------------------------------------------------------------


def _assert_names_location(msg: str, topic: str, partition: int, offset: int) -> None:
    """The message locates the record: ``topic/partition@offset`` or words to that effect."""
    assert topic in msg, msg
    if f"{topic}/{partition}@{offset}" in msg:
        return
    assert re.search(rf"partition\W{{0,3}}{partition}\b", msg), msg
    assert re.search(rf"offset\W{{0,3}}{offset}\b", msg), msg


@pytest.mark.parametrize("with_schema", [True, False])
def test_malformed_json_raises_decode_error(log, with_schema):
    t = log.topic("sensor-readings", partitions=3)
    for i in range(7):
        t.produce({"x": i}, partition=2)
        t.produce({"x": i}, partition=0)
    t.produce(b'{"x": 1, oops', partition=2)  # partition 2, offset 7
    with pytest.raises(DecodeError) as ei:
        rb.Pipeline.read(t, schema=pa.schema([("x", pa.int64())]) if with_schema else None).collect()
    _assert_names_location(str(ei.value), "sensor-readings", 2, 7)


def test_wrong_type_for_schema_raises_decode_error(log):
    t = log.topic("typed-topic", partitions=2)
    for i in range(4):
        t.produce({"x": i, "s": "ok"}, partition=1)
    t.produce({"x": "not a number", "s": "bad"}, partition=1)  # partition 1, offset 4
    with pytest.raises(DecodeError) as ei:
        rb.Pipeline.read(t, schema=pa.schema([("x", pa.int64()), ("s", pa.string())])).collect()
    _assert_names_location(str(ei.value), "typed-topic", 1, 4)


# -- stateless operators ----------------------------------------------------------------------------


def test_filter_with_columns_select_drop_rename():
    p = (
        rb.Pipeline.read(TABLE, timestamp="ts", batch_size=17)
        .filter((col("v") > 0) & (col("k") != "d"))
        .with_columns(vx=col("v") * col("x"), big=col("v") >= 50)
        .drop("x")
        .rename({"v": "value", "vx": "product"})
        .select("ts", "k", "value", "product", "big")
    )
    assert p.schema.names == ["ts", "k", "value", "product", "big"]
    res = p.run()
    exp = [
        {"ts": r["ts"], "k": r["k"], "value": r["v"], "product": r["v"] * r["x"], "big": r["v"] >= 50}
        for r in ROWS
        if r["v"] > 0 and r["k"] != "d"
    ]
    got = sorted_rows(res.output)
    assert len(got) == len(exp)
    for g, e in zip(got, exp):
        assert g == {**e, "product": pytest.approx(e["product"])}
    f = op_metrics(res.metrics, "filter")
    assert (f["records_in"], f["records_out"]) == (len(ROWS), len(exp))
    for m in res.metrics:
        assert set(m) >= {"operator", "records_in", "records_out", "late_records", "watermark", "state_entries"}


def test_empty_result_keeps_schema():
    out = rb.Pipeline.read(TABLE, timestamp="ts").filter(rb.lit(False)).select("k", "v").collect()
    assert out.num_rows == 0
    assert out.schema == pa.schema([("k", pa.string()), ("v", pa.int64())])


def test_union_renumbers_sources_and_udfs():
    t1 = pa.Table.from_pylist([{"k": "l", "ts": BASE + i, "v": i} for i in range(30)])
    t2 = pa.Table.from_pylist([{"k": "r", "ts": BASE + i, "v": 100 + i} for i in range(20)])
    t3 = pa.Table.from_pylist([{"k": "z", "ts": BASE + i, "v": 1000 + i} for i in range(10)])

    def plus_one(b: pa.RecordBatch) -> pa.RecordBatch:
        return b.set_column(2, "v", pc.add(b.column("v"), 1))

    def times_ten(b: pa.RecordBatch) -> pa.RecordBatch:
        return b.set_column(2, "v", pc.multiply(b.column("v"), 10))

    left = rb.Pipeline.read(t1, timestamp="ts").map_batches(plus_one)
    right = rb.Pipeline.read(t2, timestamp="ts").map_batches(times_ten)
    third = rb.Pipeline.read(t3, timestamp="ts").filter(col("v") % 2 == 0)
    u = left.union(right).union(third)
    plan = u.to_plan()
    assert plan["op"] == "union" and len(plan["inputs"]) == 3
    assert sorted(n["source"] for n in _sources_of(plan)) == [0, 1, 2]
    out = u.collect()
    got = sorted((r["k"], r["v"]) for r in out.to_pylist())
    exp = sorted([("l", i + 1) for i in range(30)] + [("r", (100 + i) * 10) for i in range(20)] + [("z", 1000 + i) for i in range(0, 10, 2)])
    assert got == exp


def _sources_of(node):
    if node["op"] == "source":
        yield node
    if "input" in node:
        yield from _sources_of(node["input"])
    for n in node.get("inputs", ()):
        yield from _sources_of(n)


def test_union_needs_equal_schemas():
    other = rb.Pipeline.read(TABLE, timestamp="ts").drop("x")
    with pytest.raises(PlanError, match="union"):
        rb.Pipeline.read(TABLE, timestamp="ts").union(other)


@pytest.mark.parametrize("kind", ["batch", "table", "pandas", "polars"])
def test_map_batches_return_types(kind):
    def double(b: pa.RecordBatch):
        t = pa.table({"k": b.column("k"), "v2": pc.multiply(b.column("v"), 2)})
        if kind == "batch":
            return t.combine_chunks().to_batches()[0] if t.num_rows else pa.RecordBatch.from_pylist([], schema=t.schema)
        if kind == "table":
            return t
        if kind == "pandas":
            return t.to_pandas()
        pl = pytest.importorskip("polars")
        return pl.from_arrow(t)

    p = rb.Pipeline.read(TABLE, timestamp="ts", batch_size=33).map_batches(double)
    assert p.schema is None
    out = p.collect()
    assert sorted((r["k"], r["v2"]) for r in out.to_pylist()) == sorted((r["k"], 2 * r["v"]) for r in ROWS)


def test_map_per_record():
    def fn(r: dict) -> dict | None:
        if r["v"] < 0:
            return None
        return {"k": r["k"].upper(), "ts": r["ts"], "score": r["v"] + r["x"]}

    out = rb.Pipeline.read(TABLE, timestamp="ts", batch_size=10).map(fn).collect()
    exp = [fn(r) for r in ROWS if fn(r) is not None]
    got = sorted_rows(out)
    assert [(g["k"], g["ts"]) for g in got] == [(e["k"], e["ts"]) for e in exp]
    assert [g["score"] for g in got] == pytest.approx([e["score"] for e in exp])


def test_stateless_after_udf_and_window_after_udf():
    def add_w(b: pa.RecordBatch) -> pa.Table:
        t = pa.Table.from_batches([b])
        return t.append_column("w", pc.multiply(t.column("v"), 3))

    out = (
        rb.Pipeline.read(TABLE, timestamp="ts", batch_size=20)
        .map_batches(add_w)
        .filter(col("w") > 0)
        .window(rb.tumbling("500ms"), by="k")
        .agg(total=rb.sum("w"), n=rb.count())
        .collect()
    )
    exp: dict = {}
    for r in ROWS:
        if 3 * r["v"] > 0:
            key = (r["k"], r["ts"] // 500 * 500)
            n, s = exp.get(key, (0, 0))
            exp[key] = (n + 1, s + 3 * r["v"])
    ws = out.column("window_start")
    starts = ws.cast(pa.int64()).to_pylist() if pa.types.is_timestamp(ws.type) else ws.to_pylist()
    got = {(k, s): (n, t) for k, s, n, t in zip(out.column("k").to_pylist(), starts, out.column("n").to_pylist(), out.column("total").to_pylist())}
    assert got == exp


def test_udf_error_surfaces_with_traceback():
    def exploding_udf(batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows:
            raise ValueError("boom from inside the udf")
        return batch

    p = rb.Pipeline.read(TABLE, timestamp="ts").map_batches(exploding_udf)
    with pytest.raises(ValueError, match="boom from inside the udf") as ei:
        p.collect()
    tb = "".join(traceback.format_exception(ei.type, ei.value, ei.tb))
    assert "exploding_udf" in tb


def test_udf_returning_garbage_raises_type_error():
    p = rb.Pipeline.read(TABLE, timestamp="ts").map_batches(lambda b: 42)
    with pytest.raises(TypeError, match="map_batches"):
        p.collect()


# -- group_by changelog -----------------------------------------------------------------------------


def test_group_by_changelog():
    table = rb.Pipeline.read(TABLE, timestamp="ts", batch_size=9).group_by("k").agg(n=rb.count(), total=rb.sum("v"), hi=rb.max("v"))
    p = table.changelog
    assert p.schema.names == ["k", "n", "total", "hi"]
    log_rows = p.collect().to_pylist()  # emission order
    per_key: dict[str, list[int]] = {}
    for r in ROWS:
        per_key.setdefault(r["k"], []).append(r["v"])
    last: dict = {}
    seen_n: dict = {}
    for row in log_rows:
        vs = per_key[row["k"]][: row["n"]]  # a changelog row: the aggregates of a prefix of the key's records
        assert (row["total"], row["hi"]) == (sum(vs), max(vs)), row
        assert row["n"] > seen_n.get(row["k"], 0), "changelog went backwards"
        seen_n[row["k"]] = row["n"]
        last[row["k"]] = row
    assert last == {k: {"k": k, "n": len(vs), "total": sum(vs), "hi": max(vs)} for k, vs in per_key.items()}
    assert len(log_rows) > len(per_key)  # several batches changed each key


# -- sinks -------------------------------------------------------------------------------------------


def test_write_to_topic_and_read_back(log):
    out_topic = log.topic("enriched", partitions=3)
    p = rb.Pipeline.read(TABLE, timestamp="ts").with_columns(v2=col("v") * 2).drop("x").write(out_topic, key="k")
    res = p.run()
    assert res.output.num_rows == 0
    assert sum(latest - earliest for earliest, latest in out_topic.offsets().values()) == len(ROWS)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64()), ("v2", pa.int64())])
    back = rb.Pipeline.read(out_topic, schema=schema, timestamp="ts").collect()
    got = sorted((r["k"], r["ts"], r["v"], r["v2"], r["key"], r["partition"]) for r in back.to_pylist())
    exp = sorted((r["k"], r["ts"], r["v"], 2 * r["v"], r["k"].encode(), out_topic.partition_for(r["k"])) for r in ROWS)
    assert got == exp
    raw = out_topic.read().to_pylist()
    assert all(json.loads(r["value"])["k"] == r["key"].decode() for r in raw)


def test_write_to_callback():
    batches: list[pa.RecordBatch] = []
    res = rb.Pipeline.read(TABLE, timestamp="ts", batch_size=50).filter(col("v") > 0).write(batches.append).run()
    assert res.output.num_rows == 0
    assert sum(b.num_rows for b in batches) == sum(1 for r in ROWS if r["v"] > 0)


# -- introspection ----------------------------------------------------------------------------------


def test_explain_repr_metrics():
    p = rb.Pipeline.read(TABLE, timestamp="ts", name="trades").filter(col("v") > 0).window(rb.tumbling("1s"), by="k").agg(n=rb.count())
    text = p.explain()
    for word in ("read", "filter", "window"):
        assert word in text, text
    assert "window" in repr(p) and "<pre>" in p._repr_html_()
    assert p.metrics() == []
    res = p.run()
    assert isinstance(res, rb.RunResult)
    assert p.metrics() == res.metrics
    w = op_metrics(res.metrics, "window")
    assert w["records_in"] == sum(1 for r in ROWS if r["v"] > 0)
    assert w["records_out"] == res.output.num_rows
    assert w["watermark"] is not None
    assert p.to_pandas().shape[0] == res.output.num_rows


# -- follow mode ---------------------------------------------------------------------------------------


def _poll_topic(topic: rb.Topic, want, timeout: float) -> list[dict]:
    """JSON values of ``topic`` once ``want(values)`` holds, or when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        values = [json.loads(v) for v in topic.read().column("value").to_pylist()]
        if want(values) or time.monotonic() >= deadline:
            return values
        time.sleep(0.05)


def _stop_quickly(p: rb.Pipeline) -> rb.RunResult:
    t0 = time.monotonic()
    res = p.stop()
    assert time.monotonic() - t0 < 1.0, "stop() took more than 1 s"
    assert not p.running
    return res


def test_follow_mode_processes_records_produced_after_start(log):
    inp = log.topic("live-in", partitions=2)
    out = log.topic("live-out")
    schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
    p = rb.Pipeline.read(inp, schema=schema).filter(col("v") > 0).with_columns(v2=col("v") * 2).select("k", "v", "v2").write(out, key="k")
    p.start()
    try:
        assert p.running
        time.sleep(0.1)
        sent = [{"k": f"k{i % 3}", "v": i - 5} for i in range(30)]
        for r in sent:
            inp.produce(r, key=r["k"])
        exp = sorted((r["k"], r["v"], 2 * r["v"]) for r in sent if r["v"] > 0)
        values = _poll_topic(out, lambda vs: len(vs) >= len(exp), timeout=2.0)
        assert sorted((v["k"], v["v"], v["v2"]) for v in values) == exp
        assert op_metrics(p.metrics(), "filter")["records_in"] == len(sent)
    finally:
        res = _stop_quickly(p)
    assert isinstance(res, rb.RunResult)


def test_follow_mode_windows_close_when_the_stream_goes_quiet(log):
    inp = log.topic("quiet-in", partitions=2)
    out = log.topic("quiet-out")
    # event time: an int64 ms field (windows over record timestamps hit the sink bug tested below)
    schema = pa.schema([("k", pa.string()), ("v", pa.int64()), ("ts", pa.int64())])
    idle = 0.5
    p = (
        rb.Pipeline.read(inp, schema=schema, timestamp="ts", idle_timeout=f"{int(idle * 1000)}ms")
        .window(rb.tumbling("300ms"), by="k")
        .agg(n=rb.count(), total=rb.sum("v"))
        .write(out, key="k")
    )
    p.start()
    try:
        sent = []
        for i in range(15):  # event times: now
            r = {"k": "ab"[i % 2], "v": i, "ts": time.time_ns() // 1_000_000}
            inp.produce(r, key=r["k"])
            sent.append(r)
            time.sleep(0.03)
        last_produce = time.monotonic()
        exp: dict = {}
        for v in sent:
            key = (v["k"], v["ts"] // 300 * 300)
            n, s = exp.get(key, (0, 0))
            exp[key] = (n + 1, s + v["v"])
        expected = sorted(exp.values())
        values = _poll_topic(out, lambda vs: len(vs) >= len(expected), timeout=idle + 1.0)
        waited = time.monotonic() - last_produce
        assert sorted((v["n"], v["total"]) for v in values) == expected, f"after {waited:.2f}s"
        assert waited <= idle + 1.0 + 0.1
    finally:
        _stop_quickly(p)


def test_follow_mode_collects_until_stopped(log):
    inp = log.topic("collect-in")
    schema = pa.schema([("n", pa.int64())])
    for i in range(5):
        inp.produce({"n": i})
    p = rb.Pipeline.read(inp, schema=schema).with_columns(m=col("n") + 1).start()
    try:
        time.sleep(0.2)
        for i in range(5, 10):
            inp.produce({"n": i})
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if op_metrics(p.metrics(), "with_columns")["records_out"] >= 10:
                break
            time.sleep(0.05)
    finally:
        res = _stop_quickly(p)
    assert sorted(res.output.column("m").to_pylist()) == list(range(1, 11))
    with pytest.raises(RuntimeError):
        p.stop()


def test_write_windows_over_record_timestamps_to_topic(log):
    inp = log.topic("tz-in")
    out = log.topic("tz-out")
    for i in range(10):
        inp.produce({"k": "a", "v": i}, timestamp=BASE + i * 100)
    p = rb.Pipeline.read(inp, schema=pa.schema([("k", pa.string()), ("v", pa.int64())]))
    p.window(rb.tumbling("500ms"), by="k").agg(n=rb.count()).write(out, key="k").run()
    assert sorted(json.loads(v)["n"] for v in out.read().column("value").to_pylist()) == [5, 5]


def test_background_bounded_run_and_wait():
    p = rb.Pipeline.read(TABLE, timestamp="ts", batch_size=10).filter(col("v") > 0).start(follow=False)
    assert p.wait(timeout=5.0)
    assert not p.running
    res = p.stop()
    assert sorted_rows(res.output) == [r for r in ROWS if r["v"] > 0]


def test_follow_mode_udf_error_surfaces_at_stop(log):
    inp = log.topic("udf-in")

    def failing_live_udf(batch: pa.RecordBatch) -> pa.RecordBatch:
        if batch.num_rows:
            raise ValueError("live udf failure")
        return batch

    p = rb.Pipeline.read(inp, schema=pa.schema([("n", pa.int64())])).map_batches(failing_live_udf).start()
    inp.produce({"n": 1})
    assert p.wait(timeout=2.0), "the run should end when its UDF fails"
    assert not p.running
    with pytest.raises(ValueError, match="live udf failure"):
        p.stop()
    with pytest.raises(RuntimeError):
        p.stop()


def test_running_turns_false_when_a_background_run_ends():
    p = rb.Pipeline.read(TABLE, timestamp="ts").start(follow=False)
    deadline = time.monotonic() + 1.0
    while p.running and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert not p.running
    finally:
        p.stop()


# -- key_by -----------------------------------------------------------------------------------


def test_key_by_groups_windows_and_keys_the_written_records(tmp_path):
    rows = [{"user": f"u{i % 5}", "ts": i * 100, "v": i} for i in range(200)]
    t = pa.Table.from_pylist(rows)
    keyed = rb.Pipeline.read(t, timestamp="ts").key_by("user")
    out = keyed.window(rb.tumbling("5s")).agg(n=rb.count(), s=rb.sum("v")).collect()
    # Same as naming by= explicitly, and both equal a brute-force count per (user, window).
    explicit = rb.Pipeline.read(t, timestamp="ts").window(rb.tumbling("5s"), by="user").agg(n=rb.count(), s=rb.sum("v"))
    assert out.sort_by([("user", "ascending"), ("window_start", "ascending")]).equals(
        explicit.collect().sort_by([("user", "ascending"), ("window_start", "ascending")])
    )
    brute: dict[tuple[str, int], int] = {}
    for r in rows:
        k = (r["user"], r["ts"] // 5000 * 5000)
        brute[k] = brute.get(k, 0) + 1
    assert {(r["user"], r["window_start"]): r["n"] for r in out.to_pylist()} == brute

    with rb.Log(tmp_path / "log") as log:
        topic = log.topic("by_user", partitions=4)
        keyed.write(topic).run()
        got = topic.read()
        # Every record is keyed by its user and sits in Kafka's murmur2 partition for that key.
        for key, part in zip(got.column("key").to_pylist(), got.column("partition").to_pylist()):
            assert key is not None
            assert part == (rb.murmur2(key) & 0x7FFFFFFF) % 4
        users = {json.loads(v)["user"].encode() for v in got.column("value").to_pylist()}
        assert set(got.column("key").to_pylist()) == users


def test_key_by_unknown_column_is_a_plan_error():
    t = pa.table({"user": ["a"], "ts": [0]})
    with pytest.raises(rb.exceptions.PlanError, match="key_by.*'nope'"):
        rb.Pipeline.read(t, timestamp="ts").key_by("nope")


# -- progress bar --------------------------------------------------------------------------------


def test_bounded_runs_longer_than_a_second_show_progress(monkeypatch):
    import time as _time

    import tqdm.auto

    bars = []

    class Recorder:
        def __init__(self, **kw):
            self.n, self.kw, self.closed = 0, kw, False
            bars.append(self)

        def update(self, k):
            self.n += k

        def close(self):
            self.closed = True

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorder)
    rows = [{"k": "a", "ts": i, "v": i} for i in range(50)]

    def slow(batch):
        _time.sleep(0.05)
        return batch

    p = rb.Pipeline.read(rows, timestamp="ts", batch_size=1).map_batches(slow)
    assert p.collect(progress=False).num_rows == 50
    assert bars == []  # turned off
    assert p.collect().num_rows == 50  # ~2.5 s: a bar appears after a second
    assert len(bars) == 1 and bars[0].closed
    assert 0 < bars[0].n <= 50  # records read, as the run went
    quick = rb.Pipeline.read(rows, timestamp="ts")
    quick.collect()
    assert len(bars) == 1  # a run under a second shows none
