"""Produce and consume throughput of the embedded log, from Python, beside the disk's limit.

1,000,000 records (100-byte values, 1,000 keys, 4 partitions):
- produce: ``produce_batch`` from a pyarrow table in calls of 100,000 rows, ``fsync="batch"``
  (every call is durable when it returns);
- consume: ``poll`` into Arrow record batches;
- disk: the same number of bytes written with ``write`` + ``fdatasync`` per 100,000-record
  chunk, the physical limit of durable produce.

Run: ``python benchmarks/log_throughput.py [--records N] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import pyarrow as pa

import riverbed as rb


def make_table(n: int, keys: int, value_bytes: int) -> pa.Table:
    rng = os.urandom(value_bytes * 64)
    values = [rng[(i % 64) * value_bytes : (i % 64 + 1) * value_bytes] for i in range(n)]
    return pa.table(
        {
            "key": pa.array([f"key-{i % keys:04d}" for i in range(n)]),
            "value": pa.array(values, pa.binary()),
            "ts": pa.array(range(1_700_000_000_000, 1_700_000_000_000 + n), pa.int64()),
        }
    )


def disk_bandwidth(path: str, total_bytes: int, chunks: int) -> float:
    """Bytes/s of write + fdatasync per chunk into a fresh file."""
    chunk = os.urandom(min(total_bytes // chunks, 1 << 26))
    per = total_bytes // chunks
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        t0 = time.perf_counter()
        for _ in range(chunks):
            left = per
            while left > 0:
                left -= os.write(fd, chunk[: min(left, len(chunk))])
            os.fdatasync(fd)
        return total_bytes / (time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=100_000)
    ap.add_argument("--dir", default=None, help="where to put the log (default: a temp dir)")
    args = ap.parse_args()
    n, chunk = args.records, args.chunk
    root = tempfile.mkdtemp(prefix="riverbed-bench-", dir=args.dir)
    table = make_table(n, keys=1000, value_bytes=100)
    try:
        with rb.Log(os.path.join(root, "log"), fsync="batch") as log:
            topic = log.topic("bench", partitions=4)
            t0 = time.perf_counter()
            for off in range(0, n, chunk):
                topic.produce_batch(table.slice(off, chunk), key="key", value="value", timestamp="ts")
            produce_s = time.perf_counter() - t0
            log_bytes = sum(p["size_bytes"] for p in topic.describe()["partitions"])

            results = {}
            for max_records in (10_000, 100_000):
                c = topic.consumer()
                got = 0
                t0 = time.perf_counter()
                while got < n:
                    got += c.poll(max_records=max_records, timeout=1.0).num_rows
                results[max_records] = n / (time.perf_counter() - t0)
                c.close()
        bw = disk_bandwidth(os.path.join(root, "disk.bin"), log_bytes, max(1, n // chunk))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    produce_rate = n / produce_s
    produce_bw = log_bytes / produce_s
    print(f"records: {n:,} x 100-byte values, 1,000 keys, 4 partitions; log bytes on disk: {log_bytes:,}")
    print(f"produce_batch (fsync=batch, {chunk:,} rows/call): {produce_rate:,.0f} records/s, {produce_bw / 1e6:,.1f} MB/s")
    print(f"disk durable write (write + fdatasync per {chunk:,}-record chunk): {bw / 1e6:,.1f} MB/s "
          f"= {bw / (log_bytes / n):,.0f} records/s")
    print(f"produce / disk bandwidth ratio: {produce_bw / bw:.2f}")
    for k, v in results.items():
        print(f"consume poll(max_records={k:,}) into Arrow: {v:,.0f} records/s")
    print(f"goals: produce >= 3,000,000 records/s or ratio >= 0.90 -> "
          f"{'met' if produce_rate >= 3e6 or produce_bw / bw >= 0.9 else 'NOT met'}; "
          f"consume >= 10,000,000 records/s -> {'met' if max(results.values()) >= 1e7 else 'NOT met'}")


if __name__ == "__main__":
    main()
