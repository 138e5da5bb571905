"""Checkpoints of named pipelines (issue 5): exactly-once log-to-log output across SIGKILL at random
moments (also with Python UDFs, and with kills inside checkpoint writes), corrupt and leftover
checkpoint files, plan changes and ``reset=True``, and resuming without crashes.

The crash tests run the pipeline in a child process, kill it with SIGKILL and restart it with the
same name until it finishes; its output topic must then equal a clean run's record for record
(per key, in order). Their input is out of order by less than the lateness, so no record is ever
late whatever order the partitions are read in: the clean output does not depend on scheduling.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import riverbed as rb

# The pipeline under test, run in a child process:
#   argv = log dir, kind, output topic (also the pipeline's name), checkpoint interval, batch size
# kind "windowed": rolling features per key, then a 10 s tumbling window per key;
#      "udf":      the same behind a map_batches and a stateful_map (running count per key);
#      "big":      20,000 keys and a 10 min window: megabytes of state in every checkpoint.
# It prints START just before run() and, when the run ends, a JSON line with the run's duration,
# its late records and the warnings it raised.
CHILD = r"""
import json, sys, time, warnings
import pyarrow as pa
import pyarrow.compute as pc
import riverbed as rb

path, kind, out_name, interval, batch = sys.argv[1:6]
SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])
COUNTED = pa.schema([*SCHEMA, ("w", pa.float64()), ("n", pa.int64())])


def twice(b):
    return b.append_column("w", pc.multiply(b.column("v"), 2.0))


def running_count(n, recs):
    out = []
    for r in recs:
        n += 1
        out.append({**r, "n": n})
    return n, out


log = rb.Log(path, cleanup_interval=None)
p = rb.Pipeline.read(log["events"], timestamp="ts", lateness="2s", schema=SCHEMA, batch_size=int(batch))
aggs = {"n": rb.count(), "s": rb.sum("v"), "m": rb.mean("m"), "hi": rb.max("hi")}
if kind == "udf":
    p = p.map_batches(twice).stateful_map(running_count, by="k", initial=0, schema=COUNTED)
    aggs.update(c=rb.max("n"), w=rb.sum("w"))
