"""Checkpoints carry data, never code (issue 14, finding 7).

``stateful_map`` state is kept with a data-only codec by default and read back as the same types;
``state_codec="pickle"`` is an opt-in; every checkpoint file is signed with HMAC-SHA256 under the
log's key, so a crafted checkpoint (valid CRC, no valid signature) is refused before anything in
it is unpickled, and edited positions or sink end offsets are never applied.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import math
import os
import pickle
import stat
import struct
import warnings
import zoneinfo
from collections import OrderedDict, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import riverbed as rb
from riverbed import _state_codec
from riverbed.exceptions import CheckpointError, PlanError, RiverbedError, StorageError

# -- the codec --------------------------------------------------------------------------------


def same(a: object, b: object) -> bool:
    """Equal values of exactly the same types, NaN equal to NaN (and -0.0 told from 0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(k1, k2) and same(a[k1], b[k2]) for k1, k2 in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, (pa.Table, pa.RecordBatch)):
        return a.schema == b.schema and a.equals(b)
    if isinstance(a, decimal.Decimal):
        return str(a) == str(b)
    if isinstance(a, dt.datetime):
        return a == b and a.tzinfo == b.tzinfo and a.fold == b.fold and a.utcoffset() == b.utcoffset()
    return a == b


VALUES = [
    None, True, False, 0, -1, 2**200, -(2**70) + 3, 1.5, float("nan"), float("inf"), -float("inf"), -0.0,
    "", "héllo \x00 \U0001f600", "\ud800", b"", b"\x00\xff", bytearray(b"ab"),
    [1, "a", [2.0]], (1, (2,), ()), {"a": 1, 2: "b", (3, "c"): [None], None: 0.5, False: 0},
    {1, "x", (2, 3)}, frozenset({1.5}), [], (), {},
    dt.datetime(2024, 3, 31, 1, 30), dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc),
    dt.datetime(2024, 10, 27, 2, 30, fold=1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.date(1, 1, 1), dt.time(23, 59, 59, 999999), dt.timedelta(days=-3, microseconds=7),
    decimal.Decimal("-1.2345678901234567890123"), decimal.Decimal("NaN"),
    np.array([[1.5, np.nan], [np.inf, -0.0]], dtype=np.float32), np.arange(6, dtype=">i8").reshape(3, 2)[::2],
    np.array(["a", "bc"]), np.array([], dtype=np.uint16), np.datetime64("2024-01-01T00:00:00.001", "ms"),
    np.float64(2.5), np.int8(-3), np.bool_(True),
    pa.table({"a": [1, None], "b": [["x"], []]}), pa.RecordBatch.from_pylist([{"t": dt.datetime(2024, 1, 1)}]),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_the_data_codec_reads_back_the_same_types_and_values(value):
    data = _state_codec.encode({"k": value, ("k", 2): [value]}, "data")
    assert b"RBST" == data[:4] and data[5:6] == b"D"
    back = _state_codec.decode(data, "data")
    assert same(back["k"], value), (back["k"], value)
    assert same(back[("k", 2)], [value])
    # the codec never pickles: no pickle opcode stream in the bytes of plain data
    assert not data[6:].startswith(b"\x80")


def test_a_tuple_stays_a_tuple_and_an_int_an_int():
    back = _state_codec.decode(_state_codec.encode([(1, 2), [1, 2], 1, 1.0, True], "data"), "data")
    assert [type(x) for x in back] == [tuple, list, int, float, bool]


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (defaultdict(int), "collections.defaultdict"),
        (OrderedDict(a=1), "collections.OrderedDict"),
        ({"a": [1, {"b": object()}]}, "state['a'][1]['b'] is a object"),
        (np.array([1, "x"], dtype=object), "dtype object"),
        (lambda x: x, "function"),
        (dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).astimezone(dt.timezone.utc).replace(tzinfo=None), None),
    ],
)
def test_a_type_the_codec_does_not_keep_is_a_typeerror_naming_it(value, named):
    if named is None:  # a naive datetime is kept: the control case
        assert same(_state_codec.decode(_state_codec.encode(value, "data"), "data"), value)
        return
    with pytest.raises(TypeError, match="state_codec='pickle'") as e:
        _state_codec.encode(value, "data")
    assert named in str(e.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_the_data_decoder_refuses_any_bytes_with_its_own_error(body):
    for kind in (b"D",):
        try:
            _state_codec.decode(b"RBST\x01" + kind + body, "data")
        except _state_codec.StateDecodeError:
            pass


def test_pickled_state_is_refused_by_the_data_codec_and_unheadered_pickle_always():
    pickled = _state_codec.encode({"a": 1}, "pickle")
    with pytest.raises(_state_codec.StateDecodeError, match="state_codec='pickle'"):
        _state_codec.decode(pickled, "data")
    assert _state_codec.decode(pickled, "pickle") == {"a": 1}
    with pytest.raises(_state_codec.StateDecodeError, match="older riverbed"):
        _state_codec.decode(pickle.dumps({"a": 1}), "pickle")


# -- pipelines --------------------------------------------------------------------------------


def _state_fn(state, records):
    """A state of many types: what the default codec must keep exactly across restarts."""
    state = dict(state)
    assert type(state["last"]) in (tuple, type(None)) and type(state["seen"]) is list and math.isnan(state["nan"]) == (state["n"] > 0)
    assert state["hist"].dtype == np.int64 and int(state["hist"].sum()) == state["n"]
    out = []
    for r in records:
        state["n"] += 1
        state["sum"] += r["v"]
        out.append({"k": r["k"], "ts": r["ts"], "n": state["n"], "s": state["sum"], "last": str((state["last"], state["seen"]))})
        state["last"] = (r["ts"], r["k"])
        state["seen"] = [*state["seen"], r["v"]][-3:]
        state["hist"] = state["hist"] + np.array([r["v"] > 0.5, r["v"] <= 0.5], dtype=np.int64)
    state["nan"] = float("nan")
    return state, out


def _initial():
    return {"n": 0, "sum": 0.0, "last": None, "seen": [], "hist": np.zeros(2, dtype=np.int64), "nan": 0.0}


def _events(log: rb.Log, n: int, start: int = 0) -> None:
    # k3 goes to partition 0, k0-k2 to partition 1: both partitions have data, so a bounded
    # run releases records (and its checkpoints hold state) before the end of its input (an
    # empty partition would hold the watermark until then).
    rows = [{"k": f"k{i % 4}", "ts": (start + i) * 10, "v": ((start + i) * 37 % 100) / 100} for i in range(n)]
    log.topic("events", partitions=2).produce_batch(pa.Table.from_pylist(rows), key="k", timestamp="ts")


OUT = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("n", pa.int64()), ("s", pa.float64()), ("last", pa.string())])


