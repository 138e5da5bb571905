"""``riverbed demo``: a synthetic market-data stream through the embedded log.

It produces keyed trades (one JSON object per record) to a 4-partition topic, consumes them in a
consumer group of two members, and prints a per-partition summary with the throughput of each
step.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

import riverbed as rb

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "BRK.B", "JPM", "V", "XOM", "UNH"]


def synthetic_trades(n: int, start_ms: int = 1_700_000_000_000, seed: int = 7) -> pa.Table:
    """``n`` trades: symbol, price (a random walk per symbol), qty and an event timestamp (ms)."""
    import random

    rng = random.Random(seed)
    sym_idx = [rng.randrange(len(SYMBOLS)) for _ in range(n)]
    prices = [100.0 + 10 * i for i in range(len(SYMBOLS))]
    price_col = []
    for i in sym_idx:
        prices[i] = max(1.0, prices[i] * (1 + rng.gauss(0, 0.0005)))
        price_col.append(round(prices[i], 2))
    return pa.table(
        {
            "symbol": pa.array([SYMBOLS[i] for i in sym_idx]),
            "price": pa.array(price_col, pa.float64()),
            "qty": pa.array([rng.randrange(1, 500) for _ in range(n)], pa.int64()),
            "ts": pa.array([start_ms + i for i in range(n)], pa.int64()),
        }
    )


def _table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)), file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)


def run_demo(log_dir: str | Path, records: int = 1_000_000, out: IO[str] = sys.stdout) -> pa.Table:
    """Run the demo in ``log_dir`` (its ``demo.trades`` topic is recreated); returns the summary."""
    t0 = time.perf_counter()
    trades = synthetic_trades(records)
    gen_s = time.perf_counter() - t0
    with rb.Log(log_dir) as log:
        if "demo.trades" in log.topics():
            log.delete_topic("demo.trades")
        topic = log.topic("demo.trades", partitions=4)
        t0 = time.perf_counter()
        for off in range(0, records, 100_000):
            topic.produce_batch(trades.slice(off, 100_000), key="symbol", timestamp="ts")
        produce_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        a = topic.consumer(group="demo")
        b = topic.consumer(group="demo")
        batches = []
        for c in (a, b):
            while (batch := c.poll(max_records=200_000, timeout=0.2)).num_rows:
                batches.append(batch)
            c.commit()
        consume_s = time.perf_counter() - t0
        assignment = {0: "a", 1: "a", 2: "b", 3: "b"} if a.assignment() == [0, 1] else {}
        a.close()
        b.close()
        polled = pa.Table.from_batches(batches)

    summary = (
        polled.group_by("partition")
        .aggregate([("offset", "count"), ("offset", "min"), ("offset", "max"), ("key", "count_distinct")])
        .sort_by("partition")
    )
    sizes = pc.binary_length(polled["value"])
    rows = [["partition", "member", "records", "first offset", "last offset", "symbols", "value bytes"]]
    for r in summary.to_pylist():
        p = r["partition"]
        mask = pc.equal(polled["partition"], p)
        rows.append(
            [
                str(p),
                assignment.get(p, "?"),
                f"{r['offset_count']:,}",
                str(r["offset_min"]),
                str(r["offset_max"]),
                str(r["key_count_distinct"]),
                f"{pc.sum(pc.filter(sizes, mask)).as_py():,}",
            ]
        )
    print(f"riverbed demo: {records:,} synthetic trades -> topic demo.trades (4 partitions) in {log_dir}", file=out)
    _table(rows, out)
    print(
        f"\ngenerate {gen_s:.2f}s | produce_batch {records / produce_s:,.0f} records/s (fsync per call) | "
        f"group consume {polled.num_rows / consume_s:,.0f} records/s",
        file=out,
    )
    if polled.num_rows != records:
        raise RuntimeError(f"demo consumed {polled.num_rows} records, expected {records}")
    return summary

