"""Lateness is judged per record, as Kafka Streams' stream time: the watermark a record meets is
the one the records before it in its own partition left (max event time so far - lateness), or
the pipeline's watermark if that is later. So the same input gives the same output and the same
late records however it is batched (one record at a time, 7, 1000, one batch), from a table or a
topic with 1 or 4 partitions, bounded or followed.

The references below are brute force: records one at a time, in partition order.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict

import pyarrow as pa
import pytest

import riverbed as rb

BASE = 1_700_000_040_000  # a multiple of 1 s
N = 3_000
KEYS = 7
STEP = 3  # ms of event time per record
DISORDER = 400  # ms a record may be behind its place
GRACE = 50
SIZE = 1_000


def late_data(n: int = N, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        back = rnd.randint(0, DISORDER) if rnd.random() < 0.3 else 0
        rows.append({"k": f"k{rnd.randrange(KEYS)}", "ts": BASE + i * STEP - back, "v": float(i % 97)})
    return rows


def stream_times(rows: list[dict], lateness: int = 0) -> list[int]:
    """Per record: the watermark the records before it left (None before the first)."""
    out, top = [], None
    for r in rows:
        out.append(None if top is None else top - lateness)
        top = r["ts"] if top is None else max(top, r["ts"])
    return out


def tumbling_reference(partitions: list[list[dict]], size=SIZE, every=SIZE, grace=GRACE, lateness=0):
    """Windows (k, start, end) -> (count, sum), and the late records, one record at a time."""
    windows: dict = defaultdict(lambda: [0, 0.0])
    late = []
    for rows in partitions:
        for r, wm in zip(rows, stream_times(rows, lateness)):
            t = r["ts"]
            start = (t // every) * every
            missed = False
            while start > t - size:
                end = start + size
                if wm is not None and end + grace <= wm:
                    missed = True
                else:
                    w = windows[(r["k"], start, end)]
                    w[0] += 1
                    w[1] += r["v"]
                start -= every
            if missed:
                late.append(r)
    return {k: (c, s) for k, (c, s) in windows.items()}, late


def rows_of(table: pa.Table, cols: list[str]) -> list[tuple]:
    return sorted(tuple(row[c] for c in cols) for row in table.to_pylist())


def late_rows(table: pa.Table) -> list[tuple]:
    return rows_of(table, ["k", "ts", "v"])


def window_result(table: pa.Table) -> dict:
    return {(r["k"], r["window_start"], r["window_end"]): (r["n"], r["s"]) for r in table.to_pylist()}


SPECS = {
    "tumbling": lambda p: p.window(rb.tumbling("1s", grace="50ms"), by="k").agg(n=rb.count(), s=rb.sum("v")),
    "hopping": lambda p: p.window(rb.hopping("1s", "250ms", grace="50ms"), by="k").agg(n=rb.count(), s=rb.sum("v")),
    "sliding": lambda p: p.window(rb.sliding("300ms", grace="50ms"), by="k").agg(n=rb.count(), s=rb.sum("v")),
    "session": lambda p: p.window(rb.session("40ms", grace="50ms"), by="k").agg(n=rb.count(), s=rb.sum("v")),
    "count": lambda p: p.window(rb.count_window(5), by="k").agg(n=rb.count(), s=rb.sum("v")),
    "rolling": lambda p: p.rolling(by="k", period="200ms", m=rb.mean("v"), c=rb.count("v")),
    "mapped_tumbling": lambda p: p.map_batches(lambda b: b)
    .filter(rb.col("v") < 60)
    .window(rb.tumbling("1s", grace="50ms"), by="k")
    .agg(n=rb.count(), s=rb.sum("v")),
    "filtered_tumbling": lambda p: p.filter(rb.col("v") < 60)
    .select("k", "ts", "v")
    .window(rb.tumbling("1s", grace="50ms"), by="k")
    .agg(n=rb.count(), s=rb.sum("v")),
}


def run_table(rows: list[dict], spec: str, batch_size: int | None):
    table = pa.Table.from_pylist(rows)
    p = SPECS[spec](rb.Pipeline.read(table, timestamp="ts", lateness="0ms", batch_size=batch_size))
    res = p.run(progress=False)
    return res.output, res.late


def canonical(table: pa.Table) -> list[tuple]:
    cols = [c for c in table.column_names if c not in ("partition", "offset", "timestamp", "key")]
    return sorted(tuple(repr(row[c]) for c in cols) for row in table.to_pylist())


@pytest.mark.parametrize("spec", sorted(SPECS))
def test_batch_size_does_not_change_output_or_late_records(spec):
    rows = late_data()
    results = {bs: run_table(rows, spec, bs) for bs in (1, 7, 1000, None)}
    out1, late1 = results[None]
    assert late1.num_rows > 0  # the data has late records for every operator kind
    for bs, (out, late) in results.items():
        assert canonical(out) == canonical(out1), f"batch_size={bs}"
        assert late_rows(late) == late_rows(late1), f"batch_size={bs}"


def test_tumbling_and_hopping_agree_with_a_record_at_a_time_reference():
    rows = late_data()
    for spec, every in (("tumbling", SIZE), ("hopping", 250)):
        want, want_late = tumbling_reference([rows], every=every)
        for bs in (1, 1000, None):
            out, late = run_table(rows, spec, bs)
            assert window_result(out) == want, (spec, bs)
            assert late_rows(late) == sorted((r["k"], r["ts"], r["v"]) for r in want_late), (spec, bs)
    # The example: dropped per record, as Kafka Streams would (hundreds, not 0).
    assert 100 < len(tumbling_reference([rows])[1]) < N // 2


def test_rolling_drops_exactly_the_records_behind_their_stream_time():
    rows = late_data()
    want_late = [r for r, wm in zip(rows, stream_times(rows)) if wm is not None and r["ts"] < wm]
    for bs in (1, 7, None):
        out, late = run_table(rows, "rolling", bs)
        assert late_rows(late) == sorted((r["k"], r["ts"], r["v"]) for r in want_late)
        assert out.num_rows == N - len(want_late)


def test_join_asof_late_records_do_not_depend_on_batching():
    rows = late_data()
    rnd = random.Random(3)
    quotes = [
        {"k": f"k{rnd.randrange(KEYS)}", "qts": BASE + i * 11 - (rnd.randint(0, 300) if rnd.random() < 0.3 else 0), "q": i}
        for i in range(N * STEP // 11)
    ]
    results = []
    for bs in (1, 7, 1000, None):
        left = rb.Pipeline.read(pa.Table.from_pylist(rows), timestamp="ts", lateness="0ms", batch_size=bs)
        right = rb.Pipeline.read(pa.Table.from_pylist(quotes), timestamp="qts", lateness="0ms", batch_size=bs)
        res = left.join_asof(right, by="k", right_on="qts").run(progress=False)
        results.append((canonical(res.output), late_rows(res.late), res.late.num_rows))
    assert results[0][2] > 0
    assert all(r == results[0] for r in results)
    # The left side's late records are those behind their stream time.
    want_late = [r for r, wm in zip(rows, stream_times(rows)) if wm is not None and r["ts"] < wm]
    assert results[0][1] == sorted((r["k"], r["ts"], r["v"]) for r in want_late)


def produce(log: rb.Log, rows: list[dict], partitions: int) -> tuple[rb.Topic, list[list[dict]]]:
    topic = log.topic(f"events{partitions}", partitions=partitions)
    topic.produce_batch(pa.Table.from_pylist(rows), key="k", timestamp="ts")
    read = topic.read().to_pylist()
    by_partition: list[list[dict]] = [[] for _ in range(partitions)]
    for r in sorted(read, key=lambda r: (r["partition"], r["offset"])):
        v = json.loads(r["value"])
        by_partition[r["partition"]].append({"k": v["k"], "ts": v["ts"], "v": v["v"]})
    return topic, by_partition


@pytest.mark.parametrize("partitions", [1, 4])
def test_a_topic_read_in_any_batch_size_matches_the_per_partition_reference(tmp_path, partitions):
    rows = late_data()
    with rb.Log(tmp_path / "log") as log:
        topic, parts = produce(log, rows, partitions)
        want, want_late = tumbling_reference(parts)
        assert want_late
        for bs in (1, 7, 1000):
            p = SPECS["tumbling"](rb.Pipeline.read(topic, timestamp="ts", lateness="0ms", batch_size=bs))
            res = p.run(progress=False)
            assert window_result(res.output) == want, bs
            assert late_rows(res.late) == sorted((r["k"], r["ts"], r["v"]) for r in want_late), bs
        # Every kind gives one answer per batch size over 4 partitions too.
        for spec in ("session", "sliding", "rolling"):
            got = []
            for bs in (1, 1000):
                res = SPECS[spec](rb.Pipeline.read(topic, timestamp="ts", lateness="0ms", batch_size=bs)).run(
                    progress=False
                )
                got.append((canonical(res.output), late_rows(res.late)))
            assert got[0] == got[1], spec


def test_follow_mode_gives_what_a_bounded_run_gives(tmp_path):
    rows = late_data()
    with rb.Log(tmp_path / "log") as log:
        topic, _ = produce(log, rows, 4)
        bounded = SPECS["tumbling"](rb.Pipeline.read(topic, timestamp="ts", lateness="0ms")).run(progress=False)
        live = SPECS["tumbling"](rb.Pipeline.read(topic, timestamp="ts", lateness="0ms", idle_timeout="100ms", batch_size=37))
        live.start()
        # The last windows close on the quiet stream once the wall clock has covered what is
        # missing to their end (at most 1 s + grace here).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = [x for x in live.metrics() if x["operator"].startswith("window")]
            if m and m[0]["records_out"] >= bounded.output.num_rows:
                break
            time.sleep(0.05)
        res = live.stop()
        assert window_result(res.output) == window_result(bounded.output)
        assert late_rows(res.late) == late_rows(bounded.late)
        assert bounded.late.num_rows > 0


SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])


def send(topic: rb.Topic, records: list[tuple[str, int]]) -> None:
    for k, ts in records:
        topic.produce({"k": k, "ts": ts, "v": 1.0}, key=k, timestamp=ts)


@pytest.mark.parametrize("udf", ["none", "map", "map_batches"])
def test_a_python_function_keeps_each_record_s_stream_time(tmp_path, udf):
    """A record behind its own partition's stream time is late, also after a Python function
    that keeps the rows (the other partition's lower watermark does not rescue it)."""
    with rb.Log(tmp_path / "log") as log:
        src = log.topic("t", partitions=2)
        send(src, [("d", 0), ("a", 5000), ("a", 100), ("d", 200)])
        assert {r["partition"] for r in src.read().to_pylist()} == {0, 1}
        got = []
        for bs in (1, None):
            p = rb.Pipeline.read(src, timestamp="ts", schema=SCHEMA, batch_size=bs)
            if udf == "map":
                p = p.map(lambda r: r)
            elif udf == "map_batches":
                p = p.map_batches(lambda b: b)
            res = p.window(rb.tumbling("1s"), by="k").agg(n=rb.count()).run(progress=False)
            got.append((sorted((r["k"], r["window_start"], r["n"]) for r in res.output.to_pylist()), res.late.column("ts").to_pylist()))
        assert got[0] == got[1]
        assert got[0][1] == [100]  # its partition had reached 5000
        assert ("a", 0, 1) not in got[0][0]


def test_a_restarted_run_keeps_the_windows_it_closed_closed(tmp_path):
    """Closed by the pipeline's watermark (the other partition was idle) and emitted before a
    restart: a record for that window after the restart is late, as without the restart, and
    the window is not emitted a second time."""
    schema = SCHEMA

    def pipeline(src, out):
        return (
            rb.Pipeline.read(src, timestamp="ts", schema=schema, idle_timeout="200ms")
            .window(rb.tumbling("1s"), by="k")
            .agg(n=rb.count())
            .write(out, key="k")
        )

    def windows(out):
        return sorted((json.loads(v)["k"], json.loads(v)["window_start"], json.loads(v)["n"]) for v in out.read().column("value").to_pylist())

    def wait_for(out, n):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(windows(out)) < n:
            time.sleep(0.05)

    with rb.Log(tmp_path / "log") as log:
        src, out = log.topic("t", partitions=2), log.topic("o")
        send(src, [("a", 5000), ("d", 0)])
        p = pipeline(src, out).start(name="y")
        wait_for(out, 1)  # (d, 0) closes once d's partition is idle: a's watermark passed it
        first = p.stop()
        assert windows(out) == [("d", 0, 1)] and first.late.num_rows == 0
        send(src, [("d", 500)])
        p = pipeline(src, out).start(name="y")
        time.sleep(1.0)
        second = p.stop()
        assert windows(out) == [("d", 0, 1)]
        assert second.late.column("ts").to_pylist() == [500]


def test_bounded_reruns_by_name_add_up_to_one_run_over_everything(tmp_path):
    """A partition that ends first in a bounded run keeps holding the watermark at its data
    until the whole input ends, so it closes no window before the end-of-input checkpoint that a
    rerun with more input still needs open."""
    with rb.Log(tmp_path / "log") as log:
        src, out = log.topic("t", partitions=2), log.topic("o")
        whole = log.topic("whole", partitions=2)

        def pipeline(topic):
            return rb.Pipeline.read(topic, timestamp="ts", schema=SCHEMA).window(rb.tumbling("1s"), by="k").agg(n=rb.count())

        def windows(t):
            return sorted((json.loads(v)["k"], json.loads(v)["window_start"], json.loads(v)["n"]) for v in t.read().column("value").to_pylist())

        send(src, [("a", 5000), ("d", 0)])
        pipeline(src).write(out, key="k").run(progress=False, name="x")
        send(src, [("d", 500), ("a", 5500)])
        second = pipeline(src).write(out, key="k").run(progress=False, name="x")
        send(whole, [("a", 5000), ("d", 0), ("d", 500), ("a", 5500)])
        once = pipeline(whole).run(progress=False)
        assert windows(out) == sorted((r["k"], r["window_start"], r["n"]) for r in once.output.to_pylist())
        assert windows(out) == [("a", 5000, 2), ("d", 0, 2)]
        assert second.late.num_rows == 0
