"""The embedded log: ``Log`` (a directory of topics), ``Topic``, ``Consumer`` and ``Record``.

>>> import riverbed as rb, tempfile
>>> with rb.Log(tempfile.mkdtemp()) as log:
...     t = log.topic("clicks", partitions=2)
...     t.produce({"page": "/"}, key="user-1", timestamp=1_700_000_000_000)
...     t.read().num_rows
(1, 0)
1
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa

from riverbed import _core, _topic_io
from riverbed._tabular import arrow_input as _arrow_input
from riverbed._units import duration_ms, timeout_s, timestamp_ms

if TYPE_CHECKING:
    from riverbed.table import Table

_TOPIC_SETTINGS = {
    "partitions",
    "retention_ms",
    "retention_bytes",
    "segment_bytes",
    "segment_ms",
    "cleanup",
    "delete_retention_ms",
}
_DURATION_SETTINGS = {"retention_ms", "segment_ms", "delete_retention_ms"}
_BYTE_SETTINGS = {"retention_bytes", "segment_bytes"}
_I64_MAX = 2**63 - 1


#: The most partitions a topic may have. Each partition keeps one file open (its active segment),
#: so a new topic is also refused up front when its partitions would not fit the process's
#: open-file limit (``ulimit -n``), rather than failing half-way through creating them.
MAX_PARTITIONS = 10_000
_FD_HEADROOM = 64


def _check_open_files(partitions: int, name: str) -> None:
    try:
        import resource
    except ImportError:  # not on Unix: no limit to check against
        return
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        open_now = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else len(os.listdir("/dev/fd"))
    except OSError:
        open_now = 0
    free = soft - open_now - _FD_HEADROOM
    if partitions > free:
        raise ValueError(
            f"topic {name!r} with {partitions} partitions needs {partitions} open files (one per partition), "
            f"but this process may open only {max(free, 0)} more (ulimit -n is {soft}); raise the limit or use fewer partitions"
        )


def _int_in(value: object, field: str, lo: int, hi: int) -> int:
    """An int within [lo, hi], or a TypeError/ValueError that names the field."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{field} must be an int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ValueError(f"{field} must be between {lo} and {hi}, got {value}")
    return value


def _to_bytes(value: object, field: str) -> bytes | None:
    """bytes as they are, str as UTF-8, anything else JSON-encoded."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise TypeError(f"{field} must be bytes, str or JSON-serialisable, got {type(value).__name__}: {e}") from None


def _headers(headers: object) -> list[tuple[str, bytes | None]]:
    if headers is None:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    out = []
    try:
        for k, v in items:  # type: ignore[union-attr]
            if not isinstance(k, str):
                raise TypeError(f"header keys must be str, got {type(k).__name__}")
            out.append((k, _to_bytes(v, f"header {k!r}")))
    except (TypeError, ValueError) as e:
        if isinstance(e, TypeError) and "header" in str(e):
            raise
        raise TypeError(f"headers must be a dict or a list of (str, bytes) pairs: {e}") from None
    return out


def _start_spec(start: object, field: str = "start") -> str | tuple[str, int]:
    if start in ("earliest", "latest"):
        return start  # type: ignore[return-value]
    if isinstance(start, str):
        raise ValueError(f"{field} must be 'earliest', 'latest', an offset or a datetime, got {start!r}")
    if isinstance(start, _dt.datetime):
        return ("time", timestamp_ms(start, field))
    if isinstance(start, int) and not isinstance(start, bool):
        return ("offset", _int_in(start, field, -_I64_MAX - 1, _I64_MAX))
    raise TypeError(f"{field} must be 'earliest', 'latest', an int offset or a datetime, got {type(start).__name__}")


class Record(NamedTuple):
    """One record, as iteration over a ``Consumer`` yields it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


