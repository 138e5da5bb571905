"""Windows against brute-force Python references written from the semantics documented in
``rust/riverbed-stream/src/plan.rs``:

* tumbling: epoch-aligned (shifted by offset) ``[start, start + size)``;
* hopping: every ``[s, s + size)`` with ``s = offset (mod every)`` holding the record (Kafka
  Streams' ``windowsFor``; the tests keep timestamps far from 0 where Kafka drops negative starts);
* sliding (Kafka Streams): per record ``t`` the window ``[t - size, t]`` and, when a record follows
  within ``size``, ``[t + 1, t + 1 + size]``; both bounds inclusive; duplicates reported once;
* session: records within ``gap`` (inclusive) of each other share a session, bounds = first and
  last record time;
* count: every ``n`` records of a key in event-time order; incomplete windows not emitted.

The watermark is the largest event time seen minus ``lateness``; records no more than
``lateness`` behind it are never lost, records beyond it whose windows are closed are dropped,
counted (``late_records``) and returned by ``late()``.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import riverbed as rb
from riverbed.exceptions import PlanError

BASE = 1_700_000_000_000
SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])

# -- brute-force reference ----------------------------------------------------------------------


def ref_windows(rows: list[dict], spec: dict, by: list[str], ts: str = "ts") -> list[tuple[tuple, int, int, list[dict]]]:
    """``[(key tuple, start, end, [rows in event-time order (ties: arrival order)])]``.

    For count windows start/end are the window's first and last record times.
    """
    ((kind, p),) = spec.items()
    per_key: dict[tuple, list[tuple[int, int, dict]]] = defaultdict(list)
    for i, r in enumerate(rows):
        per_key[tuple(r[b] for b in by)].append((r[ts], i, r))
    out: list[tuple[tuple, int, int, list[dict]]] = []
    for key, recs in per_key.items():
        recs.sort(key=lambda x: (x[0], x[1]))
        times = [t for t, _, _ in recs]
        bounds: set[tuple[int, int]] = set()
        if kind == "tumbling":
            size, off = p["size_ms"], p.get("offset_ms", 0)
            for t in times:
                s = (t - off) // size * size + off
                bounds.add((s, s + size))
        elif kind == "hopping":
            size, every, off = p["size_ms"], p["every_ms"], p.get("offset_ms", 0)
            for t in times:
                s = (t - off) // every * every + off
                while s + size > t:
                    bounds.add((s, s + size))
                    s -= every
        elif kind == "sliding":
            size = p["size_ms"]
            for t in times:
                bounds.add((t - size, t))
                if any(t < u <= t + size for u in times):
                    bounds.add((t + 1, t + 1 + size))
        elif kind == "session":
            gap = p["gap_ms"]
            start = prev = times[0]
            for t in times[1:]:
                if t - prev > gap:
                    bounds.add((start, prev))
                    start = t
                prev = t
            bounds.add((start, prev))
        elif kind == "count":
            n = p["n"]
            for j in range(0, len(recs) - n + 1, n):
                chunk = recs[j : j + n]
                out.append((key, chunk[0][0], chunk[-1][0], [r for _, _, r in chunk]))
            continue
        else:  # pragma: no cover
            raise AssertionError(kind)
        half_open = kind in ("tumbling", "hopping")
        for s, e in bounds:
            members = [r for t, _, r in recs if s <= t and (t < e if half_open else t <= e)]
            assert members
            out.append((key, s, e, members))
    return out


def _first(xs):
    return xs[0]


def _last(xs):
    return xs[-1]


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else None


def _var(xs):
    return statistics.variance(xs) if len(xs) > 1 else None


AGG_REF = {
    "count": len,
    "sum": sum,
    "mean": lambda xs: sum(xs) / len(xs),
    "min": min,
    "max": max,
    "first": _first,
    "last": _last,
    "std": _std,
    "var": _var,
    "count_distinct": lambda xs: len(set(xs)),
}


def ref_output(rows, spec, by, aggs: dict[str, tuple[str, str | None]], ts: str = "ts") -> list[dict]:
    """Rows ``{by..., window_start, window_end, agg...}`` sorted, from the brute-force reference.
    ``aggs``: ``{name: (func, column or None)}``."""
    out = []
    for key, s, e, members in ref_windows(rows, spec, by, ts):
        row = dict(zip(by, key))
        row["window_start"], row["window_end"] = s, e
        for name, (func, column) in aggs.items():
            xs = [m[column] for m in members] if column else members
            row[name] = AGG_REF[func](xs)
        out.append(row)
    return sort_rows(out, by)


def agg_exprs(aggs: dict[str, tuple[str, str | None]]) -> dict[str, rb.Expr]:
    return {name: (rb.count() if func == "count" else getattr(rb, func)(column)) for name, (func, column) in aggs.items()}


def as_ms(col: pa.ChunkedArray) -> list:
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())
    return col.to_pylist()


def table_rows(tbl: pa.Table) -> list[dict]:
    """Rows of an output table with window bounds as int milliseconds."""
    cols = {name: (as_ms(tbl.column(name)) if name.startswith("window_") else tbl.column(name).to_pylist()) for name in tbl.column_names}
    return [dict(zip(cols, vals)) for vals in zip(*cols.values())] if cols else []


def sort_rows(rows: list[dict], by: list[str]) -> list[dict]:
    return sorted(rows, key=lambda r: (tuple(r[b] for b in by), r.get("window_start"), r.get("window_end"), repr(r)))


def assert_rows_equal(got: list[dict], expected: list[dict], float_cols: tuple[str, ...] = ()) -> None:
    assert len(got) == len(expected), f"{len(got)} rows, expected {len(expected)}:\n got {got[:20]}\n exp {expected[:20]}"
    for g, e in zip(got, expected):
        assert set(g) == set(e), f"columns {sorted(g)} != {sorted(e)}"
        for name in e:
            if name in float_cols and e[name] is not None:
                assert g[name] == pytest.approx(e[name], rel=1e-9, abs=1e-9), f"{name}: got row {g}, expected {e}"
            else:
                assert g[name] == e[name], f"{name}: got row {g}, expected {e}"


def window_metrics(metrics: list[dict]) -> list[dict]:
    ms = [m for m in metrics if "window" in m["operator"]]
    assert ms, f"no window operator in metrics {metrics}"
    return ms


# -- stream generators ----------------------------------------------------------------------------


def out_of_order(n: int, lateness: int, seed: int, keys=("a", "b", "c"), max_step: int = 700, p_back: float = 0.35):
    """``n`` records; each is either ahead of everything seen so far or at most ``lateness`` behind."""
    rng = random.Random(seed)
    t_max = BASE
    rows = []
    for _ in range(n):
        if rng.random() < p_back:
            t = t_max - rng.randint(0, lateness)
        else:
            t = t_max + rng.randint(0, max_step)
            t_max = t
        rows.append({"k": rng.choice(keys), "ts": t, "v": rng.randint(-50, 100)})
    return rows


SPECS = {
    "tumbling": rb.tumbling("2s"),
    "tumbling_offset": rb.tumbling("3s", offset="1s"),
    "hopping": rb.hopping("3s", every="1s"),
    "hopping_offset": rb.hopping("2500ms", every="1s", offset="300ms"),
    "sliding": rb.sliding("1500ms"),
    "session": rb.session("800ms"),
    "count": rb.count_window(3),
}
KINDS = list(SPECS)
SIMPLE_AGGS = {"n": ("count", None), "total": ("sum", "v"), "lo": ("min", "v"), "hi": ("max", "v")}


def run_windows(rows, spec, by=("k",), aggs=SIMPLE_AGGS, lateness="2s", batch_size=None, emit="final", **kw):
    p = (
        rb.Pipeline.read(pa.Table.from_pylist(rows, schema=SCHEMA), timestamp="ts", lateness=lateness, batch_size=batch_size, **kw)
        .window(spec, by=list(by), emit=emit)
        .agg(**agg_exprs(aggs))
    )
    return p, p.run()


def compare(result_table: pa.Table, rows, spec, by=("k",), aggs=SIMPLE_AGGS, float_cols=()):
    got = table_rows(result_table)
    exp = ref_output(rows, spec.to_plan(), list(by), aggs)
    if "count" in spec.to_plan():  # count windows: bounds not specified by plan.rs, compare the rest
        for r in got + exp:
            r.pop("window_start"), r.pop("window_end")
        key = lambda r: (r["k"], r.get("first_ts", 0), repr(r))  # noqa: E731
        got, exp = sorted(got, key=key), sorted(exp, key=key)
    else:
        got = sort_rows(got, list(by))
    assert_rows_equal(got, exp, float_cols)


# -- the reference itself -----------------------------------------------------------------------------


def test_reference_sanity():
    rows = [{"k": "a", "ts": t, "v": 1} for t in (0, 5, 20)]
    assert sorted((s, e) for _, s, e, _ in ref_windows(rows, {"sliding": {"size_ms": 10}}, ["k"])) == [
        (-10, 0),
        (-5, 5),
        (1, 11),
        (10, 20),
    ]
    assert sorted((s, e) for _, s, e, _ in ref_windows(rows, {"session": {"gap_ms": 5}}, ["k"])) == [(0, 5), (20, 20)]
    assert sorted((s, e) for _, s, e, _ in ref_windows(rows, {"hopping": {"size_ms": 10, "every_ms": 5}}, ["k"])) == [
        (-5, 5),
        (0, 10),
        (5, 15),
        (15, 25),
        (20, 30),
    ]


# -- each window kind on out-of-order data within lateness ------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_window_kind_out_of_order_within_lateness(kind):
    spec = SPECS[kind]
    rows = out_of_order(400, lateness=2000, seed=11)
    aggs = {**SIMPLE_AGGS, "first_ts": ("min", "ts")}
    p, res = run_windows(rows, spec, aggs=aggs, batch_size=16)
    compare(res.output, rows, spec, aggs=aggs)
    assert res.late.num_rows == 0
    assert sum(m["late_records"] for m in window_metrics(res.metrics)) == 0


def test_window_output_columns():
    rows = out_of_order(50, lateness=0, seed=3)
    p, res = run_windows(rows, rb.tumbling("1s"), aggs={"n": ("count", None), "total": ("sum", "v")})
    assert res.output.column_names == ["k", "window_start", "window_end", "n", "total"]
    assert p.schema is not None and p.schema.names == ["k", "window_start", "window_end", "n", "total"]
    assert res.output.schema == p.schema


def test_window_without_key():
    rows = out_of_order(200, lateness=1000, seed=5)
    spec = rb.hopping("2s", every="500ms")
    p, res = run_windows(rows, spec, by=(), lateness="1s")
    compare(res.output, rows, spec, by=())


def test_timestamp_typed_event_time():
    rows = out_of_order(200, lateness=1000, seed=8)
    tbl = pa.Table.from_pylist(rows, schema=SCHEMA)
    tbl = tbl.set_column(1, "ts", tbl.column("ts").cast(pa.timestamp("ms", tz="UTC")))
    spec = rb.tumbling("2s")
    out = rb.Pipeline.read(tbl, timestamp="ts", lateness="1s").window(spec, by="k").agg(n=rb.count(), total=rb.sum("v")).collect()
    compare(out, rows, spec, aggs={"n": ("count", None), "total": ("sum", "v")})


def test_session_gap_is_inclusive():
    rows = [{"k": "a", "ts": BASE + t, "v": 1} for t in (0, 100, 200, 301, 401)]  # gap 100: 0-200 | 301-401
    spec = rb.session(100)
    _, res = run_windows(rows, spec, aggs={"n": ("count", None)}, lateness=0)
    assert sorted((r["window_start"] - BASE, r["window_end"] - BASE, r["n"]) for r in table_rows(res.output)) == [
        (0, 200, 3),
        (301, 401, 2),
    ]


def test_sessions_merge_when_a_record_bridges_them():
    # two sessions 0-100 and 300-400 (gap 150), then a record at 200 within lateness joins them
    rows = [{"k": "a", "ts": BASE + t, "v": 1} for t in (0, 100, 300, 400, 200)]
    spec = rb.session(150)
    _, res = run_windows(rows, spec, aggs={"n": ("count", None)}, lateness="1s", batch_size=1)
    assert [(r["window_start"] - BASE, r["window_end"] - BASE, r["n"]) for r in table_rows(res.output)] == [(0, 400, 5)]


# Regression: a session closes only once the watermark is past last + gap + grace, since a record
# exactly at the watermark is on time and, the gap being inclusive, may still join it.


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_session_joins_an_on_time_record_at_the_watermark(batch_size):
    rows = [{"k": "a", "ts": BASE + t, "v": t} for t in (0, 150, 100)]  # watermark 100 when 100 arrives
    _, res = run_windows(rows, rb.session(100), aggs={"n": ("count", None)}, lateness=50, batch_size=batch_size)
    assert [(r["window_start"] - BASE, r["window_end"] - BASE, r["n"]) for r in table_rows(res.output)] == [(0, 150, 3)]
    assert res.late.num_rows == 0


@pytest.mark.parametrize("kind", ["sliding", "tumbling", "hopping"])
def test_on_time_record_at_the_watermark_is_counted(kind):
    spec = {"sliding": rb.sliding(100), "tumbling": rb.tumbling(100), "hopping": rb.hopping(100, every=50)}[kind]
    rows = [{"k": "a", "ts": BASE + t, "v": t} for t in (0, 150, 100)]
    aggs = {"n": ("count", None), "total": ("sum", "v")}
    _, res = run_windows(rows, spec, aggs=aggs, lateness=50, batch_size=1)
    compare(res.output, rows, spec, aggs=aggs)


def test_sliding_window_bounds_are_inclusive():
    rows = [{"k": "a", "ts": BASE + t, "v": t} for t in (0, 10, 20)]
    spec = rb.sliding(10)
    _, res = run_windows(rows, spec, aggs={"n": ("count", None), "total": ("sum", "v")}, lateness=0)
    got = sorted((r["window_start"] - BASE, r["window_end"] - BASE, r["n"], r["total"]) for r in table_rows(res.output))
    # [t-10, t] for each record; right windows [1, 11] and [11, 21] hold 10 and 20 only
    assert got == [(-10, 0, 1, 0), (0, 10, 2, 10), (1, 11, 1, 10), (10, 20, 2, 30), (11, 21, 1, 20)]


def test_count_window_follows_event_time_not_arrival():
    ts = [5, 1, 3, 2, 4, 6, 0]  # within lateness 10
    rows = [{"k": "a", "ts": BASE + t, "v": t} for t in ts]
    _, res = run_windows(
        rows, rb.count_window(2), aggs={"first_v": ("first", "v"), "last_v": ("last", "v"), "n": ("count", None)}, lateness=10
    )
    got = sorted((r["first_v"], r["last_v"], r["n"]) for r in table_rows(res.output))
    assert got == [(0, 1, 2), (2, 3, 2), (4, 5, 2)]  # 6 is left over in an incomplete window


# -- lateness: beyond it records are dropped, counted and returned ----------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_records_beyond_lateness_are_dropped_and_reported(kind):
    spec = SPECS[kind]
    rows = out_of_order(120, lateness=1000, seed=21, p_back=0.2)
    t_max = max(r["ts"] for r in rows)
    too_late = [
        {"k": "a", "ts": BASE - 3_600_000, "v": 7},  # an hour behind: every window of it is long closed
        {"k": "b", "ts": t_max - 60_000, "v": 8},
    ]
    tail = [{"k": "c", "ts": t_max + 10, "v": 1}]
    stream = rows + too_late + tail
    p, res = run_windows(stream, spec, lateness="1s", batch_size=1)
    compare(res.output, rows + tail, spec)  # as if the late records never came
    assert sum(m["late_records"] for m in window_metrics(res.metrics)) == len(too_late)
    late = res.late.sort_by("ts").to_pylist()
    assert late == sorted(too_late, key=lambda r: r["ts"])
    assert res.late.schema.names == ["k", "ts", "v"]
    # late() runs the pipeline again and returns the same records
    assert p.late().sort_by("ts").to_pylist() == late
    assert sum(m["late_records"] for m in window_metrics(p.metrics())) == len(too_late)


def test_grace_keeps_windows_open_after_the_watermark():
    s = BASE
    rows = [
        {"k": "a", "ts": s + 1_000, "v": 1},
        {"k": "a", "ts": s + 12_000, "v": 2},  # watermark 12s: [0, 10s) still open (grace 5s)
        {"k": "a", "ts": s + 9_000, "v": 4},  # behind the watermark but its window is open: counted
        {"k": "a", "ts": s + 20_000, "v": 8},  # watermark 20s >= 10s + 5s: [0, 10s) closes
        {"k": "a", "ts": s + 8_000, "v": 16},  # its window is closed: late
    ]
    spec = rb.tumbling("10s", grace="5s")
    p, res = run_windows(rows, spec, aggs={"n": ("count", None), "total": ("sum", "v")}, lateness=0, batch_size=1)
    got = sorted((r["window_start"] - s, r["n"], r["total"]) for r in table_rows(res.output))
    assert got == [(0, 2, 5), (10_000, 1, 2), (20_000, 1, 8)]
    assert res.late.to_pylist() == [rows[-1]]
    assert sum(m["late_records"] for m in window_metrics(res.metrics)) == 1


def test_no_grace_closes_at_the_watermark():
    s = BASE
    rows = [
        {"k": "a", "ts": s + 1_000, "v": 1},
        {"k": "a", "ts": s + 12_000, "v": 2},  # watermark 12s closes [0, 10s)
        {"k": "a", "ts": s + 9_000, "v": 4},  # late
    ]
    p, res = run_windows(rows, rb.tumbling("10s"), aggs={"n": ("count", None)}, lateness=0, batch_size=1)
    assert sorted((r["window_start"] - s, r["n"]) for r in table_rows(res.output)) == [(0, 1), (10_000, 1)]
    assert res.late.to_pylist() == [rows[-1]]


@pytest.mark.parametrize("batch_size", [1, 10, 1000])
def test_union_watermark_is_the_minimum_of_its_inputs(batch_size):
    """Two in-order sources an hour apart: the union's watermark follows the slower one, so the
    records of the earlier source are not late however the engine interleaves the inputs."""
    early = [{"k": "a", "ts": BASE + i * 10, "v": 2} for i in range(100)]
    late_src = [{"k": "a", "ts": BASE + 3_600_000 + i * 10, "v": 1} for i in range(100)]
    spec = rb.tumbling("1s")
    p = (
        rb.Pipeline.read(pa.Table.from_pylist(late_src, schema=SCHEMA), timestamp="ts", batch_size=batch_size)
        .union(rb.Pipeline.read(pa.Table.from_pylist(early, schema=SCHEMA), timestamp="ts", batch_size=batch_size))
        .window(spec, by="k")
        .agg(**agg_exprs(SIMPLE_AGGS))
    )
    res = p.run()
    compare(res.output, late_src + early, spec)
    assert res.late.num_rows == 0


# -- emit modes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_emit_final_once_per_window(kind):
    spec = SPECS[kind]
    rows = out_of_order(300, lateness=1500, seed=31)
    aggs = {**SIMPLE_AGGS, "first_ts": ("min", "ts")}
    _, res = run_windows(rows, spec, aggs=aggs, lateness="1500ms", batch_size=5)
    got = table_rows(res.output)
    ids = [(r["k"], r["window_start"], r["window_end"]) for r in got]
    assert len(ids) == len(set(ids)), "a window was emitted more than once"
    compare(res.output, rows, spec, aggs=aggs)


@pytest.mark.parametrize("kind", KINDS)
def test_emit_update_last_row_per_window_is_final(kind):
    spec = SPECS[kind]
    rows = out_of_order(300, lateness=1500, seed=41)
    aggs = {**SIMPLE_AGGS, "first_ts": ("min", "ts")}
    _, final = run_windows(rows, spec, aggs=aggs, lateness="1500ms", batch_size=5)
    _, upd = run_windows(rows, spec, aggs=aggs, lateness="1500ms", batch_size=5, emit="update")
    # A session is (k, window_start): its end grows with updates, and a session that merges into
    # one with an earlier start is retracted (a row with every aggregate null).
    wid = (lambda r: (r["k"], r["window_start"])) if kind == "session" else (lambda r: (r["k"], r["window_start"], r["window_end"]))
    final_rows = {wid(r): r for r in table_rows(final.output)}
    last: dict[tuple, dict] = {}
    retracted = 0
    for r in table_rows(upd.output):  # emission order
        if all(r[a] is None for a in aggs):
            assert wid(r) in last, f"retracts {wid(r)}, which had no row"
            del last[wid(r)]
            retracted += 1
        else:
            last[wid(r)] = r
    assert upd.output.num_rows >= len(final_rows)
    assert set(last) == set(final_rows)
    for w, row in final_rows.items():
        assert last[w] == row, f"window {w}: last update {last.get(w)} != final {row}"
    # out of order in batches of 5: some session got a row before a record merged it into an
    # earlier one (the old build left that row standing)
    assert (retracted > 0) == (kind == "session")
    if kind in ("tumbling", "hopping"):
        assert upd.output.num_rows > len(final_rows)  # small batches: windows were updated repeatedly


# -- aggregates ---------------------------------------------------------------------------------------

ALL_AGGS = {
    "n": ("count", None),
    "total": ("sum", "v"),
    "avg": ("mean", "v"),
    "lo": ("min", "v"),
    "hi": ("max", "v"),
    "first_v": ("first", "v"),
    "last_v": ("last", "v"),
    "sd": ("std", "v"),
    "variance": ("var", "v"),
    "distinct": ("count_distinct", "d"),
}


def _agg_rows(n, seed, in_order):
    rng = random.Random(seed)
    t = BASE
    rows = []
    for _ in range(n):
        t += rng.randint(1, 400)
        rows.append({"k": rng.choice("ab"), "ts": t, "v": rng.randint(-1000, 1000), "d": rng.choice("wxyz")})
    if not in_order:  # swap neighbours: out of order by at most 400 ms
        for i in range(0, n - 1, 2):
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return rows


@pytest.mark.parametrize("kind", KINDS)
def test_all_aggregates(kind):
    spec = SPECS[kind]
    rows = _agg_rows(300, seed=51, in_order=True)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64()), ("d", pa.string())])
    out = (
        rb.Pipeline.read(pa.Table.from_pylist(rows, schema=schema), timestamp="ts", batch_size=32)
        .window(spec, by="k")
        .agg(**agg_exprs(ALL_AGGS), first_ts=rb.min("ts"))
        .collect()
    )
    types = {f.name: f.type for f in out.schema}
    assert types["avg"] == types["sd"] == types["variance"] == pa.float64()
    assert pa.types.is_integer(types["n"]) and pa.types.is_integer(types["distinct"])
    assert types["total"] == types["lo"] == types["hi"] == types["first_v"] == types["last_v"] == pa.int64()
    compare(out, rows, spec, aggs={**ALL_AGGS, "first_ts": ("min", "ts")}, float_cols=("avg", "sd", "variance"))


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session", "count"])
def test_first_last_follow_event_time(kind):
    """On out-of-order input, first/last are the values of the earliest/latest record in event time."""
    spec = SPECS[kind]
    rows = _agg_rows(200, seed=52, in_order=False)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64()), ("d", pa.string())])
    aggs = {"first_v": ("first", "v"), "last_v": ("last", "v"), "first_ts": ("min", "ts")}
    out = (
        rb.Pipeline.read(pa.Table.from_pylist(rows, schema=schema), timestamp="ts", lateness="1s", batch_size=3)
        .window(spec, by="k")
        .agg(**agg_exprs(aggs))
        .collect()
    )
    compare(out, rows, spec, aggs=aggs)


def test_std_var_of_a_single_record_is_null():
    rows = [{"k": "a", "ts": BASE, "v": 5}, {"k": "a", "ts": BASE + 10_000, "v": 6}, {"k": "a", "ts": BASE + 10_001, "v": 8}]
    _, res = run_windows(rows, rb.tumbling("10s"), aggs={"sd": ("std", "v"), "variance": ("var", "v")}, lateness=0)
    got = sorted(table_rows(res.output), key=lambda r: r["window_start"])
    assert [(r["sd"], r["variance"]) for r in got] == [(None, None), (pytest.approx(math.sqrt(2)), pytest.approx(2.0))]


def test_ratio_of_aggregates_vwap():
    rng = random.Random(61)
    rows = []
    t = BASE
    for _ in range(300):
        t += rng.randint(0, 300)
        rows.append({"k": rng.choice("ab"), "ts": t, "price": rng.randint(90, 110), "qty": rng.randint(1, 9)})
    tbl = pa.Table.from_pylist(rows)
    spec = rb.tumbling("5s")
    out = (
        rb.Pipeline.read(tbl, timestamp="ts")
        .with_columns(pv=rb.col("price") * rb.col("qty"))
        .window(spec, by="k")
        .agg(vwap=rb.sum("pv") / rb.sum("qty"), n=rb.count(), notional_per_trade=rb.sum(rb.col("price") * rb.col("qty")) / rb.count())
        .collect()
    )
    assert out.schema.field("vwap").type == pa.float64()
    got = sort_rows(table_rows(out), ["k"])
    exp = []
    for key, s, e, members in ref_windows(rows, spec.to_plan(), ["k"]):
        pv = sum(m["price"] * m["qty"] for m in members)
        exp.append(
            {
                "k": key[0],
                "window_start": s,
                "window_end": e,
                "vwap": pv / sum(m["qty"] for m in members),
                "n": len(members),
                "notional_per_trade": pv / len(members),
            }
        )
    assert_rows_equal(got, sort_rows(exp, ["k"]), float_cols=("vwap", "notional_per_trade"))


def test_aggregates_skip_nulls():
    rows = [
        {"k": "a", "ts": BASE + 0, "w": None},
        {"k": "a", "ts": BASE + 1, "w": 4},
        {"k": "a", "ts": BASE + 2, "w": 10},
        {"k": "a", "ts": BASE + 3, "w": 4},
        {"k": "a", "ts": BASE + 4, "w": None},
        {"k": "b", "ts": BASE + 5, "w": None},  # only nulls
    ]
    tbl = pa.Table.from_pylist(rows, schema=pa.schema([("k", pa.string()), ("ts", pa.int64()), ("w", pa.int64())]))
    out = (
        rb.Pipeline.read(tbl, timestamp="ts")
        .window(rb.tumbling("1s"), by="k")
        .agg(
            n=rb.count(),
            n_w=rb.count("w"),
            total=rb.sum("w"),
            avg=rb.mean("w"),
            lo=rb.min("w"),
            hi=rb.max("w"),
            f=rb.first("w"),
            l=rb.last("w"),
            cd=rb.count_distinct("w"),
            sd=rb.std("w"),
        )
        .collect()
        .sort_by("k")
    )
    a, b = out.to_pylist()
    assert (a["n"], a["n_w"], a["total"], a["avg"], a["lo"], a["hi"], a["f"], a["l"], a["cd"]) == (5, 3, 18, 6.0, 4, 10, 4, 4, 2)
    assert a["sd"] == pytest.approx(statistics.stdev([4, 10, 4]))
    assert (b["n"], b["n_w"], b["cd"]) == (1, 0, 0)
    assert (b["total"], b["avg"], b["lo"], b["hi"], b["f"], b["l"], b["sd"]) == (None,) * 7


# -- property test: random streams, every window kind --------------------------------------------------


@st.composite
def streams(draw):
    lateness = draw(st.integers(0, 40))
    steps = draw(
        st.lists(
            st.tuples(st.sampled_from("xyz"), st.booleans(), st.integers(0, 60), st.integers(-20, 20)),
            min_size=1,
            max_size=60,
        )
    )
    t_max = 1_000_000
    rows = []
    for key, back, delta, v in steps:
        if back:
            t = t_max - min(delta, lateness)
        else:
            t = t_max + delta
            t_max = t
        rows.append({"k": key, "ts": t, "v": v})
    batch_size = draw(st.sampled_from([1, 2, 5, 1000]))
    return lateness, rows, batch_size


def _spec_strategy(kind):
    if kind == "tumbling":
        return st.builds(lambda s, o: rb.tumbling(s, offset=o % s), st.integers(1, 60), st.integers(0, 59))
    if kind == "hopping":
        return st.integers(1, 60).flatmap(
            lambda size: st.builds(lambda e, o: rb.hopping(size, every=e, offset=o % e), st.integers(1, size), st.integers(0, 59))
        )
    if kind == "sliding":
        return st.builds(rb.sliding, st.integers(1, 60))
    if kind == "session":
        return st.builds(rb.session, st.integers(1, 40))
    return st.builds(rb.count_window, st.integers(1, 5))


@pytest.mark.parametrize(
    "kind",
    [
        "tumbling",
        "hopping",
        "sliding",
        "session",
        "count",
    ],
)
def test_property_random_streams(kind):
    # an explicit example: a record exactly on the watermark (0, 150, 100 with lateness 50)
    edge_rows = [{"k": "x", "ts": 1_000_000 + t, "v": t} for t in (0, 150, 100)]
    edge_spec = {
        "tumbling": rb.tumbling(100),
        "hopping": rb.hopping(100, every=50),
        "sliding": rb.sliding(100),
        "session": rb.session(100),
        "count": rb.count_window(2),
    }[kind]

    @settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=streams(), spec=_spec_strategy(kind))
    @example(data=(50, edge_rows, 1), spec=edge_spec)
    def prop(data, spec):
        lateness, rows, batch_size = data
        aggs = {**SIMPLE_AGGS, "first_ts": ("min", "ts")}
        _, res = run_windows(rows, spec, aggs=aggs, lateness=lateness, batch_size=batch_size)
        compare(res.output, rows, spec, aggs=aggs)
        assert sum(m["late_records"] for m in window_metrics(res.metrics)) == 0

    prop()


def test_property_sessions_records_strictly_after_the_watermark():
    """Sessions on random streams whose late-arriving records stay strictly ahead of the watermark
    (so the close-at-the-watermark bug above cannot show)."""

    @settings(max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=streams(), spec=_spec_strategy("session"))
    def prop(data, spec):
        lateness, rows, batch_size = data
        t_max = -1
        for r in rows:  # move records that sit exactly on the watermark one ms later
            if t_max >= 0 and r["ts"] == t_max - lateness and lateness > 0:
                r["ts"] += 1
            t_max = max(t_max, r["ts"])
        aggs = {**SIMPLE_AGGS, "first_ts": ("min", "ts")}
        _, res = run_windows(rows, spec, aggs=aggs, lateness=lateness, batch_size=batch_size)
        compare(res.output, rows, spec, aggs=aggs)

    prop()


# -- invariance: batch sizes, topics with 1 and 4 partitions --------------------------------------------


def _produce(topic: rb.Topic, rows: list[dict]) -> None:
    for r in rows:
        topic.produce({"k": r["k"], "v": r["v"]}, key=r["k"], timestamp=r["ts"])


@pytest.mark.parametrize("kind", KINDS)
def test_invariance_batch_size_and_partitions(kind, tmp_path: Path):
    spec = SPECS[kind]
    rows = out_of_order(300, lateness=1500, seed=71, keys=("a", "b", "c", "d", "e"))
    aggs = {**SIMPLE_AGGS, "first_ts": ("min", "ts")}
    results = {}
    for bs in (1, 7, 1000):
        _, res = run_windows(rows, spec, aggs=aggs, lateness="1500ms", batch_size=bs)
        results[f"table/{bs}"] = sort_rows(table_rows(res.output), ["k"])
    with rb.Log(tmp_path / "log", fsync="never", cleanup_interval=None) as log:
        for parts in (1, 4):
            topic = log.topic(f"events{parts}", partitions=parts)
            _produce(topic, rows)
            if parts == 4:
                assert len({topic.partition_for(k) for k in "abcde"}) > 1
            schema = pa.schema([("k", pa.string()), ("v", pa.int64())])
            for bs in (1, 7, 1000):
                out = (
                    rb.Pipeline.read(topic, lateness="1500ms", schema=schema, batch_size=bs, idle_timeout="1h")
                    .window(spec, by="k")
                    .agg(n=rb.count(), total=rb.sum("v"), lo=rb.min("v"), hi=rb.max("v"), first_ts=rb.min(rb.col("timestamp").cast("int64")))
                    .collect()
                )
                results[f"topic{parts}/{bs}"] = sort_rows(table_rows(out), ["k"])
    reference = results["table/1000"]
    compare(pa.Table.from_pylist(reference), rows, spec, aggs=aggs)
    for name, got in results.items():
        assert got == reference, f"{name} differs from table/1000"


# -- spec validation ----------------------------------------------------------------------------------


def test_window_spec_plans():
    assert rb.tumbling("1m", grace="5s", offset="10s").to_plan() == {
        "tumbling": {"size_ms": 60_000, "offset_ms": 10_000, "grace_ms": 5_000}
    }
    assert rb.hopping("10s", every="5s").to_plan() == {"hopping": {"size_ms": 10_000, "every_ms": 5_000, "offset_ms": 0, "grace_ms": 0}}
    assert rb.sliding(1500, grace="1s").to_plan() == {"sliding": {"size_ms": 1500, "grace_ms": 1000}}
    assert rb.session("30s").to_plan() == {"session": {"gap_ms": 30_000, "grace_ms": 0}}
    assert rb.count_window(100).to_plan() == {"count": {"n": 100}}


@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: rb.tumbling(0), "size"),
        (lambda: rb.tumbling(-5), "size"),
        (lambda: rb.hopping("10s", every=0), "every"),
        (lambda: rb.hopping(0, every="1s"), "size"),
        (lambda: rb.sliding("0s"), "size"),
        (lambda: rb.session(0), "gap"),
        (lambda: rb.count_window(0), "n"),
    ],
)
def test_non_positive_window_sizes_raise_plan_error(make, field):
    with pytest.raises(PlanError) as ei:
        make()
    assert "window" in str(ei.value) and field in str(ei.value)


def test_engine_also_rejects_non_positive_sizes():
    """The Rust validation, not only the facade's, rejects a zero-size window."""
    tbl = pa.Table.from_pylist([{"k": "a", "ts": 1, "v": 1}], schema=SCHEMA)
    src = rb.Pipeline.read(tbl, timestamp="ts")
    for window, field in (({"tumbling": {"size_ms": 0}}, "size"), ({"hopping": {"size_ms": 10, "every_ms": -1}}, "every"), ({"count": {"n": 0}}, "n")):
        plan = {"op": "window", "input": src.to_plan(), "window": window, "by": ["k"], "aggs": [["n", {"agg": {"func": "count"}}]]}
        with pytest.raises(PlanError) as ei:
            rb.Pipeline(plan, src._sources, [])
        assert "window" in str(ei.value) and field in str(ei.value)


