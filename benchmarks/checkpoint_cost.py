"""Checkpoint cost: writing, pausing for and restoring 1,000,000 keys of open tumbling-window state.

Workload: a JSON topic (4 partitions) -> per-key tumbling 10 s window (count, sum, mean) -> an
output topic. The input holds one record for each of 1,000,000 distinct keys, then ``--extra``
more (default 9,000,000) for the same keys, every event time in one 10 s window. The window
never closes (``idle_timeout`` is an hour), so the run holds 1,000,000 open (key, window) entries
while it works through the rest. Producing the input is not timed; it is synced to disk first.

A checkpoint is taken on the worker thread between two steps, which copies the state (the
pause), and written by a background thread (output topics synced, then the file encoded,
written, fsynced and renamed) while processing goes on.

- (a) pause, a named run checkpointing every ``--interval`` (default 250 ms, so that several
      checkpoints fall inside the read) vs the same run without a name (no checkpoints), seen
      two ways:
      - by the engine: ``Pipeline.checkpoint_stats()`` (sampled while the run reads) gives, per
        checkpoint, how long the run's thread stopped for it (copying the state and handing it
        to the writer);
      - from outside: the run is polled (``metrics()``, about every millisecond) for records
        read; the longest time between two changes while input was waiting. On 2 cores this
        Python thread shares the CPUs with the run's reader, worker and checkpoint writer, so
        it is sometimes not scheduled for tens of ms while the run goes on; each gap is
        therefore also counted as processing lost: the gap less the time the records read in it
        take at the run's average rate (a gap where the run stood still loses all of it but its
        last step; one where only the poller stood still loses ~0).
      The verdict takes the larger of the engine's longest pause and the longest time lost.
- (b) time to write one checkpoint of the 1,000,000 keys: by the engine (``last_write_ms``:
      output topics synced, file written, fsynced and renamed, on the writer thread at a lower
      priority while the run goes on), and, with the run idle, how much longer ``stop()`` takes
      named (it writes a final checkpoint) than unnamed with the same state open (both include
      part of a 50 ms idle wait, spread evenly by a random delay; so about +-25 ms); also what the
      file system alone takes to write, fsync, rename and delete a file that size;
- (c) restore: a run with the same name and no new input, from ``start()`` until it has run a
      step with its 1,000,000 keys back (``metrics()`` shows them), minus the same for an unnamed
      run on an empty topic (start-up alone); the state is then flushed by a bounded run of that
      name and checked (1,000,000 windows written, every record counted once);
- (d) the checkpoint file's size.

Run: ``python benchmarks/checkpoint_cost.py [--keys N] [--extra N] [--interval 250ms] [--repeat N] [--dir DIR]``
(``--dir``: where the log and its checkpoints go, default a temporary directory; checkpoints
are fsynced, so the disk matters).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import riverbed as rb

T0 = 1_700_000_000_000  # a multiple of 10 s: every event below falls in [T0, T0 + 10 s)
PARTITIONS = 4
SCHEMA = pa.schema([("key", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])
CYCLES = 3  # restore + stop cycles per round


def key_strings(ids: np.ndarray) -> pa.StringArray:
    """Keys "user-0000000".. for the given ids, built straight into Arrow buffers."""
    n = len(ids)
    q = ids.astype(np.uint32)
    data = np.empty((n, 12), dtype=np.uint8)
    data[:, :5] = np.frombuffer(b"user-", dtype=np.uint8)
    for d in range(11, 4, -1):
        data[:, d] = 48 + q % 10
        q //= 10
    offsets = np.arange(0, 12 * n + 1, 12, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def produce(topic, keys: int, extra: int, chunk: int = 500_000) -> int:
    """One record for each of `keys` distinct keys, then `extra` records cycling over them; event
    times rise from T0 to T0 + 5 s (one window, which stays open); returns the record count."""
    total = keys + extra
    for off in range(0, total, chunk):
        i = np.arange(off, min(off + chunk, total), dtype=np.int64)
        t = pa.table({"key": key_strings(i % keys), "ts": T0 + i * 5_000 // total, "v": np.ones(len(i))})
        topic.produce_batch(t, key="key", timestamp="ts")
    return total


def pipeline(src, out) -> rb.Pipeline:
    return (
        rb.Pipeline.read(src, timestamp="ts", lateness="1s", idle_timeout="1h", schema=SCHEMA)
        .window(rb.tumbling("10s"), by="key")
        .agg(n=rb.count(), s=rb.sum("v"), m=rb.mean("v"))
        .write(out, key="key")
    )


def progress(metrics: list[dict]) -> tuple[int, int]:
    """(records read, window state entries) from a run's metrics."""
    read = sum(int(m.get("records_out", 0)) for m in metrics if str(m.get("operator", "")).startswith("read"))
    state = sum(int(m.get("state_entries", 0)) for m in metrics if "window" in str(m.get("operator", "")))
    return read, state


