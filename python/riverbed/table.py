"""``Table``: the latest row per key of a stream, readable while the stream runs.

Kafka Streams calls it a KTable. A table comes from ``pipeline.to_table(key)`` (the latest record
per key), from an unwindowed ``group_by(...).agg(...)`` (the running aggregates per key) or from
``log.table(topic)`` (a compacted topic; a record with a null value deletes its key).

>>> import riverbed as rb, pyarrow as pa
>>> prices = pa.table({"sym": ["A", "B", "A"], "px": [1.0, 2.0, 3.0], "ts": [0, 1, 2]})
>>> t = rb.Pipeline.read(prices, timestamp="ts").to_table("sym")
>>> t.get("A")["px"]
3.0

A table is also the right side of ``pipeline.join_table(table, on=...)``, which looks each record
up in the table *as of the record's event time* — so a training set built from it never sees a
value from after its label.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from riverbed._keys import key_column as _key_column
from riverbed._keys import key_value as _key_value
from riverbed._units import timeout_s

if TYPE_CHECKING:
    from riverbed.log import Topic
    from riverbed.pipeline import Pipeline, RunResult

__all__ = ["Table"]

_LOG_COLUMNS = ("key", "timestamp", "partition", "offset")
_COMPACT_AT = 1_000_000


def _without_null_entries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with each dictionary column whose dictionary holds a null entry re-encoded so
    that a null is a null index (same values and type). The engine passes a categorical's
    dictionary on as it came (``pc.dictionary_encode(null_encoding="encode")`` puts null in it),
    and pyarrow's ``unify_dictionaries``, which a table's compaction needs, refuses such
    dictionaries ("Cannot yet unify dictionaries with nulls")."""
    cols = batch.columns
    fix = [
        i
        for i, c in enumerate(cols)
        if pa.types.is_dictionary(c.type) and c.dictionary.null_count  # type: ignore[attr-defined]
    ]
    if not fix:
        return batch
    cols = list(cols)
    for i in fix:
        c = cols[i]
        cols[i] = c.cast(c.type.value_type).dictionary_encode().cast(c.type)
    return pa.RecordBatch.from_arrays(cols, schema=batch.schema)


