"""Tables (``to_table``, group-by tables, ``log.table``), ``stateful_map``, ``training_set`` and
backfill/follow parity, each against an independent reference (brute-force Python loops, pandas)
on random data with fixed seeds."""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import riverbed as rb

MIN = 60_000


# -- helpers ---------------------------------------------------------------------------------------


def wait_until(cond, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def shuffled_within(rows: list[dict], lateness_ms: int, seed: int) -> list[dict]:
    """``rows`` (sorted by ts) in an arrival order where no record comes more than
    ``lateness_ms`` after a later one: only neighbours closer than that in time are swapped, so
    two records change their relative order only if their times differ by < lateness."""
    rng = random.Random(seed)
    rows = list(rows)
    for _ in range(len(rows) * 3):
        i = rng.randrange(len(rows) - 1)
        if abs(rows[i + 1]["ts"] - rows[i]["ts"]) < lateness_ms:
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
    return rows


def close(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def assert_rows_close(got: dict, want: dict, where: object = "") -> None:
    assert set(got) == set(want), (where, got, want)
    bad = {c: (got[c], want[c]) for c in want if not close(got[c], want[c])}
    assert not bad, f"{where}: (got, want) differ in {bad}"


def op_metrics(metrics: list[dict], name: str) -> dict:
    ms = [m for m in metrics if name in m["operator"]]
    assert len(ms) == 1, f"expected one {name} operator in {metrics}"
    return ms[0]


UPD_SCHEMA = pa.schema([("k", pa.string()), ("j", pa.int64()), ("ts", pa.int64()), ("x", pa.float64())])


def make_updates(n: int = 400, keys: int = 25, seed: int = 1) -> list[dict]:
    """Updates in input order; event times random (not sorted)."""
    rng = random.Random(seed)
    return [
        {"k": f"k{rng.randrange(keys)}", "j": rng.randrange(3), "ts": rng.randrange(0, 10_000_000), "x": round(rng.gauss(0, 5), 3)}
        for _ in range(n)
    ]


def latest_by(rows: list[dict], key) -> dict:
    """Brute force: the last row per key in input order (dicts keep first-insertion order, so
    re-insert to order the keys by their last change)."""
    out: dict = {}
    for r in rows:
        k = key(r)
        out.pop(k, None)
        out[k] = r
    return out


# -- 1. to_table, bounded --------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_to_table_is_the_latest_row_per_key(batch_size):
    rows = make_updates(seed=batch_size)
    tbl = pa.Table.from_pylist(rows, schema=UPD_SCHEMA)
    want = latest_by(rows, lambda r: r["k"])

    t = rb.Pipeline.read(tbl, timestamp="ts", batch_size=batch_size).to_table("k")
    assert isinstance(t, rb.Table)
    assert t.key == ["k"]
    # the first read runs the table (bounded)
    for k, r in want.items():
        assert t.get(k) == r
        assert t[k] == r
        assert k in t
    assert len(t) == len(want)
    # to_arrow: one row per key, ordered by when each key last changed
    assert t.to_arrow().to_pylist() == list(want.values())
    assert t.to_arrow().schema == UPD_SCHEMA
    # pandas reference: drop_duplicates(keep="last") keeps the rows in input order
    ref = pd.DataFrame(rows).drop_duplicates("k", keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(t.to_pandas(), ref, check_dtype=False)

    # missing keys
    sentinel = object()
    assert t.get("nope") is None
    assert t.get("nope", sentinel) is sentinel
    assert "nope" not in t
    with pytest.raises(KeyError):
        t["nope"]


def test_to_table_with_a_multi_column_key():
    rows = make_updates(n=500, keys=8, seed=42)
    tbl = pa.Table.from_pylist(rows, schema=UPD_SCHEMA)
    want = latest_by(rows, lambda r: (r["k"], r["j"]))
    t = rb.Pipeline.read(tbl, timestamp="ts", batch_size=33).to_table("k", "j")
    assert t.key == ["k", "j"]
    assert len(t) == len(want)  # len first: also runs the table
    for kj, r in want.items():
        assert t.get(kj) == r
        assert t[kj] == r
        assert kj in t
    assert t.to_arrow().to_pylist() == list(want.values())
    ref = pd.DataFrame(rows).drop_duplicates(["k", "j"], keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(t.to_pandas(), ref, check_dtype=False)

    assert t.get(("k0", 99)) is None
    assert t.get(("k0", 99), "dflt") == "dflt"
    assert ("k0", 99) not in t
    with pytest.raises(KeyError):
        t[("zz", 0)]


# -- 2. a table readable while its pipeline runs ---------------------------------------------------


def test_table_from_a_topic_is_readable_while_running(log):
    topic = log.topic("prices", partitions=3)
    schema = pa.schema([("k", pa.string()), ("v", pa.int64()), ("seq", pa.int64())])
    rng = random.Random(7)
    sent: list[dict] = []

    def produce(n: int, keys: list[str]) -> None:
        for _ in range(n):
            r = {"k": rng.choice(keys), "v": rng.randrange(-1000, 1000), "seq": len(sent)}
            topic.produce(r, key=r["k"])
            sent.append(r)

    produce(60, [f"k{i}" for i in range(6)])
    t = rb.Pipeline.read(topic, schema=schema).to_table("k")

    def matches() -> bool:
        want = latest_by(sent, lambda r: r["k"])
        if len(t) != len(want):
            return False
        for k, r in want.items():
            got = t.get(k)
            if got is None or (got["v"], got["seq"]) != (r["v"], r["seq"]):
                return False
        return True

    t.start()
    try:
        assert t.running
        wait_until(matches, what="the records produced before start()")
        assert "k_new" not in t
        # more updates while it runs, including a new key
        produce(80, [f"k{i}" for i in range(6)] + ["k_new"])
        wait_until(matches, what="the records produced while running")
        assert "k_new" in t
        assert t.get("k_new")["seq"] == max(r["seq"] for r in sent if r["k"] == "k_new")
        assert t.running
    finally:
        res = t.stop()
    assert not t.running
    assert isinstance(res, rb.RunResult)
    assert matches()  # still readable after stop()


# -- 3. group_by(...).agg(...) tables --------------------------------------------------------------


def agg_ref(xs: list) -> dict:
    vals = [x for x in xs if x is not None]
    return {
        "n": len(xs),
        "nx": len(vals),
        "s": sum(vals) if vals else None,
        "lo": min(vals) if vals else None,
        "hi": max(vals) if vals else None,
        "m": sum(vals) / len(vals) if vals else None,
    }


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_group_by_table_and_its_changelog(batch_size):
    rng = random.Random(100 + batch_size)
    n = 300
    rows = [
        {"k": f"g{rng.randrange(6)}", "ts": 1000 * i, "x": None if rng.random() < 0.1 else round(rng.uniform(-50, 50), 2)}
        for i in range(n)
    ]
    rows.append({"k": "only_nulls", "ts": 1000 * n, "x": None})
    tbl = pa.Table.from_pylist(rows, schema=pa.schema([("k", pa.string()), ("ts", pa.int64()), ("x", pa.float64())]))
    t = (
        rb.Pipeline.read(tbl, timestamp="ts", batch_size=batch_size)
        .group_by("k")
        .agg(n=rb.count(), nx=rb.count("x"), s=rb.sum("x"), lo=rb.min("x"), hi=rb.max("x"), m=rb.mean("x"))
    )
    assert isinstance(t, rb.Table)
    assert t.key == ["k"]

    per_key: dict[str, list] = defaultdict(list)
    for r in rows:
        per_key[r["k"]].append(r["x"])
    final = {k: {"k": k, **agg_ref(xs)} for k, xs in per_key.items()}

    assert len(t) == len(final)
    for k, want in final.items():
        assert_rows_close(t[k], want, k)
    assert sorted(r["k"] for r in t.to_arrow().to_pylist()) == sorted(final)

    # the changelog: every row is the aggregate of a prefix of its key's records, the counts grow,
    # the last row per key is the final value, and a batch gives one row per key it changed
    cl = t.changelog.collect().to_pylist()
    last_n: dict[str, int] = {}
    for r in cl:
        k = r["k"]
        assert r["n"] > last_n.get(k, 0), f"changelog count of {k} did not grow: {r}"
        last_n[k] = r["n"]
        assert_rows_close(r, {"k": k, **agg_ref(per_key[k][: r["n"]])}, ("changelog", r))
    assert latest_by(cl, lambda r: r["k"]).keys() == final.keys()
    for k, r in latest_by(cl, lambda r: r["k"]).items():
        assert_rows_close(r, final[k], ("last changelog row", k))
    expected_updates = sum(len({r["k"] for r in rows[i : i + batch_size]}) for i in range(0, len(rows), batch_size))
    assert len(cl) == expected_updates


# -- 4. Table.write to a compacted topic and log.table ---------------------------------------------


def test_a_table_keyed_by_two_columns_writes_a_json_object_record_key(log):
    """A key of several columns used to be written as no record key at all (a compacted topic
    refuses that; Kafka spreads such records over partitions). Now the record key is a JSON
    object of the key columns in order, as Kafka Connect writes a struct key: one record key
    per table key, equal keys in one partition, and the compacted topic read back as a table
    has the same rows as the brute-force latest row per (k, j)."""
    import json

    rows = make_updates(n=300, keys=12, seed=4)
    want = latest_by(rows, lambda r: (r["k"], r["j"]))
    t = rb.Pipeline.read(pa.Table.from_pylist(rows, schema=UPD_SCHEMA), timestamp="ts", batch_size=40).to_table("k", "j")
    topic = log.topic("by-two", partitions=3, cleanup="compact")
    t.write(topic).run()
    got = topic.read()
    where: dict = {}
    for key, part, value in zip(got.column("key").to_pylist(), got.column("partition").to_pylist(), got.column("value").to_pylist()):
        k, v = json.loads(key), json.loads(value)
        assert list(k) == ["k", "j"] and (k["k"], k["j"]) == (v["k"], v["j"])
        where.setdefault(key, set()).add(part)
    assert len(where) == len(want) and all(len(p) == 1 for p in where.values())
    lt = log.table(topic)
    assert len(lt) == len(want)
    for (k, j), r in want.items():
        row = lt.get(json.dumps({"k": k, "j": j}, separators=(",", ":")))
        assert row is not None and (row["x"], row["ts"]) == (r["x"], r["ts"]), (k, j)

    # a window by two columns is keyed the same way
    out = log.topic("by-two-windows", partitions=2)
    rb.Pipeline.read(pa.Table.from_pylist(rows, schema=UPD_SCHEMA), timestamp="ts").window(rb.tumbling("1h"), by=["k", "j"]).agg(
        n=rb.count()
    ).write(out).run(progress=False)
    recs = out.read()
    keys = [json.loads(k) for k in recs.column("key").to_pylist()]
    values = [json.loads(v) for v in recs.column("value").to_pylist()]
    assert [(k["k"], k["j"]) for k in keys] == [(v["k"], v["j"]) for v in values]


def test_table_write_to_compacted_topic_then_log_table(log):
    rows = make_updates(n=300, keys=20, seed=9)
    want = latest_by(rows, lambda r: r["k"])
    t = rb.Pipeline.read(pa.Table.from_pylist(rows, schema=UPD_SCHEMA), timestamp="ts", batch_size=50).to_table("k")
    topic = log.topic("latest", partitions=3, cleanup="compact")
    t.write(topic).run()
    assert topic.read().num_rows == len(rows)  # the whole changelog, keyed by the table key

    def check(lt: rb.Table, expected: dict) -> None:
        assert lt.key == ["key"]
        assert len(lt) == len(expected)
        for k, r in expected.items():
            got = lt.get(k)  # a str finds the binary record key
            assert got is not None, k
            assert got["key"] == k.encode()
            assert {c: got[c] for c in ("k", "j", "ts", "x")} == r
            assert lt[k] == got
            assert k in lt

    lt = log.table(topic)
    check(lt, want)
    assert log.table("latest").to_arrow().num_rows == len(want)

    # tombstones delete keys; a tombstone for a never-seen key is no row either
    rng = random.Random(3)
    gone = rng.sample(sorted(want), 6)
    for k in gone:
        topic.produce(None, key=k)
    topic.produce(None, key="ghost")
    after = {k: r for k, r in want.items() if k not in gone}
    lt2 = log.table("latest")
    check(lt2, after)
    for k in [*gone, "ghost"]:
        assert lt2.get(k) is None
        assert k not in lt2
        with pytest.raises(KeyError):
            lt2[k]
    # the table loaded before the tombstones is a snapshot
    assert all(k in lt for k in gone)

    # a value after a tombstone brings the key back
    back = {"k": gone[0], "j": 2, "ts": 123, "x": 1.5}
    topic.produce(back, key=gone[0])
    after[gone[0]] = back
    check(log.table("latest"), after)
    # compaction keeps the latest value per key
    log.cleanup()
    check(log.table("latest"), after)


# -- 5. stateful_map -------------------------------------------------------------------------------


SM_SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("id", pa.int64())])


def make_id_events(n: int = 300, keys: int = 5, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    ts = sorted(rng.sample(range(0, n * 50), n))
    return [{"k": f"k{rng.randrange(keys)}", "ts": t, "id": rng.randrange(25)} for t in ts]


def dedup_count(state, records):
    seen, n = state
    assert len({r["k"] for r in records}) == 1, "records of one key per call"
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records), "records in event-time order"
    out = []
    for r in records:
        if r["id"] in seen:
            continue
        seen = seen | {r["id"]}
        n += 1
        out.append({"k": r["k"], "ts": r["ts"], "id": r["id"], "n": n})
    return (seen, n), out


def dedup_reference(rows: list[dict]) -> list[dict]:
    out = []
    seen: dict[str, set] = defaultdict(set)
    count: dict[str, int] = defaultdict(int)
    for r in sorted(rows, key=lambda r: (r["k"], r["ts"])):
        if r["id"] in seen[r["k"]]:
            continue
        seen[r["k"]].add(r["id"])
        count[r["k"]] += 1
        out.append({"k": r["k"], "ts": r["ts"], "id": r["id"], "n": count[r["k"]]})
    return out


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_stateful_map_dedup_count_under_shuffled_arrival(batch_size):
    for seed in (1, 2, 3):
        rows = make_id_events(seed=seed)
        want = dedup_reference(rows)
        assert len(want) < len(rows)  # there are duplicates to drop
        arrival = pa.Table.from_pylist(shuffled_within(rows, 300, seed), schema=SM_SCHEMA)
        res = (
            rb.Pipeline.read(arrival, timestamp="ts", lateness="300ms", batch_size=batch_size)
            .stateful_map(dedup_count, by="k", initial=(frozenset(), 0))
            .run()
        )
        assert op_metrics(res.metrics, "stateful_map")["late_records"] == 0
        got = sorted(res.output.to_pylist(), key=lambda r: (r["k"], r["ts"]))
        assert got == want, f"seed {seed}"


def history(state, records):
    out = []
    for r in records:
        state["hist"].append(r["ts"])
        out.append({"k": r["k"], "ts": r["ts"], "hist": list(state["hist"])})
    return state, out


def history_reference(rows: list[dict]) -> list[dict]:
    hist: dict[str, list] = defaultdict(list)
    out = []
    for r in sorted(rows, key=lambda r: (r["k"], r["ts"])):
        hist[r["k"]].append(r["ts"])
        out.append({"k": r["k"], "ts": r["ts"], "hist": list(hist[r["k"]])})
    return out


def test_stateful_map_initial_is_deep_copied_per_key():
    rows = make_id_events(n=120, keys=4, seed=5)
    tbl = pa.Table.from_pylist(rows, schema=SM_SCHEMA)
    initial = {"hist": []}  # a nested list: a shallow copy would share it between keys
    out = rb.Pipeline.read(tbl, timestamp="ts", batch_size=10).stateful_map(history, by="k", initial=initial).collect()
    assert sorted(out.to_pylist(), key=lambda r: (r["k"], r["ts"])) == history_reference(rows)
    assert initial == {"hist": []}


def test_stateful_map_callable_initial():
    rows = make_id_events(n=120, keys=4, seed=6)
    tbl = pa.Table.from_pylist(rows, schema=SM_SCHEMA)
    calls = []

    def fresh():
        calls.append(1)
        return {"hist": []}

    out = rb.Pipeline.read(tbl, timestamp="ts", batch_size=10).stateful_map(history, by="k", initial=fresh).collect()
    assert sorted(out.to_pylist(), key=lambda r: (r["k"], r["ts"])) == history_reference(rows)
    assert len(calls) == len({r["k"] for r in rows})


def count_until_end(state, records):
    """Counts a key's records; a record with end=True closes the count: the key is forgotten
    (state None) when the call's last record is an end. Uses state["n"], so it fails if it is
    ever handed None instead of a fresh initial."""
    n = state["n"]
    out = []
    for r in records:
        n += 1
        out.append({"k": r["k"], "ts": r["ts"], "n": n})
        if r["end"]:
            n = 0
    return (None if records[-1]["end"] else {"n": n}), out


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_stateful_map_returning_none_forgets_the_key(batch_size):
    rng = random.Random(11)
    rows = [{"k": f"k{rng.randrange(3)}", "ts": 10 * i, "end": rng.random() < 0.3} for i in range(200)]
    want, n = [], defaultdict(int)
    for r in sorted(rows, key=lambda r: (r["k"], r["ts"])):
        n[r["k"]] += 1
        want.append({"k": r["k"], "ts": r["ts"], "n": n[r["k"]]})
        if r["end"]:
            n[r["k"]] = 0
    tbl = pa.Table.from_pylist(rows)
    out = (
        rb.Pipeline.read(tbl, timestamp="ts", batch_size=batch_size)
        .stateful_map(count_until_end, by="k", initial={"n": 0})
        .collect()
    )
    assert sorted(out.to_pylist(), key=lambda r: (r["k"], r["ts"])) == want


def test_stateful_map_bad_return_values_raise_type_error_naming_the_function():
    tbl = pa.Table.from_pylist(make_id_events(n=20, seed=1), schema=SM_SCHEMA)
    p = rb.Pipeline.read(tbl, timestamp="ts")

    def bad_shape(state, records):
        return [{"k": r["k"]} for r in records]

    def bad_records(state, records):
        return state, [1, 2]

    with pytest.raises(TypeError, match="bad_shape"):
        p.stateful_map(bad_shape, by="k").collect()
    with pytest.raises(TypeError, match="bad_records"):
        p.stateful_map(bad_records, by="k").collect()
    with pytest.raises(TypeError, match="my_step"):
        p.stateful_map(bad_shape, by="k", name="my_step").collect()
    with pytest.raises(TypeError):
        p.stateful_map("not a function", by="k")


def test_stateful_map_exceptions_propagate_as_themselves():
    tbl = pa.Table.from_pylist(make_id_events(n=20, seed=1), schema=SM_SCHEMA)

    def divide(state, records):
        return state, [{"q": 1 / (r["id"] - r["id"])} for r in records]

    p = rb.Pipeline.read(tbl, timestamp="ts").stateful_map(divide, by="k", initial=0)
    with pytest.raises(ZeroDivisionError):
        p.collect()
    with pytest.raises(ZeroDivisionError):
        p.run()


def test_stateful_map_pipeline_gives_the_same_output_when_run_again():
    """A pipeline is re-runnable (``collect()`` runs it to the end of its input; ``Table.run()``
    rebuilds from the whole input): a second run must start from fresh per-key state."""
    rows = make_id_events(n=100, seed=4)
    want = dedup_reference(rows)
    p = rb.Pipeline.read(pa.Table.from_pylist(rows, schema=SM_SCHEMA), timestamp="ts").stateful_map(
        dedup_count, by="k", initial=(frozenset(), 0)
    )
    first = sorted(p.collect().to_pylist(), key=lambda r: (r["k"], r["ts"]))
    second = sorted(p.collect().to_pylist(), key=lambda r: (r["k"], r["ts"]))
    assert first == want
    assert second == want


# -- 6. training_set never leaks -------------------------------------------------------------------


def test_training_set_is_point_in_time_correct_and_a_naive_join_would_leak():
    rng = np.random.default_rng(21)
    n = 600
    ev_ts = np.sort(rng.choice(np.arange(0, 40 * MIN), n, replace=False))
    events = [
        {"k": f"k{int(i)}", "ts": int(t), "x": float(round(x, 3))}
        for i, t, x in zip(rng.integers(0, 4, n), ev_ts, rng.normal(10, 4, n))
    ]
    by_key: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        by_key[e["k"]].append(e)

    # labels: random times, some exactly at an event time, some exactly at a minute boundary,
    # some before any event and one key that never has events
    lab = [(f"k{int(k)}", int(t)) for k, t in zip(rng.integers(0, 4, 150), rng.integers(-MIN, 42 * MIN, 150))]
    lab += [(e["k"], e["ts"]) for e in rng.choice(np.array(events, dtype=object), 30, replace=False)]
    lab += [(f"k{int(k)}", int(m) * MIN) for k, m in zip(rng.integers(0, 4, 30), rng.integers(1, 41, 30))]
    lab += [("k_none", 5 * MIN)]
    lab.sort(key=lambda kt: kt[1])
    labels = pa.table(
        {"lid": list(range(len(lab))), "k": [k for k, _ in lab], "ts": [t for _, t in lab], "y": rng.integers(0, 2, len(lab))}
    )

    arrival = pa.Table.from_pylist(
        shuffled_within(events, 2000, 1), schema=pa.schema([("k", pa.string()), ("ts", pa.int64()), ("x", pa.float64())])
    )
    src = rb.Pipeline.read(arrival, timestamp="ts", lateness="2s", batch_size=50)
    rolling_feat = (
        src.with_columns(feat_ts=rb.col("ts"))
        .rolling(by="k", period="5m", x_mean=rb.mean("x"))
        .select("k", "ts", "feat_ts", "x_mean")
    )
    window_feat = src.window(rb.tumbling("1m"), by="k").agg(x_max=rb.max("x"), last_ts=rb.max("ts"))
    # (c) a table feature: the latest event per key, as of the label time
    table_feat = src.with_columns(tab_ts=rb.col("ts")).select("k", "ts", "x", "tab_ts").to_table("k")

    ts_ = rb.training_set(labels, [rolling_feat, window_feat, table_feat], on="ts", by="k")
    assert sorted(ts_.column_names) == sorted(["lid", "k", "ts", "y", "feat_ts", "x_mean", "x_max", "last_ts", "x", "tab_ts"])
    got = {r["lid"]: r for r in ts_.to_pylist()}
    assert sorted(got) == list(range(len(lab)))

    matched_rolling = matched_window = 0
    for lid, (k, t) in enumerate(lab):
        r = got[lid]
        assert (r["k"], r["ts"]) == (k, t)
        past = [e for e in by_key.get(k, []) if e["ts"] <= t]  # only events at or before the label
        # (a) per-record rolling feature: the latest event <= t, its 5-minute trailing mean
        if past:
            last = past[-1]
            xs = [e["x"] for e in past if e["ts"] > last["ts"] - 5 * MIN]
            assert r["feat_ts"] == last["ts"], (lid, k, t)
            assert r["x_mean"] == pytest.approx(sum(xs) / len(xs), rel=1e-9), (lid, k, t)
            assert (r["x"], r["tab_ts"]) == (last["x"], last["ts"]), (lid, k, t)
            matched_rolling += 1
        else:
            assert r["feat_ts"] is None and r["x_mean"] is None, (lid, k, t, r)
            assert r["x"] is None and r["tab_ts"] is None, (lid, k, t, r)
        # (b) window feature: the latest complete 1-minute window (window_end <= t)
        windows: dict[int, list[dict]] = defaultdict(list)
        for e in past:
            windows[e["ts"] // MIN * MIN].append(e)
        complete = [s for s in windows if s + MIN <= t]
        if complete:
            w = windows[max(complete)]
            assert r["x_max"] == max(e["x"] for e in w), (lid, k, t)
            assert r["last_ts"] == max(e["ts"] for e in w), (lid, k, t)
            matched_window += 1
        else:
            assert r["x_max"] is None and r["last_ts"] is None, (lid, k, t, r)
        # no carried source timestamp is after the label
        for c in ("feat_ts", "last_ts", "tab_ts"):
            assert r[c] is None or r[c] <= t, (lid, c, r)
    assert matched_rolling > 100 and matched_window > 100

    # the naive join (as of window_start) would have leaked: the window containing the label's
    # time has events after it
    wins = window_feat.collect().to_pandas().sort_values("window_start")
    lab_df = labels.to_pandas().sort_values("ts")
    naive = pd.merge_asof(lab_df, wins, left_on="ts", right_on="window_start", by="k", direction="backward")
    leaks = naive[naive["last_ts"] > naive["ts"]]
    assert len(leaks) > 10
    for lid in leaks["lid"]:
        r = got[int(lid)]
        assert r["last_ts"] is None or r["last_ts"] <= r["ts"]
        assert r["last_ts"] != naive.loc[naive["lid"] == lid, "last_ts"].item()


# -- 7. backfill / follow parity -------------------------------------------------------------------


EV_SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("x", pa.float64())])
Q_SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("q", pa.float64())])
END = "__end__"
FEATURES = ["x_mean", "x_ewm_mean", "x_lag1", "q"]


