"""Segment files are Kafka RecordBatch v2: kafka-python's independent parser must read them back."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kp_murmur2
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatchBuilder

import riverbed as rb
from conftest import parse_partition, parse_segment, segment_files

BASE_TS = 1_700_000_000_000


def kafka_partition(key: bytes, n: int) -> int:
    return (kp_murmur2(key) & 0x7FFFFFFF) % n


def _records(seed: int, n: int) -> list[dict]:
    """Records with keys/None keys, values/None values, headers incl. None header values."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = None if i % 7 == 3 else rng.randbytes(rng.randrange(0, 12))
        value = None if i % 5 == 2 else rng.randbytes(rng.randrange(0, 300))
        headers = []
        for h in range(rng.randrange(0, 4)):
            hv = None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 20))
            headers.append((f"h{h}-{rng.randrange(100)}", hv))
        # explicit, deliberately non-monotonic timestamps (incl. deltas that need multi-byte varints)
        ts = BASE_TS + rng.randrange(-10_000_000, 10_000_000)
        out.append({"key": key, "value": value, "headers": headers, "timestamp": ts})
    return out


def test_produce_roundtrips_through_kafka_parser(log, log_dir):
    topic = log.topic("fmt", partitions=2)
    recs = _records(1, 120)
    expected: dict[int, list[dict]] = {0: [], 1: []}
    for i, r in enumerate(recs):
        # keyed records follow murmur2; keyless ones are pinned alternately to exercise both partitions
        part = None if r["key"] is not None else i % 2
        p, o = topic.produce(r["value"], key=r["key"], timestamp=r["timestamp"], headers=r["headers"], partition=part)
        if r["key"] is not None:
            assert p == kafka_partition(r["key"], 2)
        assert o == len(expected[p])
        expected[p].append({"offset": o, **r})
    assert all(expected[p] for p in (0, 1))
    log.close()

    for p in (0, 1):
        files = segment_files(log_dir / "fmt", p)
        assert [f.name for f in files] == ["00000000000000000000.log"]
        batches = parse_segment(files[0])
        # one produce() call = one batch
        assert len(batches) == len(expected[p])
        for b, exp in zip(batches, expected[p]):
            assert b["crc_ok"] is True
            assert b["magic"] == 2
            assert b["compression"] == 0
            assert b["base_offset"] == exp["offset"]
            assert b["last_offset_delta"] == 0
            assert b["max_timestamp"] == exp["timestamp"]
            (rec,) = b["records"]
            assert rec == {k: exp[k] for k in ("offset", "timestamp", "key", "value", "headers")}


def test_crc_really_checked_by_reference_parser(log, log_dir):
    """Sanity check of the reference: flipping one record byte makes validate_crc() false."""
    topic = log.topic("crc", partitions=1)
    topic.produce(b"hello world", key=b"k", timestamp=BASE_TS)
    log.close()
    (f,) = segment_files(log_dir / "crc", 0)
    data = bytearray(f.read_bytes())
    assert parse_segment(f)[0]["crc_ok"] is True
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    assert parse_segment(f)[0]["crc_ok"] is False


def test_produce_batch_from_arrow_table_roundtrips(log, log_dir):
    rng = random.Random(2)
    n = 500
    keys = [rng.randbytes(rng.randrange(1, 10)) if i % 9 else None for i in range(n)]
    values = [None if i % 11 == 4 else rng.randbytes(rng.randrange(0, 100)) for i in range(n)]
    ts = [BASE_TS + rng.randrange(-1_000_000, 1_000_000) for _ in range(n)]
    tbl = pa.table(
        {
            "k": pa.array(keys, pa.binary()),
            "v": pa.array(values, pa.binary()),
            "ts": pa.array(ts, pa.int64()),
        }
    )
    topic = log.topic("fmtb", partitions=2)
    parts, offs = topic.produce_batch(tbl, key="k", value="v", timestamp="ts")
    parts, offs = parts.to_pylist(), offs.to_pylist()
    assert len(parts) == len(offs) == n

    sticky = {parts[i] for i in range(n) if keys[i] is None}
    assert len(sticky) == 1  # all keyless rows of one call in one partition
    expected: dict[int, list[dict]] = {0: [], 1: []}
    for i in range(n):
        if keys[i] is not None:
            assert parts[i] == kafka_partition(keys[i], 2)
        expected[parts[i]].append(
            {"offset": offs[i], "timestamp": ts[i], "key": keys[i], "value": values[i], "headers": []}
        )
    for p in (0, 1):
        # offsets within a partition are dense and in row order
        assert [e["offset"] for e in expected[p]] == list(range(len(expected[p])))
    log.close()

    for p in (0, 1):
        got = parse_partition(log_dir / "fmtb", p)
        assert got == expected[p]
        for f in segment_files(log_dir / "fmtb", p):
            for b in parse_segment(f):
                assert b["crc_ok"] is True
                assert b["max_timestamp"] == max(r["timestamp"] for r in b["records"])
                assert b["last_offset_delta"] == len(b["records"]) - 1


