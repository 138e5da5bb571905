"""Retention (by time and by size) and compaction, checked against brute-force models built from
the segment files (parsed with kafka-python) as they were before ``cleanup()``."""

from __future__ import annotations

import random
import time

import pytest

import riverbed as rb
from conftest import parse_segment, read_all, reopen, segment_files

HOUR = 3_600_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def segments_model(topic_dir, partition=0) -> list[dict]:
    """[{base, size, max_ts, offsets}] per segment file, oldest first (independent of riverbed)."""
    out = []
    for f in segment_files(topic_dir, partition):
        recs = [r for b in parse_segment(f) for r in b["records"]]
        out.append(
            {
                "base": int(f.stem),
                "size": f.stat().st_size,
                "max_ts": max((r["timestamp"] for r in recs), default=None),
                "offsets": [r["offset"] for r in recs],
            }
        )
    return out


def rows_of(topic, p=0) -> list[tuple]:
    """(offset, timestamp, key, value) of partition ``p``."""
    return [r[:4] for r in read_all(topic)[p]]


# --------------------------------------------------------------------------------------------
# Retention
# --------------------------------------------------------------------------------------------


def test_retention_ms_deletes_whole_old_segments(log, log_dir):
    t = log.topic("t", partitions=2, segment_bytes=1024, retention_ms="1h")
    now = now_ms()
    rng = random.Random(1)
    # partition 0: 150 old records then 40 recent; partition 1: only recent records
    for i in range(150):
        t.produce(rng.randbytes(rng.randrange(20, 90)), key=b"k%d" % i, timestamp=now - 10 * HOUR + i, partition=0)
    for i in range(40):
        t.produce(b"new-%d" % i, timestamp=now + i, partition=0)
        t.produce(b"new-%d" % i, timestamp=now + i, partition=1)
    before = {p: rows_of(t, p) for p in (0, 1)}
    segs = segments_model(log_dir / "t", 0)
    segs1 = segments_model(log_dir / "t", 1)
    assert len(segs) > 5

    # model: delete oldest segments (never the active one) while their newest record is > 1h old
    horizon = now - HOUR
    keep_from = 0
    while keep_from < len(segs) - 1 and segs[keep_from]["max_ts"] < horizon:
        keep_from += 1
    assert 0 < keep_from < len(segs) - 1
    new_earliest = segs[keep_from]["base"]

    stats = log.cleanup()
    assert stats["segments_deleted"] == keep_from
    assert t.offsets() == {0: (new_earliest, 190), 1: (0, 40)}
    assert rows_of(t, 0) == [r for r in before[0] if r[0] >= new_earliest]
    assert rows_of(t, 1) == before[1]
    assert [s["base"] for s in segments_model(log_dir / "t", 0)] == [s["base"] for s in segs[keep_from:]]
    assert segments_model(log_dir / "t", 1) == segs1
    # no leftover files of deleted segments
    names = {f.name for f in (log_dir / "t" / "0").iterdir()}
    for s in segs[:keep_from]:
        assert not any(n.startswith(f"{s['base']:020d}.") for n in names)
    # new writes continue at the same offsets
    assert t.produce(b"after", partition=0) == (0, 190)

    # the advanced start offset survives a reopen
    log2 = reopen(log)
    try:
        t2 = log2["t"]
        assert t2.offsets() == {0: (new_earliest, 191), 1: (0, 40)}
        assert rows_of(t2, 0)[:-1] == [r for r in before[0] if r[0] >= new_earliest]
    finally:
        log2.close()


def test_retention_keeps_active_segment_even_if_expired(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, retention_ms=1000)
    old = now_ms() - 10 * HOUR
    for i in range(60):
        t.produce(b"x" * 80, timestamp=old + i)
    segs = segments_model(log_dir / "t")
    assert len(segs) > 2
    log.cleanup()
    active = segs[-1]
    assert t.offsets() == {0: (active["base"], 60)}
    assert [r[0] for r in rows_of(t)] == active["offsets"]
    assert segments_model(log_dir / "t") == [active]
    # a second cleanup has nothing left to do
    assert log.cleanup()["segments_deleted"] == 0


