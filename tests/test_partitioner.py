"""The default partitioner is Kafka's: toPositive(murmur2(key)) % n, sticky for null keys."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from kafka.partitioner.default import murmur2 as kp_murmur2

import riverbed as rb


def signed32(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


def kafka_partition(key: bytes, n: int) -> int:
    return (kp_murmur2(key) & 0x7FFFFFFF) % n


def random_keys(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice([0, 1, 2, 3, 4, 5, 7, 8, 13, rng.randrange(0, 200)])) for _ in range(n)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Kafka's own test vectors (org.apache.kafka.common.utils.UtilsTest#testMurmur2)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_kafka_vectors(data, expected):
    assert rb.murmur2(data) == expected
    assert signed32(kp_murmur2(data)) == expected  # the reference agrees with Kafka too


def test_murmur2_matches_kafka_python_on_random_bytes():
    for key in random_keys(11, 10_000):
        assert rb.murmur2(key) == signed32(kp_murmur2(key)), key


@pytest.mark.parametrize("partitions", [1, 3, 7, 16])
def test_partition_for_matches_kafka_python(log, partitions):
    topic = log.topic(f"p{partitions}", partitions=partitions)
    keys = random_keys(partitions, 10_000)
    got = [topic.partition_for(k) for k in keys]
    want = [kafka_partition(k, partitions) for k in keys]
    assert got == want
    if partitions > 1:
        assert len(set(got)) == partitions  # not degenerate


def test_produce_uses_kafka_partition(log):
    n = 7
    topic = log.topic("prod", partitions=n)
    keys = random_keys(3, 600)
    counts = [0] * n
    for k in keys:
        p, o = topic.produce(b"v", key=k, timestamp=0)
        assert p == kafka_partition(k, n), k
        assert o == counts[p]
        counts[p] += 1
    assert topic.offsets() == {p: (0, counts[p]) for p in range(n)}


def test_str_key_is_hashed_as_utf8(log):
    topic = log.topic("strkey", partitions=13)
    for s in ["user-1", "ünïcødé", "日本語", ""]:
        p, _ = topic.produce("v", key=s)
        assert p == kafka_partition(s.encode("utf-8"), 13)


def test_produce_batch_partitions_match_kafka(log):
    n = 5
    topic = log.topic("batch", partitions=n)
    keys = random_keys(5, 3_000)
    tbl = pa.table({"k": pa.array(keys, pa.binary()), "v": pa.array([b"%d" % i for i in range(len(keys))])})
    parts, offs = topic.produce_batch(tbl, key="k", value="v")
    assert parts.to_pylist() == [kafka_partition(k, n) for k in keys]
    # offsets per partition are dense and in row order
    nxt = [0] * n
    for p, o in zip(parts.to_pylist(), offs.to_pylist()):
        assert o == nxt[p]
        nxt[p] += 1
    # and each row is where produce_batch said it is
    rows = topic.read().to_pylist()
    where = {(r["partition"], r["offset"]): (r["key"], r["value"]) for r in rows}
    for i, (p, o) in enumerate(zip(parts.to_pylist(), offs.to_pylist())):
        assert where[(p, o)] == (keys[i], b"%d" % i)


def test_string_key_column_same_as_bytes(log):
    topic = log.topic("strcol", partitions=9)
    keys = [f"key-{i}-é" for i in range(500)]
    parts, _ = topic.produce_batch(pa.table({"k": keys, "v": keys}), key="k", value="v")
    assert parts.to_pylist() == [kafka_partition(k.encode(), 9) for k in keys]


def test_null_keys_sticky_per_produce_batch_call(log):
    n = 4
    topic = log.topic("sticky", partitions=n)
    chosen = []
    for call in range(8):
        tbl = pa.table({"v": [f"{call}-{i}" for i in range(50)]})
        parts, offs = topic.produce_batch(tbl, value="v")
        ps = set(parts.to_pylist())
        assert len(ps) == 1, f"call {call} spread over {ps}"
        chosen.append(ps.pop())
    # successive calls move on (Kafka's sticky partitioner changes partition per batch)
    assert all(a != b for a, b in zip(chosen, chosen[1:])), chosen
    assert set(chosen) == set(range(n))
    # every row is stored where produce_batch said
    counts = {p: 0 for p in range(n)}
    for p in chosen:
        counts[p] += 50
    assert {p: hi - lo for p, (lo, hi) in topic.offsets().items()} == counts


def test_null_keys_sticky_mixed_with_keyed_rows(log):
    topic = log.topic("mixed", partitions=3)
    keys = [None if i % 3 == 0 else f"k{i}".encode() for i in range(300)]
    parts, _ = topic.produce_batch(pa.table({"k": pa.array(keys, pa.binary()), "v": ["x"] * 300}), key="k", value="v")
    parts = parts.to_pylist()
    assert len({parts[i] for i in range(300) if keys[i] is None}) == 1
    for i, k in enumerate(keys):
        if k is not None:
            assert parts[i] == kafka_partition(k, 3)


def test_null_key_single_produce_rotates(log):
    topic = log.topic("rot", partitions=3)
    seen = [topic.produce(b"v")[0] for _ in range(9)]
    assert all(a != b for a, b in zip(seen, seen[1:])), seen
    assert set(seen) == {0, 1, 2}


def test_explicit_partition_overrides_key(log):
    topic = log.topic("explicit", partitions=4)
    key = b"some-key"
    target = (kafka_partition(key, 4) + 1) % 4
    assert topic.produce(b"v", key=key, partition=target) == (target, 0)
    assert topic.read().to_pylist()[0]["partition"] == target
