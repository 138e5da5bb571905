"""`riverbed serve` vs librdkafka's in-memory mock cluster, with the same client, in one run.

Both brokers run in this process on loopback: ``rb.serve`` over a fresh log in a temporary
directory (``fsync="batch"``: every acknowledged record is on disk before its ack, fsyncs shared
between concurrent produce requests), and ``riverbed.testing.MockKafka`` (librdkafka's mock
cluster: memory only, no disk at all) as the peer. The client is riverbed's own Kafka client
(``rb.Kafka``: librdkafka) with its default settings, for both.

- produce: N records (default 1,000,000) of 100-byte values, no key, spread over P partitions
  (default 32; the mock keeps only the last 5 MB of a partition), ``produce_batch`` then flush:
  timed until every record is acknowledged (acks=all, idempotent producer);
- consume: a consumer of every partition from the beginning, ``poll`` until N records;
- latency: records produced at R records/s (default 10,000) for S seconds (default 5), each
  carrying its send time; a consumer in another thread polls; end-to-end latency is the time
  from ``produce`` to the record coming out of ``poll``; p50 and p99 over all records
  (``linger.ms=0`` on the producer for this part, for both brokers), the first second not counted.

Each throughput figure is the best of ``--repeat`` runs (fresh topics each run); every run checks
the consumer got exactly N records with the values produced.

Run: ``python benchmarks/serve_throughput.py [--records N] [--partitions P] [--repeat R]
[--rate R] [--seconds S]``
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import threading
import time
from typing import Any

import numpy as np
import pyarrow as pa

import riverbed as rb
from riverbed.testing import MockKafka

VALUE_BYTES = 100


def make_values(n: int) -> pa.Table:
    rng = np.random.default_rng(3)
    body = rng.integers(0, 256, size=(n, VALUE_BYTES - 8), dtype=np.uint8)
    seq = np.arange(n, dtype=">u8").view(np.uint8).reshape(n, 8)
    raw = np.concatenate([seq, body], axis=1).reshape(-1)
    offsets = pa.array(np.arange(0, (n + 1) * VALUE_BYTES, VALUE_BYTES, dtype=np.int32))
    return pa.table({"v": pa.BinaryArray.from_buffers(pa.binary(), n, [None, offsets.buffers()[1], pa.py_buffer(raw.tobytes())])})


def create(kafka: rb.Kafka, name: str, partitions: int) -> rb.KafkaTopic:
    return kafka.create_topic(name, partitions=partitions)


def produce(topic: rb.KafkaTopic, values: pa.Table) -> float:
    t0 = time.perf_counter()
    n = topic.produce_batch(values, value="v")
    dt = time.perf_counter() - t0
    assert n == values.num_rows
    return dt


def kept(bootstrap: str, topic: str, partitions: int) -> int:
    """Records the broker still holds (librdkafka's mock cluster drops old ones past a size)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-kept"})
    try:
        marks = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10.0) for p in range(partitions)]
    finally:
        c.close()
    return sum(hi - lo for lo, hi in marks)


def consume(topic: rb.KafkaTopic, n: int, limit: int) -> float:
    """Seconds to poll the first ``limit`` records (each distinct, sequence numbers < ``n``)."""
    c = topic.consumer()
    got = 0
    seqs = np.zeros(n, dtype=bool)
    t0 = time.perf_counter()
    idle = time.perf_counter()
    while got < limit:
        b = c.poll(min(100_000, limit - got), timeout=1.0)
        if b.num_rows == 0:
            if time.perf_counter() - idle > 30:
                raise SystemExit(f"consumer stalled at {got:,} of {limit:,}")
            continue
        idle = time.perf_counter()
        col = b.column("value")
        data = np.frombuffer(col.buffers()[2], dtype=np.uint8)
        offs = np.frombuffer(col.buffers()[1], dtype=np.int32)[col.offset : col.offset + len(col) + 1]
        starts = offs[:-1]
        seq = np.zeros(len(starts), dtype=np.uint64)
        for i in range(8):
            seq = (seq << np.uint64(8)) | data[starts + i].astype(np.uint64)
        seqs[seq.astype(np.int64)] = True
        got += b.num_rows
    dt = time.perf_counter() - t0
    c.close()
    if got != limit or int(seqs.sum()) != limit:
        raise SystemExit(f"consumed {got:,} records, {int(seqs.sum()):,} distinct, of {limit:,}")
    return dt