def test_retention_bytes(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, retention_bytes=3000)
    rng = random.Random(2)
    for i in range(120):
        t.produce(rng.randbytes(rng.randrange(10, 150)), timestamp=now_ms())
    before = rows_of(t)
    segs = segments_model(log_dir / "t")
    total = sum(s["size"] for s in segs)
    assert total > 3000
    # model (Kafka's): drop the oldest while the rest is still >= retention_bytes
    k = 0
    while k < len(segs) - 1 and total - segs[k]["size"] >= 3000:
        total -= segs[k]["size"]
        k += 1
    stats = log.cleanup()
    assert stats["segments_deleted"] == k
    remaining = segments_model(log_dir / "t")
    assert remaining == segs[k:]
    assert 3000 <= sum(s["size"] for s in remaining) < 3000 + segs[k]["size"]
    assert t.describe()["partitions"][0]["size_bytes"] == sum(s["size"] for s in remaining)
    assert t.offsets()[0] == (segs[k]["base"], 120)
    assert rows_of(t) == [r for r in before if r[0] >= segs[k]["base"]]


def test_no_retention_set_deletes_nothing(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024)
    for i in range(50):
        t.produce(b"x" * 100, timestamp=1)
    before = rows_of(t)
    assert log.cleanup() == {"segments_deleted": 0, "segments_compacted": 0, "records_removed": 0}
    assert rows_of(t) == before


def test_background_cleaner_applies_retention(log_dir):
    with rb.Log(log_dir, fsync="never", cleanup_interval="100ms") as lg:
        t = lg.topic("t", partitions=1, segment_bytes=1024, retention_ms=1000)
        old = now_ms() - 10 * HOUR
        for i in range(40):
            t.produce(b"x" * 100, timestamp=old)
        last_base = segments_model(log_dir / "t")[-1]["base"]
        deadline = time.monotonic() + 2.5
        while t.offsets()[0][0] != last_base and time.monotonic() < deadline:
            time.sleep(0.02)
        assert t.offsets()[0] == (last_base, 40)


def test_segment_ms_rolls_by_age(log, log_dir):
    t = log.topic("t", partitions=1, segment_ms="300ms")
    t.produce(b"a")
    t.produce(b"b")
    assert len(segment_files(log_dir / "t", 0)) == 1
    time.sleep(0.4)
    t.produce(b"c")
    files = segment_files(log_dir / "t", 0)
    assert [f.stem for f in files] == ["0" * 20, "0" * 19 + "2"]
    assert [r[3] for r in rows_of(t)] == [b"a", b"b", b"c"]


# --------------------------------------------------------------------------------------------
# Compaction
# --------------------------------------------------------------------------------------------


def compaction_model(produced, active_base, horizon):
    """Kafka's cleaner over the sealed part [.., active_base): keep the latest record per key,
    drop tombstones older than ``horizon``; the active segment is untouched."""
    latest = {}
    for o, ts, k, v in produced:
        if o < active_base:
            latest[k] = o
    return [
        (o, ts, k, v)
        for o, ts, k, v in produced
        if o >= active_base or (latest[k] == o and not (v is None and ts < horizon))
    ]


def _produce_compactable(t, rng, n, ts, produced, tomb_p=0.15, nkeys=25):
    for i in range(n):
        k = f"key-{rng.randrange(nkeys)}".encode()
        v = None if rng.random() < tomb_p else f"v{len(produced)}-".encode() + rng.randbytes(rng.randrange(0, 40))
        p, o = t.produce(v, key=k, timestamp=ts + i)
        assert (p, o) == (0, len(produced))
        produced.append((o, ts + i, k, v))


def test_compaction_keeps_latest_per_key_and_drops_old_tombstones(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, cleanup="compact", delete_retention_ms="1s")
    rng = random.Random(3)
    produced: list[tuple] = []
    _produce_compactable(t, rng, 400, now_ms() - HOUR, produced)
    segs = segments_model(log_dir / "t")
    assert len(segs) > 5
    active_base = segs[-1]["base"]
    expected = compaction_model(produced, active_base, now_ms() - 1000)
    assert len(expected) < len(produced) / 3
    assert any(v is None for o, ts, k, v in produced if o < active_base)  # tombstones were there

    stats = log.cleanup()
    assert stats["records_removed"] == len(produced) - len(expected)
    assert t.offsets() == {0: (0, 400)}  # offsets never change
    assert rows_of(t) == expected
    # expired tombstones are gone, as are all older values of their keys
    sealed = [r for r in rows_of(t) if r[0] < active_base]
    assert all(v is not None for _, _, _, v in sealed)
    assert len({k for _, _, k, _ in sealed}) == len(sealed)
    # the rewritten segments are valid Kafka data with their original offsets
    assert [r["offset"] for s in segment_files(log_dir / "t", 0) for b in parse_segment(s) for r in b["records"]] == [
        r[0] for r in expected
    ]
    for s in segment_files(log_dir / "t", 0):
        assert all(b["crc_ok"] for b in parse_segment(s))
    # a second pass changes nothing
    assert log.cleanup()["records_removed"] == 0
    assert rows_of(t) == expected

    log2 = reopen(log)
    try:
        assert log2.open_report() == []
        t2 = log2["t"]
        assert rows_of(t2) == expected
        assert t2.offsets() == {0: (0, 400)}
        assert t2.produce(b"new", key=b"key-0") == (0, 400)
    finally:
        log2.close()


