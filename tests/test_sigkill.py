"""kill -9 during compaction, retention cleanup, topic creation and topic deletion.

Each test runs a child process that does the operation in a loop on one log directory and prints
what it has had acknowledged (fsync policy "batch": a produce call that returned is durable); the
parent kills it with SIGKILL at a random moment, at least ``KILLS`` times on the same directory,
and after every kill opens the log and checks: it opens, no acknowledged record that should be
kept is lost, no offset was given to two different acknowledged records, and nothing is half
there (a topic is whole or absent)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import riverbed as rb

KILLS = int(os.environ.get("RIVERBED_SIGKILL_KILLS", "20"))

BAD_KINDS = {"bad_metadata", "not_a_topic", "quarantined", "missing_segment", "stray_segment", "truncation_ignored"}


def run_and_kill(script: str, path: Path, rng: random.Random, acks: list[str], most: float = 0.25) -> None:
    """Start the child, wait until it acknowledged something new (or a random while), kill -9."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    # let it get going: the first line is printed once the log is open
    first = proc.stdout.readline()
    assert first.strip() == "open", (first, proc.stderr.read() if proc.poll() is not None else "")
    time.sleep(rng.uniform(0.002, most))
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err
    # only whole lines: the kill may cut the last one
    acks.extend(line for line in out.split("\n")[:-1] if len(line.split()) == 2)


def open_checked(path: Path) -> rb.Log:
    lg = rb.Log(path, cleanup_interval=None)
    bad = [d["message"] for d in lg.open_report() if d["kind"] in BAD_KINDS]
    assert not bad, bad
    assert not any((path / "~staging").glob("*")) and not any((path / "~trash").glob("*"))
    return lg


def records(t: rb.Topic) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    tab = t.read()
    cols = [tab.column(c).to_pylist() for c in ("partition", "offset", "key", "value")]
    out = {(p, o): (k, v) for p, o, k, v in zip(*cols, strict=True)}
    assert len(out) == tab.num_rows, "an offset was read twice"
    return out


def check_acks(acks: list[str], seen: dict[int, str]) -> dict[int, str]:
    """``acks``: lines "offset value"; an offset acknowledged twice with different values was
    given out twice."""
    for line in acks:
        o, v = line.split()
        if int(o) in seen:
            assert seen[int(o)] == v, f"offset {o} given to {seen[int(o)]} and then to {v}"
        seen[int(o)] = v
    return seen


COMPACT_CHILD = """
import sys, itertools, riverbed as rb
lg = rb.Log(sys.argv[1], fsync="batch", cleanup_interval=None)
t = lg.topic("c", partitions=1, segment_bytes=1024, cleanup="compact", delete_retention_ms=0)
print("open", flush=True)
for n in itertools.count():
    for i in range(10):
        key = b"k%d" % ((n * 10 + i) % 7)
        value = b"%d-%d" % (n, i) + b"." * 40
        _, o = t.produce(value, key=key, timestamp=1)
        print(o, value.decode(), flush=True)
    lg.cleanup()
"""


def test_sigkill_during_compaction(tmp_path):
    path = tmp_path / "log"
    rng = random.Random(1)
    seen: dict[int, str] = {}
    for _ in range(KILLS):
        acks: list[str] = []
        run_and_kill(COMPACT_CHILD, path, rng, acks)
        check_acks(acks, seen)
        with open_checked(path) as lg:
            got = records(lg["c"])
            latest: dict[bytes, int] = {}
            for (_, o), (k, v) in sorted(got.items()):
                if o in seen:
                    assert v.decode() == seen[o], f"offset {o} holds another record"
                latest[k] = o
            # the newest acknowledged record of every key is kept by compaction
            newest: dict[str, int] = {}
            for o, v in seen.items():
                n, i = (int(x) for x in v.rstrip(".").split("-"))
                k = f"k{(n * 10 + i) % 7}"
                newest[k] = max(newest.get(k, -1), o)
            for k, o in newest.items():
                assert (0, o) in got, f"the latest record of {k} (offset {o}) is gone"
    assert len(seen) > 50, "the child barely ran; the test proves little"


