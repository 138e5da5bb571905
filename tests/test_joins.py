"""Temporal joins (join_asof, join_interval, join_table) against independent references.

References: ``pandas.merge_asof`` for as-of joins, brute-force Python loops for interval joins,
windowed as-of joins and point-in-time table look-ups. Arrival order is shuffled within
``lateness`` and batch sizes vary: the output must not depend on either.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import riverbed as rb

GRID = 10  # ms: times on a coarse grid, so equal times and distances == tolerance/bounds are common


# -- helpers ----------------------------------------------------------------------------------


def shuffled_within(rows: list[dict], lateness_ms: int, seed: int, time_col: str = "ts") -> list[dict]:
    """Arrival order shuffled, but no record arrives more than `lateness_ms` after a later one
    (only neighbours closer than `lateness_ms` in time are swapped)."""
    rng = random.Random(seed)
    rows = list(rows)
    for _ in range(len(rows) * 3):
        i = rng.randrange(len(rows) - 1)
        if abs(rows[i + 1][time_col] - rows[i][time_col]) < lateness_ms:
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return rows


def records(df: pd.DataFrame) -> list[dict]:
    """DataFrame rows as dicts with pandas' NaN turned into None (Arrow null)."""
    out = []
    for r in df.to_dict("records"):
        out.append({c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in r.items()})
    return out


