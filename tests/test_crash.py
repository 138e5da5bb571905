"""Durability: every acknowledged record survives SIGKILL; torn or corrupt tails are repaired on open."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import riverbed as rb
from conftest import parse_segment, read_all, segment_files, table_rows

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
    deadline = time.monotonic() + 55
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


def test_garbage_over_tail_is_quarantined_then_dropped(written):
    """Garbage over the last two batches: the one whose header survived is a whole batch with a
    bad CRC (damage, not a torn write): quarantined so its offset is not given out again; the
    bytes after it are a torn tail and are truncated."""
    path, values, seg, batches = written
    size = seg.stat().st_size
    last_two = batches[-1]["size"] + batches[-2]["size"]
    start = size - last_two + 61 + (batches[-2]["size"] - 61) // 2  # its 61-byte header survives
    with open(seg, "r+b") as f:
        f.seek(start)
        f.write(random.Random(9).randbytes(size - start))
    with rb.Log(path, cleanup_interval=None) as lg:
        report = {d["kind"]: d for d in lg.open_report()}
        assert set(report) == {"quarantined", "torn_tail"}, report
        q = report["quarantined"]
        assert q["offsets"] == (N_RECORDS - 2, N_RECORDS - 1)
        assert q["position"] == size - last_two
        assert report["torn_tail"]["dropped_bytes"] == batches[-1]["size"]
        t = lg["t"]
        assert t.offsets() == {0: (0, N_RECORDS - 1)}
        with pytest.raises(rb.exceptions.DataGap, match=f"offsets {N_RECORDS - 2}..{N_RECORDS - 1}"):
            t.read()
        with pytest.warns(RuntimeWarning, match="skipped offsets"):
            rows = t.read(on_gap="skip")
        assert rows.column("value").to_pylist() == values[: N_RECORDS - 2]
        assert t.produce(b"after", timestamp=5) == (0, N_RECORDS - 1)


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


def test_bitflip_in_middle_batch_is_quarantined(written):
    """Finding 2: a CRC failure in the middle of the active segment costs only that batch; the
    batches after it are kept, the gap is recorded, and offsets are never reused."""
    path, values, seg, batches = written
    k = 20
    pos = sum(b["size"] for b in batches[:k])
    data = bytearray(seg.read_bytes())
    data[pos + batches[k]["size"] - 2] ^= 0x55
    seg.write_bytes(bytes(data))
    for _ in range(2):  # the same on every open, until the data is gone by retention
        with rb.Log(path, cleanup_interval=None) as lg:
            (d,) = lg.open_report()
            assert (d["kind"], d["offsets"], d["position"]) == ("quarantined", (k, k + 1), pos)
            assert str(seg) in d["message"] and f"byte {pos}" in d["message"]
            t = lg["t"]
            assert t.offsets() == {0: (0, N_RECORDS)}
            assert t.gaps() == [
                {"partition": 0, "from": k, "to": k + 1, "kind": "quarantined", "file": seg.name,
                 "position": pos, "length": batches[k]["size"], "reason": d["reason"]}
            ]
            with pytest.warns(RuntimeWarning):
                rows = t.read(on_gap="skip")
            want = [i for i in range(N_RECORDS) if i != k]
            assert rows.column("offset").to_pylist() == want
            assert rows.column("value").to_pylist() == [values[i] for i in want]
            # the segment still holds every byte
            assert seg.stat().st_size == sum(b["size"] for b in batches)
    with rb.Log(path, cleanup_interval=None) as lg:
        assert lg["t"].produce(b"next", timestamp=7) == (0, N_RECORDS)


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SIGKILL the process right after its N-th successful rename() into $CRASH_DIR. */
static int renames = 0;

int rename(const char *old, const char *new) {
    static int (*real)(const char *, const char *) = 0;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int r = real(old, new);
    const char *dir = getenv("CRASH_DIR");
    const char *after = getenv("CRASH_AFTER_RENAME");
    if (r == 0 && dir && after && strncmp(new, dir, strlen(dir)) == 0 && ++renames == atoi(after))
        kill(getpid(), SIGKILL);
    return r;
}
"""

CLEANUP_CHILD = """
import sys, riverbed as rb
lg = rb.Log(sys.argv[1], fsync="batch", cleanup_interval=None)
lg.cleanup()
lg.close()
"""


@pytest.fixture
def crash_shim(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the fault-injection shim")
    src = tmp_path / "shim.c"
    src.write_text(SHIM)
    lib = tmp_path / "shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"], check=True)
    return lib


def test_crash_at_every_rename_during_compaction(tmp_path, crash_shim):
    """Kill the process right after each rename() that compaction does (the rewritten segment
    replacing the old one, index files, ...). Whatever the crash point, the reopened log must read
    correctly from every offset: every record is an original record at its original offset, and
    every record compaction keeps is there.

    Regression: the cleaner used to rename the rewritten .log into place before replacing the
    .index/.timeindex; the stale index passed the consistency checks on open, and reads starting
    at an indexed offset landed mid-batch (CorruptLog "batch length ... is below the minimum")."""
    pristine = tmp_path / "pristine"
    rng = random.Random(0)
    now = time.time_ns() // 1_000_000
    with rb.Log(pristine, cleanup_interval=None) as lg:
        t = lg.topic("t", partitions=1, segment_bytes=16384, cleanup="compact", delete_retention_ms="1d")
        # offset 0 is a tiny record whose key comes again at offset 3: compaction drops it and
        # merges the kept records into one batch, so byte positions in the first segment change
        t.produce(b"x", key=b"dup", timestamp=now)
        for i in range(1, 20):
            t.produce(rng.randbytes(3000), key=b"dup" if i == 3 else b"k%d" % i, timestamp=now)
        original = {r[0]: r[:4] for r in read_all(t)[0]}
    seg_dir = pristine / "t" / "0"
    assert sorted(f.suffix for f in seg_dir.iterdir() if f.stem == "0" * 20) == [".index", ".log", ".timeindex"]
    active_base = int(segment_files(pristine / "t", 0)[-1].stem)
    assert active_base > 3
    must_keep = {o for o in original if o != 0}  # only offset 0 is superseded in the sealed part

    crashed_at = []
    for n in range(1, 12):
        work = tmp_path / f"run{n}"
        shutil.copytree(pristine, work)
        env = {**os.environ, "LD_PRELOAD": str(crash_shim), "CRASH_DIR": str(work), "CRASH_AFTER_RENAME": str(n)}
        proc = subprocess.run([sys.executable, "-c", CLEANUP_CHILD, str(work)], env=env, capture_output=True, timeout=30)
        assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.decode()
        with rb.Log(work, cleanup_interval=None) as lg:
            t = lg["t"]
            assert t.offsets() == {0: (0, 20)}
            for start in range(20):
                rows = [(o, ts, k, v) for _, o, ts, k, v, _ in table_rows(t.read(start=start))]
                offs = [r[0] for r in rows]
                assert offs == sorted(offs)
                assert all(original[r[0]] == r for r in rows), f"crash after rename {n}: changed records"
                assert {o for o in must_keep if o >= start} <= set(offs), f"crash after rename {n}, start {start}"
        if proc.returncode == 0:
            break
        crashed_at.append(n)
        shutil.rmtree(work)
    else:
        pytest.fail("cleanup() kept renaming")
    assert crashed_at, "compaction did no rename into the log directory; the test proves nothing"