p = p.rolling(by="k", period="30s", m=rb.mean("v"), hi=rb.max("v"))
p = p.window(rb.tumbling("10m" if kind == "big" else "10s"), by="k").agg(**aggs)
out = log.topic(out_name, partitions=3)
print("START", flush=True)
t0 = time.monotonic()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    res = p.write(out).run(name=out_name, checkpoint_interval=interval, progress=False)
print(json.dumps({
    "seconds": time.monotonic() - t0,
    "late": sum(m.get("late_records", 0) for m in res.metrics),
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
}), flush=True)
"""

MIN_KILLS = 20
CRASH_BUDGET_S = 120  # per crash test; they usually take 15-30 s


# -- helpers ----------------------------------------------------------------------------------


def make_events(path: Path, n: int, keys: int, seed: int = 1) -> None:
    """``events``: 4 partitions, ``n`` records 5 ms apart, each up to 1.5 s early (lateness is 2 s)."""
    rng = np.random.default_rng(seed)
    ts = np.arange(n, dtype=np.int64) * 5 - rng.integers(0, 1500, n)
    k = pa.array([f"k{i}" for i in rng.integers(0, keys, n)])
    with rb.Log(path, cleanup_interval=None) as lg:
        lg.topic("events", partitions=4).produce_batch(pa.table({"k": k, "ts": ts, "v": rng.random(n)}), key="k", timestamp="ts")


def spawn(path: Path, kind: str, out: str, interval: str, batch: int, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), kind, out, interval, str(batch)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
    )


def finish(child: subprocess.Popen) -> dict:
    """Wait for a child to end by itself; its result line."""
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 0, f"child failed ({child.returncode}):\nstdout:\n{stdout}\nstderr:\n{stderr}"
    return json.loads(stdout.splitlines()[-1])


def run_to_end(path: Path, kind: str, out: str, interval: str, batch: int) -> dict:
    return finish(spawn(path, kind, out, interval, batch))


def per_key(topic: rb.Topic) -> dict[bytes, list[bytes]]:
    """Every record value of ``topic`` per key, in offset order (a key lives in one partition)."""
    t = topic.read()
    out: dict[bytes, list[bytes]] = defaultdict(list)
    for k, v in zip(t.column("key").to_pylist(), t.column("value").to_pylist()):
        out[k].append(v)
    return dict(out)


def read_output(path: Path, topic: str) -> dict[bytes, list[bytes]]:
    with rb.Log(path, cleanup_interval=None) as lg:
        return per_key(lg[topic])


def assert_same(got: dict[bytes, list[bytes]], want: dict[bytes, list[bytes]], what: str) -> None:
    """``got == want`` with a short message (pytest's diff of two large dicts is slow and long)."""
    if got == want:
        return
    n_got, n_want = sum(map(len, got.values())), sum(map(len, want.values()))
    msg = [f"{what}: {n_got} records in {len(got)} keys, want {n_want} in {len(want)}"]
    if got.keys() != want.keys():
        msg.append(f"missing keys {sorted(want.keys() - got.keys())[:5]}, extra keys {sorted(got.keys() - want.keys())[:5]}")
    for k in sorted(got.keys() & want.keys()):
        g, w = got[k], want[k]
        if g != w:
            i = next((i for i, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
            msg.append(
                f"key {k!r}: {len(g)} records, want {len(w)} ({len(g) - len(set(g))} duplicated); "
                f"first difference at #{i}: got {g[i : i + 2]}, want {w[i : i + 2]}"
            )
            break
    pytest.fail("\n".join(msg))


def ckpt_dir(path: Path, name: str) -> Path:
    return path / "~checkpoints" / name


def ckpts(path: Path, name: str) -> list[Path]:
    """Checkpoint files, oldest first."""
    d = ckpt_dir(path, name)
    return sorted(d.glob("*.ckpt")) if d.exists() else []


def seq(f: Path) -> int:
    return int(f.name.split(".")[0])


def tmp_files(path: Path, name: str) -> set[tuple[str, int, int]]:
    d = ckpt_dir(path, name)
    if not d.exists():
        return set()
    out = set()
    for f in d.glob("*.ckpt.tmp"):
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        out.add((f.name, st.st_mtime_ns, st.st_size))
    return out


# -- SIGKILL at random moments ----------------------------------------------------------------


def newest_seq(path: Path, name: str) -> int:
    return max(map(seq, ckpts(path, name)), default=0)


def topic_bytes(path: Path, topic: str) -> int:
    """The size of a topic's segment files (read from disk: the log is not opened)."""
    return sum(f.stat().st_size for f in (path / topic).glob("*/*.log"))


def crash_until_done(
    path: Path, kind: str, interval: str, batch: int, clean: dict, clean_s: float, clean_seq: int, clean_bytes: int, seed: int
) -> dict:
    """Run the pipeline in a child, SIGKILL it at random moments and restart it with the same name
    until it has been killed MIN_KILLS times while running, then let it finish; its output must
    equal ``clean``.

    The kill moments adapt to the run so that the kills are spread over it: about a third land
    early (within the time a restart has so far taken to write its first checkpoint: restoring
    state, truncating the output, the first steps), the others a random time after the child has
    checkpointed new progress, scaled so the work left lasts for the kills still to come. The work
    done is estimated from the checkpoint sequence number and the output written so far, against
    the clean run's. A scenario that finishes before
    MIN_KILLS kills is checked too, then repeated on a fresh output (and name) with shorter delays.
    """
    rng = random.Random(seed)
    t0 = time.monotonic()
    stats: dict = {"scenarios": 0, "kills_total": 0}
    overhead = 0.05  # seconds from START to the first new checkpoint, learnt as we go
    scale = 1.0
    for scenario in range(1, 6):
        out = f"crashy{scenario}"
        kills = in_write = progressed = 0
        while True:
            assert time.monotonic() - t0 < CRASH_BUDGET_S, f"too slow: {kills} kills in scenario {scenario}, {stats}"
            before = tmp_files(path, out)
            newest = newest_seq(path, out)
            done = max(newest / clean_seq, topic_bytes(path, out) / clean_bytes)
            left = max(0.05, 1 - done)
            target = scale * clean_s * left / (MIN_KILLS - kills + 3)
            early = rng.random() < 0.35
            delay = rng.uniform(0, overhead) if early else rng.uniform(0, 2 * target)
            child = spawn(path, kind, out, interval, batch)
            started = child.stdout.readline().strip() == "START"
            if started and kills < MIN_KILLS:
                t_start = time.monotonic()
                kill_at = t_start + delay if early else None
                while child.poll() is None:
                    now = time.monotonic()
                    if kill_at is None and newest_seq(path, out) > newest:
                        overhead = 0.7 * overhead + 0.3 * (now - t_start)
                        kill_at = now + delay
                    if kill_at is not None and now >= kill_at:
                        child.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.002)
            stdout, stderr = child.communicate(timeout=300)
            if child.returncode == -signal.SIGKILL:
                kills += 1
                # a new or rewritten temporary file: the kill landed between its creation and rename
                in_write += bool(tmp_files(path, out) - before)
                # the child had checkpointed new progress before it died
                progressed += newest_seq(path, out) > newest
                continue
            assert child.returncode == 0 and started, f"child failed ({child.returncode}):\n{stdout}\n{stderr}"
            result = json.loads(stdout.splitlines()[-1])
            break
        stats["scenarios"] = scenario
        stats["kills_total"] += kills
        assert result["warnings"] == [], "a SIGKILL left an unusable checkpoint behind"
        assert_same(read_output(path, out), clean, f"{kind}: output after {kills} SIGKILLs (scenario {scenario})")
        if kills >= MIN_KILLS:
            stats.update(
                kills=kills,
                kills_after_progress=progressed,
                kills_in_writes=in_write,
                seconds=round(time.monotonic() - t0, 1),
                clean_seconds=round(clean_s, 1),
            )
            print(f"{kind}: {stats}")
            return stats
        scale /= 2
    pytest.fail(f"never reached {MIN_KILLS} kills: {stats}")


def crash_test(tmp_path: Path, kind: str, n: int, keys: int, interval: str, batch: int, seed: int) -> dict:
    path = tmp_path / "log"
    make_events(path, n, keys)
    clean = run_to_end(path, kind, "clean", interval, batch)
    assert clean["late"] == 0 and clean["warnings"] == []
    want = read_output(path, "clean")
    assert sum(map(len, want.values())) > 1000, "the clean run wrote little; the test proves little"
    clean_seq, clean_bytes = newest_seq(path, "clean"), topic_bytes(path, "clean")
    return crash_until_done(path, kind, interval, batch, want, clean["seconds"], clean_seq, clean_bytes, seed)


def test_sigkill_windowed_log_to_log_is_exactly_once(tmp_path):
    """Rolling features + a tumbling window, 4 input partitions, a checkpoint every 30 ms."""
    crash_test(tmp_path, "windowed", n=1_000_000, keys=50, interval="30ms", batch=200, seed=11)


def test_sigkill_with_python_udfs_is_exactly_once(tmp_path):
    """The same behind a map_batches and a stateful_map (whose per-key state, kept as data, and held
    records are part of the checkpoint)."""
    crash_test(tmp_path, "udf", n=400_000, keys=50, interval="30ms", batch=200, seed=12)


def test_sigkill_during_checkpoint_writes_is_exactly_once(tmp_path):
    """A checkpoint after every step (1 ms) with megabytes of state (20,000 keys): most of the run
    is spent writing checkpoints, so many kills land inside a write."""
    stats = crash_test(tmp_path, "big", n=600_000, keys=20_000, interval="1ms", batch=2000, seed=13)
    assert stats["kills_in_writes"] >= 1, f"no kill landed inside a checkpoint write: {stats}"


# -- corrupt, leftover and half-written checkpoint files --------------------------------------

SMALL = {"kind": "windowed", "interval": "20ms", "batch": 200}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A log with 400,000 events and the clean output (topic ``clean``); tests work on copies."""
    path = tmp_path_factory.mktemp("pristine") / "log"
    make_events(path, 400_000, 50, seed=2)
    assert run_to_end(path, out="clean", **SMALL)["warnings"] == []
    return path, read_output(path, "clean")


@pytest.fixture
def small(pristine, tmp_path):
    src, clean = pristine
    path = tmp_path / "log"
    shutil.copytree(src, path)
    return path, clean


def kill_after_checkpoints(path: Path, name: str, n: int) -> None:
    """Start the pipeline and SIGKILL it once it has written checkpoint ``n`` (if it is still
    running), so the checkpoints before the newest are from the middle of the run."""
    child = spawn(path, out=name, **SMALL)
    try:
        assert child.stdout.readline().strip() == "START", child.communicate()
        deadline = time.monotonic() + 30
        while child.poll() is None and max(map(seq, ckpts(path, name)), default=0) < n:
            assert time.monotonic() < deadline
            time.sleep(0.002)
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
    finally:
        stdout, stderr = child.communicate(timeout=60)
    assert child.returncode in (0, -signal.SIGKILL), stderr
    assert seq(ckpts(path, name)[-1]) >= n and len(ckpts(path, name)) >= 3


def corrupt(f: Path, how: str, rng: random.Random) -> None:
    size = f.stat().st_size
    if how == "truncated":
        os.truncate(f, size // 2)
    elif how == "empty":
        os.truncate(f, 0)
    elif how == "garbage":
        f.write_bytes(rng.randbytes(size))
    elif how == "bitflip":
        data = bytearray(f.read_bytes())
        data[size // 2] ^= 0x10
        f.write_bytes(bytes(data))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "bitflip", "two newest"])
def test_corrupt_newest_checkpoint_falls_back_to_the_one_before(small, how):
    path, clean = small
    kill_after_checkpoints(path, "victim", 5)
    files = ckpts(path, "victim")
    rng = random.Random(how)
    if how == "two newest":
        bad = files[-2:]
        corrupt(bad[1], "truncated", rng)
        corrupt(bad[0], "garbage", rng)
    else:
        bad = files[-1:]
        corrupt(bad[0], how, rng)

    result = run_to_end(path, out="victim", **SMALL)
    notes = result["warnings"]
    assert [c for c, _ in notes] == ["RuntimeWarning"] * len(bad), notes
    for f, (_, msg) in zip(reversed(bad), notes):  # newest first
        assert f.name in msg and "falling back" in msg, msg
    # resumed from an older checkpoint: the output topic was cut back to it and the rest redone
    assert_same(read_output(path, "victim"), clean, f"output after a {how} checkpoint")


def test_leftover_temporary_checkpoint_files_are_ignored(small):
    path, clean = small
    kill_after_checkpoints(path, "victim", 5)
    files = ckpts(path, "victim")
    newest = seq(files[-1])
    d = ckpt_dir(path, "victim")
    rng = random.Random(5)
    # a torn temporary file of the next checkpoint, and one of a far later sequence number
    (d / f"{newest + 1:020}.ckpt.tmp").write_bytes(files[-1].read_bytes()[:1000])
    (d / f"{newest + 1000:020}.ckpt.tmp").write_bytes(rng.randbytes(5000))

    result = run_to_end(path, out="victim", **SMALL)
    assert result["warnings"] == []
    assert_same(read_output(path, "victim"), clean, "output with leftover .ckpt.tmp files")


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* SIGKILL the process at the N-th rename() into a ~checkpoints directory: before it ($CKPT_KILL
   = "before": the temporary file is complete but not in place) or after it ("after": in place,
   the directory not yet fsynced and old checkpoints not yet removed). */
static int renames = 0;

int rename(const char *old, const char *new) {
    static int (*real)(const char *, const char *) = 0;
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    const char *when = getenv("CKPT_KILL");
    const char *at = getenv("CKPT_KILL_AT");
    int hit = when && at && strstr(new, "/~checkpoints/") && ++renames == atoi(at);
    if (hit && strcmp(when, "before") == 0) kill(getpid(), SIGKILL);
    int r = real(old, new);
    if (hit) kill(getpid(), SIGKILL);
    return r;
}
"""


@pytest.fixture(scope="module")
def rename_shim(tmp_path_factory):
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the fault-injection shim")
    d = tmp_path_factory.mktemp("shim")
    (d / "shim.c").write_text(SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(d / "shim.so"), str(d / "shim.c"), "-ldl"], check=True)
    return d / "shim.so"


@pytest.mark.parametrize("when,at", [("before", 1), ("after", 1), ("before", 4), ("after", 4)])
def test_killed_at_a_checkpoint_rename(small, rename_shim, when, at):
    """Deterministic kills inside a checkpoint write, around its rename into place."""
    path, clean = small
    child = spawn(path, out="victim", **SMALL, env={"LD_PRELOAD": str(rename_shim), "CKPT_KILL": when, "CKPT_KILL_AT": str(at)})
    stdout, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"not killed ({child.returncode}):\n{stdout}\n{stderr}"
    seqs = [seq(f) for f in ckpts(path, "victim")]
    if when == "before":
        assert max(seqs, default=0) == at - 1
        (tmp,) = ckpt_dir(path, "victim").glob("*.ckpt.tmp")
        assert seq(tmp) == at
    else:
        assert max(seqs) == at

    result = run_to_end(path, out="victim", **SMALL)
    assert result["warnings"] == []
    assert_same(read_output(path, "victim"), clean, f"output after a kill {when} checkpoint {at}'s rename")


# -- in-process: plan changes, resuming, names -----------------------------------------------

SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])
KEYS = 6