def parity_pipeline(ev_topic, q_topic) -> rb.Pipeline:
    ev = rb.Pipeline.read(ev_topic, timestamp="ts", lateness="2s", schema=EV_SCHEMA)
    q = rb.Pipeline.read(q_topic, timestamp="ts", lateness="2s", schema=Q_SCHEMA)
    return (
        ev.rolling(by="k", period="1m", x_mean=rb.mean("x"))
        .ewm_mean("x", by="k", half_life="30s")
        .lag("x", by="k", n=1)
        .select("k", "ts", "x", "x_mean", "x_ewm_mean", "x_lag1")
        .join_asof(q.select("k", "ts", "q"), on="ts", by="k")
    )


def parity_chunks(seed: int = 8) -> tuple[list[tuple[list[dict], list[dict]]], int, int, pd.DataFrame, pd.DataFrame]:
    """Events and quotes in one arrival order (shuffled within 2 s), cut into chunks of
    (events, quotes)."""
    rng = random.Random(seed)
    n_ev, n_q = 500, 150
    ev_ts = sorted(rng.sample(range(0, 15 * MIN), n_ev))
    q_ts = sorted(rng.sample(range(0, 15 * MIN), n_q))
    evs = [{"k": f"k{rng.randrange(4)}", "ts": t, "x": round(rng.gauss(0, 3), 3), "_src": "ev"} for t in ev_ts]
    qs = [{"k": f"k{rng.randrange(4)}", "ts": t, "q": round(rng.uniform(90, 110), 2), "_src": "q"} for t in q_ts]
    arrival = shuffled_within(sorted(evs + qs, key=lambda r: r["ts"]), 2000, seed)
    chunks = []
    for i in range(0, len(arrival), 40):
        part = arrival[i : i + 40]
        chunks.append(
            (
                [{c: r[c] for c in EV_SCHEMA.names} for r in part if r["_src"] == "ev"],
                [{c: r[c] for c in Q_SCHEMA.names} for r in part if r["_src"] == "q"],
            )
        )
    ev_df = pd.DataFrame([{c: r[c] for c in EV_SCHEMA.names} for r in evs])
    q_df = pd.DataFrame([{c: r[c] for c in Q_SCHEMA.names} for r in qs])
    return chunks, n_ev, 15 * MIN, ev_df, q_df