def batch_records(batch: pa.RecordBatch) -> Iterator[Record]:
    """The rows of a polled batch as ``Record`` tuples (timestamps as exact int milliseconds)."""
    ts = batch.column("timestamp").cast(pa.int64()).to_pylist()
    cols = {name: batch.column(name).to_pylist() for name in ("topic", "partition", "offset", "key", "value", "headers")}
    for i in range(batch.num_rows):
        yield Record(
            cols["topic"][i],
            cols["partition"][i],
            cols["offset"][i],
            ts[i],
            cols["key"][i],
            cols["value"][i],
            [(h["key"], h["value"]) for h in cols["headers"][i]],
        )


class Log:
    """An embedded, durable, partitioned log in a directory (Kafka's on-disk format).

    ``fsync`` is ``"batch"`` (every produce call is on disk when it returns; the default),
    ``"interval"`` (fsync every ``fsync_interval``, default 1 s; it needs ``fsync="interval"``)
    or ``"never"`` (page cache only). ``cleanup_interval``: how often retention and compaction
    run (``None``: never in the background). Only one process may open a directory; a second
    gets ``LogLocked``.
    """

    def __init__(
        self,
        path: str | Path,
        fsync: str = "batch",
        *,
        fsync_interval: object | None = None,
        cleanup_interval: object | None = "30s",
    ) -> None:
        if fsync not in ("batch", "interval", "never"):
            raise ValueError(f"fsync must be 'batch', 'interval' or 'never', got {fsync!r}")
        if fsync_interval is not None and fsync != "interval":
            raise ValueError(f"fsync_interval has no effect with fsync={fsync!r}; it needs fsync='interval'")
        fsync_ms = 1_000 if fsync_interval is None else duration_ms(fsync_interval, "fsync_interval")
        if fsync_ms <= 0:
            raise ValueError(f"fsync_interval must be positive, got {fsync_interval!r}")
        cleanup_ms = None if cleanup_interval is None else duration_ms(cleanup_interval, "cleanup_interval")
        if cleanup_ms is not None and cleanup_ms <= 0:
            # 0 would run retention and compaction in a loop, busy on a core.
            raise ValueError(f"cleanup_interval must be positive (or None for no background cleanup), got {cleanup_interval!r}")
        self._inner = _core.Log(str(path), fsync, fsync_ms, cleanup_ms)

    @property
    def path(self) -> Path:
        return Path(self._inner.path)

    def topic(self, name: str, partitions: int | None = None, **config: Any) -> Topic:
        """Open topic ``name``, creating it if missing (``partitions`` defaults to 1 then).

        Settings use Kafka's names: ``retention_ms``, ``retention_bytes``, ``segment_bytes``,
        ``segment_ms``, ``cleanup`` (``"delete"`` or ``"compact"``), ``delete_retention_ms``;
        the ``*_ms`` ones also take ``"7d"``-style strings. A setting that contradicts the
        stored config raises ``TopicConfigError``.
        """
        if not isinstance(name, str):
            raise TypeError(f"topic name must be str, got {type(name).__name__}")
        unknown = set(config) - _TOPIC_SETTINGS
        if unknown:
            raise TypeError(f"unknown topic setting(s) {sorted(unknown)}; known: {sorted(_TOPIC_SETTINGS)}")
        opts: dict[str, Any] = {}
        if partitions is not None:
            opts["partitions"] = _int_in(partitions, "partitions", 1, MAX_PARTITIONS)
            if name not in self._inner.topics():
                _check_open_files(opts["partitions"], name)
        for k, v in config.items():
            if k in _DURATION_SETTINGS and v is not None:
                v = _int_in(duration_ms(v, k, max_ms=_I64_MAX), k, 0, _I64_MAX)
            elif k in _BYTE_SETTINGS and v is not None:
                v = _int_in(v, k, 0, 2**64 - 1)
            elif k == "cleanup" and v not in ("delete", "compact"):
                raise ValueError(f"cleanup must be 'delete' or 'compact', got {v!r}")
            opts[k] = v
        return Topic(self._inner.topic(name, opts))

    def table(self, topic: str | Topic, schema: object = None) -> Table:
        """A compacted topic read as an ``rb.Table``: the latest value per record key (JSON values
        decoded into ``schema``, inferred when None), loaded now; a record with a null value (a
        tombstone) deletes its key. ``start()`` keeps it following the topic. As the right side
        of ``join_table`` it is versioned by record timestamp."""
        from riverbed.pipeline import Pipeline
        from riverbed.table import Table

        t = topic if isinstance(topic, Topic) else self[topic]

        def null_values(at: list[tuple[int, int]]) -> set[tuple[int, int]]:
            # Rows that decoded to nulls only: a tombstone has a null value, a JSON object of
            # nulls (or of fields the schema lacks) does not. Each record is read again.
            out = set()
            ends = {p: hi for p, (_, hi) in t.offsets().items()}
            with t.consumer() as c:
                for p, o in sorted(set(at)):
                    for q, hi in ends.items():
                        c.seek(q, hi)
                    c.seek(p, o)
                    got = c.poll(1, timeout=1.0)
                    if got.num_rows and got.column("offset")[0].as_py() == o and got.column("value")[0].as_py() is None:
                        out.add((p, o))
            return out

        table = Table(Pipeline.read(t, schema=schema), ["key"], deletes=True, null_values=null_values)
        table.run()
        return table

    def __getitem__(self, name: str) -> Topic:
        """An existing topic; ``TopicNotFound`` if there is none."""
        return Topic(self._inner.get_topic(name))

    def topics(self) -> list[str]:
        """Names of the user topics."""
        return self._inner.topics()

    def delete_topic(self, name: str) -> None:
        """Delete a topic and its data (atomic across crashes). Internal topics such as
        ``__consumer_offsets`` can't be deleted (``InternalTopicError``)."""
        self._inner.delete_topic(name)

    def cleanup(self) -> dict[str, int]:
        """Apply retention and compaction now (a background thread also does it periodically)."""
        return self._inner.cleanup()

    def flush(self) -> None:
        """fsync everything written so far (useful with ``fsync="interval"`` or ``"never"``)."""
        self._inner.flush()

    def open_report(self) -> list[dict[str, Any]]:
        """What recovery found and repaired when the log was opened, and damage found since.

        One dict per finding: ``kind`` (``torn_tail``: an incomplete last write, truncated;
        ``quarantined``: damaged bytes kept in place, their offsets a gap; ``missing_segment``;
        ``stray_segment``: a ``.log`` file that would make offsets exist twice, ignored and left
        in place; ``index_rebuilt``; ``topic_rebuilt``: a lost ``topic.json`` rebuilt from the
        partition directories; ``bad_metadata``: that topic is unavailable; ``not_a_topic``;
        ``truncation_finished`` / ``truncation_ignored``), ``topic``, ``partition``, ``path``,
        ``position`` (byte), ``offsets`` (``(from, to)`` that can't be read, or None),
        ``reason`` and ``message`` (one line naming all of it).
        """
        return self._inner.open_report()

    def check(self, topic: str | None = None) -> list[dict[str, Any]]:
        """Verify every batch (CRC), index and metadata file, of ``topic`` or of every topic.

        Returns every damage known, as dicts like ``open_report()``'s; an empty list means the
        log is intact. Damage found here is quarantined (its offsets become a gap), never deleted.
        """
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic must be str, got {type(topic).__name__}")
        return self._inner.check(topic)

    def close(self) -> None:
        """Flush, stop background work and release the directory lock. Idempotent."""
        self._inner.close()

    @property
    def closed(self) -> bool:
        return self._inner.closed

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Log({str(self.path)!r}, topics={self.topics()!r})"

    def _repr_html_(self) -> str:
        from riverbed.display import log_html

        return log_html(self)