def arrow(rows: list[dict], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def norm(v: object) -> object:
    """One cell, comparable across pandas and Arrow: NaN/None -> None, numbers -> float."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    return v


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, "" if v is None else v) for v in row)


def row_set(obj: pa.Table | pd.DataFrame | list[dict], cols: list[str]) -> list[tuple]:
    """The rows (columns `cols`, normalised), sorted: order-insensitive comparison."""
    if isinstance(obj, pa.Table):
        obj = obj.to_pylist()
    elif isinstance(obj, pd.DataFrame):
        obj = obj.to_dict("records")
    return sorted((tuple(norm(r[c]) for c in cols) for r in obj), key=_sort_key)


def assert_same_rows(got: list[tuple], want: list[tuple], cols: list[str], what: str) -> None:
    assert len(got) == len(want), f"{what}: {len(got)} rows, expected {len(want)}"
    if got != want:
        g, w = Counter(got), Counter(want)
        extra, missing = list((g - w).elements())[:5], list((w - g).elements())[:5]
        raise AssertionError(
            f"{what}: rows differ (columns {cols})\n  unexpected: {extra}\n  missing:    {missing}"
        )


def assert_no_nan(tbl: pa.Table, cols: list[str]) -> None:
    """Right values that were null (or unmatched) must come out as null, never NaN."""
    for c in cols:
        col = tbl.column(c)
        if pa.types.is_floating(col.type):
            n = pc.sum(pc.is_nan(col)).as_py() or 0
            assert n == 0, f"column {c!r} has {n} NaN values; missing right values must be null"


def late_records(res: rb.RunResult) -> int:
    return sum(m.get("late_records", 0) for m in res.metrics)


# -- data -------------------------------------------------------------------------------------

LEFT_SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("x", pa.float64())])
RIGHT_SCHEMA = pa.schema(
    [("k", pa.string()), ("ts", pa.int64()), ("rt", pa.int64()), ("y", pa.float64()), ("z", pa.int64())]
)


def make_asof_data(seed: int, n_left: int = 300, n_right: int = 250) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Left and right events on a shared time grid (so right times often equal left times).

    Left keys k0..k4 plus "lonly" (absent on the right); right keys k0..k4 plus "ronly". Right
    times are unique within a key (tie order at equal times would depend on arrival). ``rt`` is a
    copy of the right time (to tell a match from a null), ``y`` is nullable, ``z`` never null.
    """
    rng = np.random.default_rng(seed)
    span = n_left * GRID  # dense: right times often equal left times, ties and tolerance edges occur
    lkeys = [f"k{i}" for i in range(5)] + ["lonly"]
    left = pd.DataFrame(
        {
            "k": rng.choice(lkeys, n_left),
            "ts": rng.integers(0, span // GRID, n_left) * GRID,
            "x": rng.normal(0, 1, n_left).round(4),
        }
    )
    rkeys = [f"k{i}" for i in range(5)] + ["ronly"]
    per_key = rng.multinomial(n_right, [1 / len(rkeys)] * len(rkeys))
    parts = []
    for k, m in zip(rkeys, per_key):
        ts = rng.choice(np.arange(0, span, GRID), size=m, replace=False)  # unique within the key
        parts.append(pd.DataFrame({"k": k, "ts": ts}))
    right = pd.concat(parts, ignore_index=True)
    right["rt"] = right["ts"]
    right["y"] = rng.normal(100, 10, len(right)).round(3)
    right.loc[rng.random(len(right)) < 0.15, "y"] = np.nan
    right["z"] = rng.integers(0, 1000, len(right))
    left = left.sort_values("ts", kind="stable").reset_index(drop=True)
    right = right.sort_values("ts", kind="stable").reset_index(drop=True)
    left["ts"] = left["ts"].astype("int64")
    right["ts"] = right["ts"].astype("int64")
    right["rt"] = right["rt"].astype("int64")
    right["z"] = right["z"].astype("int64")
    return left, right


def pandas_asof(
    left: pd.DataFrame, right: pd.DataFrame, direction: str, tolerance: int | None
) -> pd.DataFrame:
    return pd.merge_asof(
        left, right, on="ts", by="k", direction=direction, tolerance=tolerance, allow_exact_matches=True
    )


ASOF_COLS = ["k", "ts", "x", "rt", "y", "z"]


def rb_asof(
    left_rows: list[dict],
    right_rows: list[dict],
    direction: str,
    tolerance: object,
    lateness: str = "0s",
    batch_size: int | None = None,
) -> tuple[pa.Table, rb.RunResult]:
    lp = rb.Pipeline.read(
        arrow(left_rows, LEFT_SCHEMA), timestamp="ts", lateness=lateness, batch_size=batch_size
    )
    rp = rb.Pipeline.read(
        arrow(right_rows, RIGHT_SCHEMA), timestamp="ts", lateness=lateness, batch_size=batch_size
    )
    res = lp.join_asof(rp, on="ts", by="k", direction=direction, tolerance=tolerance).run()
    return res.output, res


# -- 1. join_asof vs pandas.merge_asof ------------------------------------------------------------


@pytest.mark.parametrize("direction", ["backward", "forward", "nearest"])
@pytest.mark.parametrize("tolerance", [None, 0, 3 * GRID])
def test_join_asof_matches_pandas_merge_asof(direction, tolerance):
    left, right = make_asof_data(seed=11)
    want = row_set(pandas_asof(left, right, direction, tolerance), ASOF_COLS)
    got, _ = rb_asof(records(left), records(right), direction, tolerance)
    assert got.column_names == ASOF_COLS, f"output columns {got.column_names}"
    assert_no_nan(got, ["y"])
    assert_same_rows(row_set(got, ASOF_COLS), want, ASOF_COLS, f"join_asof {direction} tolerance={tolerance}")
    # sanity of the fixture: the interesting cases occur
    matched = [r for r in got.to_pylist() if r["rt"] is not None]
    assert any(r["rt"] == r["ts"] for r in matched), "no exact-time match exercised"
    assert any(r["k"] == "lonly" for r in got.to_pylist())
    if tolerance is None:
        assert any(r["rt"] is not None and r["y"] is None for r in matched), "no matched null right value"
    if tolerance == 0:
        assert matched and all(r["rt"] == r["ts"] for r in matched), "tolerance=0 allows exact matches only"


def test_join_asof_tolerance_as_duration_string_equals_int_ms():
    left, right = make_asof_data(seed=5, n_left=120, n_right=100)
    a, _ = rb_asof(records(left), records(right), "nearest", "30ms")
    b, _ = rb_asof(records(left), records(right), "nearest", 30)
    assert row_set(a, ASOF_COLS) == row_set(b, ASOF_COLS)
    want = row_set(pandas_asof(left, right, "nearest", 30), ASOF_COLS)
    assert_same_rows(row_set(a, ASOF_COLS), want, ASOF_COLS, "tolerance='30ms'")


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
@pytest.mark.parametrize("direction", ["backward", "forward", "nearest"])
def test_join_asof_under_shuffled_arrival_and_batch_sizes(direction, batch_size):
    left, right = make_asof_data(seed=23, n_left=200, n_right=180)
    tolerance = 5 * GRID if direction == "nearest" else None
    want = row_set(pandas_asof(left, right, direction, tolerance), ASOF_COLS)
    lateness_ms = 15 * GRID
    for seed in (1, 2):
        lrows = shuffled_within(records(left), lateness_ms, seed)
        rrows = shuffled_within(records(right), lateness_ms, seed + 100)
        assert [r["ts"] for r in lrows] != sorted(r["ts"] for r in lrows), "left was not shuffled"
        got, res = rb_asof(
            lrows, rrows, direction, tolerance, lateness=f"{lateness_ms}ms", batch_size=batch_size
        )
        assert late_records(res) == 0, f"records within lateness counted late: {res.metrics}"
        assert got.num_rows == len(left), "one output row per left row"
        assert_no_nan(got, ["y"])
        assert_same_rows(
            row_set(got, ASOF_COLS),
            want,
            ASOF_COLS,
            f"{direction} shuffled seed={seed} batch_size={batch_size}",
        )
        if direction == "backward":  # forward/nearest emit a row once resolved, not in time order
            ts = got.column("ts").to_pylist()
            assert ts == sorted(ts), "join_asof backward output is not in event-time order"


@pytest.mark.parametrize("direction", ["forward", "nearest"])
def test_join_asof_rows_held_for_a_forward_match_are_not_late_downstream(direction):
    """forward/nearest rows wait for a right row at or after them, so they may come out after
    later ones; the join's output watermark must account for that, so a window downstream still
    counts every left row."""
    left, right = make_asof_data(seed=23, n_left=200, n_right=180)
    for bs in (1, 1000):
        lp = rb.Pipeline.read(arrow(records(left), LEFT_SCHEMA), timestamp="ts", batch_size=bs)
        rp = rb.Pipeline.read(arrow(records(right), RIGHT_SCHEMA), timestamp="ts", batch_size=bs)
        joined = lp.join_asof(rp, on="ts", by="k", direction=direction)
        res = joined.window(rb.tumbling("1s"), by="k").agg(n=rb.count()).run()
        assert res.late.num_rows == 0 and late_records(res) == 0, res.metrics
        got: Counter = Counter()
        for r in res.output.to_pylist():
            got[(r["k"], r["window_start"])] += r["n"]
        want = Counter((k, t // 1000 * 1000) for k, t in zip(left["k"], left["ts"]))
        assert got == want, f"batch_size={bs}: window counts after join_asof {direction} differ"


# -- 2. right_on, right_by, suffix, column order ----------------------------------------------------


def brute_window_asof(left: list[dict], events: list[dict], width: int, tolerance: int | None) -> list[dict]:
    """Tumbling windows of `events` per key (count, sum of v), then for each left row the window
    of its key with the latest window_end <= the left time (and within tolerance)."""
    windows: dict[tuple, dict] = {}
    for e in events:
        start = e["ts"] // width * width
        w = windows.setdefault(
            (e["k"], start),
            {"k": e["k"], "window_start": start, "window_end": start + width, "n": 0, "s": 0.0},
        )
        w["n"] += 1
        w["s"] += e["v"]
    out = []
    for r in left:
        cands = [
            w
            for w in windows.values()
            if w["k"] == r["k"]
            and w["window_end"] <= r["ts"]
            and (tolerance is None or r["ts"] - w["window_end"] <= tolerance)
        ]
        best = max(cands, key=lambda w: w["window_end"], default=None)
        row = dict(r)
        for c in ("window_start", "window_end", "n", "s"):
            row[c] = None if best is None else best[c]
        out.append(row)
    return out


@pytest.mark.parametrize("tolerance", [None, 200])
def test_join_asof_right_on_window_end_matches_brute_force(tolerance):
    rng = np.random.default_rng(7)
    width = 100
    events = [
        {"k": f"k{rng.integers(0, 3)}", "ts": int(t), "v": float(rng.integers(1, 10))}
        for t in np.sort(rng.integers(0, 5000, 400))
    ]
    # left times on multiples of 50: many equal a window_end exactly
    left = [
        {"k": f"k{rng.integers(0, 4)}", "ts": int(t) * 50, "q": i}
        for i, t in enumerate(np.sort(rng.integers(0, 110, 150)))
    ]
    ev_schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])
    feats = (
        rb.Pipeline.read(
            arrow(shuffled_within(events, 80, 3), ev_schema), timestamp="ts", lateness="80ms", batch_size=16
        )
        .window(rb.tumbling(f"{width}ms"), by="k")
        .agg(n=rb.count(), s=rb.sum("v"))
    )
    lp = rb.Pipeline.read(pa.Table.from_pylist(left), timestamp="ts", batch_size=9)
    got = lp.join_asof(feats, by="k", right_on="window_end", tolerance=tolerance).collect()
    cols = ["k", "ts", "q", "window_start", "window_end", "n", "s"]
    assert got.column_names == cols, (
        f"columns {got.column_names}: left columns, then right ones minus the key"
    )
    want = brute_window_asof(left, events, width, tolerance)
    assert_same_rows(
        row_set(got, cols), row_set(want, cols), cols, f"windowed right_on tolerance={tolerance}"
    )
    for r in got.to_pylist():  # the point of right_on: never a window that ends after the left time
        assert r["window_end"] is None or r["window_end"] <= r["ts"], r
    assert any(r["window_end"] == r["ts"] for r in got.to_pylist()), "no window_end == left time exercised"


def test_join_asof_right_by_suffix_and_column_order():
    left, right = make_asof_data(seed=31, n_left=150, n_right=120)
    lrows = [{"ts": r["ts"], "k": r["k"], "x": r["x"]} for r in records(left)]
    # right: a clashing column `x`, the key under another name in the middle, its own time `rts`
    rrows = [{"x": r["y"], "sym": r["k"], "rts": r["ts"], "w": r["z"]} for r in records(right)]
    lp = rb.Pipeline.read(
        pa.Table.from_pylist(
            lrows, schema=pa.schema([("ts", pa.int64()), ("k", pa.string()), ("x", pa.float64())])
        ),
        timestamp="ts",
    )
    rp = rb.Pipeline.read(
        pa.Table.from_pylist(
            rrows,
            schema=pa.schema(
                [("x", pa.float64()), ("sym", pa.string()), ("rts", pa.int64()), ("w", pa.int64())]
            ),
        ),
        timestamp="rts",
    )
    a = lp.join_asof(rp, by="k", right_by="sym", suffix="_r", direction="nearest", tolerance=40)
    b = lp.join_asof(
        rp, on="ts", right_on="rts", by="k", right_by="sym", suffix="_r", direction="nearest", tolerance=40
    )
    cols = ["ts", "k", "x", "x_r", "rts", "w"]
    for p in (a, b):
        assert p.schema.names == cols, f"schema {p.schema.names}, expected {cols}"
    got_a, got_b = a.collect(), b.collect()
    assert got_a.column_names == cols
    ref = pd.merge_asof(
        pd.DataFrame(lrows),
        pd.DataFrame(rrows).sort_values("rts"),
        left_on="ts",
        right_on="rts",
        left_by="k",
        right_by="sym",
        direction="nearest",
        tolerance=40,
        suffixes=("", "_r"),
    )
    want = row_set(ref, cols)
    assert_same_rows(row_set(got_a, cols), want, cols, "right_by/suffix, on=None")
    assert_same_rows(row_set(got_b, cols), want, cols, "right_by/suffix, on='ts', right_on='rts'")


def test_join_asof_without_by_and_shared_time_name_drops_right_time():
    left = pa.table({"ts": pa.array([0, 10, 20, 30], pa.int64()), "a": [1, 2, 3, 4]})
    right = pa.table({"ts": pa.array([10, 25], pa.int64()), "b": ["p", "q"]})
    got = (
        rb.Pipeline.read(left, timestamp="ts")
        .join_asof(rb.Pipeline.read(right, timestamp="ts"), on="ts")
        .collect()
    )
    assert got.column_names == ["ts", "a", "b"]
    assert got.column("b").to_pylist() == [None, "p", "p", "q"]


# -- 3. join_asof over log topics with several partitions --------------------------------------------


def test_join_asof_from_partitioned_topics_matches_pandas(log):
    left, right = make_asof_data(seed=41, n_left=200, n_right=160)
    lt = log.topic("trades", partitions=3)
    rt = log.topic("quotes", partitions=4)
    lt.produce_batch(arrow(records(left), LEFT_SCHEMA), key="k", timestamp="ts")
    rt.produce_batch(arrow(records(right), RIGHT_SCHEMA), key="k", timestamp="ts")
    parts = set(rt.read().column("partition").to_pylist())
    assert len(parts) > 1, "quotes should span several partitions"
    for direction, tol in [("backward", None), ("forward", 50), ("nearest", None)]:
        lp = rb.Pipeline.read(lt, timestamp="ts", batch_size=13).select("k", "ts", "x")
        rp = rb.Pipeline.read(rt, timestamp="ts", batch_size=11).select("k", "ts", "rt", "y", "z")
        got = lp.join_asof(rp, on="ts", by="k", direction=direction, tolerance=tol).collect()
        want = row_set(pandas_asof(left, right, direction, tol), ASOF_COLS)
        assert_no_nan(got, ["y"])
        assert_same_rows(row_set(got, ASOF_COLS), want, ASOF_COLS, f"topics {direction} tolerance={tol}")


# -- 4. join_interval vs nested loops -------------------------------------------------------------


def make_interval_data(seed: int) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)
    left = [
        {
            "k": f"k{rng.integers(0, 4)}",
            "g": int(rng.integers(0, 2)),
            "ts": int(rng.integers(0, 300)) * GRID,
            "a": i,
        }
        for i in range(150)
    ]
    left += [{"k": "lonly", "g": 0, "ts": 500, "a": 999}]
    right = [
        {
            "k": f"k{rng.integers(0, 4)}",
            "g": int(rng.integers(0, 2)),
            "ts": int(rng.integers(0, 300)) * GRID,
            "b": None if rng.random() < 0.1 else float(rng.integers(0, 50)),
        }
        for _ in range(200)
    ]
    left.sort(key=lambda r: r["ts"])
    right.sort(key=lambda r: r["ts"])
    return left, right


def brute_interval(left, right, keys, lower, upper, how):
    out = []
    for lr in left:
        hits = [
            rr
            for rr in right
            if all(rr[c] == lr[c] for c in keys) and lr["ts"] + lower <= rr["ts"] <= lr["ts"] + upper
        ]
        for rr in hits:
            out.append({**lr, "ts_right": rr["ts"], "b": rr["b"]})
        if how == "left" and not hits:
            out.append({**lr, "ts_right": None, "b": None})
    return out


INT_L = pa.schema([("k", pa.string()), ("g", pa.int64()), ("ts", pa.int64()), ("a", pa.int64())])
INT_R = pa.schema([("k", pa.string()), ("g", pa.int64()), ("ts", pa.int64()), ("b", pa.float64())])


@pytest.mark.parametrize("how", ["inner", "left"])
@pytest.mark.parametrize("keys", [["k"], ["k", "g"]])
@pytest.mark.parametrize("bounds", [(-3 * GRID, 5 * GRID), (-6 * GRID, -2 * GRID), (GRID, 4 * GRID)])
def test_join_interval_matches_nested_loop(how, keys, bounds):
    left, right = make_interval_data(seed=13)
    lower, upper = bounds
    want_rows = brute_interval(left, right, keys, lower, upper, how)
    cols = ["k", "g", "ts", "a", "ts_right", "b"]  # the right g with on=["k"]: see the next test
    want = row_set(want_rows, cols)
    # the fixture must hit both bounds exactly
    assert any(r["ts_right"] == r["ts"] + lower for r in want_rows)
    assert any(r["ts_right"] == r["ts"] + upper for r in want_rows)
    lateness = 8 * GRID
    for seed, bs in [(None, None), (1, 1), (2, 7), (3, 1000)]:
        lrows = left if seed is None else shuffled_within(left, lateness, seed)
        rrows = right if seed is None else shuffled_within(right, lateness, seed + 50)
        lp = rb.Pipeline.read(arrow(lrows, INT_L), timestamp="ts", lateness=f"{lateness}ms", batch_size=bs)
        rp = rb.Pipeline.read(arrow(rrows, INT_R), timestamp="ts", lateness=f"{lateness}ms", batch_size=bs)
        if keys == ["k"]:
            rp = rp.rename({"g": "g2"})  # g is not a key here: keep it apart from the left g
        res = lp.join_interval(rp, on=keys, lower=f"{lower}ms", upper=f"{upper}ms", how=how).run()
        got = res.output
        assert late_records(res) == 0, res.metrics
        if keys == ["k"]:
            assert got.column_names == ["k", "g", "ts", "a", "g2", "ts_right", "b"], got.column_names
        else:
            assert got.column_names == ["k", "g", "ts", "a", "ts_right", "b"], got.column_names
        assert_no_nan(got, ["b"])
        assert_same_rows(
            row_set(got, cols), want, cols, f"join_interval {how} on={keys} seed={seed} batch_size={bs}"
        )


def test_join_interval_with_k_only_matches_nested_loop_including_right_g():
    """As above with on=['k'], comparing the right row's `g` too (not just the key)."""
    left, right = make_interval_data(seed=17)
    lower, upper = -2 * GRID, 4 * GRID
    want = []
    for lr in left:
        for rr in right:
            if rr["k"] == lr["k"] and lr["ts"] + lower <= rr["ts"] <= lr["ts"] + upper:
                want.append({**lr, "g2": rr["g"], "ts_right": rr["ts"], "b": rr["b"]})
    lp = rb.Pipeline.read(arrow(left, INT_L), timestamp="ts")
    rp = rb.Pipeline.read(arrow(right, INT_R), timestamp="ts").rename({"g": "g2"})
    got = lp.join_interval(rp, on="k", lower=lower, upper=upper).collect()
    cols = ["k", "g", "ts", "a", "g2", "ts_right", "b"]
    assert_same_rows(row_set(got, cols), row_set(want, cols), cols, "join_interval on=k")


def test_join_interval_zero_width_and_positive_only_window():
    left = pa.table({"k": ["a"] * 3, "ts": pa.array([100, 200, 300], pa.int64())})
    right = pa.table(
        {"k": ["a"] * 5, "ts": pa.array([100, 150, 200, 250, 310], pa.int64()), "v": [1, 2, 3, 4, 5]}
    )
    lp, rp = rb.Pipeline.read(left, timestamp="ts"), rb.Pipeline.read(right, timestamp="ts")
    exact = lp.join_interval(rp, on="k").collect()  # lower = upper = 0: equal times only
    assert sorted(zip(exact.column("ts").to_pylist(), exact.column("v").to_pylist())) == [(100, 1), (200, 3)]
    ahead = lp.join_interval(rp, on="k", lower="10ms", upper="50ms", how="left").collect()
    assert sorted(zip(ahead.column("ts").to_pylist(), ahead.column("v").to_pylist()), key=_sort_key) == [
        (100, 2),
        (200, 4),
        (300, 5),
    ]


# -- 5. join_table -----------------------------------------------------------------------------------


def brute_table_asof(trades: list[dict], history: list[tuple[int, str, dict | None]]) -> list[dict]:
    """For each trade, the latest record of its key with record time <= trade time; a tombstone
    or no record -> None."""
    out = []
    for t in trades:
        best = None
        for ts, key, value in history:
            if key == t["sym"] and ts <= t["ts"] and (best is None or ts > best[0]):
                best = (ts, value)
        out.append({**t, "_rec": best})
    return out


def make_price_history(seed: int, keys: list[str], n: int = 120) -> list[tuple[int, str, dict | None]]:
    """(timestamp, key, value-or-None) in timestamp order, times unique per key."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.choice(np.arange(0, 4000, GRID), size=n, replace=False))
    out = []
    for t in times:
        key = keys[rng.integers(0, len(keys))]
        value = (
            None
            if rng.random() < 0.2
            else {"px": float(100 + len(out)), "venue": str(rng.choice(["X", "Y"]))}  # px unique
        )
        out.append((int(t), key, value))
    return out


def test_join_table_from_compacted_topic_matches_point_in_time_brute_force(log):
    keys = ["AAPL", "MSFT", "GOOG", "AMZN"]
    history = make_price_history(3, keys)
    # hand-made: delete then re-insert; and a key only ever deleted
    history += [
        (5000, "AAPL", {"px": 1.0, "venue": "X"}),
        (5100, "AAPL", None),
        (5200, "AAPL", {"px": 2.0, "venue": "Y"}),
        (5050, "NFLX", None),
    ]
    history.sort(key=lambda h: h[0])
    topic = log.topic("prices", partitions=3, cleanup="compact")
    for ts, key, value in history:
        topic.produce(value=value, key=key.encode(), timestamp=ts)
    assert topic.read().num_rows == len(history)

    rng = np.random.default_rng(9)
    syms = [*keys, "TSLA", "NFLX"]  # TSLA: never in the table; NFLX: only a tombstone
    trade_times = sorted(
        {*[int(t) for t in rng.integers(0, 5400, 250)], *(h[0] for h in history[::7]), 5100, 5150, 5200}
    )
    trades = [{"sym": syms[rng.integers(0, len(syms))], "ts": t, "q": i} for i, t in enumerate(trade_times)]
    trades += [{"sym": "AAPL", "ts": t, "q": 10_000 + t} for t in (4999, 5000, 5099, 5100, 5150, 5200, 5300)]
    trades.sort(key=lambda r: r["ts"])

    table = log.table("prices")
    tp = rb.Pipeline.read(
        pa.Table.from_pylist(
            trades, schema=pa.schema([("sym", pa.string()), ("ts", pa.int64()), ("q", pa.int64())])
        ),
        timestamp="ts",
        batch_size=17,
    )
    got = tp.join_table(table, on="sym").collect()
    assert got.column_names[:5] == ["sym", "ts", "q", "px", "venue"], got.column_names
    assert "key" not in got.column_names, "the table key must not be repeated"
    assert got.num_rows == len(trades)

    want = brute_table_asof(trades, history)
    # A topic's table adds its value columns only (its record metadata would tell a deleted key
    # from a never-seen one); px values are unique per record, so they identify the version.
    assert not {"timestamp", "partition", "offset"} & set(got.column_names), got.column_names
    cols = ["sym", "ts", "q", "px", "venue"]
    got_rows = got.to_pylist()
    want_rows = []
    for w in want:
        rec = w["_rec"]
        live = rec is not None and rec[1] is not None
        want_rows.append(
            {
                **w,
                "px": rec[1]["px"] if live else None,
                "venue": rec[1]["venue"] if live else None,
            }
        )
    assert_no_nan(got, ["px"])
    assert_same_rows(
        row_set(got_rows, cols), row_set(want_rows, cols), cols, "join_table vs point-in-time brute force"
    )

    by_q = {r["q"]: r for r in got.to_pylist()}
    assert by_q[10_000 + 4999]["px"] != 1.0
    assert by_q[10_000 + 5000]["px"] == 1.0  # record time == trade time: visible
    assert by_q[10_000 + 5099]["px"] == 1.0
    assert by_q[10_000 + 5100]["px"] is None  # tombstone at the trade time
    assert by_q[10_000 + 5150]["px"] is None
    assert by_q[10_000 + 5200]["px"] == 2.0  # re-inserted
    assert all(r["px"] is None for r in got.to_pylist() if r["sym"] in ("TSLA", "NFLX"))


def test_log_table_get_len_and_deleted_keys(log):
    keys = ["AAPL", "MSFT", "GOOG", "AMZN", "META"]
    history = make_price_history(21, keys, n=80)
    history.append((9000, "META", None))  # META ends deleted
    history.append((9010, "GOOG", {"px": 7.0, "venue": "Y"}))
    topic = log.topic("px2", partitions=2, cleanup="compact")
    for ts, key, value in history:
        topic.produce(value=value, key=key, timestamp=ts)
    latest: dict[str, dict | None] = {}
    for _ts, key, value in history:
        latest[key] = value
    live = {k: v for k, v in latest.items() if v is not None}

    table = log.table("px2")
    assert len(table) == len(live), f"len {len(table)}, live keys {sorted(live)}"
    for k in keys:
        if k in live:
            row = table.get(k)
            assert row is not None and row["px"] == live[k]["px"] and row["venue"] == live[k]["venue"], (
                k,
                row,
            )
            assert k in table and table[k]["px"] == live[k]["px"]
        else:
            assert table.get(k) is None, f"deleted key {k} still in the table: {table.get(k)}"
            assert k not in table
            with pytest.raises(KeyError):
                table[k]
    assert table.get("META", "gone") == "gone"
    assert table.get("GOOG")["px"] == 7.0
    assert sorted(table.to_arrow().column("key").to_pylist()) == sorted(k.encode() for k in live)


def test_join_table_deleted_key_gives_nulls_like_a_never_seen_key(log):
    """A tombstoned key has no row in the table (``table.get`` says so), so as of a time after the
    tombstone the join must add nulls in every table column — as for a key never seen — not the
    tombstone's record timestamp/partition/offset."""
    topic = log.topic("prices", partitions=1, cleanup="compact")
    topic.produce(value={"px": 1.0}, key=b"AAPL", timestamp=100)
    topic.produce(value=None, key=b"AAPL", timestamp=300)
    table = log.table("prices")
    assert table.get("AAPL") is None
    trades = pa.table({"sym": ["AAPL", "TSLA"], "ts": pa.array([400, 400], pa.int64())})
    got = rb.Pipeline.read(trades, timestamp="ts").join_table(table, on="sym").collect().to_pylist()
    deleted, never = got
    right_cols = [c for c in deleted if c not in ("sym", "ts")]
    assert {c: never[c] for c in right_cols} == dict.fromkeys(right_cols), never
    assert {c: deleted[c] for c in right_cols} == dict.fromkeys(right_cols), (
        f"a deleted key must look like a never-seen key; got {deleted}"
    )


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_join_table_from_pipeline_to_table(batch_size):
    rng = np.random.default_rng(17)
    keys = ["a", "b", "c", "d"]
    quotes = []
    for k in keys[:3]:  # "d" never quoted
        for t in rng.choice(np.arange(0, 3000, GRID), size=40, replace=False):
            quotes.append({"k": k, "ts": int(t), "qts": int(t), "px": float(rng.integers(0, 1000))})
    quotes.sort(key=lambda r: r["ts"])
    trades = sorted(
        (
            {"sym": keys[rng.integers(0, 4)], "ts": int(rng.integers(0, 320)) * GRID, "q": i}
            for i in range(200)
        ),
        key=lambda r: r["ts"],
    )
    qschema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("qts", pa.int64()), ("px", pa.float64())])
    qp = rb.Pipeline.read(
        arrow(shuffled_within(quotes, 60, 4), qschema), timestamp="ts", lateness="60ms", batch_size=batch_size
    )
    table = qp.to_table("k")
    tp = rb.Pipeline.read(pa.Table.from_pylist(trades), timestamp="ts", batch_size=batch_size)
    got = tp.join_table(table, on="sym").collect()
    # like an as-of join on a shared time column name, the table's `ts` is not repeated
    assert got.column_names == ["sym", "ts", "q", "qts", "px"], got.column_names
    want = []
    for t in trades:
        cands = [x for x in quotes if x["k"] == t["sym"] and x["ts"] <= t["ts"]]
        best = max(cands, key=lambda x: x["ts"], default=None)
        want.append(
            {**t, "qts": None if best is None else best["ts"], "px": None if best is None else best["px"]}
        )
    cols = ["sym", "ts", "q", "qts", "px"]
    assert_same_rows(
        row_set(got, cols), row_set(want, cols), cols, f"join_table(to_table) batch_size={batch_size}"
    )
    rows = got.to_pylist()
    assert any(r["qts"] == r["ts"] for r in rows), "no equal-time table match exercised"
    assert any(r["sym"] == "d" for r in rows) and all(r["px"] is None for r in rows if r["sym"] == "d")
    # the table itself: latest quote per key
    latest = {}
    for x in quotes:
        latest[x["k"]] = x
    assert len(table) == 3
    for k, x in latest.items():
        assert table.get(k)["px"] == x["px"], k


