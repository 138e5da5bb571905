"""Durability: every acknowledged record survives SIGKILL; torn or corrupt tails are repaired on open."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import parse_segment, read_all, segment_files, table_rows

import riverbed as rb

WRITER = r"""
import random, sys
import pyarrow as pa
import riverbed as rb

path, run, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
log = rb.Log(path, fsync="batch", cleanup_interval=None)
topic = log.topic("crash", partitions=3, segment_bytes=8192)
# warm up pyarrow's lazy imports so the kill lands in steady-state writing
topic.produce_batch(pa.table({"k": pa.array([], pa.string()), "v": pa.array([], pa.string())}), key="k", value="v")
out = sys.stdout
out.write("READY\n")
out.flush()
i = 0
while True:
    if rng.random() < 0.5:
        v = f"r{run}-{i}-" + "x" * rng.randrange(0, 120)
        i += 1
        if rng.random() < 0.5:
            p, o = topic.produce(v.encode(), key=f"k{rng.randrange(100)}", headers={"run": str(run)})
        else:
            p, o = topic.produce(v.encode(), partition=rng.randrange(3))
        out.write(f"{p} {o} {v}\n")
    else:
        n = rng.randrange(1, 40)
        vals = [f"r{run}-{i + j}-" + "y" * rng.randrange(0, 120) for j in range(n)]
        i += n
        keys = [f"k{rng.randrange(100)}" for _ in range(n)]
        parts, offs = topic.produce_batch(pa.table({"k": keys, "v": vals}), key="k", value="v")
        out.write("".join(f"{p} {o} {v}\n" for p, o, v in zip(parts.to_pylist(), offs.to_pylist(), vals)))
    out.flush()