def _pipeline(log: rb.Log, codec: str = "data", fn=_state_fn, initial=_initial) -> rb.Pipeline:
    schema = pa.schema([("k", pa.string()), ("ts", pa.int64()), ("v", pa.float64())])
    return rb.Pipeline.read(log["events"], timestamp="ts", schema=schema).stateful_map(
        fn, by="k", initial=initial, schema=OUT, state_codec=codec
    )


def _output(log: rb.Log, topic: str = "out") -> list[tuple]:
    import json

    rows = [json.loads(v) for v in log[topic].read().column("value").to_pylist()]
    return sorted((r["k"], r["ts"], r["n"], round(r["s"], 9), r["last"]) for r in rows)


@pytest.mark.parametrize("codec", ["data", "pickle"])
def test_a_resumed_stateful_map_equals_one_run_over_everything(tmp_path, codec):
    """State restored from a checkpoint continues exactly where it was: per-key counts, float sums,
    tuples, lists and numpy arrays (a wrong type or value would change the output)."""
    with rb.Log(tmp_path / "a", cleanup_interval=None) as log:
        _events(log, 300)
        _pipeline(log, codec).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        _events(log, 300, start=300)
        _pipeline(log, codec).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        resumed = _output(log)
    with rb.Log(tmp_path / "b", cleanup_interval=None) as log:
        _events(log, 300)
        _events(log, 300, start=300)
        _pipeline(log, codec).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        whole = _output(log)
    assert len(whole) == 600 and whole[-1][2] == 150  # k3: every 4th record
    assert resumed == whole