def latency(kafka_latency: rb.Kafka, kafka: rb.Kafka, name: str, rate: int, seconds: float) -> tuple[float, float, int]:
    topic = create(kafka, name, 1)
    total = int(rate * seconds)
    lat: list[float] = []
    done = threading.Event()
    consumer = topic.consumer()
    consumer.poll(1, timeout=0.5)  # joined and positioned before the first record

    def read() -> None:
        while len(lat) < total and not done.is_set():
            b = consumer.poll(10_000, timeout=0.2)
            now = time.perf_counter()
            for v in b.column("value").to_pylist():
                lat.append(now - struct.unpack(">d", v[:8])[0])

    th = threading.Thread(target=read)
    th.start()
    out = kafka_latency.topic(name)
    t0 = time.perf_counter()
    step = 100  # records per tick
    for i in range(0, total, step):
        due = t0 + i / rate
        while (wait := due - time.perf_counter()) > 0:
            time.sleep(min(wait, 0.001))
        for _ in range(step):
            out.produce(struct.pack(">d", time.perf_counter()) + b"x" * (VALUE_BYTES - 8), flush=False)
    out.flush()
    th.join(timeout=seconds + 30)
    done.set()
    consumer.close()
    if len(lat) != total:
        raise SystemExit(f"latency run: {len(lat)} of {total} records came back")
    # the first second is warm-up (the consumer's first fetches, connections): not counted
    q = statistics.quantiles(lat[rate:], n=100)
    return q[49] * 1000, q[98] * 1000, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    values = make_values(args.records)
    mb = args.records * VALUE_BYTES / 1e6
    print(f"{args.records:,} records of {VALUE_BYTES} B ({mb:.0f} MB), {args.partitions} partitions, best of {args.repeat}")

    results: dict[str, dict[str, Any]] = {}
    mock = MockKafka()
    tmp = tempfile.TemporaryDirectory()
    server = rb.serve(f"{tmp.name}/log", "127.0.0.1:0", fsync="batch", config={"num.partitions": 1})
    try:
        targets = {
            "mock cluster (memory)": (mock.kafka(), mock.kafka(linger_ms=0), mock.bootstrap_servers),
            "riverbed serve (fsync=batch)": (rb.Kafka(server.bootstrap), rb.Kafka(server.bootstrap, linger_ms=0), server.bootstrap),
        }
        # The mock keeps only the newest 5 MB of a partition (about 880,000 of 1M records over 32
        # partitions, 340,000 over 8): both brokers are timed consuming what the mock kept.
        limit = args.records
        for label, (kafka, kafka_lat, bootstrap) in targets.items():
            prod, cons = [], []
            for r in range(args.repeat):
                t = create(kafka, f"bench-{r}", args.partitions)
                prod.append(produce(t, values))
                held = kept(bootstrap, t.name, args.partitions)
                if label.startswith("riverbed") and held != args.records:
                    raise SystemExit(f"riverbed serve holds {held:,} of {args.records:,} records")
                limit = min(limit, held)
                cons.append(consume(t, args.records, limit))
            p50, p99, n = latency(kafka_lat, kafka, "bench-latency", args.rate, args.seconds)
            results[label] = {"produce": min(prod), "consume": min(cons), "p50": p50, "p99": p99, "n": n}
            r = results[label]
            print(
                f"{label:30s} produce {args.records / r['produce'] / 1e6:5.2f} M rec/s ({mb / r['produce']:6.1f} MB/s)"
                f"  consume {limit / r['consume'] / 1e6:5.2f} M rec/s ({limit:,} records)"
                f"  end-to-end at {args.rate:,}/s: p50 {p50:5.2f} ms  p99 {p99:5.2f} ms ({n:,} records)"
            )
    finally:
        server.stop()
        mock.stop()
        tmp.cleanup()
    s, m = results["riverbed serve (fsync=batch)"], results["mock cluster (memory)"]
    print(
        f"ratio serve/mock: produce {m['produce'] / s['produce']:.2f}x (goal >= 0.8), "
        f"consume {m['consume'] / s['consume']:.2f}x (goal >= 1.0); serve p99 {s['p99']:.2f} ms (goal <= 10)"
    )


if __name__ == "__main__":
    main()
