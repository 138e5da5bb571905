"""Per-key time-series operators against pandas, with shuffled arrival within lateness."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import riverbed as rb


def make_events(n: int = 400, keys: int = 5, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.choice(np.arange(0, n * 50), size=n, replace=False)).astype(np.int64)
    df = pd.DataFrame(
        {
            "k": [f"k{i}" for i in rng.integers(0, keys, n)],
            "ts": ts,
            "x": rng.normal(10, 3, n).round(3),
        }
    )
    df.loc[rng.choice(n, 15, replace=False), "x"] = np.nan
    return df


def shuffled_within(df: pd.DataFrame, lateness_ms: int, seed: int) -> pa.Table:
    """Arrival order shuffled, but no record arrives more than `lateness_ms` after a later one."""
    rng = random.Random(seed)
    # pandas' NaN means "missing": in Arrow that is null.
    rows = [{**r, "x": None if pd.isna(r["x"]) else r["x"]} for r in df.to_dict("records")]
    # Swap neighbours whose times are close enough: each record is delayed by < lateness.
    for _ in range(len(rows) * 3):
        i = rng.randrange(len(rows) - 1)
        if abs(rows[i + 1]["ts"] - rows[i]["ts"]) < lateness_ms:
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return pa.Table.from_pylist(rows, schema=pa.schema([("k", pa.string()), ("ts", pa.int64()), ("x", pa.float64())]))


def reference(df: pd.DataFrame) -> pd.DataFrame:
    g = df.sort_values(["ts"], kind="stable").groupby("k", sort=False)
    out = df.sort_values(["ts"], kind="stable").copy()
    out["x_lag2"] = g["x"].shift(2)
    out["x_diff"] = g["x"].diff(1)
    out["x_pct_change"] = g["x"].pct_change(1, fill_method=None)
    out["x_cum_sum"] = g["x"].cumsum()
    out["time_since_previous"] = g["ts"].diff(1)
    return out


def run(table: pa.Table, lateness: str, batch_size: int) -> pd.DataFrame:
    p = (
        rb.Pipeline.read(table, timestamp="ts", lateness=lateness, batch_size=batch_size)
        .lag("x", by="k", n=2)
        .diff("x", by="k")
        .pct_change("x", by="k")
        .cum_sum("x", by="k")
        .time_since_previous(by="k")
    )
    res = p.run()
    assert res.late.num_rows == 0
    return res.output.to_pandas()


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_series_ops_match_pandas_under_shuffled_arrival(batch_size):
    df = make_events()
    want = reference(df).sort_values(["ts", "k"]).reset_index(drop=True)
    for seed in (1, 2):
        got = run(shuffled_within(df, 200, seed), "200ms", batch_size)
        got = got.sort_values(["ts", "k"]).reset_index(drop=True)
        assert list(got["ts"]) == list(want["ts"])
        for col in ["x_lag2", "x_diff", "x_pct_change", "x_cum_sum"]:
            np.testing.assert_allclose(got[col].to_numpy(float), want[col].to_numpy(float), rtol=1e-12, equal_nan=True)
        assert got["time_since_previous"].astype("float").tolist() == pytest.approx(
            want["time_since_previous"].astype("float").tolist(), nan_ok=True
        )


def test_output_is_in_event_time_order_and_each_record_once():
    df = make_events(200)
    got = run(shuffled_within(df, 300, 5), "300ms", 13)
    assert list(got["ts"]) == sorted(df["ts"])
    assert len(got) == len(df)


def test_records_behind_the_watermark_are_late_not_lost():
    t = pa.table({"k": ["a", "a", "a"], "ts": pa.array([1000, 5000, 1500], pa.int64()), "x": [1.0, 2.0, 3.0]})
    res = (
        rb.Pipeline.read(t, timestamp="ts", lateness="0s", batch_size=1)
        .diff("x", by="k")
        .run()
    )
    assert res.output.column("ts").to_pylist() == [1000, 5000]
    assert res.output.column("x_diff").to_pylist() == [None, 1.0]
    assert res.late.column("ts").to_pylist() == [1500]


def test_series_errors_name_the_field():
    t = pa.table({"k": ["a"], "ts": pa.array([0], pa.int64()), "s": ["x"]})
    p = rb.Pipeline.read(t, timestamp="ts")
    with pytest.raises(rb.exceptions.PlanError, match="nope"):
        p.lag("nope", by="k")
    with pytest.raises(rb.exceptions.PlanError, match="not numeric"):
        p.diff("s", by="k")
    with pytest.raises(ValueError, match="n must be >= 1"):
        p.lag("s", by="k", n=0)
    with pytest.raises(rb.exceptions.PlanError, match="event time"):
        rb.Pipeline.read(pa.table({"k": ["a"], "x": [1.0]})).cum_sum("x", by="k")


def test_rolling_time_and_rows_match_pandas():
    df = make_events(300, keys=4, seed=11)
    table = shuffled_within(df, 150, 7)
    p = rb.Pipeline.read(table, timestamp="ts", lateness="150ms", batch_size=17)
    got_t = p.rolling(by="k", period="700ms", s=rb.sum("x"), m=rb.mean("x"), lo=rb.min("x"), hi=rb.max("x"),
                      sd=rb.std("x"), n=rb.count("x")).collect().to_pandas().sort_values(["ts", "k"])
    got_r = p.rolling(by="k", rows=4, s=rb.sum("x"), m=rb.mean("x")).collect().to_pandas().sort_values(["ts", "k"])

    d = df.copy()
    d["t"] = pd.to_datetime(d["ts"], unit="ms")
    d = d.sort_values("ts", kind="stable")
    want_t = pd.DataFrame(index=d.index)
    r = d.groupby("k").rolling("700ms", on="t")["x"]
    pos = {(k, t): i for i, k, t in zip(d.index, d["k"], d["t"])}  # timestamps are unique
    for name, f in [("s", "sum"), ("m", "mean"), ("lo", "min"), ("hi", "max"), ("sd", "std"), ("n", "count")]:
        res = getattr(r, f)()
        want_t[name] = pd.Series(res.to_numpy(), index=[pos[kt] for kt in res.index])
    r4 = d.groupby("k")["x"].rolling(4)
    want_r = pd.DataFrame({"s": r4.sum().reset_index(level=0, drop=True), "m": r4.mean().reset_index(level=0, drop=True)})
    order = d.sort_values(["ts", "k"]).index
    for name in ["s", "m", "lo", "hi", "sd", "n"]:
        np.testing.assert_allclose(got_t[name].to_numpy(float), want_t.loc[order, name].to_numpy(float), rtol=1e-9, equal_nan=True)
    for name in ["s", "m"]:
        np.testing.assert_allclose(got_r[name].to_numpy(float), want_r.loc[order, name].to_numpy(float), rtol=1e-9, equal_nan=True)


def test_ewm_mean_matches_pandas_time_aware_and_alpha():
    df = make_events(250, keys=3, seed=5)
    table = shuffled_within(df, 100, 3)
    p = rb.Pipeline.read(table, timestamp="ts", lateness="100ms", batch_size=9)
    got = (
        p.ewm_mean("x", by="k", half_life="300ms", alias="e_hl")
        .ewm_mean("x", by="k", alpha=0.3, alias="e_a")
        .collect()
        .to_pandas()
        .sort_values(["ts", "k"])
    )
    d = df.sort_values("ts", kind="stable").copy()
    d["t"] = pd.to_datetime(d["ts"], unit="ms")
    e_hl = pd.concat(
        [g["x"].ewm(halflife=pd.Timedelta("300ms"), times=g["t"]).mean() for _, g in d.groupby("k")]
    )
    e_a = d.groupby("k")["x"].transform(lambda s: s.ewm(alpha=0.3).mean())
    order = d.sort_values(["ts", "k"]).index
    np.testing.assert_allclose(got["e_hl"].to_numpy(float), e_hl.loc[order].to_numpy(float), rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(got["e_a"].to_numpy(float), e_a.loc[order].to_numpy(float), rtol=1e-9, equal_nan=True)


def test_rolling_and_ewm_bad_arguments():
    t = pa.table({"k": ["a"], "ts": pa.array([0], pa.int64()), "x": [1.0]})
    p = rb.Pipeline.read(t, timestamp="ts")
    with pytest.raises(ValueError, match="exactly one of period= or rows="):
        p.rolling(by="k", x_mean=rb.mean("x"))
    with pytest.raises(TypeError, match="one column"):
        p.rolling(by="k", rows=3, bad=rb.sum(rb.col("x") * 2))
    with pytest.raises(ValueError, match="exactly one of half_life= or alpha="):
        p.ewm_mean("x", by="k")
    with pytest.raises(rb.exceptions.PlanError, match="alpha in"):
        p.ewm_mean("x", by="k", alpha=1.5)


@pytest.mark.parametrize("min_periods", [1, 3])
def test_rolling_min_periods_matches_pandas(min_periods):
    """``min_periods`` as pandas (and polars' ``min_samples``): an aggregate needs that many
    non-null values in its window, else null; std needs two in any case (pandas: NaN). Row and
    time windows, nulls among the values, shuffled arrival."""
    df = make_events(300, keys=4, seed=13)
    table = shuffled_within(df, 150, 5)
    p = rb.Pipeline.read(table, timestamp="ts", lateness="150ms", batch_size=13)
    aggs = {"s": rb.sum("x"), "m": rb.mean("x"), "lo": rb.min("x"), "hi": rb.max("x"), "sd": rb.std("x")}
    got_r = p.rolling(by="k", rows=5, min_periods=min_periods, **aggs).collect().to_pandas().sort_values(["ts", "k"])
    got_t = p.rolling(by="k", period="400ms", min_periods=min_periods, **aggs).collect().to_pandas().sort_values(["ts", "k"])

    d = df.sort_values("ts", kind="stable").copy()
    d["t"] = pd.to_datetime(d["ts"], unit="ms")
    order = d.sort_values(["ts", "k"]).index
    funcs = {"s": "sum", "m": "mean", "lo": "min", "hi": "max", "sd": "std"}
    rows = d.groupby("k")["x"].rolling(5, min_periods=min_periods)
    timed = d.groupby("k").rolling("400ms", on="t", min_periods=min_periods)["x"]
    pos = {(k, t): i for i, k, t in zip(d.index, d["k"], d["t"])}  # timestamps are unique
    for name, f in funcs.items():
        want_r = getattr(rows, f)().reset_index(level=0, drop=True)
        res = getattr(timed, f)()
        want_t = pd.Series(res.to_numpy(), index=[pos[kt] for kt in res.index])
        np.testing.assert_allclose(got_r[name].to_numpy(float), want_r.loc[order].to_numpy(float), rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(got_t[name].to_numpy(float), want_t.loc[order].to_numpy(float), rtol=1e-9, equal_nan=True)
    # the setting matters: fewer nulls than the default for rows (5), more than the default for time (1)
    default_r = p.rolling(by="k", rows=5, s=rb.sum("x")).collect().column("s").null_count
    default_t = p.rolling(by="k", period="400ms", s=rb.sum("x")).collect().column("s").null_count
    assert got_r["s"].isna().sum() < default_r
    assert (got_t["s"].isna().sum() > default_t) == (min_periods > 1)


def test_rolling_min_periods_bad_values():
    t = pa.table({"k": ["a"], "ts": pa.array([0], pa.int64()), "x": [1.0]})
    p = rb.Pipeline.read(t, timestamp="ts")
    with pytest.raises(ValueError, match="min_periods must be >= 1"):
        p.rolling(by="k", rows=3, min_periods=0, s=rb.sum("x"))
    with pytest.raises(ValueError, match=r"min_periods \(4\) must not exceed rows \(3\)"):
        p.rolling(by="k", rows=3, min_periods=4, s=rb.sum("x"))
    with pytest.raises(TypeError, match="min_periods must be an int"):
        p.rolling(by="k", rows=3, min_periods=1.5, s=rb.sum("x"))
