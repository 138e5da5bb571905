"""``riverbed demo``: a synthetic market-data stream through the embedded log and the engine.

1. produce keyed trades (one JSON object per record) to a 4-partition topic, in chunks, while
2. pipelines follow the topic: 1-minute bars per symbol (VWAP, volume, high, low, trade count)
   into ``demo.bars_1m``; rolling features per symbol (1-minute mean and std, EWM, cumulative
   volume, time since the previous trade) into ``demo.features``; and a live table of each
   symbol's latest features read back from that topic, printed as the trades arrive;
3. a consumer group of two members reads the trades back, as a downstream service would;

then prints the final features, the bars of the last minute, a per-partition summary, and the
throughput.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

import riverbed as rb

SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "BRK.B", "JPM", "V", "XOM", "UNH"]


def synthetic_trades(n: int, start_ms: int = 1_700_000_000_000, seed: int = 7) -> pa.Table:
    """``n`` trades: symbol, price (a geometric random walk per symbol, steps of 0.05%), qty and
    an event timestamp (ms, one per trade). Built with Arrow compute kernels (no Python loop per
    trade: that took 4.6 s of the demo's 12 for a million trades)."""
    if n < 0:
        raise ValueError(f"synthetic_trades: n must not be negative, got {n}")
    u = [pc.random(n, initializer=seed * 4 + k) for k in range(4)]
    sym = pc.cast(pc.floor(pc.multiply(u[0], len(SYMBOLS))), pa.int32())
    # Box-Muller: standard normal steps from two uniforms (1 - u keeps the log finite).
    normal = pc.multiply(
        pc.sqrt(pc.multiply(pc.ln(pc.subtract(1.0, u[1])), -2.0)), pc.cos(pc.multiply(u[2], 2 * math.pi))
    )
    log_step = pc.multiply(normal, 0.0005)
    # Per symbol, a running sum of log steps: sort by symbol (Arrow's sort is stable, so each
    # symbol's trades stay in time order), sum along, take off each symbol's sum before its first
    # trade, and put the rows back in time order.
    order = pc.sort_indices(sym)
    sorted_sym = pc.take(sym, order)
    walk = pc.cumulative_sum(pc.take(log_step, order))
    base_by_sym = [0.0] * len(SYMBOLS)
    first = 0
    for vc in sorted(pc.value_counts(sorted_sym).to_pylist(), key=lambda d: d["values"]):
        base_by_sym[vc["values"]] = walk[first - 1].as_py() if first > 0 else 0.0
        first += vc["counts"]
    base = pc.take(pa.array(base_by_sym, pa.float64()), sorted_sym)
    start_price = pc.take(pa.array([100.0 + 10 * i for i in range(len(SYMBOLS))]), sorted_sym)
    price_sorted = pc.multiply(start_price, pc.exp(pc.subtract(walk, base)))
    back = pc.sort_indices(order)
    price = pc.max_element_wise(pc.round(pc.take(price_sorted, back), 2), 1.0)
    qty = pc.add(pc.cast(pc.floor(pc.multiply(u[3], 499)), pa.int64()), 1)
    return pa.table(
        {
            "symbol": pc.take(pa.array(SYMBOLS), sym),
            "price": price,
            "qty": qty,
            "ts": pc.add(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), n)), start_ms - 1),
        }
    )


def _table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)), file=out)
        if j == 0:
            print("  ".join("-" * w for w in widths), file=out)


def _live_rows(table: rb.Table) -> list[list[str]]:
    rows = [["symbol", "price", "mean_1m", "std_1m", "ewm_30s", "trades"]]
    view = table.to_arrow().sort_by("symbol")
    for r in view.to_pylist():
        sym = r["symbol"]
        rows.append(
            [sym, f"{r['price']:.2f}", f"{r['px_mean']:.2f}", f"{r['px_std'] or 0:.3f}", f"{r['px_ewm']:.2f}",
             f"{int(r['n']):,}"]
        )
    return rows