def test_negative_lateness_and_grace_raise_value_error():
    tbl = pa.Table.from_pylist([{"k": "a", "ts": 1, "v": 1}], schema=SCHEMA)
    with pytest.raises(ValueError, match="lateness"):
        rb.Pipeline.read(tbl, timestamp="ts", lateness=-1)
    with pytest.raises(ValueError, match="grace"):
        rb.tumbling("1s", grace=-5)
    with pytest.raises(ValueError, match="emit"):
        rb.Pipeline.read(tbl, timestamp="ts").window(rb.tumbling("1s"), emit="sometimes")


def test_hopping_record_late_for_some_of_its_windows_is_counted_and_returned():
    # ts=8000 arrives after the watermark reached 12000: [0, 10000) is closed, [5000, 15000) open.
    t = pa.table({"k": ["a"] * 3, "ts": [0, 12_000, 8_000]})
    res = (
        rb.Pipeline.read(t, timestamp="ts", lateness="0s", batch_size=1)
        .window(rb.hopping("10s", every="5s"), by="k")
        .agg(n=rb.count())
        .run()
    )
    counts = {r["window_start"]: r["n"] for r in res.output.to_pylist()}
    assert counts[0] == 1 and counts[5_000] == 2  # it still counts in the window that was open
    assert res.late.column("ts").to_pylist() == [8_000]
    assert sum(m["late_records"] for m in res.metrics) == 1


