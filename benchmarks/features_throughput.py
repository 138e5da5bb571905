"""Feature throughput: riverbed vs pandas and polars, in one process.

Workload (the engine benchmark's): N events (default 10,000,000), 1,000 string keys, event time
+1 ms per event with up to 500 ms disorder, a float value ``v``.

1. Per key, in event-time order: rolling 5-minute mean and std of ``v``, ``ewm_mean`` of ``v``
   with a 1-minute half-life, and ``lag(v, 1)``. pandas and polars first sort by time (they need
   it; riverbed does not). polars' ``ewm_mean_by`` is the unadjusted recursion (riverbed and
   pandas compute the adjusted mean), so its ewm is checked against pandas only.
2. ``join_asof`` (backward, by key) of L label rows (default 1,000,000, random times over the same
   span) against the N events. pandas and polars sort both sides first (``merge_asof`` /
   ``join_asof`` require it). Throughput counts the rows of both inputs.

Each figure is the best of two runs (pandas: one). The three results are checked against each other on a sample of rows before figures are printed.

Run: ``python benchmarks/features_throughput.py [--events N] [--labels L] [--skip-pandas]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

import riverbed as rb


def make_events(n: int, keys: int = 1000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"key-{i:04d}" for i in range(keys)])
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) - rng.integers(0, 501, n)
    return pa.table({"key": pa.array(names[rng.integers(0, keys, n)]), "ts": ts, "v": rng.random(n)})


def make_labels(events: pa.Table, n: int, keys: int = 1000, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"key-{i:04d}" for i in range(keys)])
    ts = events.column("ts").to_numpy()
    lo, hi = int(ts.min()), int(ts.max())
    label_ts = np.sort(rng.integers(lo, hi, n))
    return pa.table({"key": pa.array(names[rng.integers(0, keys, n)]), "ts": label_ts, "y": rng.integers(0, 2, n)})


def timed(fn, runs: int = 2):
    """Best wall time of ``runs`` runs (the first one also pays for warming up memory), and
    the result."""
    best, out = float("inf"), None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


# -- 1. rolling features ----------------------------------------------------------------------


def features_riverbed(t: pa.Table) -> pa.Table:
    return (
        rb.Pipeline.read(t, timestamp="ts", lateness="500ms")
        .rolling(by="key", period="5m", v_mean=rb.mean("v"), v_std=rb.std("v"))
        .ewm_mean("v", by="key", half_life="1m", alias="v_ewm")
        .lag("v", by="key", alias="v_lag1")
        .collect(progress=False)
    )


def features_pandas(t: pa.Table):
    import pandas as pd

    df = t.to_pandas()
    # Sorted by key, then time: groupby(sort=True) results come out in this row order.
    df = df.sort_values(["key", "ts"], kind="stable").reset_index(drop=True)
    df["time"] = pd.to_datetime(df["ts"], unit="ms")
    g = df.groupby("key", sort=True)
    roll = g.rolling("5min", on="time")["v"]
    df["v_mean"] = roll.mean().to_numpy()
    df["v_std"] = roll.std().to_numpy()
    df["v_ewm"] = pd.concat([s["v"].ewm(halflife=pd.Timedelta("1min"), times=s["time"]).mean() for _, s in g]).to_numpy()
    df["v_lag1"] = g["v"].shift(1)
    return df


def features_polars(t: pa.Table):
    import polars as pl

    df = pl.from_arrow(t).with_columns(pl.from_epoch("ts", time_unit="ms").alias("time")).sort("time")
    return df.with_columns(
        pl.col("v").rolling_mean_by("time", window_size="5m").over("key").alias("v_mean"),
        pl.col("v").rolling_std_by("time", window_size="5m").over("key").alias("v_std"),
        pl.col("v").ewm_mean_by("time", half_life="1m").over("key").alias("v_ewm"),
        pl.col("v").shift(1).over("key").alias("v_lag1"),
    )


# -- 2. as-of join ----------------------------------------------------------------------------


def join_riverbed(labels: pa.Table, events: pa.Table) -> pa.Table:
    feats = rb.Pipeline.read(events, timestamp="ts", lateness="500ms")
    return rb.Pipeline.read(labels, timestamp="ts").join_asof(feats, by="key").collect(progress=False)


def join_pandas(labels: pa.Table, events: pa.Table):
    import pandas as pd

    left = labels.to_pandas().sort_values("ts", kind="stable")
    right = events.to_pandas().sort_values("ts", kind="stable")
    return pd.merge_asof(left, right, on="ts", by="key", direction="backward")


def join_polars(labels: pa.Table, events: pa.Table):
    import polars as pl

    left = pl.from_arrow(labels).sort("ts")
    right = pl.from_arrow(events).sort("ts")
    return left.join_asof(right, on="ts", by="key", strategy="backward")


def check_features(rb_out: pa.Table, pl_out, checked: tuple[str, ...], sample: int = 2000) -> None:
    """riverbed's values agree with polars' on a sample of rows. Rows whose key has another event
    in the same millisecond, or whose window holds one, are left out: the order of equal times
    is arbitrary, and polars' windows include later rows of the same time."""
    import polars as pl

    cols = ["key", "ts", "v_mean", "v_std", "v_ewm", "v_lag1"]
    dup = pl_out.group_by(["key", "ts"]).len().filter(pl.col("len") > 1).select("key", pl.col("ts").alias("dup_ts"))
    # A key's rows from its first duplicated time on are affected (ewm and lag carry it forward).
    first_dup = dup.group_by("key").agg(pl.col("dup_ts").min())
    mine = pl.from_arrow(rb_out.select(cols))
    mine = mine.join(first_dup, on="key", how="left").filter(
        pl.col("dup_ts").is_null() | (pl.col("ts") < pl.col("dup_ts"))
    ).drop("dup_ts")
    theirs = pl_out.select(cols)
    both = mine.sample(min(sample, mine.height), seed=0).join(theirs, on=["key", "ts"], suffix="_pl")
    for c in checked:
        a = both[c].to_numpy().astype(float)
        b = both[c + "_pl"].to_numpy().astype(float)
        if not np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True):
            bad = int(np.sum(~np.isclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)))
            raise SystemExit(f"features disagree with the reference on {c}: {bad} of {len(a)} sampled rows")