def test_segments_roll_with_base_offset_names(log, log_dir):
    topic = log.topic("roll", partitions=1, segment_bytes=1024)
    values = [bytes([i % 256]) * 100 for i in range(60)]
    for i, v in enumerate(values):
        assert topic.produce(v, key=b"k%d" % i, timestamp=BASE_TS + i) == (0, i)
    log.close()
    files = segment_files(log_dir / "roll", 0)
    assert len(files) > 3
    seen = []
    for f in files:
        batches = parse_segment(f)
        assert batches, f"empty segment {f}"
        # the file name is the 20-digit base offset of its first batch
        assert int(f.stem) == batches[0]["base_offset"]
        assert f.stat().st_size <= 1024 or len(batches) == 1
        seen.extend(r for b in batches for r in b["records"])
    assert [r["offset"] for r in seen] == list(range(60))
    assert [r["value"] for r in seen] == values
    assert [r["timestamp"] for r in seen] == [BASE_TS + i for i in range(60)]


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70_000])
def test_value_lengths_varint_boundaries(log, log_dir, size):
    topic = log.topic("len", partitions=1)
    v = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    k = b"x" * (size % 200)
    topic.produce(v, key=k, timestamp=BASE_TS, headers=[("big", v[:200]), ("none", None)])
    log.close()
    (rec,) = parse_partition(log_dir / "len", 0)
    assert rec == {"offset": 0, "timestamp": BASE_TS, "key": k, "value": v, "headers": [("big", v[:200]), ("none", None)]}
    # and riverbed reads back what it wrote
    with rb.Log(log_dir, cleanup_interval=None) as lg:
        (row,) = lg["len"].read().to_pylist()
        assert row["value"] == v and row["key"] == k


def _assert_bytes_equal_kafka_builder(path):
    """Re-encode every batch of ``path`` with kafka-python's DefaultRecordBatchBuilder (no
    compression, no producer id/epoch/sequence, not transactional) and compare byte for byte."""
    data = path.read_bytes()
    mr = MemoryRecords(data)
    pos = 0
    n = 0
    while (b := mr.next_batch()) is not None:
        assert b.validate_crc()
        assert (b.producer_id, b.producer_epoch, b.base_sequence) == (-1, -1, -1)
        assert not b.is_transactional and not b.is_control_batch
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=0, is_transactional=False,
            producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 30,
        )
        for r in b:
            builder.append(r.offset - b.base_offset, timestamp=r.timestamp, key=r.key, value=r.value, headers=r.headers)
        ref = bytearray(builder.build())
        ref[0:8] = b.base_offset.to_bytes(8, "big")  # the builder writes base offset 0; not under the CRC
        assert bytes(ref) == data[pos : pos + b.size_in_bytes], f"{path} batch at offset {b.base_offset}"
        pos += b.size_in_bytes
        n += 1
    assert pos == len(data)
    return n


def test_batches_byte_identical_to_kafka_python_builder(log, log_dir):
    topic = log.topic("bytes", partitions=2, segment_bytes=8192)
    for i, r in enumerate(_records(7, 60)):
        topic.produce(r["value"], key=r["key"], timestamp=r["timestamp"], headers=r["headers"], partition=i % 2)
    rng = random.Random(8)
    n = 300
    tbl = pa.table(
        {
            "k": pa.array([rng.randbytes(rng.randrange(0, 8)) if i % 4 else None for i in range(n)], pa.binary()),
            "v": pa.array([rng.randbytes(rng.randrange(0, 80)) if i % 6 else None for i in range(n)], pa.binary()),
            "ts": pa.array([BASE_TS + rng.randrange(-10**8, 10**8) for _ in range(n)], pa.int64()),
        }
    )
    topic.produce_batch(tbl, key="k", value="v", timestamp="ts")
    log.close()
    batches = sum(_assert_bytes_equal_kafka_builder(f) for p in (0, 1) for f in segment_files(log_dir / "bytes", p))
    assert batches > 60


_record = st.fixed_dictionaries(
    {
        "key": st.none() | st.binary(max_size=40),
        "value": st.none() | st.binary(max_size=400),
        "timestamp": st.integers(min_value=0, max_value=2**50),
        "headers": st.lists(
            st.tuples(
                st.lists(st.sampled_from("ab-_ é日\u00ff"), max_size=8).map("".join),
                st.none() | st.binary(max_size=20),
            ),
            max_size=4,
        ),
    }
)


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(_record, min_size=1, max_size=15), partitions=st.integers(1, 3))
def test_property_roundtrip_through_kafka_parser(tmp_path_factory, records, partitions):
    path = tmp_path_factory.mktemp("prop")
    expected = {p: [] for p in range(partitions)}
    with rb.Log(path, fsync="never", cleanup_interval=None) as lg:
        t = lg.topic("p", partitions=partitions)
        for i, r in enumerate(records):
            part = i % partitions if r["key"] is None else None
            p, o = t.produce(r["value"], key=r["key"], timestamp=r["timestamp"], headers=r["headers"], partition=part)
            if r["key"] is not None:
                assert p == kafka_partition(r["key"], partitions)
            expected[p].append({"offset": o, **r})
    for p in range(partitions):
        assert parse_partition(path / "p", p) == [
            {k: e[k] for k in ("offset", "timestamp", "key", "value", "headers")} for e in expected[p]
        ]