class Topic:
    """A topic of a ``Log``: produce to it, read it, or create consumers."""

    def __init__(self, inner: _core.Topic) -> None:
        self._inner = inner

    def _riverbed_source(
        self,
        schema: pa.Schema | None,
        fmt: str,
        batch_size: int | None,
        on_error: str | None,
        dead_letter: object,
        group: str | None,
        start: str,
    ) -> _core.Source:
        """The pipeline source reading this topic (``Pipeline.read``; riverbed._topic_io)."""
        return _topic_io.log_source(self._inner, schema, fmt, batch_size, on_error, dead_letter, group, start)

    def _riverbed_sink(self, key: str | None) -> _core.Sink:
        """The pipeline sink writing to this topic (``Pipeline.write``)."""
        return self._inner.sink(key)

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def partitions(self) -> int:
        return self._inner.partitions

    @property
    def config(self) -> dict[str, Any]:
        return self._inner.config()

    def produce(
        self,
        value: object,
        key: object = None,
        timestamp: int | _dt.datetime | None = None,
        headers: Mapping[str, object] | list[tuple[str, object]] | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Append one record; returns ``(partition, offset)``.

        ``value``/``key``: bytes, str (UTF-8) or a JSON-serialisable object. ``timestamp``: int ms,
        a datetime, or None for now. Keyed records go to Kafka's murmur2 partition.
        """
        if partition is not None:
            _int_in(partition, "partition", 0, 2**32 - 1)
        return self._inner.produce(
            _to_bytes(key, "key"),
            _to_bytes(value, "value"),
            _int_in(timestamp_ms(timestamp), "timestamp", -_I64_MAX - 1, _I64_MAX),
            _headers(headers),
            partition,
        )

    def produce_batch(
        self,
        data: object,
        key: str | None = None,
        value: str | None = None,
        timestamp: str | None = None,
        *,
        index: bool = False,
        non_finite: str = "error",
    ) -> tuple[pa.Array, pa.Array]:
        """Append every row of a pyarrow Table/RecordBatch or pandas/polars DataFrame.

        ``key``, ``value`` and ``timestamp`` name columns. Binary and string columns are written
        as they are, other types as JSON. With ``value=None`` each row becomes a JSON object of
        all its columns. Returns the partition and offset of every row as two Arrow arrays.

        Nothing is changed silently on the way: a NaN or infinite float (which JSON cannot hold)
        is a ``SchemaError`` naming the column and row unless ``non_finite="null"`` asks for JSON
        null; a pandas index is written (as a column named after it) only with ``index=True``;
        duplicate column names are an error; binary values inside JSON are base64 strings (as
        Kafka Connect writes them); timestamps must lie in the years 1 to 9999.
        """
        for field, col in (("key", key), ("value", value), ("timestamp", timestamp)):
            if col is not None and not isinstance(col, str):
                raise TypeError(f"{field} must name a column (str), got {type(col).__name__}")
        if not isinstance(index, bool):
            raise TypeError(f"index must be a bool, got {type(index).__name__}")
        if non_finite not in ("error", "null"):
            raise ValueError(f"non_finite must be 'error' or 'null', got {non_finite!r}")
        return self._inner.produce_arrow(_arrow_input(data, index), key, value, timestamp, non_finite)

    def consumer(self, group: str | None = None, start: object = "earliest") -> Consumer:
        """A consumer of every partition, or of this member's share when ``group`` is given.

        ``start`` (``"earliest"``, ``"latest"``, an offset or a datetime) applies where the group
        has no committed offset.
        """
        if group is not None and not isinstance(group, str):
            raise TypeError(f"group must be str, got {type(group).__name__}")
        return Consumer(self._inner.consumer(group, _start_spec(start)))

    def read(self, start: object = "earliest", end: object = "latest", *, on_gap: str = "raise") -> pa.Table:
        """Every record from ``start`` to ``end`` (exclusive), partition by partition, as a Table.

        Offsets that can't be read (damaged bytes quarantined by recovery, or a missing segment:
        see ``gaps()``) raise ``DataGap`` naming topic, partition, offsets, file and byte
        position; with ``on_gap="skip"`` they are skipped, each with a ``RuntimeWarning``.
        """
        if on_gap not in ("raise", "skip"):
            raise ValueError(f"on_gap must be 'raise' or 'skip', got {on_gap!r}")
        batch, skipped = self._inner.read(_start_spec(start), _start_spec(end, "end"), on_gap == "skip")
        for g in skipped:
            warnings.warn(
                f"{self.name}/{g['partition']}: skipped offsets {g['from']}..{g['to']} that can't be read "
                f"({g['kind']}: {g['file']} at byte {g['position']}: {g['reason']})",
                RuntimeWarning,
                stacklevel=2,
            )
        return pa.Table.from_batches([batch])

    def gaps(self) -> list[dict[str, Any]]:
        """Offset ranges that can't be read: ``{"partition", "from", "to", "kind", "file",
        "position", "length", "reason"}`` each (``kind``: ``quarantined`` or ``missing_segment``).
        A consumer meeting one raises ``DataGap``; ``seek(partition, to)`` moves past it."""
        return self._inner.gaps()

    def offsets(self) -> dict[int, tuple[int, int]]:
        """``{partition: (earliest, latest)}``; latest is the next offset to be written."""
        return dict(enumerate(self._inner.offsets()))

    def offsets_for_times(self, ts: int | _dt.datetime) -> dict[int, int | None]:
        """``{partition: earliest offset with timestamp >= ts, or None}``."""
        return dict(enumerate(self._inner.offsets_for_time(timestamp_ms(ts, "ts"))))

    def partition_for(self, key: object) -> int:
        """The partition a record with this key goes to (Kafka's default partitioner)."""
        return self._inner.partition_for(_to_bytes(key, "key"))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config, "partitions": self._inner.describe()}

    def __repr__(self) -> str:
        return f"Topic({self.name!r}, partitions={self.partitions})"

    def _repr_html_(self) -> str:
        from riverbed.display import topic_html

        return topic_html(self)


