"""Keys compare as values: a dictionary-encoded (categorical) key by its values, whatever each
batch's dictionary and index type; float -0.0 as 0.0 and every NaN as one key. In the engine's
keyed operators on any worker count, in ``stateful_map``'s Python states (also after a restore),
and in ``rb.Table``. References are brute force over the plain values."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

import riverbed as rb

KEYS = [f"k{i:02d}" for i in range(23)]


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"k": rng.choice(KEYS), "ts": 1_000_000 + i * 7 - rng.randrange(0, 40), "x": rng.random()} for i in range(n)]


@pytest.mark.parametrize("workers", [1, 3])
def test_a_categorical_key_windows_like_pandas(workers: int) -> None:
    """A pandas categorical key (a dictionary-encoded column, each batch with its own dictionary
    order) windows by value, on any worker count, and keeps its type."""
    import pandas as pd

    data = rows(3000, seed=5)
    # Batches whose dictionaries order the same keys differently.
    batches = []
    for off in range(0, len(data), 200):
        part = data[off : off + 200]
        order = sorted({r["k"] for r in part}, reverse=(off // 200) % 2 == 1)
        cat = pd.Categorical([r["k"] for r in part], categories=order)
        batches.append(
            pa.RecordBatch.from_pandas(
                pd.DataFrame({"k": cat, "ts": [r["ts"] for r in part], "x": [r["x"] for r in part]}),
                preserve_index=False,
            )
        )
    out = (
        rb.Pipeline.read(batches, timestamp="ts", lateness="60ms")
        .window(rb.tumbling("1s"), by="k")
        .agg(c=rb.count(), s=rb.sum("x"))
        .collect(progress=False, workers=workers)
    )
    assert pa.types.is_dictionary(out.schema.field("k").type)
    ref: dict[tuple, list] = {}
    for r in data:
        w = r["ts"] - r["ts"] % 1000
        c = ref.setdefault((r["k"], w), [0, 0.0])
        c[0] += 1
        c[1] += r["x"]
    got = {(r["k"], r["window_start"]): [r["c"], r["s"]] for r in out.to_pylist()}
    assert got.keys() == ref.keys()
    for k, (c, s) in ref.items():
        assert got[k][0] == c and got[k][1] == pytest.approx(s)


@pytest.mark.parametrize("workers", [1, 3])
def test_float_keys_equal_as_numbers_are_one_key(workers: int) -> None:
    """-0.0 and 0.0 are one key, and so is every NaN, in a window and in stateful_map's state
    (which counts each key's records), on any worker count."""
    vals = [0.0, -0.0, float("nan"), float("-nan"), 1.5, -1.5]
    rng = random.Random(7)
    data = [{"k": rng.choice(vals), "ts": 1_000 + i, "x": 1.0} for i in range(2000)]
    t = pa.Table.from_pylist(data, schema=pa.schema([("k", pa.float64()), ("ts", pa.int64()), ("x", pa.float64())]))
    # Four partitions, so several workers each see every key.
    parts = [rb.Pipeline.read(t.slice(i * 500, 500), timestamp="ts", batch_size=37) for i in range(4)]
    src_ = parts[0].union(*parts[1:])

    def canon_key(v: float) -> str:
        return "nan" if v != v else repr(v + 0.0)

    want: dict[str, int] = {}
    for r in data:
        want[canon_key(r["k"])] = want.get(canon_key(r["k"]), 0) + 1

    win = src_.window(rb.tumbling("1h"), by="k").agg(c=rb.count()).collect(progress=False, workers=workers)
    assert {canon_key(r["k"]): r["c"] for r in win.to_pylist()} == want
    assert win.num_rows == 4

    def counting(state: int, records: list[dict]) -> tuple[int, list[dict]]:
        state += len(records)
        return state, [{"k": records[-1]["k"], "seen": state}]

    out = src_.stateful_map(counting, by="k", initial=0).collect(progress=False, workers=workers)
    last: dict[str, int] = {}
    for r in out.to_pylist():
        last[canon_key(r["k"])] = max(last.get(canon_key(r["k"]), 0), r["seen"])
    assert last == want


def _dict_batches(n_batches: int, per: int, index: pa.DataType) -> tuple[list[pa.RecordBatch], list[dict]]:
    """Batches whose dictionary<index, string> key holds `per` distinct values each, different
    per batch, so together more than an int8 index can number."""
    out, plain = [], []
    for b in range(n_batches):
        keys = [f"key-{b}-{i}" for i in range(per)]
        ts = [1_000 + b * per + i for i in range(per)]
        arr = pa.DictionaryArray.from_arrays(pa.array(list(range(per)), index), pa.array(keys))
        out.append(pa.RecordBatch.from_arrays([arr, pa.array(ts, pa.int64()), pa.array([1.0] * per)], ["k", "ts", "x"]))
        plain += [{"k": k, "ts": t} for k, t in zip(keys, ts)]
    return out, plain


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("index", [pa.int8(), pa.uint8(), pa.int16()], ids=str)
def test_categorical_keys_beyond_a_narrow_index_window(workers: int, index: pa.DataType) -> None:
    batches, plain = _dict_batches(3, 100, index)
    out = (
        rb.Pipeline.read(batches, timestamp="ts")
        .window(rb.tumbling("1h"), by="k")
        .agg(n=rb.count())
        .collect(progress=False, workers=workers)
    )
    assert pa.types.is_dictionary(out.schema.field("k").type)
    assert sorted((r["k"], r["n"]) for r in out.to_pylist()) == sorted((r["k"], 1) for r in plain)


@pytest.mark.parametrize("workers", [1, 3])
def test_a_join_with_a_narrow_categorical_left_key(workers: int) -> None:
    """The right key is cast to the left's key type: an int8 dictionary must not overflow."""
    import pandas as pd

    left = pa.Table.from_pandas(
        pd.DataFrame({"k": pd.Categorical(["r1", "r150"]), "ts": [5_000, 5_000]}), preserve_index=False
    )
    right = pa.table({"k": [f"r{i}" for i in range(200)], "ts": [1_000] * 200, "v": list(range(200))})
    out = (
        rb.Pipeline.read(left, timestamp="ts")
        .join_asof(rb.Pipeline.read(right, timestamp="ts"), on="ts", by="k")
        .collect(progress=False, workers=workers)
    )
    assert sorted((str(r["k"]), r["v"]) for r in out.to_pylist()) == [("r1", 1), ("r150", 150)]


def test_float_values_of_a_dictionary_key_are_keyed_as_numbers() -> None:
    vals = pa.array([0.0, -0.0, float("nan"), float("-nan")])
    arr = pa.DictionaryArray.from_arrays(pa.array([0, 1, 2, 3], pa.int8()), vals)
    t = pa.table({"k": arr, "ts": [1, 2, 3, 4]})
    out = rb.Pipeline.read(t, timestamp="ts").window(rb.tumbling("1h"), by="k").agg(n=rb.count()).collect(progress=False)
    got = sorted(("nan" if r["k"] != r["k"] else repr(r["k"] + 0.0), r["n"]) for r in out.to_pylist())
    assert got == [("0.0", 2), ("nan", 2)]


def test_a_table_keys_floats_and_categoricals_as_values() -> None:
    import pandas as pd

    other_nan = float("-nan")
    t = pa.table({"f": [0.0, -0.0, float("nan"), 0.0, other_nan, 1.0], "ts": [1, 2, 3, 4, 5, 6], "v": [1, 2, 3, 4, 5, 6]})
    table = rb.Pipeline.read(t, timestamp="ts").to_table("f")
    view = table.to_arrow()
    assert view.num_rows == 3
    assert table.get(-0.0)["v"] == 4 and table.get(0.0)["v"] == 4
    assert table.get(float("nan"))["v"] == 5 and table.get(1.0)["v"] == 6

    # One input whose two batches each have their own dictionary ("y" is index 1, then 0).
    a = pa.RecordBatch.from_pandas(pd.DataFrame({"k": pd.Categorical(["x", "y"]), "ts": [1, 2], "v": [1, 2]}), preserve_index=False)
    b = pa.RecordBatch.from_pandas(
        pd.DataFrame({"k": pd.Categorical(["y", "z"], categories=["y", "z"]), "ts": [3, 4], "v": [3, 4]}), preserve_index=False
    )
    cat = rb.Pipeline.read([a, b], timestamp="ts").to_table("k")
    assert sorted((str(r["k"]), r["v"]) for r in cat.to_arrow().to_pylist()) == [("x", 1), ("y", 3), ("z", 4)]
    assert cat.get("y")["v"] == 3


def test_a_nan_key_keeps_its_state_across_a_restore(tmp_path) -> None:
    """A key that is NaN (0/0: JSON cannot carry a NaN, an expression can make one) keeps its
    state in a named run that resumes: the restored state's NaN is another object."""
    schema = pa.schema([("a", pa.float64()), ("ts", pa.int64())])

    def count(state: int, records: list[dict]) -> tuple[int, list[dict]]:
        out = []
        for r in records:
            state += 1
            out.append({"ts": r["ts"], "n": state})
        return state, out

    with rb.Log(str(tmp_path / "log"), fsync="never") as log:
        src = log.topic("in", partitions=1)
        src.produce_batch(pa.Table.from_pylist([{"a": 0.0, "ts": 1}, {"a": 0.0, "ts": 2}], schema=schema), timestamp="ts")

        def plan() -> rb.Pipeline:
            return (
                rb.Pipeline.read(src, timestamp="ts", schema=schema)
                .with_columns(f=rb.col("a") / rb.col("a"))
                .stateful_map(count, by="f", initial=0)
            )

        first = plan().run(progress=False, name="nan-state").output
        assert sorted(first.column("n").to_pylist()) == [1, 2]
        src.produce_batch(pa.Table.from_pylist([{"a": 0.0, "ts": 3}], schema=schema), timestamp="ts")
        second = plan().run(progress=False, name="nan-state").output
        assert [r["n"] for r in second.to_pylist() if r["ts"] == 3] == [3]


@pytest.mark.parametrize("workers", [1, 3])
def test_held_records_of_a_narrow_categorical_do_not_overflow(workers: int) -> None:
    """Series operators and stateful_map hold records of many batches together: a categorical
    column with int8 codes reaches them with an int32 index, so 300 values fit."""
    batches, plain = _dict_batches(3, 100, pa.int8())

    def first_seen(state: int, records: list[dict]) -> tuple[int, list[dict]]:
        return state + len(records), [{"k": r["k"], "n": state + i + 1} for i, r in enumerate(records)]

    read = rb.Pipeline.read(batches, timestamp="ts")
    rolled = read.rolling(by="k", period="1h", s=rb.sum("x")).collect(progress=False, workers=workers)
    assert pa.types.is_dictionary(rolled.schema.field("k").type)
    assert sorted((r["k"], r["s"]) for r in rolled.to_pylist()) == sorted((r["k"], 1.0) for r in plain)
    mapped = read.stateful_map(first_seen, by="k", initial=0).collect(progress=False, workers=workers)
    assert sorted((r["k"], r["n"]) for r in mapped.to_pylist()) == sorted((r["k"], 1) for r in plain)


def test_a_float_key_written_as_a_record_key_is_one_key_for_minus_zero_and_zero(log) -> None:
    """-0.0 and 0.0 are one key to every keyed operator (and to ``rb.Table``); written as record
    keys they used to be two ("-0.0" and "0.0"): two partitions, two keys of a compacted topic.
    Now a record key holds 0.0 for both, while the value keeps the row as it was. The reference
    is the engine's own table: as many distinct record keys as its keys."""
    rng = random.Random(3)
    vals = [rng.choice([0.0, -0.0, 1.5, -2.0]) for _ in range(200)]
    data = pa.table({"f": vals, "ts": list(range(1_000, 1_200)), "v": list(range(200))})
    direct = log.topic("fz-direct", partitions=4)
    direct.produce_batch(data, key="f", timestamp="ts")
    got = direct.read()
    recs = [(k, p, json.loads(v)) for k, p, v in zip(got.column("key").to_pylist(), got.column("partition").to_pylist(), got.column("value").to_pylist())]
    # every record of a key that is zero has the key 0.0, in one partition
    zero = [(k, p) for k, p, v in recs if v["f"] == 0.0]
    assert {k for k, _ in zero} == {b"0.0"} and len({p for _, p in zero}) == 1
    assert len(zero) == sum(1 for f in vals if f == 0.0)
    # the value keeps -0.0 where the row had it
    assert sorted((v["v"], str(v["f"])) for _, _, v in recs) == [(i, str(f)) for i, f in enumerate(vals)]

    table = rb.Pipeline.read(data, timestamp="ts").to_table("f")
    table.run()
    out = log.topic("fz-table", partitions=4)
    table.write(out).run(progress=False)
    keys = out.read().column("key").to_pylist()
    assert len(set(keys)) == table.to_arrow().num_rows == 3
