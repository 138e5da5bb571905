"""Batches compressed by a Kafka client (gzip, snappy raw and xerial-framed, lz4, zstd), stored as
sent, read through the Python surface: ``Topic.read`` and ``Pipeline.read`` see the records the
client encoded. The batches were made by kafka-python's DefaultRecordBatchBuilder
(``rust/riverbed-log/tests/fixtures/compressed/make_fixtures.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import riverbed as rb
from conftest import reopen, segment_files

FIXTURES = Path(__file__).parent.parent / "rust/riverbed-log/tests/fixtures/compressed"
CODECS = ["gzip", "snappy_xerial", "snappy_raw", "lz4", "zstd"]


def _unhex(v: str | None) -> bytes | None:
    return None if v is None else bytes.fromhex(v)


def _store_compressed_batches(log: rb.Log) -> list[dict]:
    """Close ``log`` after creating topic ``t`` (1 partition), append the five fixture batches to
    its segment as a broker stores them (base offset assigned; the CRC, over the compressed
    bytes, untouched) and return the records they hold, offsets 0.."""
    log.topic("t", partitions=1)
    path = Path(log.path)
    log.close()
    per_batch = json.loads((FIXTURES / "records.json").read_text())
    want = []
    with open(segment_files(path / "t", 0)[0], "ab") as f:
        for i, name in enumerate(CODECS):
            base = i * len(per_batch)
            b = bytearray((FIXTURES / f"{name}.bin").read_bytes())
            b[0:8] = base.to_bytes(8, "big")
            f.write(b)
            want += [{**r, "offset": base + r["offset"] - 1000} for r in per_batch]
    return want


def test_topic_read_and_pipelines_see_the_encoded_records(log: rb.Log) -> None:
    want = _store_compressed_batches(log)
    log = reopen(log)
    topic = log.topic("t")

    tbl = topic.read().sort_by("offset")
    assert tbl.num_rows == len(want) == 5 * 240
    assert tbl.column("offset").to_pylist() == [r["offset"] for r in want]
    assert tbl.column("key").to_pylist() == [_unhex(r["key"]) for r in want]
    assert tbl.column("value").to_pylist() == [_unhex(r["value"]) for r in want]
    ts = [int(t.timestamp() * 1000) for t in tbl.column("timestamp").to_pylist()]
    assert ts == [r["timestamp"] for r in want]
    headers = [[(h["key"], h["value"]) for h in row] for row in tbl.column("headers").to_pylist()]
    assert headers == [[(bytes.fromhex(k).decode(), _unhex(v)) for k, v in r["headers"]] for r in want]

    raw = rb.Pipeline.read(topic, format="raw").collect().sort_by("offset")
    assert raw.column("offset").to_pylist() == [r["offset"] for r in want]
    assert raw.column("key").to_pylist() == [_unhex(r["key"]) for r in want]
    assert raw.column("value").to_pylist() == [_unhex(r["value"]) for r in want]
    log.close()


def test_a_value_that_is_not_json_is_named_by_its_offset_inside_a_compressed_batch(log: rb.Log) -> None:
    want = _store_compressed_batches(log)
    log = reopen(log)
    # The fixtures' values are JSON objects ("{..." = 7b...), nulls, and now and then binary.
    first_binary = next(r["offset"] for r in want if r["value"] and not r["value"].startswith("7b"))
    assert first_binary == 17
    with pytest.raises(rb.exceptions.DecodeError, match=r"t/0@17\b"):
        rb.Pipeline.read(log.topic("t")).collect()
    log.close()
