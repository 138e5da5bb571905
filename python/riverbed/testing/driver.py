"""``TestDriver``: a pipeline run step by step on a temporary log, records and watermarks sent
by the test (see ``riverbed.testing``)."""

from __future__ import annotations

import datetime as _dt
import re
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from riverbed import _core
from riverbed._tabular import concat as _concat
from riverbed._tabular import frame_table as _frame_table
from riverbed._tabular import is_pandas as _is_pandas
from riverbed._tabular import is_polars as _is_polars
from riverbed._units import timestamp_ms
from riverbed.expr import col
from riverbed.log import Log, Topic, _to_bytes
from riverbed.pipeline import Pipeline, RunResult

__all__ = ["TestDriver", "UnknownSourceError"]

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
# The event-time range the engine takes (years 1 to 9999); outside it a record is a bad record.
_MIN_TS, _MAX_TS = -62_135_596_800_000, 253_402_300_799_999
# Marks the driver's own rows (fillers and watermark markers) in replayed sources; a filter
# right after each source drops them before any operator of the pipeline sees them.
_CTL = "__riverbed_test_control__"
_LOG_META = {
    "key": pa.binary(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
    "partition": pa.int32(),
    "offset": pa.int64(),
}
_MAX_PARTITIONS = 100_000


class UnknownSourceError(KeyError, ValueError):
    """A source reference (name, index or object) that names none of the pipeline's sources."""

    def __str__(self) -> str:  # KeyError would show the message quoted
        return str(self.args[0]) if self.args else ""


@dataclass(eq=False)
class _Source:
    """One source of the pipeline under test, and the topic that replaces it."""

    index: int
    node: dict[str, Any]
    name: str | None
    native: _core.Source
    value_schema: pa.Schema
    fmt: str
    from_log: bool
    event_time: str | None  # the event-time column of the replayed source ("timestamp": record time)
    record_time: bool  # the event time is the record timestamp
    lateness: int
    partitions: int
    topic: Topic = field(repr=False)
    counts: list[int] = field(default_factory=list)  # records sent per partition
    round_robin: int = 0

    @property
    def label(self) -> str:
        return f"{self.index} {self.name!r}" if self.name is not None else f"{self.index}"


# -- plan helpers ------------------------------------------------------------------------------


def _children(node: dict[str, Any]) -> list[dict[str, Any]]:
    """A node's inputs in the order the engine builds them."""
    if node["op"] == "source":
        return []
    if node["op"] == "union":
        return list(node["inputs"])
    if node["op"] == "join":
        return [node["left"], node["right"]]
    return [node["input"]]


def _postorder(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Nodes children first, as the engine numbers them (``op#k`` in metrics)."""
    for c in _children(node):
        yield from _postorder(c)
    yield node


def _replace_sources(node: dict[str, Any], subtree: Mapping[int, dict[str, Any]]) -> dict[str, Any]:
    """A copy of ``node`` whose source nodes are replaced by ``subtree[source index]``."""
    if node["op"] == "source":
        return subtree[node["source"]]
    node = dict(node)
    if node["op"] == "union":
        node["inputs"] = [_replace_sources(n, subtree) for n in node["inputs"]]
    elif node["op"] == "join":
        node["left"] = _replace_sources(node["left"], subtree)
        node["right"] = _replace_sources(node["right"], subtree)
    else:
        node["input"] = _replace_sources(node["input"], subtree)
    return node


def _split_log_schema(schema: pa.Schema) -> tuple[pa.Schema, bool]:
    """(value schema, whether the source reads a log topic): a topic source's schema is its
    value columns followed by the record's key/timestamp/partition/offset columns."""
    trailing: list[str] = []
    names = list(_LOG_META)
    for f in reversed(schema):
        if f.name in _LOG_META and f.type.equals(_LOG_META[f.name]) and f.name not in trailing:
            if trailing and names.index(f.name) > names.index(trailing[-1]):
                break
            trailing.append(f.name)
        else:
            break
    if "partition" in trailing and "offset" in trailing:
        n = len(schema) - len(trailing)
        return pa.schema(list(schema)[:n], metadata=schema.metadata), True
    return schema, False


def _default_value(t: pa.DataType) -> pa.Array:
    """A one-element array of a non-null placeholder value of type ``t``."""
    for candidate in (0, 0.0, False, "", b"", [], {}):
        try:
            return pa.array([candidate], type=t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError):
            continue
    raise TypeError(f"TestDriver: no placeholder value for a non-nullable column of type {t}")


def _time_values(t: pa.DataType, ms: list[int | None], what: str) -> pa.Array:
    """Event times in ms (None: lower than any real time) as an array of the event-time type."""
    if pa.types.is_timestamp(t):
        per_ms = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}[t.unit]
        raw = []
        for v in ms:
            if v is None:
                raw.append(_MIN_TS // 1000 if per_ms is None else max(_I64_MIN, _MIN_TS * per_ms))
            elif per_ms is None:
                raw.append(-(-v // 1000))  # ceil: the engine reads seconds as s * 1000
            else:
                raw.append(v * per_ms)
        if any(not _I64_MIN <= r <= _I64_MAX for r in raw):
            raise ValueError(f"TestDriver: {what} does not fit the event-time type {t}")
        return pa.array(raw, type=pa.int64()).cast(t)
    lo = -(2 ** (t.bit_width - 1)) if pa.types.is_signed_integer(t) else 0
    hi = 2 ** (t.bit_width - 1) - 1 if pa.types.is_signed_integer(t) else 2**t.bit_width - 1
    raw = [max(lo, _MIN_TS) if v is None else v for v in ms]
    if any(not lo <= r <= hi for r in raw):
        raise ValueError(f"TestDriver: {what} does not fit the event-time type {t}")
    return pa.array(raw, type=t)


def _to_ms(value: object, where: str) -> int:
    if value is None:
        raise ValueError(f"{where}: a record timestamp is null")
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, _dt.datetime):
        return timestamp_ms(value, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{where}: a timestamp must be int milliseconds or a datetime, got {type(value).__name__}")
    return timestamp_ms(value, where)  # in the int64 range


def _schema_text(schema: pa.Schema) -> str:
    return ", ".join(f"{f.name}: {f.type}" for f in schema)


def _run_native(pipeline: Pipeline, node: dict, sources: list, end_watermark: int) -> dict[str, Any]:
    """Run a plan bounded, collecting the output, with the pipeline's error policy if it has one."""
    for udf in pipeline._udfs:  # a fresh run: Python state (stateful_map) starts over
        reset = getattr(udf, "reset", None)
        if reset is not None:
            reset()
    native = _core.Pipeline(node, sources, pipeline._udfs)
    on_error = getattr(pipeline, "_on_error", (None, None))
    if on_error and on_error[0] is not None:
        return native.run(_core.Sink.collect(), False, end_watermark, *on_error)
    return native.run(_core.Sink.collect(), False, end_watermark)


def _cleanup(log: Log, directory: str, remove: bool) -> None:
    try:
        log.close()
    finally:
        if remove:
            shutil.rmtree(directory, ignore_errors=True)


# -- the driver --------------------------------------------------------------------------------


class TestDriver:
    """Drive a pipeline by hand: ``send`` records to its sources, ``advance_watermark``, and read
    ``output()`` / ``late()`` / ``metrics()``. See the module docstring for the exact semantics.

    ``pipeline``: an ``rb.Pipeline`` (or an ``rb.Table``: its changelog is driven). Each source
    becomes a topic with the source's schema and partition count — the original source's
    ``partitions`` (1 for in-memory data), or ``partitions=``: an int for every source, or a dict
    ``{source: n}``. Sources are addressed by the ``name=`` given to ``Pipeline.read``, by their
    index (in the order the pipeline's sources were combined: left before right, ``union``
    order), or by the ``Pipeline.read(...)`` pipeline (or native source) itself.

    ``directory``: where to put the log (default: a new temporary directory, deleted by
    ``close()``; a given directory is kept). Use as a context manager, or call ``close()``.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, pipeline: object, partitions: int | Mapping[object, int] | None = None, *, directory: str | Path | None = None) -> None:
        from riverbed.table import Table

        if isinstance(pipeline, Table):
            pipeline = pipeline.changelog
        if not isinstance(pipeline, Pipeline):
            raise TypeError(f"TestDriver takes an rb.Pipeline (or rb.Table), got {type(pipeline).__name__}")
        self._pipeline = pipeline
        self._steps: list[tuple] = []  # ("rec", _Source, partition) | ("wm", ms)
        self._watermark: int | None = None
        self._result: RunResult | None = None
        self._result_at: tuple[int, int | None] | None = None
        nodes = {n["source"]: n for n in _postorder(pipeline._node) if n["op"] == "source"}
        self._sources: list[_Source] = []
        specs = []
        for i, native in enumerate(pipeline._sources):
            node = nodes.get(i)
            if node is None:  # handed over but not read by the plan: nothing to drive
                continue
            specs.append((i, node, native))

        created = directory is None
        path = Path(tempfile.mkdtemp(prefix="riverbed-test-")) if directory is None else Path(directory)
        self._directory = path
        self._log = Log(path, fsync="never", cleanup_interval=None)
        self._finalizer = weakref.finalize(self, _cleanup, self._log, str(path), created)
        try:
            for i, node, native in specs:
                self._sources.append(self._make_source(i, node, native))
            counts = self._partition_counts(partitions)
            for s in self._sources:
                s.partitions = counts.get(s.index, s.partitions)
                topic_name = f"source{s.index}" + (f"-{re.sub(r'[^A-Za-z0-9._-]', '_', s.name)}" if s.name else "")
                s.topic = self._log.topic(topic_name[:249], partitions=s.partitions)
                s.counts = [0] * s.partitions
            self._encoder = self._log.topic("__driver.encode", partitions=1)
        except BaseException:
            self.close()
            raise

    def _make_source(self, index: int, node: dict[str, Any], native: _core.Source) -> _Source:
        schema = native.schema
        value_schema, from_log = _split_log_schema(schema)
        fmt = "json"
        if from_log and len(value_schema) == 1 and value_schema[0].name == "value" and value_schema[0].type.equals(pa.binary()):
            fmt = "raw"
        ts = node.get("timestamp")
        record_time = ts is None and from_log and "timestamp" not in value_schema.names
        event_time = "timestamp" if record_time else ts
        return _Source(
            index=index,
            node=node,
            name=node.get("name"),
            native=native,
            value_schema=value_schema,
            fmt=fmt,
            from_log=from_log,
            event_time=event_time,
            record_time=record_time,
            lateness=int(node.get("lateness_ms") or 0),
            partitions=max(1, int(native.partitions)),
            topic=None,  # type: ignore[arg-type]  # set by __init__
        )

    def _partition_counts(self, partitions: object) -> dict[int, int]:
        def check(n: object) -> int:
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"partitions must be an int, got {type(n).__name__}")
            if not 1 <= n <= _MAX_PARTITIONS:
                raise ValueError(f"partitions must be between 1 and {_MAX_PARTITIONS}, got {n}")
            return n

        if partitions is None:
            return {}
        if isinstance(partitions, Mapping):
            return {self._source(ref).index: check(n) for ref, n in partitions.items()}
        n = check(partitions)
        return {s.index: n for s in self._sources}

    # -- addressing sources -------------------------------------------------------------------
    def _known(self) -> str:
        return ", ".join(f"{s.label} ({s.partitions} partition(s))" for s in self._sources) or "none"

    def _source(self, ref: object) -> _Source:
        """The driver's source for a name, an index, a ``Pipeline.read(...)`` pipeline or a
        native source."""
        from riverbed.table import Table

        if isinstance(ref, Table):
            ref = ref.changelog
        if isinstance(ref, str):
            found = [s for s in self._sources if s.name == ref]
            if len(found) == 1:
                return found[0]
            if found:
                raise UnknownSourceError(f"{len(found)} sources are named {ref!r}; address them by index: {self._known()}")
            raise UnknownSourceError(f"no source named {ref!r}; the pipeline's sources are: {self._known()}")
        if isinstance(ref, bool):
            raise TypeError("a source is addressed by name (str), index (int) or its Pipeline, got a bool")
        if isinstance(ref, int):
            for s in self._sources:
                if s.index == ref:
                    return s
            raise UnknownSourceError(f"no source #{ref}; the pipeline's sources are: {self._known()}")
        if isinstance(ref, Pipeline):
            if len(ref._sources) != 1:
                raise ValueError(f"that pipeline reads {len(ref._sources)} sources; address one by name or index: {self._known()}")
            ref = ref._sources[0]
        if isinstance(ref, _core.Source):
            for s in self._sources:
                if s.native is ref:
                    return s
            raise UnknownSourceError(f"that source is not read by the pipeline under test; its sources are: {self._known()}")
        raise TypeError(
            f"a source is addressed by name (str), index (int) or its Pipeline.read(...) pipeline, got {type(ref).__name__}"
        )

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The driven sources: index, name, partitions, schema (of the rows to send), topic."""
        return [
            {"index": s.index, "name": s.name, "partitions": s.partitions, "schema": s.value_schema, "topic": s.topic.name}
            for s in self._sources
        ]

    def topic(self, source: object) -> Topic:
        """The topic that replaces ``source`` (records as sent: key, value, timestamp, partition)."""
        self._check_open()
        return self._source(source).topic

    @property
    def log(self) -> Log:
        """The driver's private log."""
        return self._log

    # -- input --------------------------------------------------------------------------------
    def send(
        self,
        source: object,
        rows: object,
        timestamp: str | int | _dt.datetime | None = None,
        key: str | None = None,
        partition: int | None = None,
    ) -> list[tuple[int, int]]:
        """Produce ``rows`` (a list of dicts, one dict, a pyarrow Table/RecordBatch or a pandas or
        polars DataFrame) to ``source``'s topic; returns each record's ``(partition, offset)``.

        The rows must have the source's columns (``sources[i]["schema"]``), converted to its
        types; ``key`` names the column whose value is the record key (str as UTF-8, bytes as
        they are, others as JSON) and ``timestamp`` the column of record timestamps — or gives
        one int ms / datetime for all rows. By default the record timestamp is the source's
        event-time column (a source that uses the record timestamp as event time needs
        ``timestamp=``, or a ``timestamp`` column). ``partition`` sends every row to that
        partition; otherwise keyed rows go to Kafka's murmur2 partition of their key, unkeyed
        rows round-robin. Nothing is sent unless every row is valid.
        """
        self._check_open()
        s = self._source(source)
        where = f"send({s.name!r})" if s.name is not None else f"send(source #{s.index})"
        if key is not None and not isinstance(key, str):
            raise TypeError(f"{where}: key must name a column (str), got {type(key).__name__}")
        if partition is not None:
            if isinstance(partition, bool) or not isinstance(partition, int):
                raise TypeError(f"{where}: partition must be an int, got {type(partition).__name__}")
            if not 0 <= partition < s.partitions:
                raise ValueError(f"{where}: partition {partition} does not exist; the source has {s.partitions} partition(s)")
        ts_col = timestamp if isinstance(timestamp, str) else None
        if ts_col is None and timestamp is None and s.record_time:
            ts_col = "timestamp"  # a `timestamp` column of the rows, if they have one
        values, extra, n = self._conform(s, rows, where, {key, ts_col} - {None})
        if n == 0:
            return []

        def column(name: str) -> list[Any]:
            if name in extra:
                return extra[name]
            if name in values.column_names:
                return values.column(name).to_pylist()
            raise ValueError(f"{where}: the rows have no column {name!r} (named by key= or timestamp=)")

        # record timestamps
        if isinstance(timestamp, str):
            stamps = [_to_ms(v, where) for v in column(timestamp)]
        elif timestamp is not None:
            stamps = [_to_ms(timestamp, where)] * n
        elif s.record_time:
            if ts_col not in extra:
                raise ValueError(
                    f"{where}: the source's event time is the record timestamp; pass timestamp= "
                    "(a column name, or int ms / a datetime for all rows) or give the rows a 'timestamp' column"
                )
            stamps = [_to_ms(v, where) for v in extra[ts_col]]
        elif s.event_time is not None:
            stamps = [_to_ms(v, where) for v in self._event_ms(values.column(s.event_time))]
        else:
            stamps = [0] * n
        # keys and partitions
        keys: list[bytes | None] = [_to_bytes(v, "key") for v in column(key)] if key is not None else [None] * n
        parts = []
        for k in keys:
            if partition is not None:
                parts.append(partition)
            elif k is not None:
                parts.append(s.topic.partition_for(k))
            else:
                parts.append(s.round_robin % s.partitions)
                s.round_robin += 1
        # values
        if s.fmt == "raw":
            payloads = values.column("value").to_pylist()
        else:
            (_, offs) = self._encoder.produce_batch(values)
            first = offs[0].as_py()
            payloads = self._encoder.read(start=first).column("value").to_pylist()
        return self._produce(s, payloads, keys, stamps, parts)

    def _produce(self, s: _Source, payloads: list, keys: list, stamps: list[int], parts: list[int]) -> list[tuple[int, int]]:
        out = []
        for payload, k, ts, p in zip(payloads, keys, stamps, parts):
            p_, off = s.topic._inner.produce(k, payload, ts, [], p)
            s.counts[p_] += 1
            self._steps.append(("rec", s, p_))
            out.append((p_, off))
        self._result = None
        return out

    def delete(self, source: object, key: object, timestamp: int | _dt.datetime, partition: int | None = None) -> tuple[int, int]:
        """Produce a tombstone — ``key`` (bytes, str, or JSON-encoded) with a null value — to a
        source read as a table (``log.table(topic)``: it deletes the key). A source with an
        event-time column cannot take one (its event time would be null). Returns
        ``(partition, offset)``."""
        self._check_open()
        s = self._source(source)
        if s.event_time is not None and not s.record_time:
            raise ValueError(
                f"delete: source {s.label} takes its event time from column {s.event_time!r}; a tombstone has no value to take it from"
            )
        k = _to_bytes(key, "key")
        if k is None:
            raise ValueError("delete: a tombstone needs a key")
        if partition is None:
            partition = s.topic.partition_for(k)
        elif isinstance(partition, bool) or not isinstance(partition, int) or not 0 <= partition < s.partitions:
            raise ValueError(f"delete: partition must be an int in [0, {s.partitions}), got {partition!r}")
        return self._produce(s, [None], [k], [_to_ms(timestamp, "delete")], [partition])[0]

    @staticmethod
    def _event_ms(arr: pa.ChunkedArray) -> list[int | None]:
        if pa.types.is_timestamp(arr.type):
            unit = arr.type.unit
            raw = arr.cast(pa.int64()).to_pylist()
            if unit == "s":
                return [None if v is None else v * 1000 for v in raw]
            per = {"ms": 1, "us": 1_000, "ns": 1_000_000}[unit]
            return [None if v is None else v // per for v in raw]
        return arr.to_pylist()

    def _conform(self, s: _Source, rows: object, where: str, extra_names: set[str]) -> tuple[pa.Table, dict[str, list], int]:
        """The rows as a Table of the source's value schema, plus the extra columns named by
        key=/timestamp= (as Python lists), and the row count."""
        schema = s.value_schema
        extra: dict[str, list] = {}
        if isinstance(rows, Mapping):
            rows = [rows]
        if isinstance(rows, pa.RecordBatch):
            rows = pa.Table.from_batches([rows])
        elif _is_pandas(rows) or _is_polars(rows):
            rows = _frame_table(rows)
        elif not isinstance(rows, pa.Table) and hasattr(rows, "__arrow_c_stream__"):
            rows = pa.table(rows)
        if isinstance(rows, pa.Table):
            names = rows.column_names
            n = rows.num_rows
            get = rows.column
        elif isinstance(rows, (list, tuple)):
            for r in rows:
                if not isinstance(r, Mapping):
                    raise TypeError(f"{where}: rows must be dicts, got a {type(r).__name__}")
            names = list(dict.fromkeys(k for r in rows for k in r))
            n = len(rows)
            dict_rows = rows

            def get(name: str) -> list:  # type: ignore[misc]
                return [r.get(name) for r in dict_rows]
        else:
            raise TypeError(
                f"{where}: rows must be a list of dicts, a pyarrow Table or a pandas/polars DataFrame, got {type(rows).__name__}"
            )
        unknown = [c for c in names if c not in schema.names and c not in extra_names]
        if unknown:
            raise ValueError(
                f"{where}: column(s) {unknown} are not in the source's schema ({_schema_text(schema)}); "
                "key= and timestamp= may name other columns"
            )
        missing = [f.name for f in schema if f.name not in names]
        if missing and n:
            raise ValueError(
                f"{where}: the rows have no column(s) {missing} of the source's schema ({_schema_text(schema)}); "
                "give None for a missing value"
            )
        arrays = []
        for f in schema:
            if not n:
                arrays.append(pa.array([], type=f.type))
                continue
            data = get(f.name)
            try:
                if isinstance(data, pa.ChunkedArray):
                    arr = data.cast(f.type).combine_chunks() if not data.type.equals(f.type) else data.combine_chunks()
                else:
                    arr = pa.array(data, type=f.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError) as e:
                raise ValueError(f"{where}: column {f.name!r} does not fit the source's type {f.type}: {e}") from None
            if arr.null_count and (not f.nullable or f.name == s.event_time):
                what = "the event-time column" if f.name == s.event_time else "a non-nullable column"
                raise ValueError(f"{where}: column {f.name!r} ({what}) has nulls")
            arrays.append(arr)
        for name in extra_names:
            if name in names and name not in schema.names:
                data = get(name)
                extra[name] = data.to_pylist() if isinstance(data, pa.ChunkedArray) else list(data)
        return pa.Table.from_arrays(arrays, schema=schema), extra, n

    def advance_watermark(self, to: int | _dt.datetime) -> None:
        """Raise the watermark of every partition of every source to at least ``to`` (int ms or
        a datetime) from this point of the sequence on. It never moves back: an earlier ``to``
        does nothing."""
        self._check_open()
        if to is None:
            raise TypeError("advance_watermark takes int milliseconds or a datetime, got None")
        ms = timestamp_ms(to, "advance_watermark")
        if not _MIN_TS <= ms <= _MAX_TS:
            raise ValueError(f"advance_watermark: {ms} ms is outside the years 1 to 9999 ({_MIN_TS}..={_MAX_TS} ms) event times lie in")
        if self._watermark is not None and ms <= self._watermark:
            return
        self._watermark = ms
        self._steps.append(("wm", ms))

    @property
    def watermark(self) -> int | None:
        """The watermark given to ``advance_watermark`` (ms), or None before any."""
        return self._watermark

    # -- output -------------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Replay everything sent so far (see the module docstring); the output, late records and
        metrics. Cached until the next ``send``/``advance_watermark``."""
        self._check_open()
        at = (len(self._steps), self._watermark)
        if self._result is not None and self._result_at == at:
            return self._result
        p = self._pipeline
        subtrees: dict[int, dict[str, Any]] = {}
        natives: list[_core.Source] = []
        expansion: dict[int, int] = {}
        for s in self._sources:
            tables = self._replay_tables(s)
            inputs = []
            for t in tables:
                inputs.append({**s.node, "source": len(natives), "timestamp": s.event_time})
                natives.append(_core.Source.table(t, 1))
            inner = inputs[0] if len(inputs) == 1 else {"op": "union", "inputs": inputs}
            filtered = {"op": "filter", "input": inner, "predicate": col(_CTL).is_null()._node}
            subtrees[s.index] = {"op": "drop", "input": filtered, "columns": [_CTL]}
            expansion[s.index] = len(inputs) + (len(inputs) > 1) + 2
        node = _replace_sources(p._node, subtrees)
        end = self._watermark if self._watermark is not None else _I64_MIN
        raw = _run_native(p, node, natives, end)
        late = list(raw.get("late", []))
        late_schema = None
        if not late:
            try:
                late_schema = p._late_schema()
            except Exception:  # noqa: BLE001 - only a nicety for an empty result
                late_schema = None
        self._result = RunResult(
            output=_concat(list(raw.get("output", [])), p.schema),
            late=_concat(late, late_schema),
            metrics=self._metrics(list(raw.get("metrics", [])), expansion),
        )
        self._result_at = at
        return self._result

    def output(self, sink_or_name: object = None) -> pa.Table:
        """What the pipeline emitted over everything sent so far (see the module docstring), as
        one Table. A pipeline that writes to a topic (``.write(topic)``) is not written: its rows
        are returned. ``sink_or_name`` may name that sink (the Topic or its name) and must then
        match it."""
        if sink_or_name is not None:
            self._check_sink(sink_or_name)
        return self.run().output

    def late(self) -> pa.Table:
        """The records window operators dropped as late, over everything sent so far."""
        return self.run().late

    def metrics(self) -> list[dict[str, Any]]:
        """Per-operator metrics of the replay, named as the pipeline's own ``metrics()`` names them
        (the driver's own plumbing is left out; a source counts the records sent to it)."""
        return self.run().metrics

    def _check_sink(self, ref: object) -> None:
        sink = self._pipeline._sink
        topic = sink.topic if sink is not None and sink.kind == "topic" else None
        names = [] if topic is None else [topic]
        if isinstance(ref, Topic):
            ref = ref._inner
        if isinstance(ref, _core.Topic):
            if topic is not None and ref.name == topic:
                return
        elif isinstance(ref, str):
            if ref in names:
                return
        else:
            raise TypeError(f"output() takes the sink's Topic or its name, got {type(ref).__name__}")
        what = f"its sink is topic {names[0]!r}" if names else "it has no topic sink"
        raise ValueError(f"the pipeline does not write to {getattr(ref, 'name', ref)!r}; {what}")

    def _replay_tables(self, s: _Source) -> list[pa.Table]:
        """One table per partition of ``s``, one row per step of the sequence: the partition's
        record at its step, else a control row (a watermark marker, or a filler holding its
        place so every input advances in lockstep)."""
        decoded = self._decode(s)
        schema = pa.schema(list(s.native.schema) + [pa.field(_CTL, pa.bool_())], metadata=s.native.schema.metadata)
        data = decoded.append_column(pa.field(_CTL, pa.bool_()), pa.nulls(decoded.num_rows, pa.bool_())).cast(schema)
        marks = [st[1] for st in self._steps if st[0] == "wm"]
        control = self._control_rows(s, schema, [None, *marks])
        combined = pa.concat_tables([data, control])
        filler = data.num_rows
        starts = [sum(s.counts[:p]) for p in range(s.partitions)]
        taken = [0] * s.partitions
        indices: list[list[int]] = [[] for _ in range(s.partitions)]
        mark = 0
        for step in self._steps:
            if step[0] == "wm":
                mark += 1
                for ix in indices:
                    ix.append(filler + mark)
                continue
            _, src, part = step
            for p, ix in enumerate(indices):
                if src is s and p == part:
                    ix.append(starts[p] + taken[p])
                    taken[p] += 1
                else:
                    ix.append(filler)
        return [combined.take(pa.array(ix, type=pa.int64())) for ix in indices]

    def _control_rows(self, s: _Source, schema: pa.Schema, marks: list[int | None]) -> pa.Table:
        n = len(marks)
        arrays = []
        for f in schema:
            if f.name == _CTL:
                arrays.append(pa.array([True] * n))
            elif f.name == s.event_time:
                ms = [None if m is None else m + s.lateness for m in marks]
                arrays.append(_time_values(f.type, ms, "the watermark"))
            elif f.nullable:
                arrays.append(pa.nulls(n, f.type))
            else:
                arrays.append(pa.concat_arrays([_default_value(f.type)] * n) if n else pa.array([], type=f.type))
        return pa.Table.from_arrays(arrays, schema=schema)

    def _decode(self, s: _Source) -> pa.Table:
        """Every record of ``s``'s topic decoded as the source's columns (metadata columns too for
        a topic source), ordered by partition and offset."""
        schema = s.value_schema if s.fmt == "json" else None
        native = _core.Source.log(s.topic._inner, format=s.fmt, schema=schema, batch_size=1 << 30)
        node = {"op": "source", "source": 0, "timestamp": None, "lateness_ms": 0, "idle_timeout_ms": 60_000, "name": None}
        raw = _core.Pipeline(node, [native], []).run(_core.Sink.collect(), False)
        batches = [b for b in raw["output"] if b.num_rows]
        tbl = pa.Table.from_batches(batches, schema=native.schema) if batches else native.schema.empty_table()
        if "partition" not in s.value_schema.names and "offset" not in s.value_schema.names:
            # one batch per partition, in partition order, already; sorting makes sure of it
            tbl = tbl.sort_by([("partition", "ascending"), ("offset", "ascending")])
        if tbl.num_rows != sum(s.counts):
            raise RuntimeError(f"TestDriver: decoded {tbl.num_rows} records of {s.topic.name!r}, sent {sum(s.counts)}")
        if not s.from_log:
            tbl = tbl.select(s.value_schema.names)
        return tbl.cast(s.native.schema)

    def _metrics(self, raw: list[dict[str, Any]], expansion: Mapping[int, int]) -> list[dict[str, Any]]:
        """The replay's metrics mapped back onto the operators of the pipeline under test."""
        # `named` only names its input's operator: the engine makes no operator of it.
        original = [n for n in _postorder(self._pipeline._node) if n["op"] != "named"]
        need = sum(expansion.get(n["source"], 1) if n["op"] == "source" else 1 for n in original)
        if need != len(raw):  # an engine that numbers differently: hand over what it gave
            return raw
        out = []
        k = 0
        for orig_idx, n in enumerate(original):
            if n["op"] == "source":
                width = expansion.get(n["source"], 1)
                m = dict(raw[k + width - 1])  # the drop after the filter: the records sent
                m["operator"] = n.get("name") or f"read#{orig_idx}"
                m["records_in"] = m.get("records_out", 0)
                k += width
            else:
                m = dict(raw[k])
                m["operator"] = re.sub(rf"#{k}$", f"#{orig_idx}", str(m.get("operator", "")))
                k += 1
            out.append(m)
        return out

    # -- lifecycle ----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("this TestDriver is closed")

    def close(self) -> None:
        """Close the log and delete its directory (when the driver created it). Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> TestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{sum(1 for st in self._steps if st[0] == 'rec')} records sent, watermark={self._watermark}"
        return f"TestDriver({self._known()}; {state})"