def watch(
    p: rb.Pipeline, total: int, timeout: float = 600.0
) -> tuple[list[tuple[float, int]], float, dict[int, dict]]:
    """Poll a started run until it has read `total` records: the samples (time, records read),
    the time the last record was seen read, and the engine's figures of each checkpoint seen
    (``checkpoint_stats()`` by checkpoint count, sampled about every 10 ms)."""
    samples = []
    ckpts: dict[int, dict] = {}
    t_end = time.perf_counter() + timeout
    while time.perf_counter() < t_end:
        now = time.perf_counter()
        read = progress(p.metrics())[0]
        samples.append((now, read))
        if len(samples) % 8 == 0 or read >= total:
            st = p.checkpoint_stats()
            if st.get("written"):
                ckpts.setdefault(int(st["written"]), st)
        if read >= total:
            return samples, now, ckpts
        time.sleep(0.001)
    raise RuntimeError(f"the run read only {samples[-1][1]:,} of {total:,} records in {timeout:.0f} s")


def gaps(samples: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """The times between consecutive changes of records read, from the first record read to the
    last (input is waiting all that time), with the records read meanwhile; longest first."""
    out = []
    last_t, last_read = None, 0
    for t, read in samples:
        if read == last_read:
            continue
        if last_t is not None:
            out.append((t - last_t, read - last_read))
        last_t, last_read = t, read
    return sorted(out, reverse=True)


def lost(gap: tuple[float, int], rate: float) -> float:
    """Processing time lost in a gap seen from Python: the gap less the time the records read in
    it take at the run's average rate. A gap in which this (Python) thread merely was not
    scheduled, while the run went on, loses ~0; a gap in which the run stood still loses all of
    it but the step that ended it."""
    return max(0.0, gap[0] - gap[1] / rate)


def wait_read(p: rb.Pipeline, total: int) -> None:
    while progress(p.metrics())[0] < total:
        time.sleep(0.005)


def first_step(p: rb.Pipeline, want_state: int, timeout: float = 120.0) -> float:
    """Seconds until a started run has run a step (its metrics appear) with `want_state` window
    entries, from the call (made right after ``start()``)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        m = p.metrics()
        if m and progress(m)[1] >= want_state:
            return time.perf_counter() - t0
        time.sleep(0.0002)
    raise RuntimeError(f"the run did not reach {want_state:,} state entries in {timeout:.0f} s")


def timed_stop(p: rb.Pipeline) -> float:
    # Idle with the state open. An idle run waits for input 50 ms at a time and sees stop() only
    # between waits: a random delay spreads stop() evenly over that wait, named and unnamed alike.
    time.sleep(0.3 + random.random() * 0.05)
    t0 = time.perf_counter()
    p.stop(120.0)
    return time.perf_counter() - t0


def io_floor(root: str, nbytes: int, times: int = 3) -> float:
    """What the file system alone charges for a checkpoint of `nbytes`: write a new file, fsync
    it, rename it, fsync the directory, delete the previous one (median seconds)."""
    data = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    out = []
    for i in range(times + 1):
        t0 = time.perf_counter()
        tmp, dst = os.path.join(root, f"floor-{i}.tmp"), os.path.join(root, f"floor-{i}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, dst)
        fd = os.open(root, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        if i:
            os.remove(os.path.join(root, f"floor-{i - 1}"))
            out.append(time.perf_counter() - t0)
    os.remove(os.path.join(root, f"floor-{times}"))
    return statistics.median(out)


def ckpt_files(log_dir: Path, name: str) -> list[Path]:
    return sorted((log_dir / "~checkpoints" / name).glob("*.ckpt"))


def one_round(log: rb.Log, src, keys_only, total: int, keys: int, interval: str, r: int) -> dict:
    res: dict = {}
    # 1. Unnamed (no checkpoints): what a step costs, and the throughput.
    p = pipeline(src, log.topic(f"plain-{r}", partitions=PARTITIONS))
    t0 = time.perf_counter()
    p.start()
    samples, t_read, _ = watch(p, total)
    res["plain_read"] = t_read - t0
    res["plain_gaps"] = gaps(samples)
    res["plain_lost"] = max(lost(g, total / res["plain_read"]) for g in res["plain_gaps"])
    p.stop(120.0)

    # 2. Named, checkpointing every `interval` while it works through the same input.
    name = f"bench-{r}"
    out = log.topic(f"named-{r}", partitions=PARTITIONS)
    p = pipeline(src, out)
    t0 = time.perf_counter()
    p.start(name=name, checkpoint_interval=interval)
    samples, t_read, ckpts = watch(p, total)
    res["named_read"] = t_read - t0
    res["named_gaps"] = gaps(samples)
    res["named_lost"] = max(lost(g, total / res["named_read"]) for g in res["named_gaps"])
    # The engine's figures: per checkpoint seen (the first, at start, was written before any
    # input), and the longest pause of all those taken while reading.
    seen = [c for n, c in sorted(ckpts.items()) if n > 1]
    res["pauses"] = [c["last_pause_ms"] / 1e3 for c in seen]
    res["writes"] = [c["last_write_ms"] / 1e3 for c in seen]
    res["max_pause"] = max([c["max_pause_ms"] / 1e3 for c in ckpts.values()] or [0.0])
    p.stop(120.0)
    res["ckpt_bytes"] = ckpt_files(log.path, name)[-1].stat().st_size

    # 3. Restore (same name, no new input) and stop (which writes exactly one checkpoint: no
    # periodic ones with a 1 h interval), a few times; the unnamed baselines alongside.
    res["restore"], res["named_stop"], res["fresh_start"], res["plain_stop"] = [], [], [], []
    for c in range(CYCLES):
        p = pipeline(src, out)
        p.start(name=name, checkpoint_interval="1h")
        res["restore"].append(first_step(p, keys))
        res["named_stop"].append(timed_stop(p))
        # Unnamed on an empty topic: start-up alone.
        q = pipeline(
            log.topic("empty", partitions=PARTITIONS), log.topic(f"empty-out-{r}", partitions=PARTITIONS)
        )
        q.start()
        res["fresh_start"].append(first_step(q, 0))
        q.stop(60.0)
        # Unnamed with the same state open (one record per key): stop() without a checkpoint.
        q = pipeline(keys_only, log.topic(f"keys-out-{r}-{c}", partitions=PARTITIONS))
        q.start()
        wait_read(q, keys)
        res["plain_stop"].append(timed_stop(q))

    # 4. Check the restored state: a bounded run of that name resumes and flushes every window.
    pipeline(src, out).run(name=name, progress=False)
    res["windows_out"] = sum(b - a for a, b in out.offsets().values())
    got = rb.Pipeline.read(out, schema=pa.schema([("n", pa.int64())])).collect(progress=False)
    res["records_counted"] = int(pc.sum(got["n"]).as_py())
    if res["windows_out"] != keys or res["records_counted"] != total:
        raise SystemExit(
            f"restore check failed: {res['windows_out']:,} windows flushed (want {keys:,}), "
            f"{res['records_counted']:,} records counted (want {total:,})"
        )
    return res


def ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 0.01 else f"{s * 1000:,.0f} ms"


def verdict(value: float, goal: float) -> str:
    return "met" if value < goal else f"MISSED ({value / goal:.1f}x the goal)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--extra", type=int, default=9_000_000, help="records after the first one per key")
    ap.add_argument("--interval", default="250ms", help="checkpoint_interval of the named run in (a)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="parent directory for the log (default: a temporary one)")
    args = ap.parse_args()
    keys = args.keys
    with (
        tempfile.TemporaryDirectory(dir=args.dir, prefix="rb-ckpt-") as root,
        rb.Log(root, fsync="never") as log,
    ):
        src = log.topic("events", partitions=PARTITIONS)
        total = produce(src, keys, args.extra)
        keys_only = log.topic("keys", partitions=PARTITIONS)
        produce(keys_only, keys, 0)
        os.sync()  # the input's dirty pages are not the checkpoints' to flush
        print(
            f"{keys:,} keys of open tumbling-window state (count/sum/mean), JSON topic -> topic, "
            f"{PARTITIONS} partitions, {total:,} records; {os.cpu_count()} cores; log in {root}"
        )
        rounds = []
        for r in range(args.repeat):
            res = one_round(log, src, keys_only, total, keys, args.interval, r)
            rounds.append(res)
            if r == 0:
                floor = io_floor(root, res["ckpt_bytes"])
            print(
                f"  round {r + 1}: read {total / res['plain_read'] / 1e6:.1f} M records/s unnamed, "
                f"{total / res['named_read'] / 1e6:.1f} M/s named; {len(res['pauses'])} checkpoints seen "
                f"while reading: pauses {', '.join(ms(x) for x in res['pauses'])} (longest "
                f"{ms(res['max_pause'])}), writes {', '.join(ms(x) for x in res['writes'])}; seen from "
                f"Python: longest gap {ms(res['plain_gaps'][0][0])} unnamed, {ms(res['named_gaps'][0][0])} "
                f"named, processing lost at most {ms(res['plain_lost'])} unnamed, {ms(res['named_lost'])} "
                f"named; restore {', '.join(ms(x) for x in res['restore'])}; stop() "
                f"{', '.join(ms(x) for x in res['named_stop'])} named, "
                f"{', '.join(ms(x) for x in res['plain_stop'])} unnamed"
            )

    def med(key: str) -> float:
        vals = [v for x in rounds for v in (x[key] if isinstance(x[key], list) else [x[key]])]
        return statistics.median(vals)

    pauses = [v for x in rounds for v in x["pauses"]]
    writes = [v for x in rounds for v in x["writes"]]
    ckpt_idle = med("named_stop") - med("plain_stop")
    # The longest checkpoint seen: a write while processing, or a named stop() (which includes up
    # to 50 ms of idle wait: an overestimate).
    worst = max(writes + [v for x in rounds for v in x["named_stop"]])
    max_pause = max(x["max_pause"] for x in rounds)
    named_lost = max(x["named_lost"] for x in rounds)
    plain_lost = max(x["plain_lost"] for x in rounds)
    named_gap = max(x["named_gaps"][0][0] for x in rounds)
    plain_gap = max(x["plain_gaps"][0][0] for x in rounds)
    step = statistics.median(g for x in rounds for g, _ in x["plain_gaps"])
    restore = med("restore") - med("fresh_start")
    size = med("ckpt_bytes")
    print(
        f"over {len(rounds)} rounds ({len(pauses)} checkpoints seen while reading, "
        f"{CYCLES * len(rounds)} restores):"
    )
    print(f"checkpoint file:                 {size / 1e6:,.1f} MB ({size / keys:.0f} bytes per key)")
    print(
        f"(b) time to write a checkpoint:  {ms(statistics.median(writes)) if writes else '-'} while processing "
        f"(median, by the engine); ~{ms(ckpt_idle)} idle (median stop() {ms(med('named_stop'))} named - "
        f"{ms(med('plain_stop'))} unnamed); longest {ms(worst)}   goal < 1 s: {verdict(worst, 1.0)}"
    )
    print(
        f"    of which the file system alone (write {size / 1e6:,.0f} MB, fsync, rename, delete the "
        f"oldest): {ms(floor)}, measured from Python"
    )
    pause = max(max_pause, named_lost)
    print(
        f"(a) longest pause in processing: {ms(pause)}: the engine's longest checkpoint pause "
        f"{ms(max_pause)} (median {ms(statistics.median(pauses)) if pauses else '-'}); processing lost "
        f"in a gap seen from Python at most {ms(named_lost)} (unnamed run: {ms(plain_lost)}; longest "
        f"gaps {ms(named_gap)} named, {ms(plain_gap)} unnamed, median step {ms(step)})   "
        f"goal < 100 ms: {verdict(pause, 0.1)}"
    )
    print(
        "    the worker pauses only to copy the state (it grows with the state); the file is written "
        "by a background thread while processing goes on"
    )
    print(
        f"(c) time to restore:             {ms(restore)} (start() to the first step with the state back "
        f"{ms(med('restore'))}, unnamed start-up {ms(med('fresh_start'))})   goal < 2 s: {verdict(restore, 2.0)}"
    )
    print(f"    restored state checked: {keys:,} windows flushed after a restore, {total:,} records counted")
    print("goals: checkpoint < 1 s, pause < 100 ms, restore < 2 s")


if __name__ == "__main__":
    main()
