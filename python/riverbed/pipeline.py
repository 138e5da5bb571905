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
and Python functions its nodes refer to by index. This module builds the plan; running it is
``riverbed.run`` (the ``Running`` base class), what it reads and writes ``riverbed._inputs``,
and its Python functions ``riverbed._udfs``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from riverbed import _core, _state_codec, _topic_io
from riverbed._inputs import as_schema as _as_schema
from riverbed._inputs import batch_size as _batch_size
from riverbed._inputs import make_source as _make_source
from riverbed._inputs import sink_of as _sink_of
from riverbed._udfs import StatefulUdf, batch_udf, record_udf
from riverbed._units import duration_ms
from riverbed.expr import Expr, _node
from riverbed.run import Running, RunResult
from riverbed.windows import Window

if TYPE_CHECKING:
    from riverbed.table import Table

__all__ = ["GroupBy", "Pipeline", "RunResult", "WindowedPipeline"]

_EMITS = ("final", "update")


# -- helpers ----------------------------------------------------------------------------------


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


# -- Pipeline ---------------------------------------------------------------------------------

class Pipeline(Running):
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
        node = {"op": "map_batches", "input": self._node, "udf": len(self._udfs), "name": label}
        return self._derive(node, udfs=[*self._udfs, batch_udf(fn, label)])

    def map(self, fn: Callable[[dict[str, Any]], dict[str, Any] | None], schema: object = None) -> Pipeline:
        """Apply ``fn`` to every record as a dict; it returns a dict (or None to drop the record).

        The slow path: each batch goes through Python objects. Prefer ``with_columns`` or
        ``map_batches``. ``schema`` fixes the output schema (otherwise inferred from the first
        non-empty result).
        """
        if not callable(fn):
            raise TypeError(f"map takes a function, got {type(fn).__name__}")
        label = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "map")
        return self.map_batches(record_udf(fn, _as_schema(schema)), name=f"map({label})")

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

        keys = _names(key, "to_table")
        node = self._node
        while node["op"] == "named":
            node = node["input"]
        # A session window retracts a session (by, window_start) that merged into an earlier one
        # with a row whose aggregates are all null: in a table keyed by its start, that deletes it.
        retracts = node["op"] == "window" and "session" in node["window"] and "window_start" in keys
        if retracts and not any(e.get("agg", {}).get("func") == "count" for _, e in node["aggs"]):
            raise ValueError(
                "to_table over session windows keyed by window_start needs an rb.count() among the aggregates: "
                "a retracted session is a row with every aggregate null, and so is a session whose aggregates "
                "are all null (count never is)"
            )
        return Table(self, keys, tombstone=[a for a, _ in node["aggs"]] if retracts else None)

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
        udf = StatefulUdf(fn, keys, initial, _as_schema(schema), label, state_codec)
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

    # -- running (see riverbed.run) ----------------------------------------------------
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