def test_a_state_the_codec_does_not_keep_fails_at_checkpoint_time_naming_it(tmp_path):
    def counts(state, records):
        state = state if state is not None else defaultdict(int)  # a dict subclass: not data
        for r in records:
            state[r["k"]] += 1
        return state, []

    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 10)
        p = _pipeline(log, fn=counts, initial=None)
        with pytest.raises(TypeError, match=r"collections\.defaultdict.*state_codec='pickle'"):
            p.write(log.topic("out", partitions=1)).run(name="job", progress=False)
        # with the opt-in it checkpoints (and an unnamed run never needs the codec)
        _pipeline(log, "pickle", fn=counts, initial=None).write(log.topic("out2", partitions=1)).run(name="job2", progress=False)
        _pipeline(log, fn=counts, initial=None).collect(progress=False)


def test_the_checkpoint_key_is_private_and_kept_in_the_log(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 10)
        _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
    key = tmp_path / "~checkpoints" / "checkpoint.key"
    assert len(key.read_bytes()) == 32
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


# -- crafted and edited checkpoint files ------------------------------------------------------


def _crc32c(data: bytes) -> int:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class Ckpt:
    """A checkpoint file (versions 2 and 3 share a layout) taken apart and put together again, as
    an attacker would."""

    def __init__(self, raw: bytes) -> None:
        assert raw[:8] in (b"RBCKPT02", b"RBCKPT03") and raw.endswith(b"RBCKSIG1"), raw[:8]
        self.magic = raw[:8]
        body = raw[8 : len(raw) - 4 - 40]
        self.pos = 0
        self.b = body
        self.seq = self.u64()
        self.plan = self.blob()
        self.sources = []
        for _ in range(self.u64()):
            positions = [self.i64() for _ in range(self.u64())]
            max_ts = []
            for _ in range(self.u64()):
                max_ts.append(self.i64() if self.b[self.take(1)] else None)
            self.sources.append((positions, max_ts))
        self.sinks = [(self.blob(), [self.i64() for _ in range(self.u64())]) for _ in range(self.u64())]
        self.ops = [[self.blob(), self.blob(), self.blob()] for _ in range(self.u64())]
        assert self.pos == len(body)

    def take(self, n: int) -> int:
        self.pos += n
        return self.pos - n

    def u64(self) -> int:
        return struct.unpack_from("<Q", self.b, self.take(8))[0]

    def i64(self) -> int:
        return struct.unpack_from("<q", self.b, self.take(8))[0]

    def blob(self) -> bytes:
        n = self.u64()
        return self.b[self.take(n) : self.pos]

    def encode(self, key: bytes | None) -> bytes:
        q, i = (lambda v: struct.pack("<Q", v)), (lambda v: struct.pack("<q", v))
        blob = lambda v: q(len(v)) + v  # noqa: E731
        body = q(self.seq) + blob(self.plan) + q(len(self.sources))
        for positions, max_ts in self.sources:
            body += q(len(positions)) + b"".join(i(p) for p in positions) + q(len(max_ts))
            body += b"".join(b"\x00" if t is None else b"\x01" + i(t) for t in max_ts)
        body += q(len(self.sinks)) + b"".join(blob(n) + q(len(e)) + b"".join(i(x) for x in e) for n, e in self.sinks)
        body += q(len(self.ops)) + b"".join(blob(a) + blob(b) + blob(c) for a, b, c in self.ops)
        raw = self.magic + body + struct.pack("<I", _crc32c(body))
        if key is not None:
            raw += hmac.new(key, raw, hashlib.sha256).digest() + b"RBCKSIG1"
        return raw


def _newest(d: Path) -> Path:
    return max(d.glob("*.ckpt"))


def _evil_pickle(marker: Path) -> bytes:
    # What a crafted checkpoint holds: a pickle that runs code when loaded (here: creates a file).
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    return pickle.dumps({"k0": Payload()})


def _replace_state(op_state: bytes, new: bytes) -> bytes:
    """A stateful_map operator's state with its function's part (the last length-prefixed blob,
    b"RBST..."): everything before it kept."""
    at = op_state.rindex(b"RBST\x01")
    (n,) = struct.unpack_from("<Q", op_state, at - 8)
    assert at + n == len(op_state)
    return op_state[: at - 8] + struct.pack("<Q", len(new)) + new


