"""Bad records: ``on_error="raise" | "skip" | "dead_letter"`` per source and per pipeline.

Every test builds its input by hand, so the expected output, the bad records and their origins
(partition, offset, key, value bytes, headers, timestamp) are known without the engine: the
expected output is computed in plain Python from the good records only.

Bad kinds: values that do not decode (malformed JSON, a wrong type, a missing non-nullable
field, a JSON value that is not an object) and records a Python function raises on
(``map_batches``, ``map``, ``stateful_map``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import riverbed as rb
from conftest import read_all, table_rows
from riverbed.exceptions import DecodeError, RiverbedError

# ``v`` is not nullable, so a record without it does not fit the schema.
SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), pa.field("v", pa.int64(), nullable=False)])
BAD_KEY = "kbad"  # records a Python function raises on carry this ``k``
MODES = ("raise", "skip", "dead_letter")
DECODE_KINDS = ("malformed", "wrong_type", "missing_field", "not_object")
UDFS = ("map_batches", "map", "stateful_map")
# (partitions, batch_size): batch_size None is the default (65,536 rows: one batch per read)
SHAPES = [(1, 1), (3, 4), (3, None)]
SHAPE_IDS = ["p1-bs1", "p3-bs4", "p3-large"]


# -- input ------------------------------------------------------------------------------------


@dataclass
class In:
    """One produced record, what it should decode to, and whether it is bad."""

    i: int
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int  # record timestamp (ms); the event time is the ``ts`` field
    row: dict | None  # {"k", "ts", "v"} for a value that decodes, else None
    decode_bad: bool = False
    udf_bad: bool = False

    @property
    def origin(self) -> tuple[int, int]:
        return self.partition, self.offset


@dataclass
class Data:
    topic: rb.Topic
    records: list[In] = field(default_factory=list)

    @property
    def good(self) -> list[In]:
        return [r for r in self.records if not r.decode_bad and not r.udf_bad]

    @property
    def decode_bad(self) -> list[In]:
        return [r for r in self.records if r.decode_bad]

    @property
    def udf_bad(self) -> list[In]:
        return [r for r in self.records if r.udf_bad]

    def first_bad_offsets(self, which: str) -> dict[int, int]:
        """Per partition, the offset of its first bad record (``which``: decode_bad/udf_bad)."""
        out: dict[int, int] = {}
        for r in getattr(self, which):
            out[r.partition] = min(out.get(r.partition, r.offset), r.offset)
        return out


def bad_value(kind: str, i: int, k: str, ts: int) -> bytes:
    """A value that does not decode into SCHEMA (unique per record)."""
    if kind == "malformed":
        return f'{{"k": "{k}", "ts": {ts}, "v": '.encode()  # truncated
    if kind == "wrong_type":
        return json.dumps({"k": k, "ts": ts, "v": f"oops{i}"}).encode()
    if kind == "missing_field":
        return json.dumps({"k": k, "ts": ts}).encode()
    if kind == "not_object":
        return json.dumps([k, ts, i]).encode()
    raise AssertionError(kind)


def fill(
    log: rb.Log,
    name: str = "in",
    *,
    n: int = 60,
    partitions: int = 1,
    decode_kind: str | None = None,
    decode_bad=lambda i: False,
    udf_bad=lambda i: False,
) -> Data:
    """Produce ``n`` records round-robin over ``partitions``: record ``i`` has ``ts`` 1000+i,
    ``v`` = i, record timestamp 5000+i, a key (none for every 6th), an ``i`` header (and a
    header without value for odd ``i``). ``udf_bad(i)`` records get ``k`` = BAD_KEY;
    ``decode_bad(i)`` records get a value of ``decode_kind`` that does not decode."""
    data = Data(log.topic(name, partitions=partitions))
    for i in range(n):
        is_decode_bad = decode_kind is not None and decode_bad(i)
        is_udf_bad = not is_decode_bad and udf_bad(i)
        k = BAD_KEY if is_udf_bad else f"k{i % 4}"
        ts = 1000 + i
        row = {"k": k, "ts": ts, "v": i}
        value = bad_value(decode_kind, i, k, ts) if is_decode_bad else json.dumps(row).encode()
        key = None if i % 6 == 0 else f"key{i}".encode()
        headers: list[tuple[str, bytes | None]] = [("i", str(i).encode())]
        if i % 2:
            headers.append(("empty", None))
        part, off = data.topic.produce(value, key=key, timestamp=5000 + i, headers=headers, partition=i % partitions)
        data.records.append(
            In(i, part, off, key, value, headers, 5000 + i, None if is_decode_bad else row, is_decode_bad, is_udf_bad)
        )
    return data


def every(m: int, r: int):
    return lambda i: i % m == r


# -- pipelines --------------------------------------------------------------------------------


class Boom(Exception):
    pass


def add_w(batch: pa.RecordBatch) -> pa.RecordBatch:
    """map_batches: w = 2v; raises if the batch holds a BAD_KEY record (naming its v)."""
    for k, v in zip(batch.column("k").to_pylist(), batch.column("v").to_pylist()):
        if k == BAD_KEY:
            raise Boom(f"boom v={v}")
    return batch.append_column("w", pc.multiply(batch.column("v"), 2))


def add_w_row(r: dict) -> dict:
    """map: w = 2v; raises on a BAD_KEY record."""
    if r["k"] == BAD_KEY:
        raise Boom(f"boom v={r['v']}")
    return {"k": r["k"], "ts": r["ts"], "v": r["v"], "partition": r["partition"], "offset": r["offset"], "w": 2 * r["v"]}


def running(state: int, recs: list[dict]) -> tuple[int, list[dict]]:
    """stateful_map: running sum of v per key (state never mutated); raises for BAD_KEY."""
    if recs[0]["k"] == BAD_KEY:
        raise Boom(f"boom k={recs[0]['k']}")
    out = []
    for r in recs:
        state += r["v"]
        out.append({"k": r["k"], "ts": r["ts"], "v": r["v"], "partition": r["partition"], "offset": r["offset"], "cum": state})
    return state, out


def running_mutable(state: dict, recs: list[dict]) -> tuple[dict, list[dict]]:
    """The same with a dict state updated in place (the common Bytewax-style idiom)."""
    if recs[0]["k"] == BAD_KEY:
        raise Boom(f"boom k={recs[0]['k']}")
    out = []
    for r in recs:
        state["sum"] += r["v"]
        out.append({"k": r["k"], "ts": r["ts"], "v": r["v"], "partition": r["partition"], "offset": r["offset"], "cum": state["sum"]})
    return state, out


UDF_NAME = {"map_batches": "add_w", "map": "add_w_row", "stateful_map": "running"}
UDF_OP = {"map_batches": "map_batches", "map": "map_batches", "stateful_map": "stateful_map"}
OUT_COLS = {
    None: ("partition", "offset", "k", "ts", "v"),
    "map_batches": ("partition", "offset", "k", "ts", "v", "w"),
    "map": ("partition", "offset", "k", "ts", "v", "w"),
    "stateful_map": ("partition", "offset", "k", "ts", "v", "cum"),
}


def source(data: Data, batch_size: int | None, **kw) -> rb.Pipeline:
    return rb.Pipeline.read(data.topic, timestamp="ts", schema=SCHEMA, batch_size=batch_size, **kw)


def with_udf(p: rb.Pipeline, udf: str | None) -> rb.Pipeline:
    if udf is None:
        return p
    if udf == "map_batches":
        return p.map_batches(add_w)
    if udf == "map":
        return p.map(add_w_row)
    if udf == "stateful_map":
        return p.stateful_map(running, by="k", initial=0)
    raise AssertionError(udf)


def expected(records: list[In], udf: str | None) -> list[tuple]:
    """The output for ``records`` (the good ones), brute force."""
    rows = []
    sums: dict[str, int] = defaultdict(int)
    for r in sorted(records, key=lambda r: r.row["ts"]):  # event time order = per-key order
        base = (r.partition, r.offset, r.row["k"], r.row["ts"], r.row["v"])
        if udf is None:
            rows.append(base)
        elif udf in ("map_batches", "map"):
            rows.append((*base, 2 * r.row["v"]))
        else:
            sums[r.row["k"]] += r.row["v"]
            rows.append((*base, sums[r.row["k"]]))
    return sorted(rows)


def output_rows(tbl: pa.Table, udf: str | None) -> list[tuple]:
    cols = [tbl.column(c).to_pylist() for c in OUT_COLS[udf]]
    return sorted(zip(*cols))


def errors_by_op(metrics: list[dict]) -> dict[str, int]:
    return {m["operator"]: m.get("errors", 0) for m in metrics}


def check_errors(metrics: list[dict], expect: dict[str, int]) -> None:
    """``expect``: operator name prefix -> errors; every other operator has none."""
    got = errors_by_op(metrics)
    want = {}
    for op in got:
        matches = [p for p in expect if op.startswith(p)]
        want[op] = expect[matches[0]] if matches else 0
    assert got == want, f"errors per operator: got {got}, want {want}"
    for prefix in expect:
        assert any(op.startswith(prefix) for op in got), f"no operator {prefix}* in {list(got)}"


def out_topic_rows(topic: rb.Topic) -> list[dict]:
    return [json.loads(v) for *_, v, _h in table_rows(topic.read())]


def dlq_records(topic: rb.Topic) -> list[tuple]:
    """(partition, offset, timestamp, key, value, headers) of every record of a DLQ topic."""
    return table_rows(topic.read())


def check_dlq(dlq: list[tuple], bad: list[In], *, decode: bool, topic: str, operator: str, error: Callable[[In], list[str]]) -> None:
    """Every bad record is in ``dlq`` once, and nothing else; each with its original key, value
    bytes (decode errors) or a JSON object of its columns (function errors), its original
    headers followed by the ``riverbed.*`` headers naming its origin and the error. All
    problems are collected, so one failure shows everything that is wrong."""
    problems: list[str] = []
    assert len(dlq) == len(bad), f"{len(dlq)} dead letters for {len(bad)} bad records"

    def origin_of(rec: tuple) -> In | None:
        _p, _o, _ts, _key, value, _h = rec
        for r in bad:
            if decode and value == r.value:
                return r
            if not decode and value is not None:
                try:
                    obj = json.loads(value)
                except ValueError:
                    return None
                if isinstance(obj, dict) and obj.get("v") == r.i:
                    return r
        return None

    seen: set[int] = set()
    for rec in dlq:
        _p, _o, ts, key, value, headers = rec
        r = origin_of(rec)
        if r is None:
            problems.append(f"dead letter {value!r} matches no bad record")
            continue
        if r.i in seen:
            problems.append(f"record {r.origin} dead-lettered twice")
        seen.add(r.i)
        where = f"record i={r.i} at {topic}/{r.partition}@{r.offset}"
        if key != r.key:
            problems.append(f"{where}: key {key!r}, want {r.key!r}")
        if decode:
            if value != r.value:
                problems.append(f"{where}: value {value!r}, want the original {r.value!r}")
        else:
            obj = json.loads(value)
            if obj != r.row:
                problems.append(f"{where}: value {obj!r}, want the row's columns {r.row!r}")
        if ts != r.timestamp:
            problems.append(f"{where}: timestamp {ts}, want {r.timestamp}")
        n = len(r.headers)
        if headers[:n] != r.headers:
            problems.append(f"{where}: original headers {r.headers!r} not kept (headers {headers!r})")
        rb_headers = {h: v for h, v in headers if h.startswith("riverbed.")}
        want = {
            "riverbed.source.topic": topic.encode(),
            "riverbed.source.partition": str(r.partition).encode(),
            "riverbed.source.offset": str(r.offset).encode(),
        }
        for h, v in want.items():
            if rb_headers.get(h) != v:
                problems.append(f"{where}: header {h} = {rb_headers.get(h)!r}, want {v!r}")
        op = (rb_headers.get("riverbed.operator") or b"").decode()
        if operator not in op:
            problems.append(f"{where}: riverbed.operator {op!r} does not name {operator!r}")
        text = (rb_headers.get("riverbed.error") or b"").decode()
        for fragment in error(r):
            if fragment not in text:
                problems.append(f"{where}: riverbed.error {text!r} lacks {fragment!r}")
        if not decode and text.count(operator) > 1:
            problems.append(f"{where}: riverbed.error {text!r} wraps the function's error twice")
    missing = [r.origin for r in bad if r.i not in seen]
    if missing:
        problems.append(f"bad records not dead-lettered: {missing}")
    shown = problems[:8] + ([f"... and {len(problems) - 8} more"] if len(problems) > 8 else [])
    assert not problems, "\n".join(shown)


def decode_error_text(topic: str):
    return lambda r: [f"{topic}/{r.partition}@{r.offset}"]


def udf_error_text(udf: str):
    if udf == "stateful_map":
        return lambda r: ["Boom", f"boom k={BAD_KEY}"]
    return lambda r: ["Boom", f"boom v={r.i}"]


def check_prefix(rows: list[dict], data: Data, which: str) -> None:
    """Per source partition, the output records are the partition's first good records, all
    before its first bad one (nothing skipped, nothing past the failure)."""
    first_bad = data.first_bad_offsets(which)
    got: dict[int, list[int]] = defaultdict(list)
    for row in rows:
        got[row["partition"]].append(row["offset"])
    for p, offs in got.items():
        good = [r.offset for r in data.good if r.partition == p]
        assert sorted(offs) == good[: len(offs)], f"partition {p}: wrote {sorted(offs)}, not a prefix of {good}"
        if p in first_bad:
            assert not offs or max(offs) < first_bad[p], f"partition {p}: wrote past the bad record {first_bad[p]}"


def set_policy(p: rb.Pipeline, mode: str, dlq: rb.Topic | None) -> rb.Pipeline:
    return p.on_error(mode, dlq) if mode == "dead_letter" else p.on_error(mode)


# -- decode errors ----------------------------------------------------------------------------


def decode_data(log: rb.Log, kind: str, partitions: int) -> Data:
    # bad records in several partitions and (for small batches) several batches
    return fill(log, partitions=partitions, decode_kind=kind, decode_bad=lambda i: i % 7 in (3, 5))


def decode_pipeline(data: Data, level: str, mode: str, batch_size: int | None, dlq: rb.Topic | None) -> rb.Pipeline:
    if level == "source":
        return source(data, batch_size, on_error=mode)  # dead_letter: the default <topic>.dlq
    return set_policy(source(data, batch_size), mode, dlq)


@pytest.mark.parametrize("level", ["source", "pipeline"])
@pytest.mark.parametrize("batch_size", [1, None], ids=["bs1", "large"])
@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_decode_raise(log, kind, batch_size, level):
    data = decode_data(log, kind, partitions=3)
    before = read_all(data.topic)
    out = log.topic("out")
    earlier = [{"earlier": j} for j in range(3)]
    for row in earlier:
        out.produce(json.dumps(row).encode(), timestamp=1)
    p = decode_pipeline(data, level, "raise", batch_size, None).write(out)
    with pytest.raises(DecodeError) as exc:
        p.run()
    m = re.search(r"\bin/(\d+)@(\d+)", str(exc.value))
    assert m, f"error does not name topic/partition@offset: {exc.value}"
    p_, o_ = int(m[1]), int(m[2])
    assert data.first_bad_offsets("decode_bad").get(p_) == o_, f"{exc.value} is not a partition's first bad record"
    assert read_all(data.topic) == before  # the input is untouched
    rows = out_topic_rows(out)
    assert rows[: len(earlier)] == earlier  # what the output had stays
    check_prefix(rows[len(earlier) :], data, "decode_bad")  # and what the run wrote before failing
    assert "in.dlq" not in log.topics()


@pytest.mark.parametrize("level", ["source", "pipeline"])
@pytest.mark.parametrize(("partitions", "batch_size"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_decode_skip(log, kind, partitions, batch_size, level):
    data = decode_data(log, kind, partitions)
    p = decode_pipeline(data, level, "skip", batch_size, None)
    r = p.run()
    assert output_rows(r.output, None) == expected(data.good, None)
    check_errors(p.metrics(), {"read#": len(data.decode_bad)})
    assert "in.dlq" not in log.topics()


@pytest.mark.parametrize("level", ["source", "pipeline"])
@pytest.mark.parametrize(("partitions", "batch_size"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kind", DECODE_KINDS)
def test_decode_dead_letter(log, kind, partitions, batch_size, level):
    data = decode_data(log, kind, partitions)
    given = log.topic("given.dlq") if level == "pipeline" else None
    p = decode_pipeline(data, level, "dead_letter", batch_size, given)
    r = p.run()
    assert output_rows(r.output, None) == expected(data.good, None)
    check_errors(p.metrics(), {"read#": len(data.decode_bad)})
    dlq = given if given is not None else log["in.dlq"]
    check_dlq(dlq_records(dlq), data.decode_bad, decode=True, topic="in", operator="read", error=decode_error_text("in"))
    if level == "pipeline":
        assert "in.dlq" not in log.topics()


def test_decode_error_in_raise_mode_matches_the_dead_letter_text(log):
    """The text ``raise`` stops with is the one the dead letter carries."""
    data = decode_data(log, "wrong_type", partitions=1)
    with pytest.raises(DecodeError) as exc:
        source(data, 1).collect()
    source(data, 1, on_error="dead_letter").run()
    first = dlq_records(log["in.dlq"])[0]
    assert dict(first[5])["riverbed.error"].decode() == str(exc.value)
    assert "oops3" in str(exc.value) and "'v'" in str(exc.value)


def test_missing_and_extra_fields_fit_a_nullable_schema(log):
    """Not errors: a missing nullable field is null, an unknown field is ignored."""
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])
    t = log.topic("in")
    t.produce(json.dumps({"k": "a", "ts": 1}).encode(), timestamp=1)
    t.produce(json.dumps({"k": "a", "ts": 2, "v": 2, "extra": [1]}).encode(), timestamp=2)
    p = rb.Pipeline.read(t, timestamp="ts", schema=schema, on_error="skip")
    out = p.collect()
    assert out.select(["k", "ts", "v"]).to_pylist() == [{"k": "a", "ts": 1, "v": None}, {"k": "a", "ts": 2, "v": 2}]
    check_errors(p.metrics(), {})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["missing_ts", "tombstone"])
def test_record_without_event_time_is_a_bad_record(log, kind, mode):
    """A value without the event-time field (or no value at all) does not fit the schema: it
    is a bad record like any other — named under raise, counted under skip, dead-lettered."""
    t = log.topic("in")
    for i in range(6):
        if i == 3:
            t.produce(json.dumps({"k": "a", "v": i}).encode() if kind == "missing_ts" else None, key=b"x", timestamp=10 + i)
        else:
            t.produce(json.dumps({"k": "a", "ts": i, "v": i}).encode(), key=b"x", timestamp=10 + i)
    nullable = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])
    p = rb.Pipeline.read(t, timestamp="ts", schema=nullable, on_error=mode)
    if mode == "raise":
        with pytest.raises(RiverbedError, match=r"\bin/0@3\b"):
            p.run()
        return
    r = p.run()
    assert r.output.column("v").to_pylist() == [0, 1, 2, 4, 5]
    check_errors(p.metrics(), {"read#": 1})
    if mode == "dead_letter":
        [(_p, _o, ts, key, value, headers)] = dlq_records(log["in.dlq"])
        assert (ts, key) == (13, b"x")
        assert dict(headers)["riverbed.source.offset"] == b"3"
        # the record as it was sent (it used to be the decoded row written again as JSON)
        assert value == (json.dumps({"k": "a", "v": 3}).encode() if kind == "missing_ts" else None)


def udf_data(log: rb.Log, partitions: int) -> Data:
    return fill(log, partitions=partitions, udf_bad=every(7, 3))


@pytest.mark.parametrize("batch_size", [1, None], ids=["bs1", "large"])
@pytest.mark.parametrize("udf", UDFS)
def test_udf_raise(log, udf, batch_size):
    data = udf_data(log, partitions=3)
    before = read_all(data.topic)
    out = log.topic("out")
    earlier = [{"earlier": j} for j in range(3)]
    for row in earlier:
        out.produce(json.dumps(row).encode(), timestamp=1)
    p = with_udf(source(data, batch_size), udf).on_error("raise").write(out)
    with pytest.raises(Boom, match="boom"):  # the function's own exception
        p.run()
    assert read_all(data.topic) == before
    rows = out_topic_rows(out)
    assert rows[: len(earlier)] == earlier
    check_prefix(rows[len(earlier) :], data, "udf_bad")


def test_udf_raise_is_the_default(log):
    data = udf_data(log, partitions=1)
    with pytest.raises(Boom):
        with_udf(source(data, None), "map").collect()


@pytest.mark.parametrize(("partitions", "batch_size"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("udf", UDFS)
def test_udf_skip(log, udf, partitions, batch_size):
    data = udf_data(log, partitions)
    p = with_udf(source(data, batch_size), udf).on_error("skip")
    r = p.run()
    assert output_rows(r.output, udf) == expected(data.good, udf)
    check_errors(p.metrics(), {UDF_OP[udf]: len(data.udf_bad)})


@pytest.mark.parametrize(("partitions", "batch_size"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("udf", UDFS)
def test_udf_dead_letter(log, udf, partitions, batch_size):
    data = udf_data(log, partitions)
    dlq = log.topic("udf.dlq")
    p = with_udf(source(data, batch_size), udf).on_error("dead_letter", dlq)
    r = p.run()
    assert output_rows(r.output, udf) == expected(data.good, udf)
    check_errors(p.metrics(), {UDF_OP[udf]: len(data.udf_bad)})
    check_dlq(dlq_records(dlq), data.udf_bad, decode=False, topic="in", operator=UDF_NAME[udf], error=udf_error_text(udf))
    assert "in.dlq" not in log.topics()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("mode", ["skip", "dead_letter"])
def test_interrupt_in_udf_is_not_a_bad_record(log, mode, exc):
    """Ctrl-C (or sys.exit) while a function runs stops the run; it does not drop the record."""
    data = udf_data(log, partitions=1)

    def f(batch: pa.RecordBatch) -> pa.RecordBatch:
        if BAD_KEY in batch.column("k").to_pylist():
            raise exc()
        return batch

    p = set_policy(source(data, None).map_batches(f), mode, log.topic("udf.dlq"))
    with pytest.raises(exc):
        p.run()


# -- stateful_map: a key that fails does not disturb the others --------------------------------


@pytest.mark.parametrize("state", ["immutable", "mutable"])
@pytest.mark.parametrize(("partitions", "batch_size"), [(1, 1), (1, 2), (1, 4), (3, 2), (3, None)])
@pytest.mark.parametrize("mode", ["skip", "dead_letter"])
def test_stateful_map_failing_key_leaves_other_keys_state_alone(log, mode, partitions, batch_size, state):
    # BAD_KEY interleaved with three good keys, so most watermark steps hold it and others
    data = fill(log, n=48, partitions=partitions, udf_bad=every(4, 1))
    fn, initial = (running, 0) if state == "immutable" else (running_mutable, lambda: {"sum": 0})
    dlq = log.topic("sm.dlq")
    p = set_policy(source(data, batch_size).stateful_map(fn, by="k", initial=initial), mode, dlq)
    got = output_rows(p.run().output, "stateful_map")
    clean = (
        source(data, batch_size)
        .filter(rb.col("k") != BAD_KEY)
        .stateful_map(fn, by="k", initial=initial)
        .collect()
    )
    assert output_rows(clean, "stateful_map") == expected(data.good, "stateful_map")  # the reference run
    assert got == expected(data.good, "stateful_map"), "other keys' results differ from a run without the bad key"
    check_errors(p.metrics(), {"stateful_map": len(data.udf_bad)})
    if mode == "dead_letter":
        check_dlq(
            dlq_records(dlq), data.udf_bad, decode=False, topic="in", operator="running", error=udf_error_text("stateful_map")
        )


# -- source and pipeline policies together ----------------------------------------------------


def mixed_data(log: rb.Log, name: str = "in", partitions: int = 3) -> Data:
    """Both kinds of bad record: values that do not decode and records add_w raises on."""
    return fill(log, name, n=70, partitions=partitions, decode_kind="malformed", decode_bad=every(5, 2), udf_bad=every(7, 3))


@pytest.mark.parametrize("batch_size", [1, 3, None], ids=["bs1", "bs3", "large"])
def test_source_skip_overrides_pipeline_dead_letter(log, batch_size):
    data = mixed_data(log)
    dlq = log.topic("p.dlq")
    p = source(data, batch_size, on_error="skip").map_batches(add_w).on_error("dead_letter", dlq)
    r = p.run()
    assert output_rows(r.output, "map_batches") == expected(data.good, "map_batches")
    check_errors(p.metrics(), {"read#": len(data.decode_bad), "map_batches": len(data.udf_bad)})
    # only the function's bad records are dead-lettered
    check_dlq(dlq_records(dlq), data.udf_bad, decode=False, topic="in", operator="add_w", error=udf_error_text("map_batches"))
    assert "in.dlq" not in log.topics()


@pytest.mark.parametrize("batch_size", [1, None], ids=["bs1", "large"])
def test_source_dead_letter_overrides_pipeline_skip(log, batch_size):
    data = mixed_data(log)
    p = source(data, batch_size, on_error="dead_letter").map_batches(add_w).on_error("skip")
    r = p.run()
    assert output_rows(r.output, "map_batches") == expected(data.good, "map_batches")
    check_errors(p.metrics(), {"read#": len(data.decode_bad), "map_batches": len(data.udf_bad)})
    check_dlq(dlq_records(log["in.dlq"]), data.decode_bad, decode=True, topic="in", operator="read", error=decode_error_text("in"))


def test_source_raise_overrides_pipeline_skip(log):
    data = mixed_data(log)
    with pytest.raises(DecodeError, match=r"\bin/\d+@\d+"):
        source(data, 4, on_error="raise").map_batches(add_w).on_error("skip").run()


def test_source_and_pipeline_dead_letter_topics(log):
    data = mixed_data(log)
    src_dlq, pipe_dlq = log.topic("src.dlq"), log.topic("pipe.dlq")
    p = source(data, 5, on_error="dead_letter", dead_letter=src_dlq).map_batches(add_w).on_error("dead_letter", pipe_dlq)
    r = p.run()
    assert output_rows(r.output, "map_batches") == expected(data.good, "map_batches")
    check_dlq(dlq_records(src_dlq), data.decode_bad, decode=True, topic="in", operator="read", error=decode_error_text("in"))
    check_dlq(dlq_records(pipe_dlq), data.udf_bad, decode=False, topic="in", operator="add_w", error=udf_error_text("map_batches"))
    assert "in.dlq" not in log.topics()


def test_pipeline_policy_applies_to_sources_without_their_own(log):
    """A union: ``a`` skips its own bad values; ``b`` has no policy, so the pipeline's
    dead-letter topic gets b's bad values (named as b's) and every function error."""
    a = fill(log, "a", n=40, partitions=2, decode_kind="wrong_type", decode_bad=every(6, 1), udf_bad=every(9, 4))
    b = fill(log, "b", n=40, partitions=3, decode_kind="not_object", decode_bad=every(5, 3))
    dlq = log.topic("p.dlq")
    pa_ = rb.Pipeline.read(a.topic, timestamp="ts", schema=SCHEMA, batch_size=3, on_error="skip")
    pb = rb.Pipeline.read(b.topic, timestamp="ts", schema=SCHEMA, batch_size=3)
    p = pa_.union(pb).map_batches(add_w).on_error("dead_letter", dlq)
    r = p.run()
    got = sorted(zip(*[r.output.column(c).to_pylist() for c in ("k", "ts", "v", "w")]))
    want = sorted((x.row["k"], x.row["ts"], x.row["v"], 2 * x.row["v"]) for x in a.good + b.good)
    assert got == want
    errs = errors_by_op(p.metrics())
    assert sorted(e for op, e in errs.items() if op.startswith("read#")) == sorted([len(a.decode_bad), len(b.decode_bad)])
    assert sum(e for op, e in errs.items() if op.startswith("map_batches")) == len(a.udf_bad)
    letters = dlq_records(dlq)
    from_b = [x for x in letters if dict(x[5]).get("riverbed.operator", b"").startswith(b"read")]
    from_udf = [x for x in letters if x not in from_b]
    check_dlq(from_b, b.decode_bad, decode=True, topic="b", operator="read", error=decode_error_text("b"))
    check_dlq(from_udf, a.udf_bad, decode=False, topic="a", operator="add_w", error=udf_error_text("map_batches"))
    assert "a.dlq" not in log.topics() and "b.dlq" not in log.topics()


# -- bad arguments ----------------------------------------------------------------------------


def test_unknown_mode_names_the_options(log):
    t = log.topic("in")
    for call in (
        lambda: rb.Pipeline.read(t, schema=SCHEMA, on_error="ignore"),
        lambda: rb.Pipeline.read(t, schema=SCHEMA).on_error("ignore"),
    ):
        with pytest.raises(ValueError) as exc:
            call()
        for option in ("ignore", "raise", "skip", "dead_letter"):
            assert option in str(exc.value)


@pytest.mark.parametrize("mode", [None, "raise", "skip"])
def test_dead_letter_topic_without_dead_letter_mode(log, mode):
    t, d = log.topic("in"), log.topic("d")
    with pytest.raises(ValueError, match="dead_letter"):
        rb.Pipeline.read(t, schema=SCHEMA, on_error=mode, dead_letter=d)
    if mode is not None:
        with pytest.raises(ValueError, match="dead_letter"):
            rb.Pipeline.read(t, schema=SCHEMA).on_error(mode, d)


def test_pipeline_dead_letter_needs_a_topic(log):
    with pytest.raises(ValueError, match="dead_letter"):
        rb.Pipeline.read(log.topic("in"), schema=SCHEMA).on_error("dead_letter")


@pytest.mark.parametrize(
    "data",
    [pa.table({"ts": [1], "v": [1]}), [{"ts": 1, "v": 1}], iter([{"ts": 1, "v": 1}])],
    ids=["table", "list", "iterator"],
)
@pytest.mark.parametrize("mode", MODES)
def test_on_error_on_a_non_topic_source(data, mode):
    with pytest.raises(TypeError, match="on_error"):
        rb.Pipeline.read(data, timestamp="ts", on_error=mode)
