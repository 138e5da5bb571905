"""Kafka -> windowed aggregate -> Kafka throughput: riverbed vs a plain confluent-kafka loop, in one process.

Both run against librdkafka's mock cluster (``riverbed.testing.MockKafka``: real Kafka-protocol
brokers on loopback, inside this process, one broker).

Workload: N events (default 2,000,000), 1,000 string symbols, columns ``sym``, ``price`` (float),
``volume`` (int) and ``ts`` (int64 ms, +1 ms per event with up to 20 ms disorder), produced (not
timed) as JSON values to a topic keyed by ``sym``. Per symbol, tumbling 1-minute windows with
count, sum of volume and mean of price; the results go, keyed by ``sym``, to an output topic.

- (a) riverbed: ``Pipeline.read(topic) -> window -> write(topic)``, timed from start to the
      output being flushed (read from Kafka, decode JSON, aggregate, write, flush);
- (b) confluent-kafka in Python: a ``Consumer`` assigned every partition from the beginning,
      ``consume(10,000)`` until the end offsets, ``json.loads`` per value, the same aggregation in
      a dict, the results produced with a ``Producer`` and flushed;
- (c) for context, the same consume loop alone (no JSON, no aggregation, no output).

Partitions: 4, or more when needed. The mock keeps only the last 5 MB of each partition (about
60,000 of these events; older records are dropped), so by default the input topic gets the fewest
partitions >= 4 that put at most 50,000 events on any partition (found with Kafka's murmur2
partitioner over the symbols). After producing, every partition is checked to start at offset 0.

Each figure is the best of ``--repeat`` runs (each run writes to a fresh output topic). Every run's
output is checked: the counts sum to N, and the number of windows is pandas' group count of
(sym, ts // 60000); riverbed's values are also compared with the Python loop's.

Both clients run with their default settings unless ``--riverbed-config`` / ``--consumer-config``
add properties (for riverbed's client reading the input, for the confluent consumers).

Run: ``python benchmarks/kafka_throughput.py [--events N] [--repeat R] [--partitions P]
[--riverbed-config KEY=VALUE ...] [--consumer-config KEY=VALUE ...]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

import riverbed as rb
from riverbed.testing import MockKafka

SYMBOLS = 1000
WINDOW_MS = 60_000
DISORDER_MS = 20
CONSUME_BATCH = 10_000
# The mock broker drops a partition's oldest records beyond 5 MB (~85 bytes per event here).
MAX_PER_PARTITION = 50_000

# (sym, window start ms) -> (count, sum of volume, mean of price)
Windows = dict[tuple[str, int], tuple[int, int, float]]


def make_table(n: int, symbols: int = SYMBOLS, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"SYM{i:04d}" for i in range(symbols)])
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) + rng.integers(0, DISORDER_MS + 1, n)
    return pa.table(
        {
            "sym": pa.array(names[rng.integers(0, symbols, n)]),
            "price": np.round(100.0 + 50.0 * rng.random(n), 2),
            "volume": rng.integers(1, 1000, n, dtype=np.int64),
            "ts": ts,
        }
    )


def expected_windows(t: pa.Table) -> int:
    df = t.select(["sym", "ts"]).to_pandas()
    return int(df.groupby([df["sym"], df["ts"] // WINDOW_MS]).ngroups)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the default partitioner of keyed records, as Java's and riverbed's)."""
    m = 0x5BD1E995
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    full = len(data) - len(data) % 4
    for i in range(0, full, 4):
        k = (int.from_bytes(data[i : i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[full:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def choose_partitions(t: pa.Table, at_least: int = 4) -> int:
    """The fewest partitions >= ``at_least`` with at most MAX_PER_PARTITION events on each."""
    uniq, inverse = np.unique(t.column("sym").to_numpy(zero_copy_only=False), return_inverse=True)
    hashes = np.array([murmur2(s.encode()) & 0x7FFFFFFF for s in uniq], dtype=np.int64)
    per_sym = np.bincount(inverse, minlength=len(uniq))
    p = at_least
    while np.bincount(hashes % p, weights=per_sym, minlength=p).max() > MAX_PER_PARTITION:
        p += 1
    return p


def check_input(bootstrap: str, topic: str, partitions: int, n: int) -> None:
    """Every produced event is still in the topic: the mock drops old records past 5 MB."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check"})
    try:
        marks = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0) for p in range(partitions)]
    finally:
        c.close()
    kept = sum(hi - lo for lo, hi in marks)
    if any(lo != 0 for lo, _ in marks) or kept != n:
        raise SystemExit(
            f"the mock cluster kept {kept:,} of {n:,} events (it drops a partition's records beyond "
            f"5 MB, ~60,000 events): use more --partitions or fewer --events"
        )


def best_of(runs: int, fn: Callable[[int], float]) -> float:
    """The least of ``runs`` calls of ``fn`` (given the run number), each returning the seconds
    of what it times."""
    return min(fn(i) for i in range(runs))


# -- (a) riverbed -----------------------------------------------------------------------------


def run_riverbed(tin: rb.KafkaTopic, tout: rb.KafkaTopic, schema: pa.Schema) -> tuple[float, int]:
    """Seconds for the pipeline run, and the records it read."""
    p = (
        rb.Pipeline.read(tin, timestamp="ts", schema=schema, lateness=f"{DISORDER_MS}ms")
        .window(rb.tumbling("1m"), by="sym")
        .agg(n=rb.count(), v=rb.sum("volume"), px=rb.mean("price"))
        .write(tout, key="sym")
    )
    t0 = time.perf_counter()
    res = p.run(progress=False)
    dt = time.perf_counter() - t0
    return dt, sum(m["records_in"] for m in res.metrics if m["operator"].startswith("read"))


def read_windows(tout: rb.KafkaTopic) -> Windows:
    out: Windows = {}
    for raw in tout.read(timeout=1.0).column("value").to_pylist():
        r = json.loads(raw)
        out[(r["sym"], r["window_start"])] = (r["n"], r["v"], r["px"])
    return out


# -- (b), (c) confluent-kafka -----------------------------------------------------------------


def consumer(bootstrap: str, topic: str, partitions: int, extra: dict[str, str]) -> tuple[Consumer, int]:
    """A consumer of every partition from the beginning, and how many records it has to read."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "bench",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )
    total = 0
    for p in range(partitions):
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0)
        total += hi - lo
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    return c, total


def consume_all(c: Consumer, total: int, on_value: Callable[[bytes], None] | None) -> int:
    seen = 0
    idle_since = time.perf_counter()
    while seen < total:
        msgs = c.consume(num_messages=CONSUME_BATCH, timeout=1.0)
        if not msgs:
            if time.perf_counter() - idle_since > 30.0:
                raise SystemExit(f"confluent consumer stalled after {seen:,} of {total:,} records")
            continue
        idle_since = time.perf_counter()
        for msg in msgs:
            err = msg.error()
            if err is not None:
                raise KafkaException(err)
            value = msg.value()
            if on_value is not None:
                on_value(value)
        seen += len(msgs)
    return seen


def run_confluent(bootstrap: str, topic: str, partitions: int, out_topic: str, extra: dict[str, str]) -> Windows:
    c, total = consumer(bootstrap, topic, partitions, extra)
    # (sym, window start) -> [count, sum of volume, sum of price]
    acc: dict[tuple[str, int], list[Any]] = {}

    def on_value(value: bytes) -> None:
        r = json.loads(value)
        k = (r["sym"], r["ts"] - r["ts"] % WINDOW_MS)
        a = acc.get(k)
        if a is None:
            acc[k] = [1, r["volume"], r["price"]]
        else:
            a[0] += 1
            a[1] += r["volume"]
            a[2] += r["price"]

    try:
        consume_all(c, total, on_value)
    finally:
        c.close()
    p = Producer({"bootstrap.servers": bootstrap})
    out: Windows = {}
    for (sym, start), (cnt, vol, px) in acc.items():
        out[(sym, start)] = (cnt, vol, px / cnt)
        row = {"sym": sym, "window_start": start, "window_end": start + WINDOW_MS, "n": cnt, "v": vol}
        value = json.dumps({**row, "px": px / cnt})
        while True:
            try:
                p.produce(out_topic, value=value, key=sym, timestamp=start + WINDOW_MS - 1)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(30.0):
        raise SystemExit("confluent producer: records left unacknowledged after 30 s")
    return out


def run_consume_only(bootstrap: str, topic: str, partitions: int, extra: dict[str, str]) -> int:
    c, total = consumer(bootstrap, topic, partitions, extra)
    try:
        return consume_all(c, total, None)
    finally:
        c.close()


# -- checks -----------------------------------------------------------------------------------


def check(what: str, got: Windows, n: int, windows: int, records_written: int) -> None:
    total = sum(cnt for cnt, _, _ in got.values())
    if total != n:
        raise SystemExit(f"{what}: counts sum to {total:,}, expected {n:,} events")
    if len(got) != windows or records_written != windows:
        raise SystemExit(f"{what}: {len(got):,} windows ({records_written:,} records written), pandas finds {windows:,}")


def check_same(mine: Windows, theirs: Windows) -> None:
    if mine.keys() != theirs.keys():
        raise SystemExit(f"riverbed and confluent windows differ: {len(mine.keys() ^ theirs.keys()):,} keys")
    for k, (n, v, px) in mine.items():
        n2, v2, px2 = theirs[k]
        if n != n2 or v != v2 or not math.isclose(px, px2, rel_tol=1e-9):
            raise SystemExit(f"riverbed and confluent disagree on {k}: {(n, v, px)} vs {(n2, v2, px2)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs for each figure")
    ap.add_argument("--partitions", type=int, default=None, help="input topic partitions (default: see above)")
    ap.add_argument(
        "--riverbed-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka property for riverbed's client reading the input, e.g. fetch.queue.backoff.ms=0",
    )
    ap.add_argument(
        "--consumer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka property for the confluent consumers, e.g. fetch.queue.backoff.ms=0",
    )
    args = ap.parse_args()
    n, runs = args.events, args.repeat
    extra = dict(kv.split("=", 1) for kv in args.consumer_config)
    rb_extra = dict(kv.split("=", 1) for kv in args.riverbed_config)
    t = make_table(n)
    windows = expected_windows(t)
    parts = args.partitions or choose_partitions(t)
    print(
        f"{n:,} events, {SYMBOLS:,} symbols, JSON values, {parts} partitions; tumbling 1 m count/sum/mean "
        f"-> {windows:,} windows"
    )
    print(f"librdkafka mock cluster (1 broker) in process; {os.cpu_count()} cores; best of {runs}")
    if rb_extra:
        print(f"riverbed client extra config: {rb_extra}")
    if extra:
        print(f"confluent consumer extra config: {extra}")

    with tempfile.TemporaryDirectory() as d, MockKafka(brokers=1) as mock:
        bootstrap = mock.bootstrap_servers
        k = mock.kafka(timeout=30, state_dir=d)
        tin = k.create_topic("events", partitions=parts)
        t0 = time.perf_counter()
        for off in range(0, n, 500_000):
            tin.produce_batch(t.slice(off, 500_000), key="sym", timestamp="ts")
        check_input(bootstrap, tin.name, parts, n)
        print(f"(input topic produced in {time.perf_counter() - t0:.1f} s, not timed)")
        rb_in = mock.kafka(timeout=30, state_dir=d, config=rb_extra).topic(tin.name)

        # (a): the pipeline run alone is timed; the output is read back and checked afterwards.
        rb_out: list[Windows] = []

        def riverbed_once(i: int) -> float:
            out = k.create_topic(f"bars-riverbed-{i}", partitions=4)
            dt, read = run_riverbed(rb_in, out, t.schema)
            if read != n:
                raise SystemExit(
                    f"riverbed read {read:,} records, expected {n:,}: its bounded run ended before the end "
                    "offsets (it stops at the first poll finding nothing, e.g. while librdkafka waits "
                    "fetch.queue.backoff.ms to refill its queue; try --riverbed-config fetch.queue.backoff.ms=0)"
                )
            got = read_windows(out)
            check("riverbed", got, n, windows, len(got))
            rb_out.append(got)
            return dt

        # (b): consume, decode, aggregate, produce, flush; the output topic exists beforehand.
        def confluent_once(i: int) -> float:
            out = k.create_topic(f"bars-confluent-{i}", partitions=4)
            t0 = time.perf_counter()
            got = run_confluent(bootstrap, tin.name, parts, out.name, extra)
            dt = time.perf_counter() - t0
            check("confluent", got, n, windows, out.read(timeout=1.0).num_rows)
            check_same(rb_out[i], got)
            return dt

        def consume_only_once(_i: int) -> float:
            t0 = time.perf_counter()
            seen = run_consume_only(bootstrap, tin.name, parts, extra)
            dt = time.perf_counter() - t0
            if seen != n:
                raise SystemExit(f"consume only: read {seen:,} records, expected {n:,}")
            return dt

        s_rb = best_of(runs, riverbed_once)
        s_cf = best_of(runs, confluent_once)
        s_co = best_of(runs, consume_only_once)

    print(f"(a) riverbed, topic -> window -> topic:        {n / s_rb:>12,.0f} events/s  ({s_rb:.2f} s)")
    print(f"(b) confluent-kafka + json + dict -> producer: {n / s_cf:>12,.0f} events/s  ({s_cf:.2f} s)")
    print(f"(c) confluent-kafka consume only (context):    {n / s_co:>12,.0f} events/s  ({s_co:.2f} s)")
    print(f"ratio (a)/(b): {s_cf / s_rb:.1f}x;  (a)/(c): {s_co / s_rb:.1f}x")
    print("checked: counts sum to the events, windows == pandas groupby (sym, ts // 60000), (a) == (b)")


if __name__ == "__main__":
    main()