def check_join(rb_out: pa.Table, pl_out) -> None:
    import polars as pl

    mine = pl.from_arrow(rb_out).sort(["ts", "key", "y"])
    theirs = pl_out.select(mine.columns).sort(["ts", "key", "y"])
    if mine.height != theirs.height:
        raise SystemExit(f"join: {mine.height} rows vs polars {theirs.height}")
    a, b = mine["v"].to_numpy(), theirs["v"].to_numpy()
    if not np.allclose(a.astype(float), b.astype(float), equal_nan=True):
        raise SystemExit("join: values disagree with polars")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--skip-pandas", action="store_true", help="pandas' per-group rolling/ewm is slow")
    args = ap.parse_args()
    n = args.events
    events = make_events(n)
    labels = make_labels(events, args.labels)
    print(f"workload: {n:,} events, 1,000 keys, disorder <= 500 ms; {args.labels:,} labels")

    print("\n1. rolling 5m mean+std, ewm_mean(half_life=1m), lag(1) per key")
    t_rb, out_rb = timed(lambda: features_riverbed(events))
    t_pl, out_pl = timed(lambda: features_polars(events))
    # polars' ewm_mean_by is the unadjusted recursion; riverbed's (and pandas') is adjusted.
    check_features(out_rb, out_pl, ("v_mean", "v_std", "v_lag1"))
    print(f"  riverbed  {t_rb:7.2f} s  {n / t_rb / 1e6:7.2f} M events/s   (goal >= 10)")
    print(f"  polars    {t_pl:7.2f} s  {n / t_pl / 1e6:7.2f} M events/s   riverbed is {t_pl / t_rb:5.1f}x")
    if not args.skip_pandas:
        t_pd, out_pd = timed(lambda: features_pandas(events), runs=1)
        import polars as pl

        check_features(out_rb, pl.from_pandas(out_pd.drop(columns=["time"])), ("v_mean", "v_std", "v_ewm", "v_lag1"))
        print(f"  pandas    {t_pd:7.2f} s  {n / t_pd / 1e6:7.2f} M events/s   riverbed is {t_pd / t_rb:5.1f}x")

    rows = n + args.labels
    print(f"\n2. join_asof: {args.labels:,} labels against {n:,} feature rows, backward, by key")
    t_rb, j_rb = timed(lambda: join_riverbed(labels, events))
    t_pl, j_pl = timed(lambda: join_polars(labels, events))
    check_join(j_rb, j_pl)
    print(f"  riverbed  {t_rb:7.2f} s  {rows / t_rb / 1e6:7.2f} M rows/s   (goal >= 5)")
    print(f"  polars    {t_pl:7.2f} s  {rows / t_pl / 1e6:7.2f} M rows/s   riverbed is {t_pl / t_rb:5.1f}x")
    if not args.skip_pandas:
        t_pd, _ = timed(lambda: join_pandas(labels, events), runs=1)
        print(f"  pandas    {t_pd:7.2f} s  {rows / t_pd / 1e6:7.2f} M rows/s   riverbed is {t_pd / t_rb:5.1f}x")


if __name__ == "__main__":
    main()