# -- 6. no leakage -------------------------------------------------------------------------------------


def test_join_asof_backward_never_matches_a_later_right_row():
    left, right = make_asof_data(seed=77, n_left=400, n_right=400)
    lateness_ms = 40 * GRID
    lrows = shuffled_within(records(left), lateness_ms, 8)
    rrows = shuffled_within(records(right), lateness_ms, 9)
    got, _ = rb_asof(lrows, rrows, "backward", None, lateness=f"{lateness_ms}ms", batch_size=3)
    rows = got.to_pylist()
    leaks = [r for r in rows if r["rt"] is not None and r["rt"] > r["ts"]]
    assert not leaks, f"{len(leaks)} rows matched a right row from after the left time, e.g. {leaks[:3]}"
    # and each match is the latest one not after the left time
    right_times: dict[str, list[int]] = {}
    for r in records(right):
        right_times.setdefault(r["k"], []).append(r["ts"])
    for r in rows:
        best = max((t for t in right_times.get(r["k"], []) if t <= r["ts"]), default=None)
        assert r["rt"] == best, f"left {r['k']}@{r['ts']}: matched {r['rt']}, latest at or before is {best}"
    assert sum(r["rt"] is not None for r in rows) > len(rows) // 2


# -- 7. bad input ------------------------------------------------------------------------------------


