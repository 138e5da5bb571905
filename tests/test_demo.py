"""`riverbed demo` under load: with a CPU hog beside it on every core, the demo's pipelines (which
follow the trades topic while it is produced) still drop no trade as late and write every bar
and feature. Before idleness needed a caught-up reader, a busy machine made partitions with
unread records look idle and the watermark jump past open windows (17-30% of trades lost)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys

import pytest

import riverbed as rb


def _hog() -> None:  # pragma: no cover - runs in a child process
    x = 0
    while True:
        x = (x * 31 + 7) % 1_000_003


@pytest.fixture
def cpu_hog():
    """One busy process per core, for the duration of the test."""
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_hog, daemon=True) for _ in range(os.cpu_count() or 2)]
    for p in procs:
        p.start()
    yield
    for p in procs:
        p.kill()
        p.join()


def demo(log_dir: str, records: int) -> str:
    exe = shutil.which("riverbed")
    cmd = [exe] if exe else [sys.executable, "-m", "riverbed.cli"]
    p = subprocess.run(
        [*cmd, "demo", "--records", str(records), "--log", log_dir], capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_the_demo_loses_no_trade_with_a_cpu_hog_beside_it(tmp_path, cpu_hog):
    records = 1_000_000
    out = demo(str(tmp_path / "log"), records)
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\(0 late\)", summary), summary
    assert "all written" in summary, summary
    with rb.Log(str(tmp_path / "log")) as log:
        bars = [json.loads(v) for v in log["demo.bars_1m"].read().column("value").to_pylist()]
        features = log["demo.features"].read()
    # Every trade is in exactly one bar, and has exactly one feature record.
    assert sum(b["trades"] for b in bars) == records
    assert features.num_rows == records
    assert len({json.loads(v)["ts"] for v in features.column("value").to_pylist()}) == records
