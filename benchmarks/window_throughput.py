"""Windowed aggregation throughput: riverbed vs polars, in one process.

Workload: N events (default 10,000,000), 1,000 string keys, event time +1 ms per event with up to
500 ms disorder, a float value; per-key tumbling 10 s windows with count, sum and mean.

- (a) riverbed from an in-memory pyarrow table;
- (a1/aN) the same split into 4 in-memory partitions (a union of 4 tables), on one worker and on
      all workers (one per core): what the parallel engine adds;
- (b) riverbed end to end: a JSON topic in the embedded log -> window -> an output topic
      (producing the input topic is not timed), on all workers and on one;
- (c) polars ``group_by_dynamic`` on the same table (sorting by time first, which it requires);
- (d) polars ``group_by`` on (key, window start), multi-threaded: the batch hash-aggregate bound.

Then, in a child process, peak RSS with 1,000,000 open (key, window) states.

Run: ``python benchmarks/window_throughput.py [--events N] [--skip-log]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

import riverbed as rb


def make_table(n: int, keys: int = 1000, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"key-{i:04d}" for i in range(keys)])
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) - rng.integers(0, 501, n)
    return pa.table({"key": pa.array(names[rng.integers(0, keys, n)]), "ts": ts, "v": rng.random(n)})


def riverbed_pipeline(source, **read):
    return rb.Pipeline.read(source, lateness="500ms", **read).window(rb.tumbling("10s"), by="key").agg(
        n=rb.count(), s=rb.sum("v"), m=rb.mean("v")
    )


def bench_table(t: pa.Table) -> tuple[float, int]:
    t0 = time.perf_counter()
    out = riverbed_pipeline(t, timestamp="ts").collect(progress=False)
    return time.perf_counter() - t0, out.num_rows


def bench_partitions(t: pa.Table, workers: int | None, parts: int = 4) -> tuple[float, int, float]:
    """The table as `parts` partitions (contiguous slices, each its own in-memory source); wall
    seconds, windows, and the process's CPU seconds (all threads)."""
    step = -(-t.num_rows // parts)
    reads = [rb.Pipeline.read(t.slice(i * step, step), timestamp="ts", lateness="500ms") for i in range(parts)]
    p = reads[0].union(*reads[1:]).window(rb.tumbling("10s"), by="key").agg(
        n=rb.count(), s=rb.sum("v"), m=rb.mean("v")
    )
    t0, c0 = time.perf_counter(), time.process_time()
    out = p.collect(progress=False, workers=workers)
    return time.perf_counter() - t0, out.num_rows, time.process_time() - c0


def bench_log(t: pa.Table, workers: int | None = None) -> tuple[float, int, float]:
    with tempfile.TemporaryDirectory() as d, rb.Log(d, fsync="never") as log:
        src = log.topic("events", partitions=4)
        for off in range(0, t.num_rows, 500_000):
            src.produce_batch(t.slice(off, 500_000), key="key", timestamp="ts")
        out = log.topic("bars", partitions=4)
        t0, c0 = time.perf_counter(), time.process_time()
        riverbed_pipeline(src, timestamp="ts", schema=t.schema).write(out, key="key").run(progress=False, workers=workers)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        rows = sum(b - a for a, b in out.offsets().values())
    return dt, rows, cpu


def bench_polars(t: pa.Table) -> tuple[float, int]:
    import polars as pl

    df = pl.from_arrow(t).with_columns(pl.from_epoch("ts", time_unit="ms").alias("time"))
    t0 = time.perf_counter()
    out = (
        df.sort("time")
        .group_by_dynamic("time", every="10s", group_by="key")
        .agg(pl.len().alias("n"), pl.col("v").sum().alias("s"), pl.col("v").mean().alias("m"))
    )
    return time.perf_counter() - t0, out.height


def bench_polars_group_by(t: pa.Table) -> tuple[float, int]:
    import polars as pl

    df = pl.from_arrow(t)
    t0 = time.perf_counter()
    out = (
        df.with_columns(((pl.col("ts") // 10_000) * 10_000).alias("window_start"))
        .group_by("key", "window_start")
        .agg(pl.len().alias("n"), pl.col("v").sum().alias("s"), pl.col("v").mean().alias("m"))
    )
    return time.perf_counter() - t0, out.height


RSS_CHILD = r"""
import numpy as np, pyarrow as pa, riverbed as rb

def hwm_kb():
    # VmHWM is per address space, so unlike ru_maxrss it does not carry the parent's peak.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

n = 1_000_000
# 1,000,000 distinct 12-byte keys "user-0000000".., built straight into Arrow buffers.
q = np.arange(n, dtype=np.uint32)
data = np.empty((n, 12), dtype=np.uint8)
data[:, :5] = np.frombuffer(b"user-", dtype=np.uint8)
for d in range(11, 4, -1):
    data[:, d] = 48 + q % 10
    q //= 10
offsets = np.arange(0, 12 * n + 1, 12, dtype=np.int32)
keys = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
del q
# Built from buffers: pa.table(dict) would import pandas (~40 MB) just to check for Series.
ts = pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(np.full(n, 1_700_000_000_000, dtype=np.int64))])
v = pa.Array.from_buffers(pa.float64(), n, [None, pa.py_buffer(np.ones(n))])
t = pa.Table.from_arrays([keys, ts, v], names=["key", "ts", "v"])
before = hwm_kb()
p = rb.Pipeline.read(t, timestamp="ts", batch_size=100_000).window(rb.tumbling("10s"), by="key").agg(
    n=rb.count(), s=rb.sum("v"), m=rb.mean("v"))
seen = []
p.write(lambda b: seen.append(b.num_rows)).run()
got = sum(seen)
after = hwm_kb()
print(got, before, after)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--skip-log", action="store_true", help="skip (b), the log end-to-end run")
    args = ap.parse_args()
    n = args.events
    t = make_table(n)
    print(f"{n:,} events, 1,000 keys, tumbling 10 s, count/sum/mean; {os.cpu_count()} cores")
    a_s, a_rows = bench_table(t)
    print(f"(a) riverbed, in-memory table:      {n / a_s:>14,.0f} events/s  ({a_rows:,} windows)")
    a1_s, a1_rows, a1_cpu = bench_partitions(t, 1)
    print(f"(a1) 4 partitions, 1 worker:        {n / a1_s:>14,.0f} events/s  ({a1_rows:,} windows; "
          f"CPU {a1_cpu / n * 1e9:.0f} ns/event)")
    an_s, an_rows, an_cpu = bench_partitions(t, None)
    print(f"(aN) 4 partitions, all workers:     {n / an_s:>14,.0f} events/s  ({an_rows:,} windows; "
          f"CPU {an_cpu / n * 1e9:.0f} ns/event)")
    if not args.skip_log:
        b_s, b_rows, b_cpu = bench_log(t)
        print(f"(b) riverbed, JSON topic -> topic:  {n / b_s:>14,.0f} events/s  ({b_rows:,} windows written; "
              f"CPU {b_cpu / n * 1e9:.0f} ns/event)")
        b1_s, _, b1_cpu = bench_log(t, 1)
        print(f"(b1) the same on 1 worker:          {n / b1_s:>14,.0f} events/s  (CPU {b1_cpu / n * 1e9:.0f} ns/event: "
              "the log source decodes on parallel threads already)")
    c_s, c_rows = bench_polars(t)
    print(f"(c) polars group_by_dynamic (+sort): {n / c_s:>14,.0f} events/s  ({c_rows:,} windows)")
    d_s, d_rows = bench_polars_group_by(t)
    print(f"(d) polars group_by (key, window):  {n / d_s:>14,.0f} events/s  ({d_rows:,} groups)")
    print(f"ratio (a)/(c): {c_s / a_s:.1f}x")
    print(f"ratio (aN)/(a1): {a1_s / an_s:.2f}x (goal >= 1.7 on 2 cores); (aN)/(d): {d_s / an_s:.2f}x (goal >= 1.5)")
    if not args.skip_log:
        print(f"ratio (b)/(b1): {b1_s / b_s:.2f}x (goal >= 1.7)")
    r = subprocess.run([sys.executable, "-c", RSS_CHILD], capture_output=True, text=True, check=True)
    got, before, after = (int(x) for x in r.stdout.split())
    print(f"1,000,000 open (key, window) states: peak RSS {after / 1024:,.0f} MB "
          f"(process before the run: {before / 1024:,.0f} MB); {got:,} windows emitted")
    print("goals: (a) >= 20,000,000/s and >= 5x polars; (b) >= 2,000,000/s; peak RSS <= 256 MB")


if __name__ == "__main__":
    main()