def produce_rows(topic: rb.Topic, start: int, stop: int) -> None:
    """Rows ``start..stop``: key k{i % 6}, ts 100 ms apart (up to 300 ms early), v = i."""
    rows = range(start, stop)
    topic.produce_batch(
        pa.table(
            {"k": [f"k{i % KEYS}" for i in rows], "ts": [i * 100 - (i * 37) % 300 for i in rows], "v": list(rows)},
            schema=SCHEMA,
        ),
        key="k",
        timestamp="ts",
    )


def bars(events: rb.Topic, size: str = "10s", **read_kw) -> rb.Pipeline:
    return (
        rb.Pipeline.read(events, timestamp="ts", lateness="1s", schema=SCHEMA, batch_size=50, **read_kw)
        .window(rb.tumbling(size), by="k")
        .agg(n=rb.count(), total=rb.sum("v"))
    )


def events_topic(log: rb.Log) -> rb.Topic:
    events = log.topic("events", partitions=2)
    assert len({events.partition_for(f"k{i}") for i in range(KEYS)}) == 2, "every partition needs data"
    return events


def test_changed_plan_raises_plan_error_unless_reset(log):
    events = events_topic(log)
    produce_rows(events, 0, 1000)
    out = log.topic("bars", partitions=2)
    bars(events, "10s").write(out).run(name="bars", checkpoint_interval="10ms", progress=False)
    first = per_key(out)
    offsets = out.offsets()

    with pytest.raises(rb.exceptions.PlanError, match="reset"):
        bars(events, "20s").write(out).run(name="bars", progress=False)
    assert out.offsets() == offsets, "a refused restart must not touch the output topic"
    assert per_key(out) == first

    # reset=True starts over: the new plan reads all input again. The output topic is kept: its
    # old records stay and the new run's records follow them.
    bars(events, "20s").write(out).run(name="bars", reset=True, checkpoint_interval="10ms", progress=False)
    ref = log.topic("ref", partitions=2)
    bars(events, "20s").write(ref).run(name="ref", progress=False)
    want = per_key(ref)
    assert set(first) == set(want) == set(per_key(out))
    assert per_key(out) == {k: first[k] + want[k] for k in want}

    # the checkpoints now belong to the new plan: it resumes (at the end: nothing more to write),
    # and the old plan is the one refused
    before = out.offsets()
    bars(events, "20s").write(out).run(name="bars", progress=False)
    assert out.offsets() == before
    with pytest.raises(rb.exceptions.PlanError, match="reset"):
        bars(events, "10s").write(out).run(name="bars", progress=False)