@pytest.mark.parametrize("forgery", ["unsigned", "stale signature", "another log's key"])
def test_a_crafted_pickle_checkpoint_is_refused_before_anything_is_unpickled(tmp_path, forgery):
    marker = tmp_path / "payload-ran"
    with rb.Log(tmp_path / "log", cleanup_interval=None) as log:
        _events(log, 50)
        _pipeline(log, "pickle").write(log.topic("out", partitions=1)).run(name="job", progress=False)
        before = _output(log)
    d = tmp_path / "log" / "~checkpoints" / "job"
    raw = _newest(d).read_bytes()
    c = Ckpt(raw)
    c.seq += 1
    op = next(o for o in c.ops if b"RBST\x01P" in o[2])
    op[2] = _replace_state(op[2], b"RBST\x01P" + _evil_pickle(marker))
    key = {"unsigned": None, "stale signature": None, "another log's key": os.urandom(32)}[forgery]
    forged = c.encode(key)
    if forgery == "stale signature":
        forged += raw[-40:]
    (d / f"{c.seq:020}.ckpt").write_bytes(forged)
    for f in d.glob("*.ckpt"):  # only the forged one left: nothing to fall back to
        if f.name != f"{c.seq:020}.ckpt":
            f.unlink()
    with rb.Log(tmp_path / "log", cleanup_interval=None) as log:
        with pytest.raises(PlanError, match="signature|not signed"):
            _pipeline(log, "pickle").write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert not marker.exists(), "the crafted checkpoint's pickle ran"
        assert _output(log) == before  # and the output topic was not rolled back by it


def test_pickle_is_only_loaded_from_a_checkpoint_this_log_signed(tmp_path):
    """The control for the test above: the same crafted file signed with this log's key is loaded
    under state_codec="pickle" (so the pickle really would run, and the signature is what
    stops it), and refused under the default codec before it is unpickled."""
    marker = tmp_path / "payload-ran"
    with rb.Log(tmp_path / "log", cleanup_interval=None) as log:
        _events(log, 50)
        _pipeline(log, "pickle").write(log.topic("out", partitions=1)).run(name="job", progress=False)
    d = tmp_path / "log" / "~checkpoints" / "job"
    key = (tmp_path / "log" / "~checkpoints" / "checkpoint.key").read_bytes()
    c = Ckpt(_newest(d).read_bytes())
    c.seq += 1
    op = next(o for o in c.ops if b"RBST\x01P" in o[2])
    op[2] = _replace_state(op[2], b"RBST\x01P" + _evil_pickle(marker))
    (d / f"{c.seq:020}.ckpt").write_bytes(c.encode(key))
    with rb.Log(tmp_path / "log", cleanup_interval=None) as log:
        with pytest.raises(CheckpointError, match="pickled"):
            _pipeline(log, "data").write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert not marker.exists()
        with pytest.raises(Exception):  # noqa: B017 - the payload's open() result is not a state dict
            _pipeline(log, "pickle").write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert marker.exists()


def _signed_edit(tmp_path: Path, edit) -> None:
    """Edit the newest checkpoint of "job" and sign it with the log's own key (as only someone
    holding the key could): what is left to refuse it is the check against the topics."""
    d = tmp_path / "~checkpoints" / "job"
    key = (tmp_path / "~checkpoints" / "checkpoint.key").read_bytes()
    f = _newest(d)
    c = Ckpt(f.read_bytes())
    edit(c)
    f.write_bytes(c.encode(key))


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda c: c.sources[0][0].__setitem__(0, 10**12), r"position 1000000000000 in events/0 is beyond the partition's end \(\d+\)"),
        (lambda c: c.sources[0][0].__setitem__(1, -5), "position -5 in events/1 is negative"),
        (lambda c: c.sources[0][0].append(0), "positions for 3 partitions of topic 'events', which has 2"),
        (lambda c: c.sinks.__setitem__(0, (c.sinks[0][0], [0, 0])), "end offsets for 2 partitions of output topic 'out', which has 1"),
        (lambda c: c.sinks.__setitem__(0, (c.sinks[0][0], [-1])), "end offset -1 for output out/0 is negative"),
    ],
    ids=["beyond-end", "negative", "partitions", "sink-partitions", "sink-negative"],
)
def test_edited_positions_are_refused_naming_the_topic_and_partition(tmp_path, edit, says):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 50)
        _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        before = _output(log)
    _signed_edit(tmp_path, edit)
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        with pytest.raises(PlanError, match=says):
            _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert _output(log) == before


def test_an_unsigned_sink_end_of_zero_never_truncates_the_output(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 50)
        _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        before = _output(log)
        assert len(before) == 50
    d = tmp_path / "~checkpoints" / "job"
    f = _newest(d)
    c = Ckpt(f.read_bytes())
    c.sinks = [(c.sinks[0][0], [0])]
    c.seq += 1
    (d / f"{c.seq:020}.ckpt").write_bytes(c.encode(None))
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert any("refused" in str(w.message) for w in caught), [str(w.message) for w in caught]
        assert _output(log) == before


