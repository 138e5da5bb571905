"""Shared fixtures and helpers for the riverbed log test-suite.

Independent references used across the suite:
* kafka-python's RecordBatch v2 parser (``kafka.record.MemoryRecords``) for the on-disk format;
* kafka-python's ``murmur2`` for the default partitioner;
* plain-Python brute-force models for offsets, retention, compaction and time look-ups.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

import riverbed as rb

SEGMENT_NAME_LEN = 20  # <20-digit base offset>.log


def pytest_configure(config):
    # kafka-python's protocol schemas use deprecated importlib.resources calls on import
    config.addinivalue_line("filterwarnings", "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning")


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "log"


@pytest.fixture
def log(log_dir: Path):
    """An open log with the background cleaner off (tests call ``cleanup()`` explicitly).

    ``fsync="never"``: these tests are about semantics, and an fsync per produce call makes them
    slow on a busy disk. Durability under ``fsync="batch"`` is what test_crash.py checks.
    """
    lg = rb.Log(log_dir, fsync="never", cleanup_interval=None)
    try:
        yield lg
    finally:
        lg.close()


def reopen(lg: rb.Log) -> rb.Log:
    """Close ``lg`` and open its directory again."""
    path = lg.path
    lg.close()
    return rb.Log(path, fsync="never", cleanup_interval=None)


def table_rows(tbl: pa.Table | pa.RecordBatch) -> list[tuple]:
    """(partition, offset, timestamp ms, key, value, headers) of every row of a read/poll result."""
    if isinstance(tbl, pa.RecordBatch):
        tbl = pa.Table.from_batches([tbl])
    ts = tbl.column("timestamp").cast(pa.int64()).to_pylist()
    parts = tbl.column("partition").to_pylist()
    offs = tbl.column("offset").to_pylist()
    keys = tbl.column("key").to_pylist()
    vals = tbl.column("value").to_pylist()
    hdrs = [[(h["key"], h["value"]) for h in hs] for hs in tbl.column("headers").to_pylist()]
    return list(zip(parts, offs, ts, keys, vals, hdrs))


def read_all(topic: rb.Topic) -> dict[int, list[tuple]]:
    """``{partition: [(offset, timestamp, key, value, headers), ...]}`` from ``topic.read()``."""
    out: dict[int, list[tuple]] = {p: [] for p in range(topic.partitions)}
    for p, o, ts, k, v, h in table_rows(topic.read()):
        out[p].append((o, ts, k, v, h))
    return out


def segment_files(topic_dir: Path, partition: int) -> list[Path]:
    """The partition's ``.log`` segment files, oldest first."""
    files = sorted((topic_dir / str(partition)).glob("*.log"))
    for f in files:
        assert len(f.stem) == SEGMENT_NAME_LEN and f.stem.isdigit(), f
    return files


def parse_segment(path: Path) -> list[dict]:
    """Parse one segment with kafka-python: one dict per batch, records included."""
    from kafka.record import MemoryRecords

    data = path.read_bytes()
    mr = MemoryRecords(data)
    batches = []
    consumed = 0
    while True:
        b = mr.next_batch()
        if b is None:
            break
        crc_ok = b.validate_crc()  # kafka-python wants this before iterating
        recs = [
            {
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": r.key,
                "value": r.value,
                "headers": [(k, v) for k, v in r.headers],
            }
            for r in b
        ]
        batches.append(
            {
                "base_offset": b.base_offset,
                "crc_ok": crc_ok,
                "magic": b.magic,
                "compression": b.compression_type,
                "max_timestamp": b.max_timestamp,
                "last_offset_delta": b.last_offset_delta,
                "size": b.size_in_bytes,
                "records": recs,
            }
        )
        consumed += b.size_in_bytes
    assert consumed == len(data), f"{path}: kafka-python parsed {consumed} of {len(data)} bytes"
    return batches


def parse_partition(topic_dir: Path, partition: int) -> list[dict]:
    """Every record of a partition, read from its segment files by kafka-python."""
    out = []
    for f in segment_files(topic_dir, partition):
        for b in parse_segment(f):
            out.extend(b["records"])
    return out


def run_python(code: str, *args: object, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