def test_bounded_rerun_processes_only_new_input(log):
    """Run a named bounded pipeline, append input, run it again: altogether the output equals one
    run over all the input. The first part ends in the middle of the [50 s, 60 s) windows: its
    end-of-input flush emits them early, and the rerun rolls that flush back (the checkpoint is
    taken before it) and emits them complete."""
    events = events_topic(log)
    produce_rows(events, 0, 550)  # ts up to ~55 s
    out = log.topic("bars", partitions=2)
    p = bars(events).write(out)
    p.run(name="bars", checkpoint_interval="10ms", progress=False)
    first = per_key(out)
    assert first

    produce_rows(events, 550, 1200)  # ts up to ~120 s
    rerun = p.run(name="bars", checkpoint_interval="10ms", progress=False)
    got = per_key(out)
    # What the first run wrote before its end-of-input flush stays; the windows that flush closed
    # early (the [50 s, 60 s) ones) were provisional: the rerun truncated them away and wrote
    # them again, complete.
    for k in first:
        kept = [v for v in first[k] if json.loads(v)["window_start"] < 50_000]
        assert got[k][: len(kept)] == kept, "the second run changed what the first one wrote before its flush"
    # a third run without new input writes nothing
    offsets = out.offsets()
    p.run(name="bars", progress=False)
    assert out.offsets() == offsets

    ref = log.topic("ref", partitions=2)
    bars(events).write(ref).run(name="ref", progress=False)
    want = per_key(ref)
    problems = []
    if rerun.late.num_rows:  # the new input is ahead of everything read before: nothing is late
        problems.append(f"the rerun dropped {rerun.late.num_rows} of the new records as late, ts {rerun.late.column('ts').to_pylist()[:5]}...")
    if got != want:
        w50 = {k: [json.loads(v) for v in vs if json.loads(v)["window_start"] == 50_000] for k, vs in (("got", got[b"k0"]), ("want", want[b"k0"]))}
        problems.append(f"the output differs from one run over all input; k0's [50 s, 60 s) window: {w50}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("op", ["union", "join_asof"])
def test_bounded_reruns_of_two_topics_add_up_when_only_one_got_new_input(log, op):
    """A union or join of two topics, run by name again after records arrived in one of them
    only: the topic with nothing new must still hold the windows (and join rows) its next
    records need open. It did not (a finished topic let the other close everything up to its
    own watermark in the checkpoint), so the records added to it next were dropped as late."""
    a, b = log.topic("a", partitions=4), log.topic("b", partitions=4)
    # b's rows sit 2 ms after a's; b's first part ends (1.5 s) before a's (2 s)
    parts = {"a": [(0, 400), (400, 500)], "b": [(0, 300), (300, 500)]}

    def add(t: rb.Topic, part: int) -> None:
        lo, hi = parts[t.name][part]
        off, px = (0, 1) if t.name == "a" else (2, 1000)
        rows = range(lo, hi)
        t.produce_batch(
            pa.table({"k": [f"k{(i * 3 + off) % 7}" for i in rows], "ts": [i * 5 + off for i in rows], "v": [px + i for i in rows]}),
            key="k",
            timestamp="ts",
        )

    def plan(out: rb.Topic) -> rb.Pipeline:
        left, right = (rb.Pipeline.read(t, timestamp="ts", batch_size=64) for t in (a, b))
        if op == "union":
            both = left.union(right)
        else:
            both = left.join_asof(right.rename({"v": "w"}), on="ts", by="k").with_columns(v=rb.col("v") + rb.col("w"))
        return both.window(rb.tumbling("1s"), by="k").agg(n=rb.count(), total=rb.sum("v")).write(out, key="k")

    out = log.topic("out", partitions=2)
    add(a, 0)
    add(b, 0)
    plan(out).run(name="two", progress=False)
    add(a, 1)  # a goes on to 2.5 s, b stays at 1.5 s
    plan(out).run(name="two", progress=False)
    add(b, 1)  # b's next rows (1.5 s to 2.5 s) fall in windows a's records reached before
    last = plan(out).run(name="two", progress=False)
    assert last.late.num_rows == 0, f"{last.late.num_rows} of b's new records were dropped as late"

    ref = log.topic("ref", partitions=2)
    plan(ref).run(name="ref", progress=False)
    assert_same(per_key(out), per_key(ref), "three runs vs one")
    if op == "union":  # brute force: every record of both topics counted once in its window
        want: dict[tuple[str, int], int] = defaultdict(int)
        for t in (a, b):
            for r in t.read().select(["value"]).column("value").to_pylist():
                row = json.loads(r)
                want[(row["k"], row["ts"] // 1000 * 1000)] += 1
        got = {}
        for k, vs in per_key(out).items():
            for v in vs:
                row = json.loads(v)
                got[(k.decode(), row["window_start"])] = row["n"]  # the last update of a window
        assert got == dict(want)


@pytest.mark.parametrize("op", ["window", "join_interval"])
def test_a_rerun_with_nothing_new_emits_nothing_to_a_sink_that_cannot_roll_back(log, op):
    """A callback sink keeps what the end-of-input flush of a bounded run gave it: run again
    with no new input, the run gives nothing (the flush is not repeated; it repeated join rows
    exactly). With new input, the windows still open are emitted again, updated."""
    a, b = log.topic("a", partitions=2), log.topic("b", partitions=2)

    def add(lo: int, hi: int) -> None:
        for t, off in ((a, 0), (b, 3)):
            rows = range(lo, hi)
            t.produce_batch(
                pa.table({"k": [f"k{i % 5}" for i in rows], "ts": [i * 10 + off for i in rows], "v": list(rows)}),
                key="k",
                timestamp="ts",
            )

    def run() -> list[dict]:
        got: list[pa.RecordBatch] = []
        left, right = (rb.Pipeline.read(t, timestamp="ts") for t in (a, b))
        if op == "window":
            p = left.union(right).window(rb.tumbling("1s"), by="k").agg(n=rb.count(), total=rb.sum("v"))
        else:
            p = left.join_interval(right, on="k", lower="-20ms", upper="20ms")
        p.write(got.append).run(name="cb", progress=False)
        return pa.Table.from_batches(got).to_pylist() if got else []

    add(0, 250)
    first = run()
    assert first
    assert run() == [], "a rerun with nothing new emitted again"
    marker = [f for f in ckpt_dir(log.path, "cb").iterdir() if f.suffix == ".flushed"]
    assert len(marker) == 1
    # as if killed after the end-of-input checkpoint, before the flush reached the sink: the
    # rerun emits the flush (again), it does not lose it
    marker[0].unlink()
    again = [json.dumps(r, sort_keys=True, default=str) for r in run()]
    assert again and not Counter(again) - Counter(json.dumps(r, sort_keys=True, default=str) for r in first)
    assert run() == []
    add(250, 400)
    more = run()
    if op == "window":
        latest = {(r["k"], r["window_start"]): (r["n"], r["total"]) for r in first + more}
        want: dict = defaultdict(lambda: [0, 0])
        for i in range(400):
            for _ in (a, b):
                w = want[(f"k{i % 5}", (i * 10) // 1000 * 1000)]
                w[0] += 1
                w[1] += i
        assert latest == {k: tuple(v) for k, v in want.items()}
    else:  # brute force: a's and b's rows of one key within 20 ms
        pairs = Counter((r["v"], r["v_right"]) for r in first + more)
        want = {(i, j) for i in range(400) for j in range(400) if i % 5 == j % 5 and abs(i * 10 - (j * 10 + 3)) <= 20}
        assert set(pairs) == want
        # at-least-once (README): only the rows the first run's end flush gave come again
        flushed = {(json.loads(r)["v"], json.loads(r)["v_right"]) for r in again}
        assert {p for p, c in pairs.items() if c > 1} <= flushed and max(pairs.values()) <= 2


def _expected(events: rb.Topic, lateness_ms: int = 1000) -> dict[bytes, list[dict]]:
    """The windows a following run has emitted once it has read all of ``events``: those ending
    at or before the watermark (the smallest of the partitions' largest event times - lateness)."""
    t = events.read()
    top: dict[int, int] = {}
    for p, ts in zip(t.column("partition").to_pylist(), t.column("timestamp").cast(pa.int64()).to_pylist()):
        top[p] = max(top.get(p, ts), ts)
    wm = min(top.values()) - lateness_ms
    want: dict[bytes, list[dict]] = defaultdict(list)
    for r in bars(events).collect(progress=False).to_pylist():
        if r["window_end"] <= wm:
            want[r["k"].encode()].append(r)
    return dict(want)


def _follow_until(p: rb.Pipeline, out: rb.Topic, n: int) -> None:
    """Start ``p`` as the named following run 'live' until ``out`` has ``n`` records, then stop."""
    p.start(name="live", checkpoint_interval="20ms")
    try:
        deadline = time.monotonic() + 20
        while sum(hi - lo for lo, hi in out.offsets().values()) < n:
            assert p.running, "the run ended"
            assert time.monotonic() < deadline, f"output stuck at {out.offsets()}, want {n} records"
            time.sleep(0.02)
    finally:
        p.stop()


def test_follow_mode_stop_and_restart_resumes(log):
    events = events_topic(log)
    out = log.topic("bars", partitions=2)
    # idle_timeout: a quiet input must not flush the open windows during the test
    p = bars(events, idle_timeout="1h").write(out)

    produce_rows(events, 0, 550)
    want = _expected(events)
    _follow_until(p, out, sum(map(len, want.values())))
    assert {k: [json.loads(v) for v in vs] for k, vs in per_key(out).items()} == want

    produce_rows(events, 550, 1200)
    want = _expected(events)
    _follow_until(p, out, sum(map(len, want.values())))
    assert {k: [json.loads(v) for v in vs] for k, vs in per_key(out).items()} == want


def test_named_pipeline_over_a_python_iterator_cannot_resume(log):
    out = log.topic("out", partitions=1)
    rows = iter([{"k": "a", "ts": 0, "v": 1}, {"k": "a", "ts": 20_000, "v": 2}])
    p = rb.Pipeline.read(rows, timestamp="ts").window(rb.tumbling("10s"), by="k").agg(n=rb.count()).write(out)
    with pytest.raises(rb.exceptions.PlanError, match="cannot resume"):
        p.run(name="from-iterator", progress=False)
    assert out.offsets() == {0: (0, 0)}


@pytest.mark.parametrize("name", ["a/b", "../escape", "a\\b", "", ".hidden"])
def test_checkpoint_name_must_be_a_plain_name(log, log_dir, name):
    events = events_topic(log)
    produce_rows(events, 0, 10)
    p = bars(events).write(log.topic("out", partitions=1))
    with pytest.raises(ValueError, match="name"):
        p.run(name=name, progress=False)
    with pytest.raises(ValueError, match="name"):
        p.start(name=name)
    assert not (log_dir / "~checkpoints").exists()
    assert not (log_dir.parent / "escape").exists()


def test_named_pipeline_needs_a_log():
    p = rb.Pipeline.read(pa.table({"k": ["a"], "ts": [0]}), timestamp="ts").window(rb.tumbling("1s"), by="k").agg(n=rb.count())
    with pytest.raises(ValueError, match="log"):
        p.run(name="nowhere", progress=False)


def test_every_checkpoint_unusable_refuses_to_start_over(log):
    """With every checkpoint unusable, starting over would write the whole output again after
    what the topic holds: the run refuses, naming reset=True, and writes nothing."""
    events = events_topic(log)
    produce_rows(events, 0, 300)
    out = log.topic("bars", partitions=2)
    p = bars(events).write(out)
    p.run(name="bars", checkpoint_interval="10ms", progress=False)
    before = out.offsets()
    files = sorted((log.path / "~checkpoints" / "bars").glob("*.ckpt"))
    assert files
    for f in files:
        f.write_bytes(b"not a checkpoint")
    with pytest.raises(rb.exceptions.PlanError, match="reset=True"):
        p.run(name="bars", progress=False)
    assert out.offsets() == before
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        p.run(name="bars", reset=True, progress=False)  # forgets them without reading them
    assert not [w for w in seen if "unusable" in str(w.message)]
    # reset keeps the output topic: a full new run follows the old records
    assert sum(b - a for a, b in out.offsets().values()) == 2 * sum(b - a for a, b in before.values())


def test_checkpoint_stats_report_what_the_checkpoints_cost(log):
    events = events_topic(log)
    produce_rows(events, 0, 1000)
    out = log.topic("bars", partitions=2)
    p = bars(events).write(out)
    assert p.checkpoint_stats() == {}, "no run yet"

    # bounded: one checkpoint at start and one before the end-of-input flush, both written
    # before the run goes on (no periodic one pauses it)
    res = p.run(name="bars", checkpoint_interval="1h", progress=False)
    st = p.checkpoint_stats()
    assert st == res.checkpoints
    newest = sorted((log.path / "~checkpoints" / "bars").glob("*.ckpt"))[-1]
    assert st["written"] == 2 == int(newest.stem)
    assert st["last_bytes"] == newest.stat().st_size
    assert st["max_pause_ms"] == 0.0
    assert 0 < st["last_write_ms"] <= st["max_write_ms"]

    # following with a short interval: periodic checkpoints pause the run only to copy the state
    produce_rows(events, 1000, 1500)
    p.start(name="bars", checkpoint_interval="10ms")
    try:
        deadline = time.monotonic() + 20
        while p.checkpoint_stats().get("max_pause_ms", 0.0) == 0.0:
            assert time.monotonic() < deadline, f"no periodic checkpoint: {p.checkpoint_stats()}"
            time.sleep(0.02)
    finally:
        p.stop()
    st = p.checkpoint_stats()
    newest = sorted((log.path / "~checkpoints" / "bars").glob("*.ckpt"))[-1]
    assert int(newest.stem) == 2 + st["written"], "this run's checkpoints follow the last run's"
    assert st["last_bytes"] == newest.stat().st_size
    assert 0 < st["last_pause_ms"] <= st["max_pause_ms"]

    # an unnamed run takes none
    assert bars(events).write(log.topic("plain", partitions=2)).run(progress=False).checkpoints["written"] == 0


def named_bars(events: rb.Topic, *, extra: bool = False, size: str = "10s", name: str | None = "bars-w") -> rb.Pipeline:
    """``bars`` with its window named ``name``; ``extra``: a step added before the window (it
    keeps every record and changes no value the window reads)."""
    p = rb.Pipeline.read(events, timestamp="ts", lateness="1s", schema=SCHEMA, batch_size=50)
    if extra:
        p = p.filter(rb.col("v") >= 0).with_columns(v2=rb.col("v") * 2)
    p = p.window(rb.tumbling(size), by="k").agg(n=rb.count(), total=rb.sum("v"))
    return p.named(name) if name else p


def test_changed_plan_keeps_the_state_of_named_operators(log):
    """Run a named pipeline on half the input, add steps before its named window, run it again on
    the rest: the window's state carries over by name, so the output equals one run of the old
    plan over all the input (and the change is reported)."""
    events = events_topic(log)
    produce_rows(events, 0, 550)
    out = log.topic("bars", partitions=2)
    first = named_bars(events).write(out)
    first.run(name="bars", checkpoint_interval="10ms", progress=False)
    assert [m["operator"] for m in first.metrics()] == ["read#0", "bars-w"]

    produce_rows(events, 550, 1200)
    changed = named_bars(events, extra=True).write(out)
    with pytest.warns(RuntimeWarning, match=r"plan changed .*carries over by name \(bars-w\)"):
        changed.run(name="bars", checkpoint_interval="10ms", progress=False)

    ref = log.topic("ref", partitions=2)
    named_bars(events).write(ref).run(name="ref", progress=False)
    assert per_key(out) == per_key(ref)
    # the restored window counted the first half: every record once
    total = sum(json.loads(v)["n"] for vs in per_key(out).values() for v in vs)
    rolled_back = sum(json.loads(v)["n"] for vs in per_key(ref).values() for v in vs)
    assert total == rolled_back == 1200


def test_changed_plan_that_no_longer_fits_names_the_operator(log):
    events = events_topic(log)
    produce_rows(events, 0, 550)
    out = log.topic("bars", partitions=2)
    named_bars(events).write(out).run(name="bars", progress=False)
    offsets = out.offsets()

    # the named window itself changed
    with pytest.raises(rb.exceptions.PlanError, match=r"operator 'bars-w' changed \(was `window \{.*\"tumbling\":.*\"size_ms\":10000.*`, is `window \{.*\"size_ms\":20000.*reset=True"):
        named_bars(events, size="20s").write(out).run(name="bars", progress=False)
    # the window is gone (renamed)
    with pytest.raises(rb.exceptions.PlanError, match=r"operator 'bars-w' .* holds state in it, and this plan has no operator of that name; pass reset=True"):
        named_bars(events, name="other").write(out).run(name="bars", progress=False)
    # the sources changed
    other = log.topic("other", partitions=2)
    with pytest.raises(rb.exceptions.PlanError, match=r"its sources changed"):
        named_bars(other).write(out).run(name="bars", progress=False)
    assert out.offsets() == offsets, "a refused restart must not touch the output topic"

    # unnamed, the window is known by its place, which a step added before it moves
    unnamed = log.topic("unnamed", partitions=2)
    named_bars(events, name=None).write(unnamed).run(name="unnamed", progress=False)
    with pytest.raises(rb.exceptions.PlanError, match=r"operator 'window#1' .*no operator of that name \(an operator not given a name with \.named\(\.\.\.\)"):
        named_bars(events, name=None, extra=True).write(unnamed).run(name="unnamed", progress=False)
    # a step added after it keeps its place: the state carries over
    with pytest.warns(RuntimeWarning, match=r"carries over by name \(window#1\)"):
        named_bars(events, name=None).filter(rb.col("n") > 0).write(unnamed).run(name="unnamed", progress=False)


def test_new_stateful_operator_starts_empty_and_names_are_checked(log):
    events = events_topic(log)
    produce_rows(events, 0, 300)
    out = log.topic("bars", partitions=2)
    named_bars(events).write(out).run(name="bars", progress=False)
    grown = named_bars(events).window(rb.tumbling("1m"), by="k").agg(windows=rb.count()).named("per-minute")
    with pytest.warns(RuntimeWarning, match=r"operator 'per-minute' .* is new since .*: it starts with empty state"):
        grown.write(log.topic("minutes", partitions=2)).run(name="bars", progress=False)

    with pytest.raises(rb.exceptions.PlanError, match=r'"w" names two operators'):
        named_bars(events, name="w").filter(rb.col("n") > 0).named("w").collect(progress=False)
    with pytest.raises(rb.exceptions.PlanError, match=r"named again"):
        named_bars(events, name="a").named("b").collect(progress=False)
    for bad in ("", "w#1", 3):
        with pytest.raises(TypeError, match="named: name must be a non-empty str"):
            named_bars(events, name=None).named(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "window",
    [rb.session("2s"), rb.session("250ms"), rb.sliding("5s"), rb.count_window(7), rb.hopping("10s", "5s")],
    ids=["session-long", "session-short", "sliding", "count", "hopping"],
)
def test_every_window_kind_resumes_from_its_checkpoint(log, window):
    """A named bounded run over part of the input, then again with the rest: the rerun restores
    the window's state (open sessions, held records of sliding and count windows) and the output
    equals one run over all the input. ``session-long``: each key's records are 600 ms apart,
    so every key has one session across both parts."""
    events = events_topic(log)

    def plan(topic: rb.Topic) -> rb.Pipeline:
        return (
            rb.Pipeline.read(events, timestamp="ts", lateness="1s", schema=SCHEMA, batch_size=50)
            .window(window, by="k")
            .agg(n=rb.count(), total=rb.sum("v"), last=rb.last("v"))
            .write(topic)
        )

    produce_rows(events, 0, 550)
    out = log.topic("out", partitions=2)
    plan(out).run(name="w", checkpoint_interval="10ms", progress=False)
    produce_rows(events, 550, 1200)
    plan(out).run(name="w", checkpoint_interval="10ms", progress=False)

    ref = log.topic("ref", partitions=2)
    plan(ref).run(progress=False)
    want = per_key(ref)
    assert want and per_key(out) == want


# -- checkpoint identity: the whole definition of an operator (issue 13, part 3) -----------------

V = rb.col("v")


def _base_agg() -> rb.Expr:
    return rb.sum(rb.when(V > 5).then(V.clip(0, 10)).otherwise(0))


# Each changes one part of the named window's aggregate; `explain()` once printed all but the
# first few alike (`when(..)`, `.clip(..)`), and a restart took the old state for the new one.
EXPR_CHANGES = {
    "when condition": lambda: rb.sum(rb.when(V > 6).then(V.clip(0, 10)).otherwise(0)),
    "when then": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10) + 1).otherwise(0)),
    "when otherwise": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10)).otherwise(-1)),
    "when branch added": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10)).when(V < 2).then(1).otherwise(0)),
    "clip upper": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 11)).otherwise(0)),
    "clip lower": lambda: rb.sum(rb.when(V > 5).then(V.clip(1, 10)).otherwise(0)),
    "clip one-sided": lambda: rb.sum(rb.when(V > 5).then(V.clip(0)).otherwise(0)),
    "int to float literal": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10)).otherwise(0.0)),
    "comparison": lambda: rb.sum(rb.when(V >= 5).then(V.clip(0, 10)).otherwise(0)),
    "column": lambda: rb.sum(rb.when(rb.col("ts") > 5).then(V.clip(0, 10)).otherwise(0)),
    "boolean logic": lambda: rb.sum(rb.when((V > 5) & (V < 1000)).then(V.clip(0, 10)).otherwise(0)),
    "negation": lambda: rb.sum(rb.when(~(V <= 5)).then(V.clip(0, 10)).otherwise(0)),
    "unary": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10).abs()).otherwise(0)),
    "is_null": lambda: rb.sum(rb.when((V > 5) & V.is_not_null()).then(V.clip(0, 10)).otherwise(0)),
    "fill_null": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10).fill_null(0)).otherwise(0)),
    "cast": lambda: rb.sum(rb.when(V > 5).then(V.clip(0, 10).cast("float64")).otherwise(0)),
    "aggregate function": lambda: rb.mean(rb.when(V > 5).then(V.clip(0, 10)).otherwise(0)),
    "expression over aggregates": lambda: _base_agg() / rb.count(),
}