def _pipes():
    left = pa.table({"k": ["a"], "g": [1], "ts": pa.array([0], pa.int64()), "x": [1.0]})
    right = pa.table({"k": ["a"], "ts": pa.array([0], pa.int64()), "y": [2.0]})
    return rb.Pipeline.read(left, timestamp="ts"), rb.Pipeline.read(right, timestamp="ts")


def test_join_errors_name_the_problem():
    lp, rp = _pipes()
    with pytest.raises(rb.exceptions.PlanError, match=r"by: 2 left key column\(s\)"):
        lp.join_asof(rp, by=["k", "g"], right_by="k")
    with pytest.raises(rb.exceptions.PlanError, match="nope"):
        lp.join_asof(rp, by="nope")
    with pytest.raises(rb.exceptions.PlanError, match="nope"):
        lp.join_asof(rp, by="k", right_by="nope")
    with pytest.raises(rb.exceptions.PlanError, match="right_z|unknown column 'right_z'"):
        lp.join_asof(rp, by="k", right_on="right_z")
    with pytest.raises(ValueError, match="tolerance must not be negative"):
        lp.join_asof(rp, by="k", tolerance="-1s")
    with pytest.raises(ValueError, match="tolerance must not be negative"):
        lp.join_asof(rp, by="k", tolerance=-5)
    with pytest.raises(ValueError, match="direction must be .*sideways"):
        lp.join_asof(rp, by="k", direction="sideways")
    with pytest.raises(TypeError, match="join_asof takes a Pipeline, got Table"):
        lp.join_asof(pa.table({"k": ["a"]}), by="k")
    with pytest.raises(rb.exceptions.PlanError, match=r"lower \(5000 ms\) must not exceed upper \(1000 ms\)"):
        lp.join_interval(rp, on="k", lower="5s", upper="1s")
    with pytest.raises(ValueError, match="how must be 'inner' or 'left', got 'outer'"):
        lp.join_interval(rp, on="k", how="outer")
    with pytest.raises(rb.exceptions.PlanError, match="nope"):
        lp.join_interval(rp, on="nope")
    with pytest.raises(TypeError, match="join_interval takes a Pipeline, got DataFrame"):
        lp.join_interval(pd.DataFrame({"k": ["a"]}), on="k")
    with pytest.raises(TypeError, match="join_table takes an rb.Table"):
        lp.join_table(rp, on="k")
    with pytest.raises(ValueError, match="join_table: on="):
        lp.join_table(rp.to_table("k"), on=["k", "g"])
    with pytest.raises(TypeError, match="suffix"):
        lp.join_asof(rp, by="k", suffix="")