def produce_chunk(ev_topic, q_topic, ev_rows: list[dict], q_rows: list[dict]) -> None:
    if ev_rows:
        ev_topic.produce_batch(pa.Table.from_pylist(ev_rows, schema=EV_SCHEMA), key="k", timestamp="ts")
    if q_rows:
        q_topic.produce_batch(pa.Table.from_pylist(q_rows, schema=Q_SCHEMA), key="k", timestamp="ts")


def produce_sentinels(ev_topic, q_topic, end: int) -> None:
    """A far-future record on every partition of both topics, so every watermark passes all the
    real events (the quotes' further still, so the join releases the events' sentinels too)."""
    for p in range(ev_topic.partitions):
        ev_topic.produce({"k": END, "ts": end, "x": 0.0}, key=END, timestamp=end, partition=p)
    for p in range(q_topic.partitions):
        q_topic.produce({"k": END, "ts": end + 60 * MIN, "q": 0.0}, key=END, timestamp=end + 60 * MIN, partition=p)


def feature_rows(tbl: pa.Table) -> dict[tuple[str, int], tuple]:
    out = {}
    for r in tbl.to_pylist():
        if r["k"] == END:
            continue
        kt = (r["k"], r["ts"])
        assert kt not in out, f"{kt} emitted twice"
        out[kt] = tuple(r[c] for c in FEATURES)
    return out