def identity_bars(events: rb.Topic, agg: rb.Expr, *, extra: bool = False) -> rb.Pipeline:
    p = rb.Pipeline.read(events, timestamp="ts", lateness="1s", schema=SCHEMA, batch_size=50)
    if extra:
        p = p.filter(rb.col("v") >= 0)
    return p.window(rb.tumbling("10s"), by="k").agg(n=rb.count(), x=agg).named("bars-w")


def test_every_expression_kind_changed_in_a_named_window_is_refused(log):
    events = events_topic(log)
    produce_rows(events, 0, 550)
    out = log.topic("bars", partitions=2)
    identity_bars(events, _base_agg()).write(out).run(name="bars", progress=False)
    offsets = out.offsets()
    texts = {str(_base_agg())}
    for what, changed in EXPR_CHANGES.items():
        texts.add(str(changed()))
        with pytest.raises(rb.exceptions.PlanError, match=r"operator 'bars-w' changed \(was `window .*`, is `window .*`\).*reset=True") as e:
            identity_bars(events, changed()).write(out).run(name="bars", progress=False)
        assert "bars-w" in str(e.value), what
    assert len(texts) == len(EXPR_CHANGES) + 1, "every change must show in the expression's text too"
    assert out.offsets() == offsets, "a refused restart must not touch the output topic"