def test_a_table_of_update_mode_sessions_drops_the_retracted_ones():
    """``to_table("k", "window_start")`` over ``emit="update"`` sessions: a session that merged
    into an earlier one is deleted by its retraction, so the table holds the sessions a
    final-mode run gives (and nothing else)."""
    rows = out_of_order(300, lateness=1500, seed=41)
    spec = rb.session("800ms")
    t = pa.Table.from_pylist(rows)
    p = rb.Pipeline.read(t, timestamp="ts", lateness="1500ms", batch_size=5).window(spec, by="k", emit="update")
    table = p.agg(n=rb.count(), total=rb.sum("v")).named("s").to_table("k", "window_start")
    final = (
        rb.Pipeline.read(t, timestamp="ts", lateness="1500ms", batch_size=5)
        .window(spec, by="k")
        .agg(n=rb.count(), total=rb.sum("v"))
        .collect()
    )
    key = ["k", "window_start"]
    assert table.to_arrow().sort_by([(k, "ascending") for k in key]).to_pylist() == final.sort_by(
        [(k, "ascending") for k in key]
    ).to_pylist()
    assert p.agg(n=rb.count(), total=rb.sum("v")).collect().num_rows > final.num_rows + 1
    # without a count, a session whose aggregates are all null would read as a retraction
    with pytest.raises(ValueError, match="rb.count"):
        p.agg(total=rb.sum("v")).to_table("k", "window_start")
    assert p.agg(total=rb.sum("v")).to_table("k").key == ["k"]  # latest per key: nothing retracted