def test_joining_a_pipeline_that_contains_a_join_and_a_function():
    # The right side's own join, sources and functions must be renumbered when merged.
    a = pa.table({"k": ["x"] * 3, "ts": pa.array([0, 10, 20], pa.int64()), "a": [1, 2, 3]})
    b = pa.table({"k": ["x"] * 3, "ts": pa.array([5, 15, 25], pa.int64()), "b": [1.0, 2.0, 3.0]})
    c = pa.table({"k": ["x"] * 3, "ts": pa.array([1, 11, 21], pa.int64()), "c": [7, 8, 9]})

    def read(t):
        return rb.Pipeline.read(t, timestamp="ts")

    nested = read(a).join_asof(read(b).join_asof(read(c), by="k"), by="k").collect().to_pylist()
    assert [(r["a"], r["b"], r["c"]) for r in nested] == [(1, None, None), (2, 1.0, 7), (3, 2.0, 8)]

    def tenfold(t):
        return t.set_column(2, "a", pa.array([v * 10 for v in t.column("a").to_pylist()]))

    def count(state, rows):
        return state + len(rows), [{"k": r["k"], "n": state + i + 1} for i, r in enumerate(rows)]

    left = read(a).map_batches(lambda t: t)
    right = read(a).map_batches(tenfold)
    assert sorted(left.union(right).collect().column("a").to_pylist()) == [1, 2, 3, 10, 20, 30]
    both = read(a).stateful_map(count, by="k", initial=0).union(read(b).stateful_map(count, by="k", initial=100))
    assert sorted(both.collect().column("n").to_pylist()) == [1, 2, 3, 101, 102, 103]


