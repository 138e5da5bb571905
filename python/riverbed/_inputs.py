"""What a pipeline reads and writes, from what users pass: topics hand over their own source
and sink (``riverbed._topic_io``); tables, data frames, readers and iterators of dicts or
record batches become native sources here."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa

from riverbed import _core, _topic_io
from riverbed._tabular import conform as _conform
from riverbed._tabular import frame_table as _frame_table
from riverbed._tabular import is_pandas as _is_pandas
from riverbed._tabular import is_polars as _is_polars

# Records per batch read from an iterator of dicts.
_DICT_CHUNK = 10_000
# Rows per batch: an Arrow array's offsets are 32-bit.
_MAX_BATCH = 2**31 - 1


def batch_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"batch_size must be an int, got {type(value).__name__}")
    if not 1 <= value <= _MAX_BATCH:
        raise ValueError(f"batch_size must be between 1 and {_MAX_BATCH}, got {value}")
    return value


def as_schema(schema: object) -> pa.Schema | None:
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    try:
        return pa.schema(schema)  # type: ignore[arg-type]
    except (TypeError, ValueError, pa.ArrowInvalid) as e:
        raise TypeError(f"schema must be a pyarrow Schema (or a list/dict of fields): {e}") from None



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


def _widened(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary indexes of 8 and 16 bits made 32 (a later batch's categorical
    may need more codes than the first's)."""
    fields = [
        f.with_type(pa.dictionary(pa.int32(), f.type.value_type, f.type.ordered))
        if pa.types.is_dictionary(f.type) and f.type.index_type.bit_width < 32
        else f
        for f in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def _fits(got: pa.DataType, want: pa.DataType) -> bool:
    """Whether a column of type ``got`` is one of ``want`` (a dictionary up to its index width)."""
    if got.equals(want):
        return True
    return (
        pa.types.is_dictionary(got)
        and pa.types.is_dictionary(want)
        and got.value_type.equals(want.value_type)
        and got.index_type.bit_width <= want.index_type.bit_width
    )


def _conforming(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Each batch as ``schema`` (the stream's): a dictionary index widened, nullability as the
    schema says; a batch with other columns or types is refused, naming them (pyarrow's reader
    passes it on unchecked, and the engine would read its memory as the schema's types)."""
    for i, b in enumerate(batches):
        if b.schema.equals(schema):
            yield b
            continue
        if b.schema.names != schema.names or not all(_fits(g.type, w.type) for g, w in zip(b.schema, schema)):
            diff = [
                f"'{w.name}' {g.type} (first batch: {w.type})"
                for g, w in zip(b.schema, schema)
                if g.name == w.name and not _fits(g.type, w.type)
            ]
            what = ", ".join(diff) if diff and b.schema.names == schema.names else f"columns {b.schema.names} (first batch: {schema.names})"
            raise TypeError(f"read: batch {i} of the stream has {what}; pass schema= to cast every batch to one schema")
        cols = [c.cast(w.type) if not c.type.equals(w.type) else c for c, w in zip(b.columns, schema)]
        yield pa.RecordBatch.from_arrays(cols, schema=schema)


def _checked_reader(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """``reader`` with every batch checked against (and made to fit) its declared schema."""
    schema = _widened(reader.schema)
    return pa.RecordBatchReader.from_batches(schema, _conforming(schema, iter(reader)))


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

    sch = _widened(sch)
    return pa.RecordBatchReader.from_batches(sch, _conforming(sch, batches()))


def make_source(
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
            source = _reader_cast(source, schema)
        return _core.Source.stream(_checked_reader(source))
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


def _reader_cast(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        for b in reader:
            yield b.select(schema.names).cast(schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def sink_of(target: object, key: str | None) -> _core.Sink:
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
