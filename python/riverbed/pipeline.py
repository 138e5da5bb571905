"""``Pipeline``: an event-time stream pipeline over Arrow record batches, run by the Rust engine.

>>> import riverbed as rb, pyarrow as pa
>>> trades = pa.table({"sym": ["A", "B", "A"], "qty": [5, 7, 1], "ts": [0, 1_000, 61_000]})
>>> p = (rb.Pipeline.read(trades, timestamp="ts")
...        .window(rb.tumbling("1m"), by="sym")
...        .agg(n=rb.count(), qty=rb.sum("qty")))
>>> p.collect().sort_by("sym").column("n").to_pylist()
[1, 1, 1]

A pipeline is immutable: every step returns a new one and checks the plan right away, so a
misspelt column raises ``PlanError`` where the step is written, not when the pipeline runs.

Internally a ``Pipeline`` is a plan (``rust/riverbed-stream/src/plan.rs``) plus the native sources
and Python functions its nodes refer to by index.
"""

from __future__ import annotations

import atexit
import copy
import functools
import itertools
import operator
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from riverbed import _core, _state_codec, _topic_io
from riverbed._keys import key_value as _key_value
from riverbed._tabular import concat as _concat
from riverbed._tabular import conform as _conform
from riverbed._tabular import frame_table as _frame_table
from riverbed._tabular import is_pandas as _is_pandas
from riverbed._tabular import is_polars as _is_polars
from riverbed._tabular import to_batch as _to_batch
from riverbed._units import duration_ms, timeout_s
from riverbed.exceptions import CheckpointError
from riverbed.expr import Expr, _node
from riverbed.windows import Window

if TYPE_CHECKING:
    from riverbed.table import Table

__all__ = ["GroupBy", "Pipeline", "RunResult", "WindowedPipeline"]

_DICT_CHUNK = 10_000
# Rows per batch: an Arrow array's offsets are 32-bit.
_MAX_BATCH = 2**31 - 1
_EMITS = ("final", "update")


@dataclass
class RunResult:
    """What a run produced: the output (empty when writing to a topic), the records dropped as
    late by window operators, and one metrics dict per operator."""

    output: pa.Table
    late: pa.Table
    metrics: list[dict[str, Any]] = field(default_factory=list)
    #: What a named run's checkpoints cost: see ``Pipeline.checkpoint_stats``.
    checkpoints: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        late = sum(m.get("late_records", 0) for m in self.metrics)
        return f"RunResult(output={self.output.num_rows} rows, late={self.late.num_rows} rows, late_records={late})"


# -- helpers ----------------------------------------------------------------------------------


def _batch_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"batch_size must be an int, got {type(value).__name__}")
    if not 1 <= value <= _MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {_MAX_BATCH}, got {value}")
    return value


def _as_schema(schema: object) -> pa.Schema | None:
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    try:
        return pa.schema(schema)  # type: ignore[arg-type]
    except (TypeError, ValueError, pa.ArrowInvalid) as e:
        raise TypeError(f"schema must be a pyarrow Schema (or a list/dict of fields): {e}") from None


def _rolling_agg(name: str, e: object) -> tuple[str, str]:
    """(function, column) of a rolling aggregate such as ``rb.mean("x")``."""
    node = e._node if isinstance(e, Expr) else None
    agg = node.get("agg") if isinstance(node, dict) else None
    inner = (agg or {}).get("expr") or {}
    if agg and "col" in inner:
        return agg["func"], inner["col"]
    raise TypeError(f"rolling: {name}= must be rb.count/sum/mean/min/max/first/last/std/var of one column")


def _positive(n: object, field: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{field} must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{field} must be >= 1, got {n}")
    return n


def _names(cols: tuple[object, ...], op: str) -> list[str]:
    out: list[str] = []
    for c in cols:
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, (list, tuple)):
            out.extend(_names(tuple(c), op))
        elif isinstance(c, Expr) and "col" in c._node:
            out.append(c._node["col"])
        else:
            raise TypeError(
                f"{op} takes column names, got {type(c).__name__}"
                + ("; compute expressions with with_columns() first" if isinstance(c, Expr) else "")
            )
    return out