def test_backfill_and_follow_mode_give_identical_features(log):
    chunks, n_ev, span, ev_df, q_df = parity_chunks()
    end = span + 60 * MIN

    # (a) backfill: bounded run over topics that already hold everything
    ev_a, q_a = log.topic("ev-a", partitions=2), log.topic("q-a", partitions=2)
    for ev_rows, q_rows in chunks:
        produce_chunk(ev_a, q_a, ev_rows, q_rows)
    produce_sentinels(ev_a, q_a, end)
    res_a = parity_pipeline(ev_a, q_a).run()
    assert res_a.late.num_rows == 0
    backfill = feature_rows(res_a.output)
    assert len(backfill) == n_ev

    # sanity of the backfill itself: the as-of quote matches pandas merge_asof
    ref = pd.merge_asof(ev_df.sort_values("ts"), q_df.sort_values("ts"), on="ts", by="k", direction="backward")
    for k, t, q in zip(ref["k"], ref["ts"], ref["q"]):
        got_q = backfill[(k, int(t))][3]
        assert (got_q is None and pd.isna(q)) or got_q == q, (k, t, got_q, q)

    # (b) follow: the same definition started on fresh topics while the events are appended
    ev_b, q_b = log.topic("ev-b", partitions=2), log.topic("q-b", partitions=2)
    batches: list[pa.RecordBatch] = []
    p = parity_pipeline(ev_b, q_b).write(batches.append)
    p.start()
    try:
        def real_rows() -> int:
            bs = list(batches)
            return sum(b.num_rows for b in bs) - sum(b.column("k").to_pylist().count(END) for b in bs)

        for ev_rows, q_rows in chunks:
            produce_chunk(ev_b, q_b, ev_rows, q_rows)
            time.sleep(0.005)
        # the watermarks advance with the data: most rows come out before the sentinels
        wait_until(lambda: real_rows() >= n_ev // 2, timeout=10.0, what="rows emitted while following")
        produce_sentinels(ev_b, q_b, end)
        wait_until(lambda: real_rows() >= n_ev, timeout=10.0, what=f"{n_ev} feature rows in follow mode")
    finally:
        res_b = p.stop()
    assert res_b.late.num_rows == 0
    assert all(m.get("late_records", 0) == 0 for m in res_b.metrics), res_b.metrics
    follow = feature_rows(pa.Table.from_batches(batches))
    assert follow.keys() == backfill.keys()
    diffs = {kt: (follow[kt], backfill[kt]) for kt in backfill if follow[kt] != backfill[kt]}
    assert not diffs, f"{len(diffs)} rows differ (follow, backfill), e.g. {list(diffs.items())[:3]}"


def test_a_lookup_racing_a_new_batch_never_pairs_one_view_with_another_views_index(monkeypatch):
    """``get`` took the table's view, then built (and kept) its key index; a batch absorbed in
    between replaced the view, and the kept index was then used with the new view: ``get("a")``
    returned b's row (or raised IndexError) while the table ran, and after it stopped."""
    import riverbed.table as table_mod

    t = rb.Pipeline.read(pa.table({"k": ["a", "b"], "v": [1, 2], "ts": [0, 1]}), timestamp="ts").to_table("k")
    t.run()
    orig = table_mod.Table.to_arrow
    fired = []

    def to_arrow_then_absorb(self):  # the engine thread delivers a batch right after the view is taken
        view = orig(self)
        if not fired:
            fired.append(True)
            self._absorb(pa.record_batch({"k": ["a"], "v": [3], "ts": [2]}))
        return view

    monkeypatch.setattr(table_mod.Table, "to_arrow", to_arrow_then_absorb)
    assert t.get("a") == {"k": "a", "v": 1, "ts": 0}  # the view it read: consistent
    monkeypatch.setattr(table_mod.Table, "to_arrow", orig)
    assert t.get("a") == {"k": "a", "v": 3, "ts": 2}
    assert t.get("b") == {"k": "b", "v": 2, "ts": 1}


def test_a_topic_table_deletes_only_for_a_null_value_not_for_a_json_object_of_nulls(log):
    """``log.table``: a tombstone is a record whose value is null. A JSON object whose fields
    are all null (``{"px": null}``, ``{}``, or fields the schema lacks) decodes to the same
    nulls, and used to delete its key too."""
    t = log.topic("quotes", partitions=2, cleanup="compact")
    for key, value in [("a", b'{"px": 1.0}'), ("b", b'{"px": 2.0}'), ("c", b'{"px": 3.0}'), ("c", None), ("d", b'{"px": null}'), ("e", b"{}"), ("b", b'{"qty": 5}')]:
        t.produce(value, key=key, timestamp=1)
    table = log.table(t, schema=pa.schema([("px", pa.float64())]))
    want = {b"a": 1.0, b"b": None, b"d": None, b"e": None}  # c deleted; b's last value has no px
    assert {r["key"]: r["px"] for r in table.to_arrow().to_pylist()} == want
    assert table.get("c") is None and table.get("d") == {**table.get("d"), "px": None}


# -- dictionary (categorical) columns with a null entry ---------------------------------------------


def _categorical(values: list, how: str) -> pa.Array:
    """``values`` dictionary-encoded: ``"encode"`` puts null in the dictionary (an index points to
    it, as ``pc.dictionary_encode(null_encoding="encode")`` makes), ``"mask"`` gives null indices
    (as pandas and polars do)."""
    import pyarrow.compute as pc

    return pc.dictionary_encode(pa.array(values, pa.string()), null_encoding=how)


@pytest.mark.parametrize("encoded", ["k", "v", "kv"])
def test_a_categorical_with_a_null_in_its_dictionary_over_several_batches(encoded):
    """A dictionary column whose dictionary holds a null entry, in a stream of several batches:
    ``to_arrow()`` failed in pyarrow's ``unify_dictionaries`` ("Cannot yet unify dictionaries
    with nulls"); it gives the rows of the same stream without dictionaries, and keeps the
    column dictionary-encoded."""
    rng = random.Random(len(encoded) * 7 + ord(encoded[-1]))
    keys = ["a", "b", "c", "d", None]
    vals = ["x", "y", "z", None]
    rows = [{"k": rng.choice(keys), "v": rng.choice(vals), "ts": i} for i in range(200)]
    want = latest_by(rows, lambda r: r["k"])  # a null key is a key of its own

    batches = []
    for n, i in enumerate(range(0, len(rows), 13)):
        chunk = rows[i : i + 13]
        how = "encode" if n % 3 != 1 else "mask"  # batches of both kinds of categorical null
        cols = {c: pa.array([r[c] for r in chunk], pa.string()) for c in ("k", "v")}
        for c in encoded:
            cols[c] = _categorical([r[c] for r in chunk], how)
        batches.append(pa.record_batch({**cols, "ts": pa.array([r["ts"] for r in chunk], pa.int64())}))
    assert any(b.column(encoded[0]).dictionary.null_count for b in batches)

    t = rb.Pipeline.read(batches, timestamp="ts").to_table("k")
    got = t.to_arrow()
    assert got.to_pylist() == list(want.values())
    for c in encoded:
        assert pa.types.is_dictionary(got.schema.field(c).type)
    for k, r in want.items():
        assert t.get(k) == r
    plain = rb.Pipeline.read(pa.Table.from_pylist(rows, schema=pa.schema([("k", pa.string()), ("v", pa.string()), ("ts", pa.int64())])), timestamp="ts")
    assert got.to_pylist() == plain.to_table("k").to_arrow().to_pylist()


# -- a table run again ----------------------------------------------------------------------------


def test_a_restarted_table_keeps_its_contents_until_the_new_run_replaces_them():
    """``start()`` after ``stop()`` (and ``run()`` again) emptied the table until the new run
    delivered rows: a reader right after the second ``start()`` saw nothing. The contents stay
    readable, as a Kafka Streams store outlives a restart; the new run's updates apply over them.
    A restart the engine refuses (a single-use stream runs once) emptied the table too."""
    import threading

    rows = make_updates(n=300, keys=20, seed=11)
    want = latest_by(rows, lambda r: r["k"])
    tbl = pa.Table.from_pylist(rows, schema=UPD_SCHEMA)
    gate = threading.Event()
    held = threading.Event()
    hold = [False]

    def maybe_hold(b: pa.RecordBatch) -> pa.RecordBatch:  # the second run's batches wait for the gate
        if hold[0]:
            held.set()
            gate.wait(20)
        return b

    def check(t: rb.Table) -> None:
        assert t.to_arrow().to_pylist() == list(want.values())
        for k, r in want.items():
            assert t.get(k) == r

    t = rb.Pipeline.read(tbl, timestamp="ts", batch_size=40).map_batches(maybe_hold).to_table("k")
    t.start()
    wait_until(lambda: not t.running, what="the first run to end")
    t.stop()
    check(t)

    hold[0] = True
    t.start()
    check(t)  # at once, before the new run delivered anything
    assert held.wait(10)
    check(t)  # while the new run is held
    gate.set()
    wait_until(lambda: not t.running, what="the second run to end")
    t.stop()
    check(t)  # the replay applied over the contents: the same table

    # run() again rebuilds aside: a reader meanwhile sees the previous contents
    gate.clear()
    held.clear()
    runner = threading.Thread(target=t.run)
    runner.start()
    assert held.wait(10)
    check(t)
    gate.set()
    runner.join(20)
    assert not runner.is_alive()
    check(t)

    # a single-use stream cannot run again: the refused restart leaves the contents as they were
    s = rb.Pipeline.read(iter(tbl.to_batches(max_chunksize=40)), timestamp="ts").to_table("k")
    s.start()
    wait_until(lambda: not s.running, what="the stream to end")
    s.stop()
    check(s)
    s.start()  # the engine's refusal comes with stop()
    check(s)
    wait_until(lambda: not s.running, what="the refused run to end")
    with pytest.raises(rb.exceptions.PlanError, match="only be run once"):
        s.stop()
    check(s)
    with pytest.raises(rb.exceptions.PlanError, match="only be run once"):
        s.run()
    check(s)


def test_a_restarted_topic_table_applies_the_new_records_over_its_contents(log):
    """The new run of a restarted topic table reads the topic again and follows it: its records,
    old and new, update the contents it kept (deletes included)."""
    topic = log.topic("q", partitions=2, cleanup="compact")
    rng = random.Random(3)
    sent: list[tuple[str, object]] = []

    def produce(n: int) -> None:
        for _ in range(n):
            k = f"k{rng.randrange(12)}"
            v = None if rng.random() < 0.15 else {"px": rng.randrange(1000)}
            topic.produce(v, key=k, timestamp=1_700_000_000_000 + len(sent))
            sent.append((k, v))

    def expected() -> dict:
        out: dict = {}
        for k, v in sent:
            if v is None:
                out.pop(k.encode(), None)
            else:
                out[k.encode()] = v["px"]
        return out

    produce(150)
    t = log.table(topic, schema=pa.schema([("px", pa.int64())]))
    got = lambda: {r["key"]: r["px"] for r in t.to_arrow().to_pylist()}  # noqa: E731
    assert got() == expected()
    t.start()
    assert got() == expected()  # what log.table loaded, at once
    produce(100)
    wait_until(lambda: got() == expected(), what="the new records")
    t.stop()
    produce(100)
    t.start()
    wait_until(lambda: got() == expected(), what="the records sent while stopped")
    t.stop()
    for k, px in expected().items():
        assert t.get(k.decode())["px"] == px


def test_a_table_of_an_empty_topic_asks_for_a_schema_and_follows_it_with_one(log):
    """``log.table`` infers its columns from the topic's JSON values: of an empty topic (or one of
    tombstones only) it is an error naming the topic and saying to pass ``schema=``; with it, the
    table is empty, has the columns, and fills when it follows the topic."""
    empty = log.topic("empty", partitions=2, cleanup="compact")
    tombs = log.topic("tombs", partitions=1, cleanup="compact")
    tombs.produce(None, key="a", timestamp=1)
    for topic, name in [("empty", "empty"), (empty, "empty"), (tombs, "tombs")]:
        with pytest.raises(rb.exceptions.PlanError, match=rf"topic '{name}' has no JSON records.*pass schema="):
            log.table(topic)

    t = log.table("empty", schema=pa.schema([("px", pa.float64())]))
    assert len(t) == 0 and t.get("a") is None
    assert t.to_arrow().schema.names == ["px", "key", "timestamp", "partition", "offset"]
    rng = random.Random(5)
    want: dict = {}
    t.start()
    for i in range(60):
        k, px = f"k{rng.randrange(8)}", rng.randrange(100) / 4
        empty.produce({"px": px}, key=k, timestamp=1 + i)
        want[k.encode()] = px
    wait_until(lambda: {r["key"]: r["px"] for r in t.to_arrow().to_pylist()} == want, what="the produced records")
    t.stop()