def test_join_keys_of_different_kinds_are_refused_not_matched_by_their_text():
    """A number key never matches a string key: the right key used to be cast to the left's
    type, so the int 1 matched the string "1" (and not "01"), silently. Keys of one kind still
    compare by value: int32 with int64, int with float, a string with a categorical."""
    right = pa.table({"k": [1, 2], "v": [10, 20], "ts": [0, 0]})
    left = pa.table({"k": ["1", "2"], "lv": [0, 1], "ts": [5, 5]})
    table = rb.Pipeline.read(right, timestamp="ts").to_table("k")
    with pytest.raises(rb.exceptions.PlanError, match="by: left 'k' is Utf8 but right 'k' is Int64"):
        rb.Pipeline.read(left, timestamp="ts").join_table(table, on="k")
    with pytest.raises(rb.exceptions.PlanError, match="by: left 'k' is Int64 but right 'k' is Utf8"):
        rb.Pipeline.read(right, timestamp="ts").join_asof(rb.Pipeline.read(left, timestamp="ts"), on="ts", by="k")
    for as_type in (pa.int32(), pa.float64()):
        same_kind = left.set_column(0, "k", pa.array([1, 2]).cast(as_type))
        out = rb.Pipeline.read(same_kind, timestamp="ts").join_table(table, on="k").collect()
        assert sorted(zip(out.column("lv").to_pylist(), out.column("v").to_pylist())) == [(0, 10), (1, 20)]
    strings = rb.Pipeline.read(right.set_column(0, "k", pa.array(["1", "2"])), timestamp="ts").to_table("k")
    categorical = left.set_column(0, "k", pa.array(["1", "2"]).dictionary_encode())
    out = rb.Pipeline.read(categorical, timestamp="ts").join_table(strings, on="k").collect()
    assert sorted(zip(out.column("lv").to_pylist(), out.column("v").to_pylist())) == [(0, 10), (1, 20)]