def _named_exprs(exprs: Mapping[str, object], op: str) -> list[list[Any]]:
    if not exprs:
        raise ValueError(f"{op} needs at least one name=expression")
    return [[name, _node(e)] for name, e in exprs.items()]


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan nodes ``node`` reads from: ``input``, a union's ``inputs``, a join's ``left`` and ``right``."""
    kids = [node[k] for k in ("input", "left", "right") if k in node]
    return kids + list(node.get("inputs", ()))


def _shift(node: dict[str, Any], d_source: int, d_udf: int) -> dict[str, Any]:
    """A copy of the plan ``node`` with its source and UDF indices moved by the given amounts."""
    node = dict(node)
    if node["op"] == "source":
        node["source"] += d_source
    if "udf" in node:  # map_batches, stateful_map
        node["udf"] += d_udf
    for k in ("input", "left", "right"):
        if k in node:
            node[k] = _shift(node[k], d_source, d_udf)
    if "inputs" in node:
        node["inputs"] = [_shift(n, d_source, d_udf) for n in node["inputs"]]
    return node


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for n in _children(node):
        yield from _walk(n)


def _dict_reader(first: dict, rest: Iterator[Any], schema: pa.Schema | None, chunk: int) -> pa.RecordBatchReader:
    """A reader over an iterator of dicts, in batches of ``chunk`` records."""
    head = [first, *itertools.islice(rest, chunk - 1)]
    first_batch = pa.RecordBatch.from_pylist(head, schema=schema)
    schema = first_batch.schema

    def batches() -> Iterator[pa.RecordBatch]:
        yield first_batch
        while True:
            rows = list(itertools.islice(rest, chunk))
            if not rows:
                return
            for r in rows:
                if not isinstance(r, Mapping):
                    raise TypeError(f"read: expected an iterator of dicts, got a {type(r).__name__} after dicts")
            yield pa.RecordBatch.from_pylist(rows, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _batch_reader(first: object, rest: Iterator[Any], schema: pa.Schema | None) -> pa.RecordBatchReader:
    """A reader over an iterator of RecordBatches (or Tables)."""

    def as_batches(item: object) -> list[pa.RecordBatch]:
        if isinstance(item, pa.RecordBatch):
            bs = [item]
        elif isinstance(item, pa.Table):
            bs = item.to_batches()
        else:
            raise TypeError(f"read: expected an iterator of RecordBatches, got a {type(item).__name__}")
        if schema is not None:
            bs = [b.select(schema.names).cast(schema) if not b.schema.equals(schema) else b for b in bs]
        return bs

    first_batches = as_batches(first)
    sch = schema if schema is not None else (first_batches[0].schema if first_batches else first.schema)  # type: ignore[attr-defined]

    def batches() -> Iterator[pa.RecordBatch]:
        yield from first_batches
        for item in rest:
            yield from as_batches(item)

    return pa.RecordBatchReader.from_batches(sch, batches())


def _make_source(
    source: object,
    schema: pa.Schema | None,
    fmt: str,
    batch_size: int | None,
    on_error: str | None = None,
    dead_letter: object = None,
    group: str | None = None,
    start: str = "earliest",
) -> _core.Source:
    # A topic hands over its own source (log.Topic, kafka.KafkaTopic: riverbed._topic_io).
    own = getattr(source, "_riverbed_source", None)
    if own is None and isinstance(source, _core.Topic):
        own = functools.partial(_topic_io.log_source, source)
    if own is not None:
        return own(schema, fmt, batch_size, on_error, dead_letter, group, start)
    if fmt != "json":
        raise ValueError(f"read: format={fmt!r} applies to topics (how their values decode); this source holds columns already")
    if group is not None or start != "earliest":
        raise TypeError("read: group= and start= apply to Kafka topics")
    if on_error is not None:
        raise TypeError("read: on_error= applies to topic sources (values that may not decode); use pipeline.on_error(...) for Python functions")
    if isinstance(source, _core.Source):
        return source
    if isinstance(source, pa.RecordBatch):
        return _core.Source.table(_conform(pa.Table.from_batches([source]), schema), batch_size)
    if isinstance(source, pa.Table):
        return _core.Source.table(_conform(source, schema), batch_size)
    if isinstance(source, pa.RecordBatchReader):  # single-use, possibly unbounded: stream it
        if batch_size is not None:
            raise ValueError("read: batch_size= has no effect on a RecordBatchReader (its batches go through as they come)")
        if schema is not None and not source.schema.equals(schema):
            source = _batch_reader_from_reader(source, schema)
        return _core.Source.stream(source)
    if _is_pandas(source) or _is_polars(source):
        return _core.Source.table(_conform(_frame_table(source), schema), batch_size)
    if hasattr(source, "__arrow_c_stream__"):
        if schema is not None:
            return _core.Source.table(_conform(pa.table(source), schema), batch_size)
        return _core.Source.table(source, batch_size)
    if isinstance(source, (str, bytes, bytearray, Mapping)):
        raise TypeError(
            f"read: cannot read a {type(source).__name__}; pass a Topic, a pyarrow Table/RecordBatch, "
            "a pandas or polars DataFrame, or an iterator of dicts or RecordBatches"
        )
    try:
        it = iter(source)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(
            f"read: cannot read a {type(source).__name__}; pass a Topic, a pyarrow Table/RecordBatch, "
            "a pandas or polars DataFrame, an object with __arrow_c_stream__, or an iterator of dicts "
            "or RecordBatches"
        ) from None
    materialised = isinstance(source, (list, tuple))  # re-runnable: read it into memory
    sentinel = object()
    first = next(it, sentinel)
    if first is sentinel:
        if schema is None:
            raise ValueError("read: the data is empty; pass schema= so the pipeline knows its columns")
        return _core.Source.table(schema.empty_table(), batch_size)
    if isinstance(first, Mapping):
        if materialised:
            return _core.Source.table(pa.Table.from_pylist(list(source), schema=schema), batch_size)  # type: ignore[arg-type]
        return _core.Source.stream(_dict_reader(first, it, schema, batch_size or _DICT_CHUNK))
    if isinstance(first, (pa.RecordBatch, pa.Table)):
        reader = _batch_reader(first, it, schema)
        if materialised:
            return _core.Source.table(reader.read_all(), batch_size)
        if batch_size is not None:
            raise ValueError(
                "read: batch_size= has no effect on an iterator of RecordBatches (its batches go through as they "
                "come); pass a list to re-chunk them"
            )
        return _core.Source.stream(reader)
    raise TypeError(f"read: expected an iterator of dicts or RecordBatches, got one of {type(first).__name__}")


def _batch_reader_from_reader(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        for b in reader:
            yield b.select(schema.names).cast(schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _sink_of(target: object, key: str | None) -> _core.Sink:
    if key is not None and not isinstance(key, str):
        raise TypeError(f"write: key must name a column (str), got {type(key).__name__}")
    own = getattr(target, "_riverbed_sink", None)  # a topic hands over its own (riverbed._topic_io)
    if own is not None:
        return own(key)
    if isinstance(target, _core.Topic):
        return target.sink(key)
    if callable(target):
        if key is not None:
            raise TypeError("write: key applies to topics, not to a callback")
        return _core.Sink.callback(target)
    raise TypeError(f"write: expected a Topic, a KafkaTopic or a callable taking a RecordBatch, got {type(target).__name__}")


def _checkpoint_args(
    name: str | None, interval: object, reset: bool, state_dir: str | None = None
) -> tuple[str | None, int | None, bool, str | None]:
    """The native run's checkpoint arguments. ``checkpoint_interval`` (default: 10 s) and
    ``reset`` only mean something for a named run: without ``name`` they are an error, not
    ignored."""
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not isinstance(reset, bool):  # reset="no" would be true, and throw the checkpoints away
        raise TypeError(f"reset must be True or False, got {type(reset).__name__}")
    if name is None:
        for given, what in ((interval is not None, "checkpoint_interval"), (bool(reset), "reset=True")):
            if given:
                raise ValueError(
                    f"{what} has no effect without name=: only a named run is checkpointed; "
                    "pass name='...' to checkpoint this run (and resume it after a restart)"
                )
        return None, None, False, state_dir
    ms = None if interval is None else duration_ms(interval, "checkpoint_interval")
    if ms is not None and ms <= 0:
        raise ValueError(f"checkpoint_interval must be positive, got {interval!r}")
    return name, ms, bool(reset), state_dir


# Output topics already warned about (once per process): a topic-to-topic run without a name.
_WARNED_UNNAMED: set[str] = set()


def _workers(workers: object) -> int:
    """The native worker count of ``workers=``: 0 (one per core) for None."""
    if workers is None:
        return 0
    if isinstance(workers, bool) or not hasattr(type(workers), "__index__"):
        raise TypeError(f"workers must be an int (threads) or None (one per core), not {type(workers).__name__}")
    workers = operator.index(workers)  # numpy integers too
    if not 1 <= workers <= 256:
        # every worker tells every other of each watermark step: hundreds cost more than they add
        raise ValueError(f"workers must be between 1 and 256, not {workers}")
    return workers


def _records_read(metrics: list[dict[str, Any]]) -> int:
    """Records the sources of a run have read so far (their ``read`` operators' output)."""
    return sum(int(m.get("records_out", 0)) for m in metrics if str(m.get("operator", "")).startswith("read"))


class _StatefulUdf:
    """The Python half of ``stateful_map``: the engine hands over the ready records of several
    keys, grouped by key and in event-time order; this calls the user's function per key with
    that key's state."""

    def __init__(
        self, fn: Callable, keys: list[str], initial: object, schema: pa.Schema | None, label: str, codec: str = "data"
    ) -> None:
        self.fn, self.keys, self.initial, self.schema, self.__name__ = fn, keys, initial, schema, label
        self.codec = codec
        self.states: dict[Any, Any] = {}
        # Under on_error "skip"/"dead_letter" the engine calls once per key and a key's call may
        # fail: it then gets a copy of the state, so a failure leaves the state as it was.
        self.isolate = False

    def reset(self) -> None:
        """Forget every key's state: a new run starts from ``initial``."""
        self.states = {}

    def __riverbed_snapshot__(self) -> bytes:
        """The per-key states for a checkpoint, as data (``riverbed._state_codec``) unless the
        pipeline chose ``state_codec="pickle"``."""
        try:
            return _state_codec.encode(self.states, self.codec)
        except TypeError as e:
            raise TypeError(f"stateful_map {self.__name__!r}: cannot checkpoint its state: {e}") from None

    def __riverbed_restore__(self, state: bytes) -> None:
        try:
            states = _state_codec.decode(bytes(state), self.codec)
        except _state_codec.StateDecodeError as e:
            raise CheckpointError(f"stateful_map {self.__name__!r}: {e}") from None
        if type(states) is not dict:
            raise CheckpointError(f"stateful_map {self.__name__!r}: the checkpointed state is not a dict of per-key states")
        # A NaN key read back is a new NaN object: key it as the engine does again.
        self.states = {_key_value(k): v for k, v in states.items()}

    def _new_state(self) -> Any:
        return self.initial() if callable(self.initial) else copy.deepcopy(self.initial)

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        keys = self.keys
        out: list[dict[str, Any]] = []
        # All or nothing: states change only when every key's call succeeded, so the engine can
        # retry key by key after an error (on_error="skip"/"dead_letter").
        changed: dict[Any, Any] = {}
        for key, group in itertools.groupby(batch.to_pylist(), key=lambda r: tuple(_key_value(r[k]) for k in keys)):
            k = key[0] if len(key) == 1 else key
            state = self.states[k] if k in self.states else self._new_state()
            if self.isolate:
                state = copy.deepcopy(state)
            result = self.fn(state, list(group))
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(
                    f"stateful_map function {self.__name__!r} must return (new_state, records), got {type(result).__name__}"
                )
            new_state, records = result
            changed[k] = new_state
            if records is not None:
                for r in records:
                    if not isinstance(r, Mapping):
                        raise TypeError(f"stateful_map function {self.__name__!r}: output records must be dicts, got {type(r).__name__}")
                    out.append(dict(r))
        for k, new_state in changed.items():
            if new_state is None:
                self.states.pop(k, None)
            else:
                self.states[k] = new_state
        if not out and self.schema is None:
            return pa.RecordBatch.from_pylist([])  # no columns yet; dropped when collecting
        b = pa.RecordBatch.from_pylist(out, schema=self.schema)
        if self.schema is None:
            self.schema = b.schema
        return b


# -- Pipeline ---------------------------------------------------------------------------------

# Pipelines started in the background: stopped when the interpreter exits, so no run calls into
# Python (a callback sink, a UDF) while it is being torn down.
_RUNNING: weakref.WeakSet[Pipeline] = weakref.WeakSet()


@atexit.register
def _stop_running() -> None:
    for p in list(_RUNNING):
        try:
            p.stop(timeout=5.0)
        except BaseException:  # noqa: BLE001 - exiting: nothing left to report to
            pass



class Pipeline:
    """An event-time pipeline: ``Pipeline.read(...)``, transformations, windows, then ``collect()``,
    ``run()``, ``write(topic).run()`` or ``start()``/``stop()``."""

    def __init__(
        self,
        node: dict[str, Any],
        sources: list[_core.Source],
        udfs: list[Callable[[pa.RecordBatch], pa.RecordBatch]],
        sink: _core.Sink | None = None,
    ) -> None:
        self._node = node
        self._sources = list(sources)
        self._udfs = list(udfs)
        self._sink = sink
        self._inner = _core.Pipeline(node, self._sources, self._udfs)
        self._handle: Any = None
        self._last: RunResult | None = None
        self._on_error: tuple[str | None, _core.Topic | None] = (None, None)
        # Kafka: where named runs keep checkpoints, and the consumer group read with.
        self._state_dir: str | None = None
        self._group: str | None = None
        # Per source: whether it is a topic (log or Kafka), i.e. a run can resume its position.
        self._from_topic: list[bool] = [False] * len(self._sources)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def read(
        cls,
        source: object,
        timestamp: str | None = None,
        lateness: object = "0s",
        idle_timeout: object = "5s",
        schema: object = None,
        name: str | None = None,
        *,
        format: str = "json",
        batch_size: int | None = None,
        on_error: str | None = None,
        dead_letter: object = None,
        group: str | None = None,
        start: str = "earliest",
        partitioned_by: str | Iterable[str] | None = None,
    ) -> Pipeline:
        """A pipeline reading ``source``.

        ``source``: a riverbed ``Topic`` (values decoded as JSON objects into ``schema``, inferred
        when None, or with ``format="raw"`` a binary ``value`` column; plus ``key``, ``timestamp``,
        ``partition`` and ``offset`` columns), a pyarrow Table/RecordBatch/RecordBatchReader, a
        pandas or polars DataFrame, anything with ``__arrow_c_stream__``, or a list or iterator of
        dicts or of RecordBatches.

        ``timestamp`` names the event-time column (int64 ms or a timestamp type); None means the
        record timestamp of a topic. ``lateness``: how far behind the largest event time seen a
        record may arrive without being late (the watermark is that time minus ``lateness``).
        ``idle_timeout`` (follow mode): a partition whose reader is at its end and got nothing new
        for that long stops holding the watermark back; when every input is idle, the watermark
        advances with the wall clock from (max event time - ``lateness``), so windows close on a
        quiet stream. ``batch_size``: rows per batch (results do not depend on it).

        ``on_error`` (topics): what to do with a value that does not decode or does not fit the
        schema — ``"raise"`` (stop, naming topic/partition/offset), ``"skip"`` (drop and count in
        ``metrics()`` as ``errors``) or ``"dead_letter"`` (write it, with its origin and the error
        in ``riverbed.*`` headers, to ``dead_letter`` or the topic ``<topic>.dlq``). Unset: the
        pipeline's ``on_error(...)``, else raise.

        Kafka topics (``kafka.topic(name)``): ``group`` makes this process one member of a
        consumer group — the group's processes split the partitions, each partition runs as its
        own task (its own state, watermark and checkpoints, which move with it on a rebalance),
        and offsets are committed with each checkpoint after the output is written
        (at-least-once). A group run is named after its group unless ``name=`` is given to
        ``run``/``start``. ``start``: ``"earliest"`` or ``"latest"``, where a partition without
        a committed offset or checkpoint begins. Event time defaults to the Kafka record
        timestamp; watermarks are per Kafka partition. A keyed operator (window, group_by, series,
        stateful_map) whose key is not what the topic is partitioned by — its record ``key``, or
        the columns named by ``partitioned_by`` — repartitions through an internal topic, as
        Kafka Streams does (the engine cuts the plan into stages there: ``riverbed-stream``'s
        ``stages.rs``), so N processes give one's results. Topics of a ``union`` or join read
        with the same ``group`` are read together: partition p of each in one task
        (co-partitioned; one partition count, keyed operators keyed by each side's
        partitioning).
        """
        if group is not None and not isinstance(group, str):
            raise TypeError(f"group must be str or None, got {type(group).__name__}")
        if timestamp is not None and not isinstance(timestamp, str):
            raise TypeError(f"timestamp must name a column (str) or be None, got {type(timestamp).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be str or None, got {type(name).__name__}")
        if format not in _topic_io.FORMATS:
            raise ValueError(f"format must be 'json' or 'raw', got {format!r}")
        node: dict[str, Any] = {
            "op": "source",
            "source": 0,
            "timestamp": timestamp,
            "lateness_ms": duration_ms(lateness, "lateness"),
            "idle_timeout_ms": duration_ms(idle_timeout, "idle_timeout"),
            "name": name,
        }
        kafka_state = getattr(source, "_riverbed_state_dir", None)  # a Kafka topic: group runs
        if partitioned_by is not None:
            if kafka_state is None or group is None:
                raise TypeError("read: partitioned_by= applies to Kafka topics read with a group")
            node["partitioned_by"] = _names((partitioned_by,), "partitioned_by")
        src = _make_source(source, _as_schema(schema), format, _batch_size(batch_size), on_error, dead_letter, group, start)
        p = cls(node, [src], [])
        p._from_topic = [hasattr(source, "_riverbed_source") or isinstance(source, _core.Topic)]
        if kafka_state is not None:
            p._state_dir = kafka_state
            p._group = group
        return p

    def _derive(self, node: dict[str, Any], sources: list | None = None, udfs: list | None = None) -> Pipeline:
        p = Pipeline(node, self._sources if sources is None else sources, self._udfs if udfs is None else udfs)
        p._on_error = self._on_error
        p._state_dir = self._state_dir
        p._group = self._group
        p._from_topic = list(self._from_topic) if sources is None else [False] * len(p._sources)
        return p

    def on_error(self, mode: str, dead_letter: object = None) -> Pipeline:
        """The policy for bad records — values of topic sources that do not decode (unless the
        source has its own ``on_error``) and records Python functions (``map``, ``map_batches``,
        ``stateful_map``) raise on: ``"raise"`` (the default: stop with the error, naming the
        record), ``"skip"`` (drop and count them in ``metrics()`` as ``errors``) or
        ``"dead_letter"`` (write each to the ``dead_letter`` topic: the original key, value and
        headers, plus ``riverbed.error``, ``riverbed.operator`` and ``riverbed.source.topic`` /
        ``.partition`` / ``.offset`` headers; a function's failing record is written as a JSON
        object of its columns). A batch a function fails on is retried record by record, so every
        good record still goes through."""
        mode_, dlq = _topic_io.error_args(mode, dead_letter, "on_error")
        if mode_ == "dead_letter" and dlq is None:
            raise ValueError("on_error('dead_letter') needs dead_letter=<a Topic> (e.g. log.topic('bars.dlq'))")
        p = self._derive(self._node)
        p._sink = self._sink
        p._on_error = (mode_, dlq)
        return p

    # -- transformations --------------------------------------------------------------------
    def filter(self, predicate: object) -> Pipeline:
        """Keep the records where ``predicate`` is true (null counts as false)."""
        return self._derive({"op": "filter", "input": self._node, "predicate": _node(predicate)})

    def with_columns(self, **exprs: object) -> Pipeline:
        """Add or replace columns; every expression sees the input columns (not each other)."""
        return self._derive({"op": "with_columns", "input": self._node, "columns": _named_exprs(exprs, "with_columns")})

    def select(self, *columns: str) -> Pipeline:
        """Keep only these columns, in this order."""
        return self._derive({"op": "select", "input": self._node, "columns": _names(columns, "select")})

    def drop(self, *columns: str) -> Pipeline:
        return self._derive({"op": "drop", "input": self._node, "columns": _names(columns, "drop")})

    def rename(self, mapping: Mapping[str, str]) -> Pipeline:
        """Rename columns: ``{"old": "new"}``."""
        if not isinstance(mapping, Mapping):
            raise TypeError(f"rename takes a dict {{old: new}}, got {type(mapping).__name__}")
        for k, v in mapping.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"rename: names must be str, got {k!r}: {v!r}")
        return self._derive({"op": "rename", "input": self._node, "mapping": [[k, v] for k, v in mapping.items()]})

    def union(self, *others: Pipeline) -> Pipeline:
        """Records of this pipeline and of ``others`` (the schemas must be equal)."""
        if not others:
            raise TypeError("union needs at least one other pipeline")
        inputs = list(self._node["inputs"]) if self._node["op"] == "union" else [self._node]
        sources, udfs = list(self._sources), list(self._udfs)
        from_topic = list(self._from_topic)
        for other in others:
            if not isinstance(other, Pipeline):
                raise TypeError(f"union takes Pipelines, got {type(other).__name__}")
            shifted = _shift(other._node, len(sources), len(udfs))
            inputs.extend(shifted["inputs"] if shifted["op"] == "union" else [shifted])
            sources += other._sources
            udfs += other._udfs
            from_topic += other._from_topic
        p = self._derive({"op": "union", "inputs": inputs}, sources, udfs)
        p._from_topic = from_topic
        return p

    def map_batches(self, fn: Callable[[pa.RecordBatch], object], name: str | None = None) -> Pipeline:
        """Apply ``fn`` to every batch: it gets a pyarrow RecordBatch and returns a RecordBatch or
        Table, or a pandas or polars DataFrame. The schema downstream is unknown to the planner."""
        if not callable(fn):
            raise TypeError(f"map_batches takes a function, got {type(fn).__name__}")
        label = name or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
        where = f"map_batches function {label!r}"

        @functools.wraps(fn)
        def udf(batch: pa.RecordBatch) -> pa.RecordBatch:
            return _to_batch(fn(batch), where)

        node = {"op": "map_batches", "input": self._node, "udf": len(self._udfs), "name": label}
        return self._derive(node, udfs=[*self._udfs, udf])

    def map(self, fn: Callable[[dict[str, Any]], dict[str, Any] | None], schema: object = None) -> Pipeline:
        """Apply ``fn`` to every record as a dict; it returns a dict (or None to drop the record).

        The slow path: each batch goes through Python objects. Prefer ``with_columns`` or
        ``map_batches``. ``schema`` fixes the output schema (otherwise inferred from the first
        non-empty result).
        """
        if not callable(fn):
            raise TypeError(f"map takes a function, got {type(fn).__name__}")
        state: dict[str, pa.Schema | None] = {"schema": _as_schema(schema)}

        @functools.wraps(fn)
        def per_record(batch: pa.RecordBatch) -> pa.RecordBatch:
            # A comprehension, not map(): a StopIteration the function raises must stop the run
            # (or be a bad record), not end the batch early as it ends map()'s iteration.
            rows = [r for r in [fn(row) for row in batch.to_pylist()] if r is not None]
            if not rows and state["schema"] is None:
                return pa.RecordBatch.from_pylist([])  # no columns yet; dropped when collecting
            out = pa.RecordBatch.from_pylist(rows, schema=state["schema"])
            if state["schema"] is None:
                state["schema"] = out.schema
            return out

        label = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "map")
        return self.map_batches(per_record, name=f"map({label})")

    def window(self, spec: Window, by: str | Iterable[str] | None = None, emit: str = "final") -> WindowedPipeline:
        """Window the records per key; finish with ``.agg(name=aggregate, ...)``.

        ``emit="final"``: one row per window when it closes; ``"update"``: a row after every batch
        that changed a window (the last row of a window is its final value). Output columns: the
        ``by`` columns, ``window_start``, ``window_end``, then the aggregates.
        """
        if not hasattr(spec, "to_plan"):
            raise TypeError(
                f"window takes rb.tumbling/hopping/sliding/session/count_window(...), got {type(spec).__name__}"
            )
        if emit not in _EMITS:
            raise ValueError(f"emit must be 'final' or 'update', got {emit!r}")
        keys = [] if by is None else _names((by,), "window by")
        return WindowedPipeline(self, spec, keys, emit)

    # -- per-key time series ------------------------------------------------------------------
    def _series(self, op: dict[str, Any] | list[dict[str, Any]], by: object) -> Pipeline:
        keys = [] if by is None else _names((by,), "series by")
        ops = op if isinstance(op, list) else [op]
        node = self._node
        # Chained series steps with the same key run as one operator (one hold, one sort), unless
        # a step reads a column an earlier one adds.
        if node["op"] == "series" and node["by"] == keys:
            added = {next(iter(o.values()))["alias"] for o in node["ops"]}
            if not any(next(iter(o.values())).get("col") in added for o in ops):
                return self._derive({**node, "ops": [*node["ops"], *ops]})
        return self._derive({"op": "series", "input": node, "by": keys, "ops": ops})

    def lag(self, col: str, by: str | Iterable[str] | None = None, n: int = 1, alias: str | None = None) -> Pipeline:
        """Add the value of ``col`` ``n`` records earlier for the same key (pandas ``shift(n)``),
        in event-time order. Records are held until the watermark passes them, so the result never
        depends on arrival order. Default name ``{col}_lag{n}``."""
        return self._series({"lag": {"col": col, "n": _positive(n, "n"), "alias": alias or f"{col}_lag{n}"}}, by)

    def diff(self, col: str, by: str | Iterable[str] | None = None, n: int = 1, alias: str | None = None) -> Pipeline:
        """Add ``col - lag(col, n)`` per key in event-time order. Default name ``{col}_diff``."""
        return self._series({"diff": {"col": col, "n": _positive(n, "n"), "alias": alias or f"{col}_diff"}}, by)

    def pct_change(
        self, col: str, by: str | Iterable[str] | None = None, n: int = 1, alias: str | None = None
    ) -> Pipeline:
        """Add ``col / lag(col, n) - 1`` per key in event-time order. Default ``{col}_pct_change``."""
        return self._series(
            {"pct_change": {"col": col, "n": _positive(n, "n"), "alias": alias or f"{col}_pct_change"}}, by
        )

    def cum_sum(self, col: str, by: str | Iterable[str] | None = None, alias: str | None = None) -> Pipeline:
        """Add the running sum of ``col`` per key in event-time order (nulls are skipped and stay
        null). Default name ``{col}_cum_sum``."""
        return self._series({"cum_sum": {"col": col, "alias": alias or f"{col}_cum_sum"}}, by)

    def time_since_previous(self, by: str | Iterable[str] | None = None, alias: str | None = None) -> Pipeline:
        """Add the milliseconds since the same key's previous record (null for its first).
        Default name ``time_since_previous``."""
        return self._series({"time_since_previous": {"alias": alias or "time_since_previous"}}, by)

    def rolling(
        self,
        by: str | Iterable[str] | None = None,
        period: object = None,
        rows: int | None = None,
        min_periods: int | None = None,
        **aggs: object,
    ) -> Pipeline:
        """Add trailing-window aggregates per key, one value per record (pandas
        ``groupby(by).rolling(period, on=ts)`` or ``rolling(rows)``), in event-time order.

        ``period`` (a duration): the records in ``(t - period, t]``; ``rows``: the record and the
        ``rows - 1`` before it. Each aggregate is ``rb.count/sum/mean/min/max/first/last/std/var``
        of one column, e.g. ``rolling(by="sym", period="5m", px_mean=rb.mean("px"))``. Nulls are
        skipped. ``min_periods``: the non-null values an aggregate needs, else it is null (std
        and var need two in any case); by default ``rows`` for a row window and 1 for a time
        window, as pandas and polars (``min_periods=1`` gives values from a key's first record).
        """
        if (period is None) == (rows is None):
            raise ValueError("rolling: give exactly one of period= or rows=")
        if not aggs:
            raise ValueError("rolling: name at least one aggregate, e.g. x_mean=rb.mean('x')")
        period_ms = None if period is None else duration_ms(period, "period")
        n_rows = None if rows is None else _positive(rows, "rows")
        need = None if min_periods is None else _positive(min_periods, "min_periods")
        if need is not None and n_rows is not None and need > n_rows:
            raise ValueError(f"rolling: min_periods ({need}) must not exceed rows ({n_rows})")
        extra = {} if need is None else {"min_periods": need}
        ops = [
            {"rolling": {"col": col, "func": func, "period_ms": period_ms, "rows": n_rows, **extra, "alias": name}}
            for name, (func, col) in ((name, _rolling_agg(name, e)) for name, e in aggs.items())
        ]
        return self._series(ops, by)

    def ewm_mean(
        self,
        col: str,
        by: str | Iterable[str] | None = None,
        half_life: object = None,
        alpha: float | None = None,
        alias: str | None = None,
    ) -> Pipeline:
        """Add the exponentially weighted mean of ``col`` per key (pandas ``ewm(...).mean()``,
        adjusted), in event-time order: time-aware with ``half_life`` (a duration; pandas
        ``halflife=..., times=ts``), or per record with ``alpha``. Default name ``{col}_ewm_mean``."""
        if (half_life is None) == (alpha is None):
            raise ValueError("ewm_mean: give exactly one of half_life= or alpha=")
        op = {
            "col": col,
            "half_life_ms": None if half_life is None else float(duration_ms(half_life, "half_life")),
            "alpha": None if alpha is None else float(alpha),
            "alias": alias or f"{col}_ewm_mean",
        }
        return self._series({"ewm_mean": op}, by)

    # -- joins and custom state ---------------------------------------------------------------
    def _with(self, other: Pipeline, node: dict[str, Any]) -> Pipeline:
        """A pipeline over ``node``, whose ``right`` is ``other``'s plan (sources and UDFs merged)."""
        node["right"] = _shift(other._node, len(self._sources), len(self._udfs))
        p = self._derive(node, [*self._sources, *other._sources], [*self._udfs, *other._udfs])
        p._from_topic = [*self._from_topic, *other._from_topic]
        return p

    def join_asof(
        self,
        other: Pipeline,
        on: str | None = None,
        by: str | Iterable[str] | None = None,
        tolerance: object = None,
        direction: str = "backward",
        *,
        right_on: str | None = None,
        right_by: str | Iterable[str] | None = None,
        suffix: str = "_right",
    ) -> Pipeline:
        """Add to each record the ``other`` record of the same key nearest in event time (pandas
        ``merge_asof``): ``direction="backward"`` the latest at or before it, ``"forward"`` the
        first at or after it, ``"nearest"`` the nearer (ties go backward); none beyond
        ``tolerance``. One output row per record: unmatched ones get nulls.

        A record is emitted once ``other``'s watermark has passed it, so a backward join never
        sees a right record from after the left record's time. ``on`` names the event-time column
        (of both sides; pandas drops the right one). ``right_on`` matches on another right column
        that is never earlier than its event time (e.g. ``window_end``); ``right_by`` names right
        key columns when they differ from ``by``; clashing right column names get ``suffix``.
        """
        if not isinstance(other, Pipeline):
            raise TypeError(f"join_asof takes a Pipeline, got {type(other).__name__}")
        if direction not in ("backward", "forward", "nearest"):
            raise ValueError(f"direction must be 'backward', 'forward' or 'nearest', got {direction!r}")
        left_by = [] if by is None else _names((by,), "join_asof by")
        kind = {"asof": {"direction": direction, "tolerance_ms": None if tolerance is None else duration_ms(tolerance, "tolerance")}}
        return self._with(other, self._join_node(kind, on, right_on or on, left_by, right_by, suffix))

    def join_interval(
        self,
        other: Pipeline,
        on: str | Iterable[str] | None = None,
        lower: object = "0s",
        upper: object = "0s",
        how: str = "inner",
        *,
        right_on: str | None = None,
        right_by: str | Iterable[str] | None = None,
        suffix: str = "_right",
    ) -> Pipeline:
        """Pair each record with every ``other`` record of the same key (columns ``on``) whose event
        time is within ``[t + lower, t + upper]`` (Flink's interval join; bounds are durations,
        ``lower`` may be negative: ``lower="-5m"``). ``how="left"`` keeps records without a match
        (with nulls). Each record's pairs come out once ``other``'s watermark passes ``t + upper``.
        """
        if not isinstance(other, Pipeline):
            raise TypeError(f"join_interval takes a Pipeline, got {type(other).__name__}")
        if how not in ("inner", "left"):
            raise ValueError(f"how must be 'inner' or 'left', got {how!r}")
        keys = [] if on is None else _names((on,), "join_interval on")
        kind = {
            "interval": {
                "lower_ms": duration_ms(lower, "lower", allow_negative=True),
                "upper_ms": duration_ms(upper, "upper", allow_negative=True),
                "how": how,
            }
        }
        return self._with(other, self._join_node(kind, None, right_on, keys, right_by, suffix))

    def join_table(self, table: Table, on: str | Iterable[str], *, suffix: str = "_right") -> Pipeline:
        """Add to each record the value the ``table`` had for its key (the columns ``on``, matched
        to the table's key columns in order) as of the record's event time: the stream–table join,
        point-in-time correct. The table is ``log.table(topic)`` (a compacted topic, versioned by
        record timestamp) or ``pipeline.to_table(key)``; its key columns are not repeated."""
        from riverbed.table import Table

        if not isinstance(table, Table):
            raise TypeError(f"join_table takes an rb.Table (log.table(...) or pipeline.to_table(...)), got {type(table).__name__}")
        keys = _names((on,), "join_table on")
        if len(keys) != len(table.key):
            raise ValueError(f"join_table: on={keys} names {len(keys)} column(s) but the table's key is {table.key}")
        kind = {"asof": {"direction": "backward", "tolerance_ms": None}}
        node = self._join_node(kind, None, None, keys, table.key, suffix)
        node["right_columns"] = table._value_columns()
        return self._with(table.changelog, node)

    def _join_node(
        self, kind: dict, on: str | None, right_on: str | None, left_by: list[str], right_by: object, suffix: str
    ) -> dict[str, Any]:
        for field_name, v in (("on", on), ("right_on", right_on)):
            if v is not None and not isinstance(v, str):
                raise TypeError(f"{field_name} must name a column (str), got {type(v).__name__}")
        if not isinstance(suffix, str) or not suffix:
            raise TypeError(f"suffix must be a non-empty str, got {suffix!r}")
        return {
            "op": "join",
            "left": self._node,
            "kind": kind,
            "left_by": left_by,
            "right_by": left_by if right_by is None else _names((right_by,), "right_by"),
            "left_on": on,
            "right_on": right_on,
            "suffix": suffix,
        }

    def to_table(self, *key: str) -> Table:
        """The latest record per key (``key`` columns) as an ``rb.Table``: readable while the
        pipeline runs (``get``, ``to_arrow``), writable as a changelog to a compacted topic, and
        joinable with ``join_table``."""
        from riverbed.table import Table

        return Table(self, _names(key, "to_table"))

    def stateful_map(
        self,
        fn: Callable[[Any, list[dict[str, Any]]], tuple[Any, Iterable[dict[str, Any]] | None]],
        by: str | Iterable[str] | None = None,
        initial: object = None,
        schema: object = None,
        name: str | None = None,
        state_codec: str = "data",
    ) -> Pipeline:
        """Custom per-key logic with state (Kafka Streams' Processor API, Bytewax's
        ``stateful_map``): ``fn(state, records) -> (new_state, output_records)``.

        ``records`` is a list of the key's records (dicts) in event-time order: they are held
        until the watermark passes them, so the state never depends on arrival order. ``state`` is
        ``initial`` for a new key (a deep copy; or ``initial()`` when callable); returning None as
        the state forgets the key. Output records are dicts; ``schema`` fixes their schema
        (otherwise inferred from the first output). ``by=None``: one state for all records.

        Checkpoints keep the state as data, never as code (``state_codec="data"``): ``None``,
        ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``list``, ``tuple``, ``dict``, ``set``,
        dates and times, ``Decimal``, pyarrow tables and numpy arrays, read back as the same types;
        any other type is a ``TypeError`` naming it when a checkpoint is taken.
        ``state_codec="pickle"`` pickles it instead; checkpoints are signed with a key kept in
        the log (``~checkpoints/checkpoint.key``), so only checkpoints this log wrote are unpickled.
        """
        if state_codec not in _state_codec.CODECS:
            raise ValueError(f"stateful_map: state_codec must be 'data' or 'pickle', got {state_codec!r}")
        if not callable(fn):
            raise TypeError(f"stateful_map takes a function, got {type(fn).__name__}")
        keys = [] if by is None else _names((by,), "stateful_map by")
        label = name or getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or "stateful_map"
        udf = _StatefulUdf(fn, keys, initial, _as_schema(schema), label, state_codec)
        node = {"op": "stateful_map", "input": self._node, "by": keys, "udf": len(self._udfs), "name": label}
        return self._derive(node, udfs=[*self._udfs, udf])

    def named(self, name: str) -> Pipeline:
        """Name the operator this pipeline ends in (Flink's ``uid``): metrics show the name, and
        checkpoints keep its state under it, so a named pipeline restarted with a changed plan —
        an operator added before it, a filter changed — still finds its state. Without a name an
        operator is known by its place in the plan (``window#3``), which moves when operators are
        added or removed before it. Names are unique within a pipeline.

        >>> import riverbed as rb, pyarrow as pa
        >>> t = pa.table({"user": ["a", "b", "a"], "ts": [0, 1, 2]})
        >>> p = rb.Pipeline.read(t, timestamp="ts").window(rb.tumbling("1s"), by="user").agg(n=rb.count()).named("counts")
        >>> _ = p.run(progress=False)
        >>> [m["operator"] for m in p.metrics()]
        ['read#0', 'counts']
        """
        if not isinstance(name, str) or not name or "#" in name:
            raise TypeError(f"named: name must be a non-empty str without '#', got {name!r}")
        return self._derive({"op": "named", "input": self._node, "name": name})

    def key_by(self, *columns: str) -> Pipeline:
        """Declare the record key (Kafka Streams' ``selectKey``).

        Windows and group-bys that name no ``by`` group by it, and ``write(topic)`` without
        ``key=`` writes it as the record key, so the topic is hash-partitioned by it with Kafka's
        murmur2 partitioner, like a Kafka Streams repartition topic.

        >>> import riverbed as rb, pyarrow as pa
        >>> t = pa.table({"user": ["a", "b", "a"], "ts": [0, 1, 2]})
        >>> p = rb.Pipeline.read(t, timestamp="ts").key_by("user").window(rb.tumbling("1s")).agg(n=rb.count())
        >>> p.collect().column("n").to_pylist()
        [2, 1]
        """
        return self._derive({"op": "key_by", "input": self._node, "columns": _names(columns, "key_by")})

    def group_by(self, *keys: str) -> GroupBy:
        """Unwindowed running aggregates per key, emitted as a changelog (``.agg(...)``)."""
        return GroupBy(self, _names(keys, "group_by"))

    def write(self, target: object, key: str | None = None) -> Pipeline:
        """Send the output to a topic (rows as JSON values, ``key`` naming the key column) or to a
        callable taking each RecordBatch; ``run()`` or ``start()`` then writes."""
        p = self._derive(self._node)
        p._sink = _sink_of(target, key)
        if p._state_dir is None:
            p._state_dir = getattr(target, "_riverbed_state_dir", None)
        return p

    # -- running ----------------------------------------------------------------------------
    def _late_schema(self) -> pa.Schema | None:
        schemas = []
        for n in _walk(self._node):
            if n["op"] == "window":
                try:
                    schemas.append(_core.Pipeline(n["input"], self._sources, self._udfs).schema)
                except Exception:
                    return None
        if len(schemas) == 1:
            return schemas[0]
        return None

    def _result(self, raw: Mapping[str, Any]) -> RunResult:
        for note in raw.get("notes", ()):
            warnings.warn(note, RuntimeWarning, stacklevel=3)
        late_batches = list(raw.get("late", []))
        res = RunResult(
            output=_concat(list(raw.get("output", [])), self.schema),
            late=_concat(late_batches, None if late_batches else self._late_schema()),
            metrics=list(raw.get("metrics", [])),
            checkpoints=dict(raw.get("checkpoints", {})),
        )
        self._last = res
        return res

    def _checkpoint(self, name: str | None, interval: object, reset: bool) -> tuple:
        """The native run's checkpoint arguments: a Kafka group run is named after its group.
        A topic-to-topic run without a name is warned about (once per output topic)."""
        if name is None and self._group is not None:
            name = f"group-{self._group}"
        ckpt = _checkpoint_args(name, interval, reset, self._state_dir)
        sink = self._sink
        if name is None and sink is not None and sink.topic is not None and self._from_topic and all(self._from_topic):
            out = sink.topic
            if out not in _WARNED_UNNAMED:
                _WARNED_UNNAMED.add(out)
                warnings.warn(
                    f"riverbed: this run reads topics and writes topic {out!r} without name=, so it keeps no "
                    "checkpoint: run again (after a restart or a crash), it reprocesses its input from the start "
                    "and writes every result again. Pass name='...' to run()/start() to make it resumable "
                    "(it then continues where it stopped, exactly once for a log topic).",
                    UserWarning,
                    stacklevel=3,
                )
        return ckpt

    def _start(self, sink: _core.Sink, follow: bool, ckpt: tuple, workers: int = 0) -> Any:
        """Start the run on a native thread and return its handle."""
        return self._fresh().start(sink, follow, *self._on_error, *ckpt, workers=workers)

    def _fresh(self) -> Any:
        """The native pipeline, with the state of Python functions reset for a new run."""
        for udf in self._udfs:
            reset = getattr(udf, "reset", None)
            if reset is not None:
                reset()
                udf.isolate = self._on_error[0] in ("skip", "dead_letter")
        return self._inner

    def _bounded(
        self, sink: _core.Sink, progress: bool, ckpt: tuple = (None, None, False, None), workers: int = 0
    ) -> RunResult:
        """A bounded run; past a second it shows a progress bar with records/s (tqdm.auto: a
        terminal bar or a notebook widget) unless ``progress`` is False."""
        if not progress:
            return self._result(self._fresh().run(sink, False, None, *self._on_error, *ckpt, workers=workers))
        handle = self._start(sink, False, ckpt, workers)
        bar = None
        try:
            t0 = time.monotonic()
            while not handle.wait(0.2):
                if bar is None and time.monotonic() - t0 >= 1.0:
                    from tqdm.auto import tqdm

                    # Start from what was read already, so the rate is not inflated by it.
                    bar = tqdm(
                        desc="riverbed",
                        unit=" records",
                        unit_scale=True,
                        leave=False,
                        initial=_records_read(handle.metrics()),
                    )
                if bar is not None:
                    bar.update(_records_read(handle.metrics()) - bar.n)
            raw = handle.stop(10.0)
        except BaseException:
            if handle.running:  # interrupted (Ctrl-C): stop the run, then re-raise
                try:
                    handle.stop(10.0)
                except BaseException:  # noqa: BLE001 - the interrupt is what the caller sees
                    pass
            raise
        finally:
            if bar is not None:
                bar.close()
        return self._result(raw)

    def run(
        self,
        follow: bool = False,
        progress: bool | None = None,
        *,
        name: str | None = None,
        checkpoint_interval: object = None,
        reset: bool = False,
        workers: int | None = None,
    ) -> RunResult:
        """Run to the end of the input (``follow=True``: keep following topics until interrupted;
        prefer ``start()``/``stop()`` for that). Writes to the sink set by ``write()``. A bounded
        run longer than a second shows a progress bar; ``progress=False`` turns it off (a
        following run has none: ``progress=`` with ``follow=True`` is a ``ValueError``).

        ``name``: checkpoint the run (every ``checkpoint_interval``, by default 10 s, and at the end) under
        ``<log>/~checkpoints/<name>``: source positions, operator state and the end offsets of
        an output topic. Running it again with the same name resumes from the last checkpoint,
        first truncating the output topic back to it, so a topic-to-topic pipeline is exactly
        once across crashes (``kill -9``); a callback sink is at least once. A changed plan
        raises ``PlanError`` unless ``reset=True`` (start over; the output topic is kept).
        ``checkpoint_interval`` and ``reset`` need ``name`` (without it they are a ``ValueError``);
        a topic-to-topic run without a name warns once that a restart reprocesses its input.

        ``workers``: threads running the operators (default: one per core, but no more than the
        inputs have partitions). Each input partition's records are handled by one worker and a
        keyed operator's records by the worker owning the key, so the result is the same for any
        number of workers (rows come out in the same event-time order where one worker emits them
        so; see the README's "Every core" for what equal times and changelogs may change). A named
        run uses one worker; at most 256.
        """
        n = _workers(workers)
        if follow and progress is not None:
            raise ValueError("progress= has no effect with follow=True (a following run shows no progress bar); drop it")
        ckpt = self._checkpoint(name, checkpoint_interval, reset)
        if follow:
            return self._result(
                self._fresh().run(self._sink or _core.Sink.collect(), True, None, *self._on_error, *ckpt, workers=n)
            )
        return self._bounded(self._sink or _core.Sink.collect(), progress is not False, ckpt, n)

    def collect(self, progress: bool = True, *, workers: int | None = None) -> pa.Table:
        """Run to the end of the input and return the output as one Table (a sink set by
        ``write()`` is not written to: use ``run()`` for that). ``workers`` as in ``run()``."""
        return self._bounded(_core.Sink.collect(), progress, workers=_workers(workers)).output

    def to_pandas(self) -> Any:
        return self.collect().to_pandas()

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.collect())

    def late(self) -> pa.Table:
        """Run to the end of the input (without writing to a sink) and return the records window
        operators dropped as late. Lateness is judged per record: against the watermark its own
        partition's earlier records left (max event time before it - ``lateness``), or the
        pipeline's if later, so it does not depend on batching."""
        return self._bounded(_core.Sink.collect(), False).late

    def start(
        self,
        follow: bool = True,
        *,
        name: str | None = None,
        checkpoint_interval: object = None,
        reset: bool = False,
        workers: int | None = None,
    ) -> Pipeline:
        """Run in a background thread (following topics for new records) until ``stop()``;
        ``name`` checkpoints it and ``workers`` sets its threads as in ``run()``."""
        if self.running:
            raise RuntimeError("this pipeline is already running; stop() it first")
        n = _workers(workers)
        ckpt = self._checkpoint(name, checkpoint_interval, reset)
        self._handle = self._start(self._sink or _core.Sink.collect(), bool(follow), ckpt, n)
        _RUNNING.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> RunResult:
        """Stop a ``start()``-ed run (waiting up to ``timeout`` seconds; ``None`` or ``inf``: as
        long as it takes); returns what it collected, the late records and the metrics. An error
        of the run is raised here; a bad ``timeout`` (NaN, negative, absurdly long) is a
        ``ValueError`` that leaves the run as it was. A run that has not stopped within
        ``timeout`` raises ``TimeoutError`` and goes on stopping: call ``stop()`` again."""
        if self._handle is None:
            raise RuntimeError("this pipeline is not running: it was not started, or stop() already returned its result")
        limit = timeout_s(timeout, "timeout")  # a bad timeout leaves the run as it is
        try:
            raw = self._handle.stop(limit)
        except BaseException:
            if not self._handle.running:  # the run failed: it is over
                self._handle = None
            raise
        self._handle = None
        _RUNNING.discard(self)
        return self._result(raw)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a ``start()``-ed run to end by itself (a bounded run, ``start(follow=False)``),
        up to ``timeout`` seconds (``None`` or ``inf``: no limit); True when it has ended
        (``stop()`` then returns its result at once). After ``stop()`` it is True at once."""
        if self._handle is None:
            if self._last is not None:  # stopped already: over
                timeout_s(timeout, "timeout")
                return True
            raise RuntimeError("this pipeline was not started")
        return bool(self._handle.wait(timeout_s(timeout, "timeout")))

    @property
    def running(self) -> bool:
        return self._handle is not None and bool(self._handle.running)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self.stop()

    def metrics(self) -> list[dict[str, Any]]:
        """Per-operator metrics of the running run, else of the last one (empty before any run)."""
        if self._handle is not None:
            return list(self._handle.metrics())
        return list(self._last.metrics) if self._last is not None else []

    def checkpoint_stats(self) -> dict[str, Any]:
        """What the checkpoints of the running (else the last) named run have cost: ``written``
        (checkpoints written), ``last_bytes`` (the newest file's size), ``last_pause_ms`` /
        ``max_pause_ms`` (how long processing stopped for a periodic checkpoint: its state is
        copied on the run's thread and written by another) and ``last_write_ms`` /
        ``max_write_ms`` (output synced, file written, fsynced and renamed). Zeros for an unnamed
        run; empty before any run."""
        if self._handle is not None:
            return dict(self._handle.checkpoint_stats())
        return dict(self._last.checkpoints) if self._last is not None else {}

    # -- introspection ----------------------------------------------------------------------
    @property
    def schema(self) -> pa.Schema | None:
        """The output schema; None when a Python function (map/map_batches) decides it."""
        return self._inner.schema

    def explain(self) -> str:
        return self._inner.explain()

    def to_plan(self) -> dict[str, Any]:
        """The plan (a copy), as handed to the engine."""
        return copy.deepcopy(self._node)

    def __repr__(self) -> str:
        body = "\n".join("  " + line for line in self.explain().splitlines())
        return f"Pipeline(\n{body}\n)"

    def _repr_html_(self) -> str:
        from riverbed.display import pipeline_html

        return pipeline_html(self)


class WindowedPipeline:
    """``pipeline.window(spec, by=...)``: finish with ``.agg(name=aggregate, ...)``."""

    def __init__(self, parent: Pipeline, spec: Window, by: list[str], emit: str) -> None:
        self._parent, self._spec, self._by, self._emit = parent, spec, by, emit

    def agg(self, **aggs: object) -> Pipeline:
        """Aggregates per window and key: ``n=rb.count(), vwap=rb.sum("pv") / rb.sum("v")``."""
        p = self._parent
        return p._derive(
            {
                "op": "window",
                "input": p._node,
                "window": self._spec.to_plan(),
                "by": self._by,
                "emit": self._emit,
                "aggs": _named_exprs(aggs, "window agg"),
            }
        )

    def __repr__(self) -> str:
        return f"<window {self._spec!r} by={self._by} emit={self._emit!r}: call .agg(...)>"


class GroupBy:
    """``pipeline.group_by(*keys)``: finish with ``.agg(name=aggregate, ...)``."""

    def __init__(self, parent: Pipeline, by: list[str]) -> None:
        self._parent, self._by = parent, by

    def agg(self, **aggs: object) -> Table:
        """Running aggregates per key, as an ``rb.Table`` (one row per key, readable while it
        runs); ``.changelog`` is the pipeline of its updates: after every batch, one row per key
        it changed."""
        from riverbed.table import Table

        p = self._parent
        node = {"op": "group_by", "input": p._node, "by": self._by, "aggs": _named_exprs(aggs, "group_by agg")}
        return Table(p._derive(node), list(self._by))

    def __repr__(self) -> str:
        return f"<group_by {self._by}: call .agg(...)>"