def test_an_unchanged_definition_restores_its_state(log):
    """Half the input, then the rest with a step added before the named window (so the plan
    changed and the window is matched by its full definition): one run's output."""
    events = events_topic(log)
    produce_rows(events, 0, 550)
    out = log.topic("bars", partitions=2)
    identity_bars(events, _base_agg()).write(out).run(name="bars", checkpoint_interval="10ms", progress=False)
    produce_rows(events, 550, 1200)
    with pytest.warns(RuntimeWarning, match=r"carries over by name \(bars-w\)"):
        identity_bars(events, _base_agg(), extra=True).write(out).run(name="bars", progress=False)
    ref = log.topic("ref", partitions=2)
    identity_bars(events, _base_agg()).write(ref).run(name="ref", progress=False)
    assert per_key(out) == per_key(ref)
    assert sum(json.loads(v)["n"] for vs in per_key(out).values() for v in vs) == 1200


def test_checkpoints_of_count_x_as_older_riverbed_planned_it_still_resume(log):
    """``rb.count("v")`` was sent to the engine as ``sum(v.is_not_null().cast("int64"))`` until
    the engine counted non-null values itself, with another operator signature and state
    layout. A checkpoint of that form (written here by spelling it out) still resumes under
    ``rb.count("v")``, and the output is one run's; a plan it does not fit is still refused."""
    events = events_topic(log)
    produce_rows(events, 0, 550)
    out = log.topic("bars", partitions=2)
    old_count = rb.sum(rb.col("v").is_not_null().cast("int64"))
    identity_bars(events, old_count).write(out).run(name="bars", checkpoint_interval="10ms", progress=False)
    produce_rows(events, 550, 1200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to say: the same pipeline
        identity_bars(events, rb.count("v")).write(out).run(name="bars", checkpoint_interval="10ms", progress=False)
    ref = log.topic("ref", partitions=2)
    identity_bars(events, rb.count("v")).write(ref).run(name="ref", progress=False)
    assert per_key(out) == per_key(ref)
    assert sum(json.loads(v)["x"] for vs in per_key(out).values() for v in vs) == 1200
    # ... and the run went on in the form its checkpoints are in: a third run resumes too
    produce_rows(events, 1200, 1300)
    identity_bars(events, rb.count("v")).write(out).run(name="bars", progress=False)
    with pytest.raises(rb.exceptions.CheckpointError, match="reset"):
        identity_bars(events, rb.count("k")).write(out).run(name="bars", progress=False)


def test_explain_prints_every_expression_in_full(log):
    p = identity_bars(events_topic(log), _base_agg()).with_columns(
        y=rb.when(rb.col("n") > 1).then(rb.col("x").clip(upper=2.5)).when(rb.col("n").is_null()).then(None).otherwise(rb.col("x"))
    )
    text = p.explain()
    assert 'x=Sum(when((col("v") > 5)).then(col("v").clip(0, 10)).otherwise(0))' in text
    assert 'y=when((col("n") > 1)).then(col("x").clip(None, 2.5)).when(IsNull(col("n"))).then(null).otherwise(col("x"))' in text
    assert "(..)" not in text


# -- options that need a name (issue 13, part 5) ------------------------------------------------


def test_checkpoint_options_without_a_name_are_errors(log):
    events = events_topic(log)
    produce_rows(events, 0, 100)
    out = log.topic("out", partitions=2)
    p = bars(events).write(out)
    for kwargs, what in [({"checkpoint_interval": "100ms"}, "checkpoint_interval"), ({"reset": True}, "reset=True")]:
        with pytest.raises(ValueError, match=rf"{what} has no effect without name=.*pass name="):
            p.run(progress=False, **kwargs)
        with pytest.raises(ValueError, match=rf"{what} has no effect without name="):
            p.start(**kwargs)
        assert not p.running
    assert out.offsets() == {0: (0, 0), 1: (0, 0)}, "a refused run writes nothing"
    # named, the interval defaults to 10 s: a short run checkpoints at its start and end only
    res = p.run(name="n", progress=False)
    assert res.checkpoints["written"] >= 1
    assert len(ckpts(log.path, "n")) >= 1


def test_topic_to_topic_run_without_a_name_warns_once(log):
    events = events_topic(log)
    produce_rows(events, 0, 100)
    out = log.topic("out", partitions=2)
    with pytest.warns(UserWarning, match=r"writes topic 'out' without name=.*reprocesses its input from the start.*name='\.\.\.'"):
        bars(events).write(out).run(progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bars(events).write(out).run(progress=False)  # once per output topic
        bars(events).write(log.topic("named", partitions=2)).run(name="x", progress=False)
        table = pa.table({"k": ["a"], "ts": [1], "v": [1]}, schema=SCHEMA)
        rb.Pipeline.read(table, timestamp="ts").write(log.topic("from-table")).run(progress=False)
        bars(events).collect(progress=False)
    with pytest.warns(UserWarning, match="without name="):
        bars(events).write(log.topic("out2", partitions=2)).start().stop()


def test_other_options_that_would_do_nothing_are_errors(log, tmp_path):
    events = events_topic(log)
    table = pa.table({"k": ["a"], "ts": [1], "v": [1]}, schema=SCHEMA)
    with pytest.raises(ValueError, match="format='raw' applies to topics"):
        rb.Pipeline.read(table, format="raw")
    with pytest.raises(ValueError, match="schema= has no effect with format='raw'"):
        rb.Pipeline.read(events, format="raw", schema=SCHEMA)
    with pytest.raises(ValueError, match="batch_size= has no effect on a RecordBatchReader"):
        rb.Pipeline.read(pa.RecordBatchReader.from_batches(SCHEMA, table.to_batches()), batch_size=10)
    with pytest.raises(ValueError, match="batch_size= has no effect on an iterator of RecordBatches"):
        rb.Pipeline.read(iter(table.to_batches()), batch_size=10)
    for fsync in ("batch", "never"):
        with pytest.raises(ValueError, match=f"fsync_interval has no effect with fsync='{fsync}'"):
            rb.Log(tmp_path / "other", fsync=fsync, fsync_interval="10ms")
    with pytest.raises(ValueError, match="progress= has no effect with follow=True"):
        rb.Pipeline.read(events, timestamp="ts", schema=SCHEMA).run(follow=True, progress=False)
    from riverbed.testing import MockKafka

    with MockKafka() as mock:
        kafka = mock.kafka(timeout=5)
        kt = kafka.create_topic("kt", partitions=1)
        with pytest.raises(ValueError, match="dead_letter= goes with on_error='dead_letter'"):
            rb.Pipeline.read(kt, dead_letter=kafka.create_topic("kt.dlq", partitions=1))
    # what still works: a list of batches is re-chunked, and raw values read without a schema
    assert rb.Pipeline.read(table.to_batches(), batch_size=10).collect(progress=False).num_rows == 1
    produce_rows(events, 0, 10)
    assert rb.Pipeline.read(events, format="raw").collect(progress=False).num_rows == 10


def _sessions(rows: list[tuple[str, int, int]], gap: int) -> dict[tuple[str, int], tuple[int, int, int]]:
    """Brute force: per key, times sorted; a record within ``gap`` (inclusive) of the last joins
    its session. (key, start) -> (end, count, sum)."""
    by_key: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for k, t, v in rows:
        by_key[k].append((t, v))
    out = {}
    for k, recs in by_key.items():
        recs.sort()
        start = end = recs[0][0]
        n = total = 0
        for t, v in recs:
            if t - end > gap:
                out[(k, start)] = (end, n, total)
                start, n, total = t, 0, 0
            end = t
            n += 1
            total += v
        out[(k, start)] = (end, n, total)
    return out


def _apply_session_changelog(rows: list[dict]) -> dict[tuple[str, int], tuple[int, int, int]]:
    """The latest row per (k, window_start); a row with every aggregate null retracts its key."""
    table: dict[tuple[str, int], tuple[int, int, int]] = {}
    for r in rows:
        if r["n"] is None and r["total"] is None:
            assert (r["k"], r["window_start"]) in table, f"retracts a session never emitted: {r}"
            del table[(r["k"], r["window_start"])]
        else:
            table[(r["k"], r["window_start"])] = (r["window_end"], r["n"], r["total"])
    return table


@pytest.mark.parametrize("emit", ["final", "update"])
@pytest.mark.parametrize("lateness", ["1h", "4s"])
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("sink", ["callback", "topic"])
def test_sessions_merged_by_a_rerun_retract_the_rows_they_replace(log, emit, lateness, seed, sink):
    """Bounded reruns of a named session window: the end-of-input flush of each run emits the
    open sessions; new input in the next run merges some of them into a session with an earlier
    start, and the rows of those go out again as retractions (aggregates null). A callback sink
    keeps every run's rows; a topic is rolled back to the checkpoint before the flush, so it keeps
    the update rows before it (their sessions are known as sent from the checkpoint). Applied as
    a changelog, the output equals brute-force sessions over every record that was not late."""
    rng = random.Random(seed)
    events = log.topic("events", partitions=2)
    out_topic = log.topic("out", partitions=2)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])
    sent: list[tuple[str, int, int]] = []
    got: list[dict] = []
    late: list[tuple[str, int, int]] = []
    for part in range(4):
        rows = [(f"k{rng.randrange(4)}", part * 4000 + rng.randrange(-3000, 6000), len(sent) + i) for i in range(60)]
        sent += rows
        events.produce_batch(pa.table(dict(zip(("k", "ts", "v"), zip(*rows))), schema=schema), key="k", timestamp="ts")
        out: list[pa.RecordBatch] = []
        res = (
            rb.Pipeline.read(events, timestamp="ts", lateness=lateness, schema=schema, batch_size=rng.choice([1, 7, 50]))
            .window(rb.session("700ms"), by="k", emit=emit)
            .agg(n=rb.count(), total=rb.sum("v"))
            .write(out.append if sink == "callback" else out_topic)
            .run(name="sess", progress=False)
        )
        late += [(r["k"], r["ts"], r["v"]) for r in res.late.to_pylist()]
        got += pa.Table.from_batches(out).to_pylist() if out else []
    if sink == "topic":  # each key's rows are in one partition, in order
        records = out_topic.read().to_pylist()
        got = [json.loads(r["value"]) for r in sorted(records, key=lambda r: (r["partition"], r["offset"]))]
    if lateness == "1h":
        assert not late
    kept = [r for r in sent if r not in set(late)]
    assert _apply_session_changelog(got) == _sessions(kept, 700)
    # a topic keeps no final-mode row of an open session (the flush was rolled back): nothing
    # to retract; otherwise the data makes reruns merge sessions that have rows out
    assert any(r["n"] is None for r in got) == (sink == "callback" or emit == "update")


