"""The `riverbed` command, run as a user runs it: a subprocess of the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import riverbed as rb

RIVERBED = shutil.which("riverbed") or ""


def run(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [RIVERBED, *args] if RIVERBED else [sys.executable, "-m", "riverbed.cli", *args]
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stderr}")
    return p


def test_topics_create_list_describe_delete(tmp_path):
    d = str(tmp_path / "log")
    run("topics", "create", "trades", "--partitions", "3", "--config", "retention_ms=60000", "--log", d)
    run("--log", d, "topics", "create", "other")
    assert run("topics", "list", "--log", d).stdout.split() == ["other", "trades"]
    desc = json.loads(run("topics", "describe", "trades", "--log", d).stdout)
    assert desc["name"] == "trades"
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]
    assert desc["config"]["retention_ms"] == 60000
    run("topics", "delete", "other", "--log", d)
    assert run("topics", "list", "--log", d).stdout.split() == ["trades"]


def test_produce_then_consume_roundtrip_with_keys(tmp_path):
    d = str(tmp_path / "log")
    run("topics", "create", "t", "--partitions", "4", "--log", d)
    rows = [{"user": f"u{i % 7}", "n": i, "ts": 1_700_000_000_000 + i} for i in range(50)]
    lines = "\n".join(json.dumps(r) for r in rows) + "\n"
    p = run("produce", "t", "--key-field", "user", "--timestamp-field", "ts", "--log", d, stdin=lines)
    assert "produced 50 record(s)" in p.stderr
    out = run("consume", "t", "--from-beginning", "--timeout", "0.3", "--log", d).stdout.splitlines()
    recs = [json.loads(line) for line in out]
    assert sorted(r["value"]["n"] for r in recs) == list(range(50))
    for r in recs:
        assert r["key"] == r["value"]["user"]
        assert r["timestamp"] == r["value"]["ts"]
        # Kafka's default partitioner decides the partition of each key.
        assert r["partition"] == (rb.murmur2(r["key"].encode()) & 0x7FFFFFFF) % 4
    # Within a partition, offsets follow the produce order.
    for part in range(4):
        ns = [r["value"]["n"] for r in recs if r["partition"] == part]
        assert ns == sorted(ns)


def test_consume_max_and_group_resume(tmp_path, tmp_path_factory):
    d = str(tmp_path / "log")
    run("topics", "create", "t", "--log", d)
    src = tmp_path_factory.mktemp("in") / "rows.jsonl"
    src.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    run("produce", "t", "--file", str(src), "--log", d)
    first = run("consume", "t", "--group", "g", "--from-beginning", "--max", "4", "--timeout", "0.3", "--log", d)
    assert [json.loads(x)["value"]["i"] for x in first.stdout.splitlines()] == [0, 1, 2, 3]
    rest = run("consume", "t", "--group", "g", "--timeout", "0.3", "--log", d)
    assert [json.loads(x)["value"]["i"] for x in rest.stdout.splitlines()] == [4, 5, 6, 7, 8, 9]


def test_errors_are_clear_and_nonzero(tmp_path):
    d = str(tmp_path / "log")
    run("topics", "create", "t", "--log", d)
    p = run("consume", "missing", "--log", d, check=False)
    assert p.returncode == 1
    assert "TopicNotFound" in p.stderr and "missing" in p.stderr
    p = run("produce", "t", "--log", d, stdin='{"ok": 1}\nnot json\n', check=False)
    assert p.returncode != 0
    assert "line 2" in p.stderr and "1 record(s) produced before it" in p.stderr
    # The good line before the bad one was kept.
    out = run("consume", "t", "--from-beginning", "--timeout", "0.3", "--log", d).stdout.splitlines()
    assert [json.loads(x)["value"] for x in out] == [{"ok": 1}]


def test_demo_runs_and_reports_every_record(tmp_path):
    p = run("demo", "--records", "200000", "--log", str(tmp_path / "log"))
    assert "200,000 synthetic trades" in p.stdout
    rows = [line.split() for line in p.stdout.splitlines()]
    parts = [r for r in rows if len(r) == 7 and r[0].isdigit()]
    # One row per partition: partition, member, records, ...; the records add up.
    assert [r[0] for r in parts] == ["0", "1", "2", "3"]
    assert sum(int(r[2].replace(",", "")) for r in parts) == 200_000
    # The bars of the last minute: one per symbol, and their trade counts are plausible.
    bars = [r for r in rows if len(r) == 7 and not r[0].isdigit() and r[1].isdigit()]
    from riverbed.demo import SYMBOLS

    assert sorted(r[0] for r in bars) == sorted(SYMBOLS)
    assert "events/s" in p.stdout and "0 late" in p.stdout
    # The bars topic holds every trade exactly once across its windows.
    with rb.Log(str(tmp_path / "log")) as log:
        bars_topic = log["demo.bars_1m"].read()
    counts = [json.loads(v)["trades"] for v in bars_topic.column("value").to_pylist()]
    assert sum(counts) == 200_000


def test_consume_timeout_is_checked_like_every_timeout(tmp_path):
    d = str(tmp_path / "log")
    run("topics", "create", "t", "--log", d)
    for bad, why in [("nan", "must be a number of seconds"), ("-1", "must not be negative"), ("1e300", "1e300 seconds is too long")]:
        p = run("consume", "t", "--timeout", bad, "--log", d, check=False)
        assert p.returncode == 2 and f"argument --timeout: {why}" in p.stderr, p.stderr
        assert "Traceback" not in p.stderr
    run("produce", "t", "--log", d, stdin='{"n": 1}\n')
    # inf: wait as long as it takes; --max ends it
    out = run("consume", "t", "--timeout", "inf", "--max", "1", "--log", d).stdout.splitlines()
    assert [json.loads(line)["value"] for line in out] == [{"n": 1}]