def run_demo(log_dir: str | Path, records: int = 1_000_000, out: IO[str] = sys.stdout) -> pa.Table:
    """Run the demo in ``log_dir`` (its ``demo.*`` topics are recreated); returns the summary.

    While the trades are produced in chunks (a live market), three pipelines follow the topic:
    1-minute bars into ``demo.bars_1m``, rolling features per symbol into ``demo.features``, and
    a table of each symbol's latest features read from that topic, printed as it changes.
    """
    t0 = time.perf_counter()
    trades = synthetic_trades(records)
    gen_s = time.perf_counter() - t0
    tty = out.isatty() if hasattr(out, "isatty") else False
    with rb.Log(log_dir) as log:
        for name in ("demo.trades", "demo.bars_1m", "demo.features"):
            if name in log.topics():
                log.delete_topic(name)
        topic = log.topic("demo.trades", partitions=4)
        bars_topic = log.topic("demo.bars_1m", partitions=4)
        features_topic = log.topic("demo.features", partitions=4)
        schema = trades.schema

        def read(t: rb.Topic) -> rb.Pipeline:
            # idle_timeout: longer than a pause between two produce calls on a busy machine, so a
            # window closes on the quiet stream only when the market has really stopped.
            return rb.Pipeline.read(t, timestamp="ts", lateness="1s", idle_timeout="2s", schema=schema)

        bars = (
            read(topic)
            .with_columns(notional=rb.col("price") * rb.col("qty"))
            .window(rb.tumbling("1m"), by="symbol")
            .agg(
                vwap=rb.sum("notional") / rb.sum("qty"),
                volume=rb.sum("qty"),
                high=rb.max("price"),
                low=rb.min("price"),
                trades=rb.count(),
            )
            .write(bars_topic, key="symbol")
        )
        features = (
            read(topic)
            .rolling(by="symbol", period="1m", px_mean=rb.mean("price"), px_std=rb.std("price"))
            .ewm_mean("price", by="symbol", half_life="30s", alias="px_ewm")
            .cum_sum("qty", by="symbol", alias="volume")
            .time_since_previous(by="symbol", alias="gap_ms")
            .select("symbol", "ts", "price", "px_mean", "px_std", "px_ewm", "volume", "gap_ms")
            .write(features_topic, key="symbol")
        )
        feat_schema = pa.schema(
            [("symbol", pa.string()), ("ts", pa.int64()), ("price", pa.float64()), ("px_mean", pa.float64()),
             ("px_std", pa.float64()), ("px_ewm", pa.float64()), ("volume", pa.float64()), ("gap_ms", pa.int64())]
        )
        live = (
            rb.Pipeline.read(features_topic, timestamp="ts", schema=feat_schema, idle_timeout="2s")
            .group_by("symbol")
            .agg(price=rb.last("price"), px_mean=rb.last("px_mean"), px_std=rb.last("px_std"),
                 px_ewm=rb.last("px_ewm"), n=rb.count())
        )
        print(f"riverbed demo: {records:,} synthetic trades -> topic demo.trades (4 partitions) in {log_dir}", file=out)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # Its topics are made afresh each time: a rerun reprocessing them is what it wants.
            warnings.filterwarnings("ignore", message="riverbed: this run reads topics", category=UserWarning)
            bars.start()
            features.start()
        live.start()
        chunk = max(1, records // 20)
        shown = 0
        for off in range(0, records, chunk):
            topic.produce_batch(trades.slice(off, chunk), key="symbol", timestamp="ts")
            if off // chunk % 5 == 4 or off + chunk >= records:
                time.sleep(0.05)
                if live.to_arrow().num_rows:
                    rows = _live_rows(live)
                    if tty and shown:
                        print(f"\x1b[{len(rows) + 2}A", end="", file=out)
                    print(f"\nlatest features per symbol ({min(off + chunk, records):,} trades so far):", file=out)
                    _table(rows, out)
                    shown += 1
        produce_s = time.perf_counter() - t0

        # Wait for the pipelines to catch up: the last windows close once the stream has been
        # quiet for idle_timeout + lateness (+ what is missing to their end).
        deadline = time.monotonic() + 300
        def total_out(t: rb.Topic) -> int:
            return sum(b - a for a, b in t.offsets().values())
        while time.monotonic() < deadline and total_out(features_topic) < records:
            time.sleep(0.05)
        bars_done = 0
        while time.monotonic() < deadline:
            tb = bars_topic.read()
            import json as _json

            bars_done = sum(_json.loads(v)["trades"] for v in tb.column("value").to_pylist())
            if bars_done >= records:
                break
            time.sleep(0.1)
        pipeline_s = time.perf_counter() - t0
        run = bars.stop()
        feat_run = features.stop()
        live.stop()
        bars_table = bars_topic.read()
        final = _live_rows(live)

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
        window_s = pipeline_s
        n_features = total_out(features_topic)

    import json

    last = [json.loads(v) for v in bars_table.column("value").to_pylist()]
    last_start = max(r["window_start"] for r in last)
    rows_b = [["symbol", "window_start", "vwap", "volume", "high", "low", "trades"]]
    for r in sorted((r for r in last if r["window_start"] == last_start), key=lambda r: r["symbol"]):
        rows_b.append(
            [r["symbol"], str(r["window_start"]), f"{r['vwap']:.2f}", f"{r['volume']:,}",
             f"{r['high']:.2f}", f"{r['low']:.2f}", f"{r['trades']:,}"]
        )
    window_metrics = [m for m in run.metrics if m["operator"].startswith("window")]
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
    print("\nlatest features per symbol (final):", file=out)
    _table(final, out)
    print(f"\n1-minute bars of the last minute ({len(last):,} bars written to demo.bars_1m):", file=out)
    _table(rows_b, out)
    print("\ntrades per partition, read back by consumer group 'demo' (members a and b):", file=out)
    _table(rows, out)
    late = sum(m["late_records"] for m in window_metrics) + sum(m["late_records"] for m in feat_run.metrics)
    written = (
        "all written"
        if bars_done == records and n_features == records
        else f"INCOMPLETE ({bars_done:,} trades in bars, {n_features:,} features of {records:,})"
    )
    print(
        f"\ngenerate {gen_s:.2f}s | produce {records / produce_s:,.0f} trades/s while 3 pipelines follow | "
        f"bars + {n_features:,} feature records: {written} {max(window_s - produce_s, 0):.2f}s after the "
        f"last trade, {records / window_s:,.0f} events/s end to end ({late} late) | "
        f"group consume {polled.num_rows / consume_s:,.0f} records/s",
        file=out,
    )
    if polled.num_rows != records:
        raise RuntimeError(f"demo consumed {polled.num_rows} records, expected {records}")
    return summary