def test_compaction_keeps_recent_tombstones(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, cleanup="compact", delete_retention_ms="1d")
    rng = random.Random(4)
    produced: list[tuple] = []
    _produce_compactable(t, rng, 300, now_ms() - HOUR, produced, tomb_p=0.3)
    active_base = segments_model(log_dir / "t")[-1]["base"]
    expected = compaction_model(produced, active_base, now_ms() - 86_400_000)
    assert any(v is None and o < active_base for o, _, _, v in expected)  # a kept tombstone
    log.cleanup()
    assert rows_of(t) == expected


def test_compaction_repeated_rounds_against_model(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, cleanup="compact", delete_retention_ms=1000)
    rng = random.Random(5)
    produced: list[tuple] = []
    ts0 = now_ms() - HOUR
    state = list(produced)
    for rnd in range(4):
        _produce_compactable(t, rng, 150, ts0 + rnd * 1000, produced, nkeys=15)
        active_base = segments_model(log_dir / "t")[-1]["base"]
        new = [r for r in produced if r[0] >= (state[-1][0] + 1 if state else 0)]
        state = compaction_model(state + new, active_base, now_ms() - 1000)
        log.cleanup()
        assert rows_of(t) == state, f"round {rnd}"


def test_compacted_reads_skip_holes(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, cleanup="compact", delete_retention_ms=0)
    rng = random.Random(6)
    produced: list[tuple] = []
    _produce_compactable(t, rng, 300, now_ms() - HOUR, produced, nkeys=10)
    log.cleanup()
    kept = rows_of(t)
    kept_offsets = [r[0] for r in kept]
    removed = sorted(set(range(300)) - set(kept_offsets))
    assert removed
    c = t.consumer()
    for o in removed[:: max(1, len(removed) // 15)]:
        c.seek(0, o)
        b = c.poll(max_records=1, timeout=0)
        nxt = next(x for x in kept_offsets if x > o)
        assert b.column("offset").to_pylist() == [nxt]
    # read with bounds that start inside a hole
    tbl = t.read(start=removed[0], end=kept_offsets[-1])
    assert tbl.column("offset").to_pylist() == [o for o in kept_offsets if removed[0] <= o < kept_offsets[-1]]
    # offsets_for_times over what is left, vs brute force
    for ts in [produced[0][1] - 1, produced[50][1], produced[150][1], produced[299][1]]:
        want = next((o for o, rts, _, _ in kept if rts >= ts), None)
        assert t.offsets_for_times(ts) == {0: want}


def test_compacted_topic_requires_keys(log):
    t = log.topic("t", partitions=1, cleanup="compact")
    with pytest.raises(ValueError, match="key"):
        t.produce(b"v")
    import pyarrow as pa

    with pytest.raises(ValueError, match="key"):
        t.produce_batch(pa.table({"v": ["a"]}), value="v")
    assert t.offsets() == {0: (0, 0)}


def test_compaction_preserves_headers_keys_timestamps(log, log_dir):
    t = log.topic("t", partitions=1, segment_bytes=1024, cleanup="compact", delete_retention_ms=0)
    ts0 = now_ms() - HOUR
    full = []
    for i in range(120):
        k = b"k%d" % (i % 7)
        h = [("i", b"%d" % i), ("none", None)]
        t.produce(b"v%d" % i, key=k, timestamp=ts0 + 3 * i, headers=h)
        full.append((i, ts0 + 3 * i, k, b"v%d" % i, h))
    active_base = segments_model(log_dir / "t")[-1]["base"]
    latest = {r[2]: r[0] for r in full if r[0] < active_base}
    expected = [r for r in full if r[0] >= active_base or latest[r[2]] == r[0]]
    log.cleanup()
    assert read_all(t)[0] == expected
