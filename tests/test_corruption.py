"""The corruption matrix: damage a closed log's files the ways disks, people and crashes do, then
check that `riverbed check` names the damage (exit 1), the open report says where it is, every
record outside the damaged range is read back unchanged by ``read()``, by consumers and by
pipelines, and no offset is ever given out twice.

The reference is the list of records written (brute force): a record is either read back with
exactly its value, or its offset lies in a gap the log reports."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest

import riverbed as rb
from riverbed.cli import main as cli_main
from riverbed.exceptions import CorruptLog, DataGap, InternalTopicError

N = 400  # records in "t", one batch each
OTHER = 50  # records in "other", which no damage touches
SEGMENT_BYTES = 4096


def _value(i: int) -> bytes:
    return json.dumps({"i": i, "pad": "x" * (i % 13)}).encode()


@pytest.fixture
def base_log(tmp_path_factory) -> Path:
    """A closed log: topic "t" (1 partition, many segments) and "other"."""
    path = tmp_path_factory.mktemp("matrix") / "log"
    with rb.Log(path, cleanup_interval=None) as lg:
        t = lg.topic("t", partitions=1, segment_bytes=SEGMENT_BYTES)
        for i in range(N):
            assert t.produce(_value(i), key=b"k%d" % i, timestamp=1_000 + i) == (0, i)
        o = lg.topic("other", partitions=1)
        for i in range(OTHER):
            o.produce(_value(i), timestamp=5)
    return path


def segments(path: Path, topic: str = "t") -> list[Path]:
    return sorted((path / topic / "0").glob("*.log"))


def run_check(path: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    code = cli_main(["check", "--log", str(path), *extra], out=out)
    return code, out.getvalue()


def read_everything(t: rb.Topic) -> tuple[dict[int, bytes], list[tuple[int, int]]]:
    """Every readable record of partition 0 as {offset: value}, and the gaps, by three readers
    that must agree: read(on_gap="skip"), a consumer seeking past gaps, and a pipeline with
    on_error="skip"."""
    gaps = [(g["from"], g["to"]) for g in t.gaps()]
    with pytest.warns(RuntimeWarning) if gaps else _nullcontext():
        table = t.read(on_gap="skip")
    by_read = dict(zip(table.column("offset").to_pylist(), table.column("value").to_pylist(), strict=True))
    assert len(by_read) == table.num_rows, "an offset was read twice"

    by_consumer: dict[int, bytes] = {}
    with t.consumer() as c:
        while True:
            try:
                batch = c.poll(timeout=0.05)
            except DataGap as e:
                g = next(g for g in t.gaps() if f"offsets {g['from']}..{g['to']}" in str(e))
                c.seek(g["partition"], g["to"])
                continue
            if batch.num_rows == 0:
                break
            for o, v in zip(batch.column("offset").to_pylist(), batch.column("value").to_pylist(), strict=True):
                assert o not in by_consumer, "a consumer got an offset twice"
                by_consumer[o] = v
    assert by_consumer == by_read

    p = rb.Pipeline.read(t, format="raw", on_error="skip")
    out = p.collect(progress=False)
    by_pipeline = dict(zip(out.column("offset").to_pylist(), out.column("value").to_pylist(), strict=True))
    assert by_pipeline == by_read
    skipped = sum(m.get("errors", 0) for m in p.metrics())
    assert skipped == sum(b - a for a, b in gaps), "the pipeline counts what it skipped"
    if gaps:
        with pytest.raises(DataGap) as err:
            rb.Pipeline.read(t, format="raw", on_error="raise").collect(progress=False)
        a, b = gaps[0]
        assert f"t/0: offsets {a}..{b}" in str(err.value) and ".log at byte" in str(err.value)
    return by_read, gaps


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def check_survivors(path: Path, max_lost: int, expect_gap: bool) -> list[tuple[int, int]]:
    """Every record outside the gaps reads back unchanged, at most ``max_lost`` are lost, the next
    produce gets a fresh offset, and "other" is untouched."""
    with rb.Log(path, cleanup_interval=None) as lg:
        t = lg["t"]
        got, gaps = read_everything(t)
        assert bool(gaps) == expect_gap, gaps
        in_gap = {o for a, b in gaps for o in range(a, b)}
        for o, v in got.items():
            assert v == _value(o), o
            assert o not in in_gap
        lost = [o for o in range(N) if o not in got]
        assert all(o in in_gap for o in lost), f"offsets {lost} lost without a gap naming them"
        assert len(lost) <= max_lost, lost
        end = t.offsets()[0][1]
        assert end >= max([N, *(b for _, b in gaps)]), "offsets would be reused"
        assert t.produce(b'{"i": -1}', timestamp=9) == (0, end)
        o = lg["other"].read()
        assert o.column("value").to_pylist() == [_value(i) for i in range(OTHER)]
    return gaps


def flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x5A
    path.write_bytes(bytes(data))


# -- segment data ------------------------------------------------------------------------------


def test_garbage_appended_to_active_segment(base_log):
    seg = segments(base_log)[-1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(os.urandom(300))
    code, out = run_check(base_log)
    assert code == 1 and "torn_tail" in out and str(seg) in out and f"at byte {size}" in out
    check_survivors(base_log, max_lost=0, expect_gap=False)


def test_garbage_appended_to_sealed_segment(base_log):
    seg = segments(base_log)[1]
    size = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(b"\x00garbage" * 20)
    code, out = run_check(base_log)
    assert code == 1 and str(seg) in out and f"at byte {size}" in out, out
    check_survivors(base_log, max_lost=0, expect_gap=False)
    assert seg.stat().st_size == size + 160, "a sealed segment is never truncated"


def test_bytes_overwritten_in_active_segment(base_log):
    seg = segments(base_log)[-1]
    size = seg.stat().st_size
    flip(seg, size // 2)
    code, out = run_check(base_log)
    assert code == 1 and "quarantined" in out and str(seg) in out, out
    gaps = check_survivors(base_log, max_lost=1, expect_gap=True)
    assert len(gaps) == 1 and gaps[0][1] - gaps[0][0] == 1
    assert seg.stat().st_size > size, "nothing truncated, the produce after it appended"


def test_bytes_overwritten_in_sealed_segment(base_log):
    seg = segments(base_log)[1]
    flip(seg, 2000)
    code, out = run_check(base_log)
    assert code == 1 and "quarantined" in out and str(seg) in out, out
    gaps = check_survivors(base_log, max_lost=1, expect_gap=True)
    assert len(gaps) == 1
    # found again after a restart (recorded in quarantine.json)
    assert (base_log / "t" / "0" / "quarantine.json").is_file()


def test_sealed_damage_found_lazily_by_a_read(base_log):
    """A sealed segment with intact index files is trusted at open; a read's CRC check finds the
    damage, reports it with its real byte position, and every reader then agrees on the gap."""
    with rb.Log(base_log, cleanup_interval=None) as lg:
        big = lg.topic("big", segment_bytes=100_000)
        import pyarrow as pa

        # many produce calls: one batch each, so the sealed segment holds many index entries
        for k in range(40):
            big.produce_batch(pa.table({"i": list(range(k * 100, k * 100 + 100)), "pad": ["y" * 60] * 100}))
    seg = segments(base_log, "big")[0]
    assert len(segments(base_log, "big")) >= 2
    size = seg.stat().st_size
    pos = size // 3
    flip(seg, pos)
    with rb.Log(base_log, cleanup_interval=None) as lg:
        t = lg["big"]
        with pytest.raises(DataGap) as err:
            t.read()
        msg = str(err.value)
        assert str(seg) in msg and "at byte 0" not in msg, msg
        (g,) = t.gaps()
        assert g["to"] - g["from"] == 100, "one produce call's batch"
        assert g["position"] <= pos < g["position"] + g["length"]
        assert f"at byte {g['position']}" in msg
        (d,) = [d for d in lg.open_report() if d["topic"] == "big"]
        assert (d["kind"], d["position"]) == ("quarantined", g["position"])
        with pytest.warns(RuntimeWarning):
            rows = t.read(on_gap="skip")
        assert rows.num_rows == 3900


@pytest.mark.parametrize("how", ["truncated", "garbage", "deleted"])
def test_index_files(base_log, how):
    seg = segments(base_log)[2]
    index = seg.with_suffix(".index")
    if how == "truncated":
        data = index.read_bytes()
        index.write_bytes(data[: len(data) // 2 - 3])
    elif how == "garbage":
        index.write_bytes(os.urandom(64))
    else:
        index.unlink()
    code, out = run_check(base_log)
    assert code == 1 and "index_rebuilt" in out and str(seg) in out, out
    check_survivors(base_log, max_lost=0, expect_gap=False)
    assert index.is_file()
    code, out = run_check(base_log)
    assert code == 0, out


def test_middle_segment_deleted(base_log):
    segs = segments(base_log)
    victim = segs[len(segs) // 2]
    first = int(victim.stem)
    last = int(segs[len(segs) // 2 + 1].stem)
    for ext in (".log", ".index", ".timeindex"):
        victim.with_suffix(ext).unlink()
    code, out = run_check(base_log)
    assert code == 1 and "missing_segment" in out and f"offsets {first}..{last}" in out, out
    gaps = check_survivors(base_log, max_lost=last - first, expect_gap=True)
    assert gaps == [(first, last)]


def test_stray_segment(base_log):
    """A copy of a segment under another plausible name would make offsets exist twice: it is
    reported and ignored, never deleted."""
    segs = segments(base_log)
    stray = segs[0].with_name(f"{int(segs[1].stem) + 3:020d}.log")
    shutil.copy(segs[1], stray)
    code, out = run_check(base_log)
    assert code == 1 and "stray_segment" in out and str(stray) in out, out
    check_survivors(base_log, max_lost=0, expect_gap=False)
    assert stray.is_file()


def test_stray_segment_past_the_end(base_log):
    segs = segments(base_log)
    stray = segs[0].with_name(f"{N + 1000:020d}.log")
    shutil.copy(segs[0], stray)
    code, out = run_check(base_log)
    assert code == 1 and "stray_segment" in out and str(stray) in out, out
    check_survivors(base_log, max_lost=0, expect_gap=False)
    assert stray.is_file()


# -- metadata ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", json.dumps({"partitions": 2, "retention_ms": None, "retention_bytes": None,
                                     "segment_bytes": SEGMENT_BYTES, "segment_ms": None, "cleanup": "delete",
                                     "delete_retention_ms": 86400000}).encode(),
     json.dumps({"partitions": 0, "retention_ms": None, "retention_bytes": None,
                 "segment_bytes": SEGMENT_BYTES, "segment_ms": None, "cleanup": "delete",
                 "delete_retention_ms": 86400000}).encode()],
    ids=["garbage", "empty", "more-partitions", "zero-partitions"],
)
def test_bad_topic_json(base_log, content):
    cfg = base_log / "t" / "topic.json"
    cfg.write_bytes(content)
    code, out = run_check(base_log)
    assert code == 1 and "bad_metadata" in out and str(cfg) in out, out
    with rb.Log(base_log, cleanup_interval=None) as lg:
        with pytest.raises(CorruptLog, match="topic.json"):
            lg["t"]
        with pytest.raises(CorruptLog, match="topic.json"):
            lg.topic("t")
        # every other topic opens, and nothing was changed on disk
        assert lg["other"].read().num_rows == OTHER
    assert cfg.read_bytes() == content
    assert len(segments(base_log)) > 3
    # the user removes the bad file: the topic is rebuilt from its partition directories
    cfg.unlink()
    check_survivors(base_log, max_lost=0, expect_gap=False)


def test_topic_json_deleted(base_log):
    (base_log / "t" / "topic.json").unlink()
    code, out = run_check(base_log)
    assert code == 1 and "topic_rebuilt" in out, out
    check_survivors(base_log, max_lost=0, expect_gap=False)
    code, out = run_check(base_log)
    assert code == 0, out


def test_stray_directory_is_never_deleted(base_log):
    mine = base_log / "mydata"
    mine.mkdir()
    (mine / "notes.csv").write_text("a,b\n1,2\n")
    code, out = run_check(base_log)
    assert code == 1 and "not_a_topic" in out and str(mine) in out, out
    with rb.Log(base_log, cleanup_interval=None) as lg:
        with pytest.raises(ValueError, match="mydata"):
            lg.topic("mydata")
    assert (mine / "notes.csv").read_text() == "a,b\n1,2\n"
    check_survivors(base_log, max_lost=0, expect_gap=False)


def test_stray_truncation_intent_is_not_honoured(base_log):
    marker = base_log / "t" / "0" / "truncation.json"
    marker.write_text('{"offset": 0}')
    code, out = run_check(base_log)
    assert code == 1 and "truncation_ignored" in out, out
    check_survivors(base_log, max_lost=0, expect_gap=False)


# -- internal topics (finding 6) ---------------------------------------------------------------


def test_internal_topics_are_read_only(tmp_path):
    with rb.Log(tmp_path / "log", cleanup_interval=None) as lg:
        t = lg.topic("t")
        t.produce(b"{}", timestamp=1)
        with t.consumer(group="g") as c:
            assert c.poll(timeout=0.1).num_rows == 1
            c.commit()
        internal = lg.topic("__consumer_offsets")
        before = internal.read().num_rows
        assert before >= 1, "still readable for inspection"
        with pytest.raises(InternalTopicError, match="__consumer_offsets"):
            internal.produce(b"x", key=b"k", timestamp=1)
        with pytest.raises(InternalTopicError, match="internal"):
            lg.delete_topic("__consumer_offsets")
        import pyarrow as pa

        with pytest.raises(InternalTopicError):
            internal.produce_batch(pa.table({"key": ["k"], "v": [1]}), key="key")
        assert internal.read().num_rows == before
    with rb.Log(tmp_path / "log", cleanup_interval=None) as lg:
        with lg["t"].consumer(group="g") as c:
            assert c.committed() == {0: 1}, "the commits survived"


def test_check_cli_on_an_intact_log_and_a_missing_directory(base_log, tmp_path):
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "riverbed.cli", "check", "--log", str(base_log)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    missing = tmp_path / "nope"
    r = subprocess.run([sys.executable, "-m", "riverbed.cli", "check", "--log", str(missing)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "no log directory" in r.stderr
    assert not missing.exists(), "check never creates a log directory"
    # --topic narrows the check; a damaged other topic is not reported then
    (base_log / "other" / "topic.json").write_text("{")
    code, out = run_check(base_log, "--topic", "t")
    assert code == 0, out
    code, out = run_check(base_log)
    assert code == 1 and "other" in out