def test_a_session_flushed_by_a_run_killed_mid_flush_is_retracted_when_it_merges(log):
    """A bounded named run killed during its end-of-input flush (its checkpoint is then not
    marked flushed: the marker is removed here, as a kill leaves it) may have given the sink some
    of the flushed sessions. The rerun treats every restored open session as out there: one that
    merges into an earlier session is retracted."""
    events = log.topic("events", partitions=1)
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.int64())])

    def run(rows: list[tuple[str, int, int]]) -> list[dict]:
        events.produce_batch(pa.table(dict(zip(("k", "ts", "v"), zip(*rows))), schema=schema), key="k", timestamp="ts")
        out: list[pa.RecordBatch] = []
        (
            rb.Pipeline.read(events, timestamp="ts", lateness="1h", schema=schema)
            .window(rb.session("700ms"), by="k")
            .agg(n=rb.count(), total=rb.sum("v"))
            .write(out.append)
            .run(name="cut", progress=False)
        )
        return pa.Table.from_batches(out).to_pylist() if out else []

    first = run([("a", 1000, 1), ("a", 1100, 2), ("b", 1000, 5)])
    assert {(r["k"], r["window_start"]) for r in first} == {("a", 1000), ("b", 1000)}
    (marker,) = [f for f in ckpt_dir(log.path, "cut").iterdir() if f.suffix == ".flushed"]
    marker.unlink()
    again = run([("a", 400, 3), ("b", 400, 7)])
    assert _apply_session_changelog(first + again) == {("a", 400): (1100, 3, 6), ("b", 400): (1000, 2, 12)}