def test_a_forged_checkpoint_raises_a_riverbed_error_not_a_crash(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 5)
        _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
    d = tmp_path / "~checkpoints" / "job"
    for f in d.glob("*.ckpt"):
        f.write_bytes(f.read_bytes()[:-1] + b"X")
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        with pytest.raises(RiverbedError, match="reset=True"):
            _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)


# -- which exception: each kind of failure is its own class (riverbed.exceptions) --------------


def test_every_unusable_checkpoint_is_a_checkpoint_error(tmp_path):
    """Damaged checkpoints (nothing to fall back to) are a CheckpointError, which is a PlanError
    as it always was; the output is not touched."""
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 5)
        _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        before = _output(log)
    for f in (tmp_path / "~checkpoints" / "job").glob("*.ckpt"):
        f.write_bytes(f.read_bytes()[:-1] + b"X")
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        with pytest.raises(CheckpointError, match="every checkpoint in .* is unusable.*reset=True") as e:
            _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert isinstance(e.value, PlanError)
        assert _output(log) == before


@pytest.mark.parametrize(
    ("cut", "says"),
    [
        (lambda s: s[: len(s) // 2], "truncated|mangled|left over|no format"),
        (lambda s: s + b"\x00" * 9, "left over|no format|trailing"),
    ],
    ids=["truncated", "extended"],
)
def test_signed_operator_state_of_another_shape_is_a_checkpoint_error(tmp_path, cut, says):
    """State that is not what the operator wrote (only someone holding the log's key could sign
    it) is refused as a CheckpointError naming what is wrong, not a crash and not a SchemaError."""
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 50)
        _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        before = _output(log)

    def edit(c: Ckpt) -> None:
        for op in c.ops:
            if op[2]:
                op[2] = cut(op[2])

    _signed_edit(tmp_path, edit)
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        with pytest.raises(CheckpointError, match=says):
            _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", progress=False)
        assert _output(log) == before


def test_a_checkpoint_directory_that_cannot_be_made_is_a_storage_error_naming_it(tmp_path):
    """A file where the run's checkpoint directory goes: a StorageError with the path and the
    OS's reason; the file (not riverbed's) is left as it was."""
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _events(log, 5)
        (tmp_path / "~checkpoints").mkdir(exist_ok=True)
        squatter = tmp_path / "~checkpoints" / "job"
        squatter.write_bytes(b"not riverbed's")
        for reset in (False, True):
            with pytest.raises(StorageError, match=r"cannot \w+ .*~checkpoints/job.*(exists|directory)"):
                _pipeline(log).write(log.topic("out", partitions=1)).run(name="job", reset=reset, progress=False)
        assert squatter.read_bytes() == b"not riverbed's"


def test_the_exception_hierarchy_is_the_documented_one():
    from riverbed import exceptions as ex

    parents = {
        "LogError": "RiverbedError", "TopicNotFound": "LogError", "OffsetOutOfRange": "LogError",
        "LogLocked": "LogError", "InternalTopicError": "LogError", "TopicConfigError": "LogError",
        "CorruptLog": "LogError", "DataGap": "CorruptLog", "PlanError": "RiverbedError",
        "CheckpointError": "PlanError", "SchemaError": "RiverbedError", "DecodeError": "RiverbedError",
        "StorageError": "RiverbedError", "KafkaError": "RiverbedError", "KafkaUnreachable": "KafkaError",
        "KafkaAuthenticationError": "KafkaError", "KafkaTopicNotFound": "KafkaError",
        "KafkaTimeout": "KafkaError", "ServerError": "RiverbedError", "UdfError": "RiverbedError",
        "InternalError": "RiverbedError",
    }
    for name, parent in parents.items():
        assert getattr(ex, name).__bases__ == (getattr(ex, parent),), name
    assert ex.RiverbedError.__bases__ == (Exception,)
    native = {n for n, v in vars(rb._core).items() if isinstance(v, type) and issubclass(v, BaseException)}
    assert set(ex.__all__) == native == set(parents) | {"RiverbedError"}
    assert all(n in ex.__doc__ for n in ex.__all__), "the module's tree names every class"
