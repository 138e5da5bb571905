"""Quiet streams in follow mode: a partition is idle only when its reader is at its end and
nothing arrived for ``idle_timeout``; when every input is idle the watermark advances with the
wall clock from (max event time - lateness), so a pause of the producer loses nothing, and the
last windows close once the quiet has covered what is missing to their end.

The producer stamps records with the wall clock (a live source), one produce call each."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

import riverbed as rb

IDLE_MS = 300
LATENESS_MS = 100
POLL_MS = 50  # the run loop's wait for new data
SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64())])


def now_ms() -> int:
    return int(time.time() * 1000)


def window_op(p: rb.Pipeline) -> dict:
    return next(m for m in p.metrics() if m["operator"].startswith("window"))


def produce_for(topic: rb.Topic, seconds: float, sent: list[int], every: float = 0.01) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = now_ms()
        topic.produce({"k": f"k{len(sent) % 3}", "ts": t}, key=f"k{len(sent) % 3}", timestamp=t)
        sent.append(t)
        time.sleep(every)


def counts_by_window(rows: list[int], size: int = 1000) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in rows:
        out[t // size * size] = out.get(t // size * size, 0) + 1
    return out


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_pause_longer_than_idle_timeout_mid_window_loses_nothing(tmp_path, partitions):
    with rb.Log(tmp_path / "log", fsync="never") as log:
        topic = log.topic("live", partitions=partitions)
        p = (
            rb.Pipeline.read(topic, timestamp="ts", lateness=f"{LATENESS_MS}ms", idle_timeout=f"{IDLE_MS}ms", schema=SCHEMA)
            .window(rb.tumbling("1s"), by="k")
            .agg(n=rb.count())
        )
        p.start()
        sent: list[int] = []
        try:
            produce_for(topic, 0.8, sent)
            time.sleep(3 * IDLE_MS / 1000)  # far longer than idle_timeout: every input goes idle
            produce_for(topic, 0.8, sent)
            time.sleep(1.0 + (IDLE_MS + LATENESS_MS + 500) / 1000)  # every window closes
        finally:
            res = p.stop()
    assert res.late.num_rows == 0
    assert sum(m["late_records"] for m in res.metrics) == 0
    got: dict[int, int] = {}
    for r in res.output.to_pylist():
        got[r["window_start"]] = got.get(r["window_start"], 0) + r["n"]
    assert got == counts_by_window(sent)


def test_the_last_window_closes_when_the_quiet_covers_what_is_missing_to_its_end(tmp_path):
    with rb.Log(tmp_path / "log", fsync="never") as log:
        topic = log.topic("live", partitions=2)
        p = (
            rb.Pipeline.read(topic, timestamp="ts", lateness=f"{LATENESS_MS}ms", idle_timeout=f"{IDLE_MS}ms", schema=SCHEMA)
            .window(rb.tumbling("1s"), by="k")
            .agg(n=rb.count())
        )
        p.start()
        sent: list[int] = []
        try:
            produce_for(topic, 1.5, sent)
            last = sent[-1]
            stopped = time.monotonic()
            end = last // 1000 * 1000 + 1000
            want_windows = len({(f"k{i % 3}", t // 1000) for i, t in enumerate(sent)})
            # Wait until every window (the last one included) was emitted.
            closed_after = None
            while time.monotonic() - stopped < 10:
                if window_op(p)["records_out"] >= want_windows:
                    closed_after = (time.monotonic() - stopped) * 1000
                    break
                time.sleep(0.005)
        finally:
            res = p.stop()
    assert closed_after is not None, "the last window never closed on the quiet stream"
    # What is missing to the window's end, in wall-clock ms after the last record (the producer
    # stamps records with the clock): it closes once the quiet covers that + lateness + idle.
    bound = (end - last) + LATENESS_MS + IDLE_MS
    assert closed_after <= bound + POLL_MS + 250, (closed_after, bound)  # 250: this test's own polling and scheduling
    # ... and not before: the watermark does not jump past windows a live stream still fills.
    assert closed_after >= bound - 30, (closed_after, bound)
    assert res.late.num_rows == 0
    assert sum(r["n"] for r in res.output.to_pylist()) == len(sent)