class Table:
    """The latest row per ``key`` of a changelog pipeline. Run it (``run()``, or ``start()`` to
    follow), then read it with ``get(key)``, ``to_arrow()`` or ``to_pandas()`` — also while it runs.
    A table that has never run is run to the end of its input on its first read."""

    def __init__(
        self,
        changelog: Pipeline,
        key: list[str],
        *,
        deletes: bool = False,
        tombstone: list[str] | None = None,
        null_values: Callable[[list[tuple[int, int]]], set[tuple[int, int]]] | None = None,
    ) -> None:
        """``deletes``: a row whose values (every column but the key and the log's) are all null
        deletes its key (a topic's tombstone); ``null_values`` tells, of such rows' (partition,
        offset), which records really have a null value (a JSON object of nulls is no tombstone).
        ``tombstone``: a row with these columns all null deletes its key (a session window's
        retraction)."""
        schema = changelog.schema
        if not key:
            raise ValueError("a table needs key columns")
        if schema is not None:
            missing = [k for k in key if k not in schema.names]
            if missing:
                raise ValueError(f"table key {missing} not in the columns {schema.names}")
        self._changelog = changelog
        self.key = list(key)
        self._deletes = deletes
        self._tombstone = tombstone
        self._null_values = null_values
        self._null_checked: dict[tuple[int, int], bool] = {}  # (partition, offset) -> value is null
        self._lock = threading.Lock()
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._live = 0
        self._view: pa.Table | None = None
        # The key -> row index of one view, with that view (a newer view needs its own).
        self._index: tuple[pa.Table, dict[Any, int]] | None = None
        self._runner: Pipeline | None = None
        self._ran = False

    # -- the changelog ----------------------------------------------------------------------
    @property
    def changelog(self) -> Pipeline:
        """The pipeline of the table's updates (one row per change)."""
        return self._changelog

    @property
    def schema(self) -> pa.Schema | None:
        return self._changelog.schema

    def write(self, topic: Topic) -> Pipeline:
        """The changelog keyed by the table's key, written to ``topic`` (make it
        ``cleanup_policy="compact"`` to keep the latest row per key); ``run()``/``start()`` it."""
        return self._changelog.key_by(*self.key).write(topic)

    def _value_columns(self) -> list[str] | None:
        """The columns a ``join_table`` adds: a topic's table adds its values only (so a deleted
        key gives nulls throughout); other tables all but the key."""
        schema = self.schema
        if not self._deletes or schema is None:
            return None
        return [n for n in schema.names if n not in self.key and n not in _LOG_COLUMNS]

    def _absorb(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        batch = _without_null_entries(batch)
        with self._lock:
            self._batches.append(batch)
            self._rows += batch.num_rows
            self._view = None
            self._index = None
            if self._rows > max(_COMPACT_AT, 4 * self._live):
                self._compact()

    # -- running ----------------------------------------------------------------------------
    def _aside(self) -> Table:
        """An empty table of the same changelog, to build a new run's contents in."""
        t = Table(self._changelog, self.key, deletes=self._deletes, tombstone=self._tombstone, null_values=self._null_values)
        t._null_checked = self._null_checked  # a record's value stays what it was
        return t

    def run(self) -> RunResult:
        """Rebuild the table from the whole input (a bounded run). It is built aside: readers
        see the previous contents until the rebuilt table replaces them at once (as a
        materialized view refreshed concurrently), and a run that fails leaves them as they were."""
        if self.running:
            raise RuntimeError("this table is running; stop() it first")
        fresh = self._aside()
        res = self._changelog.write(fresh._absorb).run()
        with fresh._lock, self._lock:
            self._batches, self._rows, self._live = fresh._batches, fresh._rows, fresh._live
            self._view, self._index = fresh._view, fresh._index
        self._ran = True
        return res

    def start(self, follow: bool = True) -> Table:
        """Maintain the table in the background from the input (following topics) until ``stop()``.

        The contents stay readable throughout. A table that has rows already (from ``run()``,
        ``log.table``, or a run that was stopped) keeps them, and the new run's updates apply over
        them as they come — as a Kafka Streams state store outlives a restart of its
        application: a reader never sees the table emptied, nor a key go missing, by a restart.
        The new run reads its input from the start again (a table keeps no position in it), so
        until it has caught up a key may show for a while an older row it replays; a key the
        contents hold that its input no longer has (records past a topic's retention) stays until
        a row deletes it. A run the engine refuses (a single-use stream runs once; ``stop()``
        raises it) leaves the contents as they were. ``run()`` rebuilds from scratch."""
        if self.running:
            raise RuntimeError("this table is already running")
        self._runner = self._changelog.write(self._absorb).start(follow)
        self._ran = True
        return self

    def stop(self, timeout: float = 10.0) -> RunResult:
        if self._runner is None:
            raise RuntimeError("this table was not started")
        timeout_s(timeout, "timeout")  # a bad timeout leaves the table running, and stoppable
        try:
            return self._runner.stop(timeout)
        finally:
            if not self._runner.running:
                self._runner = None

    @property
    def running(self) -> bool:
        return self._runner is not None and self._runner.running

    def __enter__(self) -> Table:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            self.stop()

    # -- reading ----------------------------------------------------------------------------
    def _compact(self) -> None:
        """Keep only the latest row per key (called with the lock held)."""
        import pyarrow.compute as pc  # here: importing it costs ~20 ms and some MB at start-up

        if not self._batches:
            view = self._empty()
        else:
            # One dictionary per column (batches of a categorical key each bring their own).
            whole = pa.Table.from_batches(self._batches).unify_dictionaries()
            idx = pa.array(range(whole.num_rows), pa.int64())
            latest = (
                pa.table({f"__k{i}": _key_column(whole.column(k)) for i, k in enumerate(self.key)})
                .append_column("__row", idx)
                .group_by([f"__k{i}" for i in range(len(self.key))], use_threads=False)
                .aggregate([("__row", "max")])
                .column("__row_max")
                .combine_chunks()
            )
            view = whole.take(latest.take(pc.sort_indices(latest)))
            values = self._tombstone
            if values is None and self._deletes:
                values = [n for n in view.column_names if n not in _LOG_COLUMNS and n not in self.key]
            if values:
                deleted = functools.reduce(pc.and_kleene, [pc.is_null(view.column(n)) for n in values])
                if self._null_values is not None and pc.any(deleted).as_py():
                    deleted = self._confirmed(view, deleted)
                view = view.filter(pc.invert(deleted))
        self._batches = view.to_batches()
        self._rows = self._live = view.num_rows
        self._view = view

    def _confirmed(self, view: pa.Table, candidates: pa.ChunkedArray) -> pa.Array:
        """Of the rows in ``candidates`` (values all null), those whose record's value is null."""
        assert self._null_values is not None
        parts, offs = view.column("partition").to_pylist(), view.column("offset").to_pylist()
        at = [(parts[i], offs[i]) for i, c in enumerate(candidates.to_pylist()) if c]
        # Each record is asked about once: a kept row of nulls stays in every later view.
        unknown = [a for a in at if a not in self._null_checked]
        if unknown:
            nulls = self._null_values(unknown)
            self._null_checked.update((a, a in nulls) for a in unknown)
        return pa.array([bool(c) and self._null_checked[(parts[i], offs[i])] for i, c in enumerate(candidates.to_pylist())])

    def _empty(self) -> pa.Table:
        schema = self.schema
        return pa.table({}) if schema is None else schema.empty_table()

    def to_arrow(self) -> pa.Table:
        """The table now: one row per key (sorted by when each key last changed)."""
        if not self._ran:
            self.run()
        with self._lock:
            if self._view is None:
                self._compact()
            assert self._view is not None
            return self._view

    def to_pandas(self) -> Any:
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def _lookup(self) -> tuple[pa.Table, dict[Any, int]]:
        view = self.to_arrow()
        with self._lock:
            if self._index is not None and self._index[0] is view:
                return self._index
            cols = [[_key_value(v) for v in view.column(k).to_pylist()] for k in self.key]
            keys = cols[0] if len(cols) == 1 else list(zip(*cols))
            index = {k: i for i, k in enumerate(keys)}
            if self._view is view:  # still the newest: keep it for the next lookup
                self._index = (view, index)
            return view, index

    def get(self, key: object, default: object = None) -> Any:
        """The row (a dict) for ``key`` — a value, or a tuple for several key columns — or
        ``default``. A str key also finds a binary key (a topic's record key)."""
        view, index = self._lookup()
        i = index.get(_key_value(key))
        if i is None and isinstance(key, str):
            i = index.get(key.encode())
        if i is None:
            return default
        return view.slice(i, 1).to_pylist()[0]

    def __getitem__(self, key: object) -> dict[str, Any]:
        row = self.get(key, _MISSING)
        if row is _MISSING:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING

    def __len__(self) -> int:
        return self.to_arrow().num_rows

    def __repr__(self) -> str:
        state = "running" if self.running else ("loaded" if self._ran else "not run yet")
        return f"Table(key={self.key}, {state}, {self._live if self._view is not None else self._rows} rows)"

    def _repr_html_(self) -> str:
        from riverbed.display import table_html

        return table_html(self)


_MISSING = object()