RETENTION_CHILD = """
import sys, itertools, riverbed as rb
lg = rb.Log(sys.argv[1], fsync="batch", cleanup_interval=None)
t = lg.topic("r", partitions=1, segment_bytes=1024, retention_bytes=4096)
print("open", flush=True)
for n in itertools.count():
    for i in range(8):
        value = b"%d-%d" % (n, i) + b"." * 60
        _, o = t.produce(value, timestamp=1)
        print(o, value.decode(), flush=True)
    lg.cleanup()
"""


def test_sigkill_during_retention(tmp_path):
    path = tmp_path / "log"
    rng = random.Random(2)
    seen: dict[int, str] = {}
    for _ in range(KILLS):
        acks: list[str] = []
        run_and_kill(RETENTION_CHILD, path, rng, acks)
        check_acks(acks, seen)
        with open_checked(path) as lg:
            t = lg["r"]
            earliest, latest = t.offsets()[0]
            got = records(t)
            # retention removes whole segments from the start: what is left is contiguous
            assert sorted(o for _, o in got) == list(range(earliest, latest))
            for (_, o), (_, v) in got.items():
                if o in seen:
                    assert v.decode() == seen[o]
            assert all(o < latest for o in seen), "an acknowledged record was lost"
    assert len(seen) > 50


CREATE_CHILD = """
import sys, itertools, riverbed as rb
lg = rb.Log(sys.argv[1], fsync="batch", cleanup_interval=None)
print("open", flush=True)
start = len(lg.topics())
for n in itertools.count(start):
    t = lg.topic("t%d" % n, partitions=3)
    t.produce(b"first", timestamp=1, partition=2)
    print(n, "t%d" % n, flush=True)
"""


def test_sigkill_during_topic_creation(tmp_path):
    path = tmp_path / "log"
    rng = random.Random(3)
    acked: set[str] = set()
    for _ in range(KILLS):
        acks: list[str] = []
        run_and_kill(CREATE_CHILD, path, rng, acks)
        acked |= {line.split()[1] for line in acks}
        with open_checked(path) as lg:
            names = set(lg.topics())
            assert acked <= names, f"acknowledged topics lost: {acked - names}"
            for name in names:
                t = lg[name]
                assert t.partitions == 3, f"{name} is half created"
                if name in acked:
                    assert records(t) == {(2, 0): (None, b"first")}
        # nothing but whole topics and riverbed's own entries in the root
        for entry in path.iterdir():
            assert entry.name.startswith(("t", "~", ".", "__")), entry
    assert len(acked) >= 10, acked


DELETE_CHILD = """
import sys, riverbed as rb
lg = rb.Log(sys.argv[1], fsync="batch", cleanup_interval=None)
print("open", flush=True)
for name in sorted(lg.topics(), key=lambda n: int(n[1:])):
    lg.delete_topic(name)
    print(0, name, flush=True)
"""


def test_sigkill_during_topic_deletion(tmp_path):
    path = tmp_path / "log"
    with rb.Log(path, cleanup_interval=None) as lg:
        for n in range(2000):
            lg.topic(f"d{n}", partitions=2).produce(b"v%d" % n, timestamp=1, partition=1)
        c = lg.topic("keep")
        c.produce(b"x", timestamp=1)
        with c.consumer(group="g") as cons:
            cons.poll(timeout=0.1)
            cons.commit()
    rng = random.Random(4)
    deleted: set[str] = set()
    kills = 0
    while kills < KILLS:
        with rb.Log(path, cleanup_interval=None) as lg:
            if not any(n.startswith("d") for n in lg.topics()):
                break
        acks: list[str] = []
        run_and_kill(DELETE_CHILD.replace("lg.topics()", "[n for n in lg.topics() if n != 'keep']"), path, rng, acks, most=0.03)
        kills += 1
        deleted |= {line.split()[1] for line in acks}
        with open_checked(path) as lg:
            names = set(lg.topics())
            assert not (deleted & names), f"deleted topics came back: {deleted & names}"
            for name in names - {"keep"}:
                t = lg[name]
                assert t.partitions == 2 and records(t) == {(1, 0): (None, f"v{name[1:]}".encode())}, name
            with lg["keep"].consumer(group="g") as cons:
                assert cons.committed() == {0: 1}
    assert kills >= KILLS, f"only {kills} kills before every topic was deleted; add topics"
    assert deleted, "nothing was deleted"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a size-limited tmpfs needs root")