class Consumer:
    """Reads records as Arrow batches (``poll``) or one by one (iteration)."""

    def __init__(self, inner: _core.Consumer) -> None:
        self._inner = inner

    def poll(self, max_records: int = 10_000, timeout: float = 1.0) -> pa.RecordBatch:
        """Up to ``max_records`` records, waiting up to ``timeout`` seconds for new ones.

        Columns: ``topic, partition, offset, timestamp, key, value, headers``.
        """
        _int_in(max_records, "max_records", 1, 2**31 - 1)
        return self._inner.poll(max_records, timeout_s(timeout, "timeout"))

    def records(self, timeout: float = 1.0) -> Iterator[Record]:
        """Yield records one at a time until a poll finds nothing for ``timeout`` seconds."""
        timeout_s(timeout, "timeout")  # checked before the first record is asked for
        while True:
            batch = self.poll(timeout=timeout)
            if batch.num_rows == 0:
                return
            yield from batch_records(batch)

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def commit(self) -> None:
        """Commit the current positions durably (group consumers)."""
        self._inner.commit()

    def committed(self) -> dict[int, int | None]:
        return dict(self._inner.committed())

    def position(self) -> dict[int, int]:
        """``{partition: next offset to read}`` for the assigned partitions."""
        return dict(self._inner.position())

    def assignment(self) -> list[int]:
        return self._inner.assignment()

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` next (it must be within [earliest, latest])."""
        self._inner.seek(_int_in(partition, "partition", 0, 2**32 - 1), _int_in(offset, "offset", -_I64_MAX - 1, _I64_MAX))

    def seek_to_time(self, ts: int | _dt.datetime) -> None:
        self._inner.seek_to_time(timestamp_ms(ts, "ts"))

    @property
    def group(self) -> str | None:
        return self._inner.group

    def close(self) -> None:
        """Leave the group, committing positions (as Kafka's auto-commit does). Idempotent."""
        self._inner.close()

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
