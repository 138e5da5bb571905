"""Named runs refuse to resume where resuming would corrupt or lose output, each with a
CheckpointError that names what changed, and leave the output topic as it was (found by a
hostile review, session 18)."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

import riverbed as rb
from riverbed import _core
from riverbed.exceptions import CheckpointError, PlanError


def _produce(log: rb.Log, a: int, b: int) -> None:
    ev = log.topic("events")
    for i in range(a, b):
        ev.produce({"ts": 1000 + i * 100, "k": i % 5, "v": i})


def _pipe(log: rb.Log, vtype: pa.DataType, out: str = "out") -> rb.Pipeline:
    sch = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", vtype)])
    return (
        rb.Pipeline.read(log.topic("events"), timestamp="ts", schema=sch)
        .window(rb.tumbling("1s"), by="k")
        .agg(s=rb.sum("v"))
        .write(log.topic(out))
    )


def _values(log: rb.Log, topic: str = "out") -> list[dict]:
    return [json.loads(v) for v in log.topic(topic).read().column("value").to_pylist()]


@pytest.mark.parametrize(("before", "after"), [(pa.int64(), pa.float64()), (pa.float64(), pa.int64()), (pa.int64(), pa.int32())])
def test_a_changed_column_type_is_refused_not_misread(tmp_path, before, after):
    """Window sums kept as one type must not be read back as another (an int64 sum of 185 came
    back as 9.14e-322): the source's signature names its column types."""
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _produce(log, 0, 100)
        _pipe(log, before).run(name="job", progress=False)
        out = _values(log)
        _produce(log, 100, 150)
        with pytest.raises(CheckpointError, match=r"sources changed \(source 'read#0': column 'v' was (Int64|Float64), is (Float64|Int64|Int32)\).*reset=True"):
            _pipe(log, after).run(name="job", progress=False)
        assert _values(log) == out
        # the same types resume, and every sum is right (a brute-force reference)
        _pipe(log, before).run(name="job", progress=False)
        got = {(r["k"], r["window_start"]): r["s"] for r in _values(log)}
        want: dict = {}
        for i in range(150):
            ts = 1000 + i * 100
            key = (i % 5, ts // 1000 * 1000)
            want[key] = want.get(key, 0) + i
        closed = {k: v for k, v in want.items() if k[1] + 1000 <= 1000 + 149 * 100}
        assert {k: got[k] for k in closed} == closed


def test_a_recreated_output_topic_is_refused_naming_it(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _produce(log, 0, 100)
        _pipe(log, pa.int64()).run(name="job", progress=False)
        log.delete_topic("out")
        log.topic("out")
        with pytest.raises(CheckpointError, match=r"end offset \d+ for output out/0 is beyond the partition's end \(0\)"):
            _pipe(log, pa.int64()).run(name="job", progress=False)
        assert _values(log) == []


def test_another_output_topic_is_said(tmp_path):
    """Resuming into another topic writes there only what follows the checkpoint (a grown plan
    may mean to: test_checkpoints' new operator does): never silently."""
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _produce(log, 0, 100)
        _pipe(log, pa.int64()).run(name="job", progress=False)
        before = _values(log)
        _produce(log, 100, 150)
        with pytest.warns(RuntimeWarning, match=r"taken writing to output topic \[\"out\"\]: this run writes to \[\"out2\"\] only what follows it"):
            _pipe(log, pa.int64(), out="out2").run(name="job", progress=False)
        assert _values(log) == before
        later = _values(log, "out2")
        assert later and min(r["window_start"] for r in later) >= max(r["window_start"] for r in before)
        assert isinstance(CheckpointError("x"), PlanError)


def test_bad_run_arguments_are_type_and_value_errors(tmp_path):
    with rb.Log(tmp_path, cleanup_interval=None) as log:
        _produce(log, 0, 10)
        p = _pipe(log, pa.int64())
        for name in ("a\0b", "x" * 201, "tab\there"):
            with pytest.raises(ValueError, match="at most 200 bytes without slashes or control characters"):
                p.run(name=name, progress=False)
        with pytest.raises(TypeError, match="reset must be True or False, got str"):
            p.run(name="job", reset="no", progress=False)
        with pytest.raises(ValueError, match="batch_size must be between 1 and 2147483647"):
            rb.Pipeline.read(log.topic("events"), batch_size=2**70)
        assert not (tmp_path / "~checkpoints" / "job").exists(), "a refused call wrote nothing"


def test_stop_twice_is_not_a_timeout():
    """The second stop() of a native run says the result went to the first (it was a false
    TimeoutError, which a staged group run's refusal surfaced instead of its CheckpointError)."""
    native = rb.Pipeline.read(pa.table({"a": [1, 2, 3]}))._inner
    h = native.start(_core.Sink.collect(), False)
    assert h.wait(30)
    assert h.stop(5)["output"][0].num_rows == 3
    with pytest.raises(RuntimeError, match="already stopped"):
        h.stop(5)


def test_a_map_function_raising_stop_iteration_is_not_the_end_of_its_batch():
    """map() applied with the builtin map() took a StopIteration for the end of the batch: 3 of
    10 records came out, silently."""
    def fn(r):
        if r["a"] == 3:
            raise StopIteration("record 3")
        return r

    p = rb.Pipeline.read(pa.table({"a": list(range(10))})).map(fn)
    with pytest.raises(StopIteration, match="record 3"):
        p.collect(progress=False)
    kept = p.on_error("skip").collect(progress=False)
    assert kept.column("a").to_pylist() == [0, 1, 2, 4, 5, 6, 7, 8, 9]


class _Abort(BaseException):
    pass


@pytest.mark.parametrize("exc", [GeneratorExit, _Abort])
def test_a_base_exception_is_never_skipped(exc):
    def fn(r):
        if r["a"] == 2:
            raise exc("stop here")
        return r

    with pytest.raises(exc, match="stop here"):
        rb.Pipeline.read(pa.table({"a": list(range(5))})).map(fn).on_error("skip").collect(progress=False)