"""


def _acked(out_path: Path) -> list[tuple[int, int, bytes]]:
    data = out_path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is '' or a torn line
    assert complete and complete[0] == b"READY", data[:200]
    acked = []
    for line in complete[1:]:
        p, o, v = line.split(b" ", 2)
        acked.append((int(p), int(o), v))
    return acked


def _verify(path: Path, acked: dict[tuple[int, int], bytes]) -> tuple[rb.Log, rb.Topic]:
    lg = rb.Log(path, cleanup_interval=None)
    for d in lg.open_report():
        assert str(path) in str(d["path"])
    topic = lg["crash"]
    data = read_all(topic)
    offsets = topic.offsets()
    values = []
    for p, rows in data.items():
        # dense offsets from 0 to latest
        assert [r[0] for r in rows] == list(range(offsets[p][1])), f"partition {p} has holes"
        values.extend(r[3] for r in rows)
    assert len(values) == len(set(values)), "a record was stored twice"
    stored = {(p, r[0]): r[3] for p, rows in data.items() for r in rows}
    missing = [(k, v) for k, v in acked.items() if stored.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged records lost or changed, e.g. {missing[:3]}"
    return lg, topic


def test_sigkill_loses_no_acknowledged_record(tmp_path):
    path = tmp_path / "log"
    rng = random.Random(1234)
    acked: dict[tuple[int, int], bytes] = {}
    runs = 20
    deadline = time.monotonic() + 50
    for run in range(runs):
        assert time.monotonic() < deadline, "crash test too slow"
        out_path = tmp_path / f"run{run}.out"
        with open(out_path, "wb") as out:
            child = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path), str(run), str(rng.randrange(1 << 30))],
                stdout=out,
                stderr=subprocess.PIPE,
            )
        try:
            t0 = time.monotonic()
            while out_path.stat().st_size == 0:
                assert child.poll() is None, child.stderr.read().decode()
                assert time.monotonic() - t0 < 15, "writer did not start"
                time.sleep(0.005)
            time.sleep(rng.uniform(0.01, 0.3))
            assert child.poll() is None, child.stderr.read().decode()
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        new = _acked(out_path)
        for p, o, v in new:
            assert (p, o) not in acked, f"offset {(p, o)} acknowledged twice"
            acked[(p, o)] = v

        lg, topic = _verify(path, acked)
        try:
            # the log takes new writes at the next offset of each partition
            for p in range(3):
                latest = topic.offsets()[p][1]
                v = f"parent-{run}-{p}".encode()
                assert topic.produce(v, partition=p) == (p, latest)
                acked[(p, latest)] = v
        finally:
            lg.close()

    assert len(acked) > 200, "the writer hardly wrote anything; the test proves little"
    lg, _ = _verify(path, acked)
    lg.close()


# --------------------------------------------------------------------------------------------
# Corrupt and torn tails
# --------------------------------------------------------------------------------------------

N_RECORDS = 30


@pytest.fixture
def written(tmp_path):
    """A closed log with one partition of N_RECORDS single-record batches; returns (path, values, segment)."""
    path = tmp_path / "log"
    values = [f"value-{i}".encode() * (i % 4 + 1) for i in range(N_RECORDS)]
    with rb.Log(path, cleanup_interval=None) as lg:
        t = lg.topic("t", partitions=1)
        for i, v in enumerate(values):
            assert t.produce(v, key=b"k%d" % i, timestamp=1_000 + i) == (0, i)
    (seg,) = segment_files(path / "t", 0)
    batches = parse_segment(seg)
    assert [b["base_offset"] for b in batches] == list(range(N_RECORDS))
    return path, values, seg, batches


def _check_repaired(path: Path, seg: Path, values: list[bytes], keep: int, dropped: int):
    lg = rb.Log(path, cleanup_interval=None)
    try:
        report = lg.open_report()
        assert len(report) == 1, report
        (d,) = report
        assert Path(d["path"]) == seg
        assert d["dropped_bytes"] == dropped
        assert d["valid_bytes"] == seg.stat().st_size
        assert isinstance(d["reason"], str) and d["reason"]
        t = lg["t"]
        assert t.offsets() == {0: (0, keep)}
        rows = read_all(t)[0]
        assert [r[0] for r in rows] == list(range(keep))
        assert [r[3] for r in rows] == values[:keep]
        assert [r[1] for r in rows] == [1_000 + i for i in range(keep)]
        # new writes continue at the next offset and are readable
        assert t.produce(b"after-repair", timestamp=5) == (0, keep)
        assert t.produce(b"after-repair-2", timestamp=6) == (0, keep + 1)
        rows = read_all(t)[0]
        assert [r[3] for r in rows] == values[:keep] + [b"after-repair", b"after-repair-2"]
    finally:
        lg.close()
    # the repaired file is clean Kafka data, and the next open reports nothing
    recs = [r for b in parse_segment(seg) for r in b["records"]]
    assert [r["value"] for r in recs] == values[:keep] + [b"after-repair", b"after-repair-2"]
    with rb.Log(path, cleanup_interval=None) as lg:
        assert lg.open_report() == []
        assert lg["t"].offsets() == {0: (0, keep + 2)}


def test_garbage_over_tail_is_dropped(written):
    path, values, seg, batches = written
    size = seg.stat().st_size
    # overwrite the second half of the last two batches' bytes with garbage
    last_two = batches[-1]["size"] + batches[-2]["size"]
    start = size - last_two + batches[-2]["size"] // 2
    with open(seg, "r+b") as f:
        f.seek(start)
        f.write(random.Random(9).randbytes(size - start))
    assert seg.stat().st_size == size
    _check_repaired(path, seg, values, keep=N_RECORDS - 2, dropped=last_two)


def test_truncated_mid_batch_is_dropped(written):
    path, values, seg, batches = written
    size = seg.stat().st_size
    cut = batches[-1]["size"] // 2
    os.truncate(seg, size - cut)
    _check_repaired(path, seg, values, keep=N_RECORDS - 1, dropped=batches[-1]["size"] - cut)


def test_trailing_garbage_after_last_batch_is_dropped(written):
    path, values, seg, batches = written
    with open(seg, "ab") as f:
        f.write(b"\x00\x01garbage-after-the-end")
    _check_repaired(path, seg, values, keep=N_RECORDS, dropped=len(b"\x00\x01garbage-after-the-end"))


def test_bitflip_in_middle_batch_drops_from_there(written):
    """A CRC failure in the active segment truncates at that batch: later batches cannot be trusted."""
    path, values, seg, batches = written
    k = 20
    pos = sum(b["size"] for b in batches[:k]) + batches[k]["size"] - 2
    data = bytearray(seg.read_bytes())
    data[pos] ^= 0x55
    seg.write_bytes(bytes(data))
    dropped = sum(b["size"] for b in batches[k:])
    _check_repaired(path, seg, values, keep=k, dropped=dropped)


@pytest.mark.xfail(
    reason="BUG: compaction renames the rewritten .log over the old one before it rewrites the "
    ".index/.timeindex (cleaner.rs compact(): fs::rename then index.write_files, no swap/marker); a "
    "crash in between leaves the old index, which passes SegmentIndex::read_files' checks, so reads "
    "that start from an indexed offset jump into the middle of a batch and raise CorruptLog",
    strict=True,
)
def test_crash_between_compaction_rename_and_index_write(tmp_path):
    """Reproduces the on-disk state of that crash window: the compacted segment with the index files
    the segment had before compaction. The log data is the truth; reads must still be right."""
    path = tmp_path / "log"
    rng = random.Random(0)
    now = time.time_ns() // 1_000_000
    with rb.Log(path, cleanup_interval=None) as lg:
        t = lg.topic("t", partitions=1, segment_bytes=16384, cleanup="compact")
        # offset 0 is a tiny record whose key comes again at offset 3: compaction drops it and
        # merges the kept records into one batch, so the byte positions in segment 0 change
        t.produce(b"x", key=b"dup", timestamp=now)
        for i in range(1, 20):
            t.produce(rng.randbytes(3000), key=b"dup" if i == 3 else b"k%d" % i, timestamp=now)
    seg_dir = path / "t" / "0"
    old_index = {f: f.read_bytes() for f in seg_dir.iterdir() if f.suffix in (".index", ".timeindex")}
    with rb.Log(path, cleanup_interval=None) as lg:
        assert lg.cleanup()["records_removed"] == 1
        expected = [r[:4] for r in read_all(lg["t"])[0]]
    assert [r[0] for r in expected] == list(range(1, 20))
    for f, data in old_index.items():  # the crash: new .log in place, index files not yet rewritten
        f.write_bytes(data)
    with rb.Log(path, cleanup_interval=None) as lg:
        t = lg["t"]
        for start in range(1, 20):
            got = [(o, ts, k, v) for _, o, ts, k, v, _ in table_rows(t.read(start=start))]
            assert got == [r for r in expected if r[0] >= start], start