def test_disk_full(tmp_path):
    """Produce until ENOSPC on a small tmpfs: the failing call says the disk is full, every record
    acknowledged before it is intact, and after space is freed the log opens and takes writes."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        path = mnt / "log"
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (1536 * 1024))
        acked: list[int] = []
        with rb.Log(path, cleanup_interval=None) as lg:
            t = lg.topic("t", segment_bytes=64 * 1024)
            with pytest.raises(rb.exceptions.LogError) as err:
                for i in range(1_000_000):
                    _, o = t.produce(b"%d-" % i + b"z" * 500, timestamp=1)
                    acked.append(o)
            assert "No space left on device" in str(err.value), str(err.value)
            assert len(acked) > 100
        # free space and reopen: every acknowledged record is there, and writes continue
        filler.unlink()
        with rb.Log(path, cleanup_interval=None) as lg:
            t = lg["t"]
            tab = t.read()
            offs = tab.column("offset").to_pylist()
            assert offs == acked, "exactly the acknowledged records"
            vals = tab.column("value").to_pylist()
            assert all(vals[i].startswith(b"%d-" % i) for i in range(len(acked)))
            assert t.produce(b"after", timestamp=2) == (0, len(acked))
    finally:
        _unmount(mnt)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a size-limited tmpfs needs root")
def _unmount(mnt) -> None:
    """Unmount the test's tmpfs; lazily if something (a traceback holding a log) still has a file
    open there, so no mount outlives the test."""
    import gc

    gc.collect()
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_during_a_checkpointed_pipeline(tmp_path):
    """A log->log pipeline whose output fills the disk: the run fails saying the disk is full,
    and after space is freed the rerun resumes from its checkpoint and the output holds every
    input record exactly once."""
    import pyarrow as pa

    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        path = mnt / "log"
        n = 3000
        with rb.Log(path, cleanup_interval=None) as lg:
            src = lg.topic("in", segment_bytes=1 << 20)
            for k in range(0, n, 500):
                src.produce_batch(pa.table({"i": list(range(k, k + 500)), "pad": ["p" * 200] * 500}))
        used = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
        filler = mnt / "filler"
        # leave room for about half of the output
        filler.write_bytes(b"\0" * max(0, free - used // 2))

        def run() -> None:
            with rb.Log(path, cleanup_interval=None) as lg:
                p = rb.Pipeline.read(lg["in"], batch_size=100).with_columns(j=rb.col("i") * 2)
                p.write(lg.topic("out")).run(name="fill", checkpoint_interval="1ms", progress=False)

        with pytest.raises(rb.exceptions.RiverbedError, match="No space left on device"):
            run()
        # No checkpoint is half-written: each one under its final name is whole and signed
        # (a torn one would be a temporary file, removed on the next open).
        ckpts = sorted((path / "~checkpoints" / "fill").glob("*.ckpt"))
        assert ckpts, "checkpoints were taken before the disk filled"
        for f in ckpts:
            assert f.read_bytes().endswith(b"RBCKSIG1"), f"{f.name} is half-written"
        filler.unlink()
        run()
        with rb.Log(path, cleanup_interval=None) as lg:
            out = lg["out"].read()
            values = [v for v in out.column("value").to_pylist()]
            import json

            got = sorted(json.loads(v)["i"] for v in values)
            assert got == list(range(n)), "every input exactly once"
    finally:
        _unmount(mnt)
