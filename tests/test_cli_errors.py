"""The `riverbed` command as a careless or hostile user runs it (issue 14, finding 9): every
failure is one line ``riverbed: <Error>: <message>`` with exit status 1 (never a traceback), a
usage error prints the usage and exits 2, only commands that write a new log create its
directory, and argument values are checked as the Python API checks them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import riverbed as rb
from riverbed.log import MAX_PARTITIONS


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # This interpreter's riverbed (the console script on PATH may be another install).
    return subprocess.run([sys.executable, "-m", "riverbed.cli", *args], input=stdin, capture_output=True, text=True, timeout=120)


def one_line_error(p: subprocess.CompletedProcess[str], error: str, *words: str) -> str:
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"riverbed: {error}: "), lines[0]
    assert "Traceback" not in p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ("topics", "list"),
        ("topics", "describe", "t"),
        ("topics", "delete", "t"),
        ("consume", "t"),
        ("produce", "t"),
    ],
)
def test_a_command_that_does_not_write_a_new_log_never_creates_its_directory(tmp_path, args):
    d = tmp_path / "nonexistent" / "dir"
    p = run(*args, "--log", str(d), stdin="")
    one_line_error(p, "LogError", "no log at", str(d))
    assert not d.exists() and not d.parent.exists()


def test_topics_create_creates_the_log(tmp_path):
    d = tmp_path / "new"
    assert run("topics", "create", "t", "--log", str(d)).returncode == 0
    assert run("topics", "list", "--log", str(d)).stdout.split() == ["t"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("consume", "t", "--max", "0"), "--max: must be >= 1, got 0"),
        (("consume", "t", "--max", "-3"), "--max: must be >= 1, got -3"),
        (("consume", "t", "--max", "lots"), "--max: expected an integer"),
        (("consume", "t", "--timeout", "nan"), "--timeout: must be a number of seconds, got nan"),
        (("consume", "t", "--timeout", "-1"), "--timeout: must not be negative"),
        (("topics", "create", "t", "--partitions", "0"), "--partitions: must be between 1 and"),
        (("topics", "create", "t", "--partitions", "100000"), f"--partitions: must be between 1 and {MAX_PARTITIONS}"),
        (("demo", "--records", "0"), "--records: must be >= 1"),
        (("topics", "frobnicate"), "invalid choice"),
        (("consume",), "the following arguments are required: topic"),
        (("topics", "list", "--no-such-option"), "unrecognized arguments: --no-such-option"),
        ((), "the following arguments are required: command"),
    ],
)
def test_a_usage_error_prints_the_usage_and_exits_2(tmp_path, args, says):
    d = tmp_path / "log"
    p = run(*args, "--log", str(d))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "usage: riverbed" in p.stderr and says in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not d.exists()


def test_plain_python_errors_are_one_line_too(tmp_path):
    d = str(tmp_path / "log")
    assert run("topics", "create", "t", "--log", d).returncode == 0
    # a bad setting value (ValueError in the API)
    one_line_error(run("topics", "create", "u", "--config", "cleanup=shred", "--log", d), "ValueError", "cleanup")
    # an unknown setting (TypeError in the API)
    one_line_error(run("topics", "create", "u", "--config", "colour=red", "--log", d), "TypeError", "colour")
    # a missing input file
    one_line_error(run("produce", "t", "--file", str(tmp_path / "nope.jsonl"), "--log", d), "FileNotFoundError", "nope.jsonl")
    # bad JSON on stdin: what was good before it is kept and said
    line = one_line_error(run("produce", "t", "--log", d, stdin='{"a": 1}\n{oops\n'), "ValueError", "line 2", "1 record(s) produced before it")
    assert "\n" not in line
    out = run("consume", "t", "--timeout", "0.2", "--log", d).stdout.splitlines()
    assert [json.loads(x)["value"] for x in out] == [{"a": 1}]
    # a partition count that contradicts the topic's
    one_line_error(run("topics", "create", "t", "--partitions", "3", "--log", d), "TopicConfigError", "partitions")
    # nothing was created by the failures
    assert run("topics", "list", "--log", d).stdout.split() == ["t"]


def test_a_topic_with_too_many_partitions_fails_up_front_leaving_nothing(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        with pytest.raises(ValueError, match=f"partitions must be between 1 and {MAX_PARTITIONS}"):
            log.topic("huge", partitions=100_000)
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(512, hard), hard))
        try:
            with pytest.raises(ValueError, match=r"needs 1000 open files .*ulimit -n is 512"):
                log.topic("big", partitions=1000)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert log.topics() == []
        # an existing topic is opened whatever the limit (it is not created again)
        log.topic("ok", partitions=8)
        assert log.topic("ok", partitions=8).partitions == 8
    assert not (Path(tmp_path) / "huge").exists() and not (Path(tmp_path) / "big").exists()


@pytest.mark.parametrize("interval", [0, "0s", "0ms"])
def test_cleanup_interval_zero_is_refused_not_a_busy_loop(tmp_path, interval):
    with pytest.raises(ValueError, match="cleanup_interval must be positive"):
        rb.Log(tmp_path, cleanup_interval=interval)
    with pytest.raises(ValueError):
        rb.Log(tmp_path, cleanup_interval=-5)
    rb.Log(tmp_path, cleanup_interval=None).close()
