"""Repartitioning for consumer-group runs, as Kafka Streams does it.

In a group run each process holds the state of the partitions assigned to it. That is right for
an operator keyed by what the input topic is partitioned by (all records of a key are in one
partition), and wrong for any other key: its records are spread over partitions, hence over
processes. So a group pipeline is cut before every keyed operator (``window``, ``group_by``,
``rolling``/``lag``/... series, ``stateful_map``) whose key is not the current partitioning:
the part before the cut writes its output to an internal topic keyed by the operator's key
(``<run name>-repartition-<k>``, created with the input's partition count), and the part after
the cut reads that topic with its own consumer group (``<group>-repartition-<k>``). Every stage
runs in every process; each is checkpointed under its own name.

The input topic counts as partitioned by its record ``key`` column, or by the columns named in
``Pipeline.read(..., partitioned_by=...)`` (when the producers keyed the records by them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riverbed.exceptions import PlanError

# Operators whose state is per key, and the plan field naming the key.
_KEYED = {"window": "by", "group_by": "by", "series": "by", "stateful_map": "by"}
# Columns a log or Kafka source adds to every record: the internal topic's records get their own.
_RECORD_COLUMNS = ("key", "partition", "offset")


@dataclass
class Stage:
    """One cut of a group pipeline: its plan (source index 0), where it reads and what it writes."""

    node: dict[str, Any]
    # The topic read (None: the pipeline's own source) and with which group.
    topic: str | None
    group: str
    # The internal topic written, keyed by this column (None: the pipeline's own sink).
    writes: str | None
    key: str | None


def _chain(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes from the root down to the source (a group pipeline reads one source)."""
    out = [node]
    while out[-1]["op"] != "source":
        n = out[-1]
        if "input" not in n:
            raise PlanError(
                f"{n['op']}: a pipeline reading a topic with a consumer group reads only that topic "
                "(unions and joins of several sources are not supported there yet)"
            )
        out.append(n["input"])
    return out


def _touches(node: dict[str, Any], cols: list[str]) -> bool:
    """Whether ``node`` may change or remove one of ``cols`` (so they no longer partition)."""
    op = node["op"]
    if op == "with_columns":
        return any(name in cols for name, _ in node["columns"])
    if op == "rename":
        return any(old in cols or new in cols for old, new in node["mapping"])
    if op == "select":
        return not set(cols) <= set(node["columns"])
    if op == "drop":
        return bool(set(cols) & set(node["columns"]))
    # Python functions and keyed operators make new rows: nothing is known of their columns.
    return op in ("map_batches", "window", "group_by", "stateful_map")


def stages(root: dict[str, Any], group: str, name: str, partitioned_by: list[str]) -> list[Stage]:
    """Cut the plan ``root`` (of a group run named ``name``) into stages, source first."""
    chain = _chain(root)[::-1]  # source first
    current: list[str] | None = list(partitioned_by)
    declared: list[str] | None = None  # key_by's columns: the default key of later operators
    cuts: list[tuple[int, str]] = []  # (index in chain of the keyed node, its key column)
    for i, n in enumerate(chain[1:], start=1):
        op = n["op"]
        if op == "key_by":
            declared = list(n["columns"])
            continue
        if op in _KEYED:
            by = list(n.get(_KEYED[op]) or declared or [])
            if not by:
                raise PlanError(
                    f"{op}: without a key (by=) it aggregates over every partition, which the processes "
                    "of a consumer group cannot do separately; give it a key"
                )
            if by != current:
                if len(by) != 1:
                    raise PlanError(
                        f"{op}: by={by} needs a repartition by several columns, which is not supported "
                        "yet; combine them into one column with with_columns and key by that"
                    )
                cuts.append((i, by[0]))
                current = by
            # Its output rows are keyed by `by` (windows, group_by keep the key columns).
            continue
        if current is not None and _touches(n, current):
            current = None
    if not cuts:
        return [Stage(node=root, topic=None, group=group, writes=None, key=None)]
    out: list[Stage] = []
    below: dict[str, Any] = chain[0]
    prev_cut = 0
    topic: str | None = None
    read_group = group
    source = chain[0]
    for k, (i, key) in enumerate(cuts, start=1):
        internal = f"{name}-repartition-{k}"
        # The stage before the cut: what feeds the keyed node, minus the record columns.
        feed = _rebuild(chain, prev_cut, i - 1, below)
        feed = {"op": "drop_if_present", "input": feed, "columns": list(_RECORD_COLUMNS)}
        out.append(Stage(node=feed, topic=topic, group=read_group, writes=internal, key=key))
        below = {**source, "source": 0, "name": f"repartition-{k}"}
        prev_cut = i - 1
        topic = internal
        read_group = f"{group}-repartition-{k}"
    out.append(Stage(node=_rebuild(chain, prev_cut, len(chain) - 1, below), topic=topic, group=read_group, writes=None, key=None))
    return out


def _rebuild(chain: list[dict[str, Any]], start: int, end: int, bottom: dict[str, Any]) -> dict[str, Any]:
    """The nodes ``chain[start+1 .. end]`` stacked on ``bottom`` (``chain[start]``'s replacement)."""
    node = bottom
    for n in chain[start + 1 : end + 1]:
        node = {**n, "input": node}
    return node


def resolve_drops(node: dict[str, Any], schema_of: Any) -> dict[str, Any]:
    """Turn each ``drop_if_present`` into a ``drop`` of the listed columns its input has
    (``schema_of(node)`` gives a plan's output schema, or None when a UDF decides it)."""
    if node["op"] != "drop_if_present":
        return node
    inner = node["input"]
    schema = schema_of(inner)
    if schema is None:
        raise PlanError(
            "repartition: a Python function (map/map_batches) before a keyed operator that needs a "
            "repartition decides the columns only at run time; key the records before it, or give "
            "the function's output schema with map(schema=...)"
        )
    present = [c for c in node["columns"] if c in schema.names]
    return {"op": "drop", "input": inner, "columns": present} if present else inner


class StagedHandle:
    """Runs the stages of a group pipeline as one run, with the interface of a native run
    handle: following, every stage runs at once; bounded, one after the other (each reads what
    the one before wrote)."""

    def __init__(self, runs: list[tuple[Any, Any, tuple]], follow: bool) -> None:
        import threading

        self._runs = runs
        self._handles: list[Any] = []
        self._results: list[dict[str, Any]] = []
        self._error: BaseException | None = None
        self._stopping = False
        # Who stops a bounded stage: the thread when it ends, or stop() when asked first.
        self._lock = threading.Lock()
        if follow:
            self._handles = [native.start(sink, True, *args) for native, sink, args in runs]
            self._thread = None
        else:
            self._thread = threading.Thread(target=self._in_turn, name="riverbed-stages", daemon=True)
            self._thread.start()

    def _in_turn(self) -> None:
        try:
            for native, sink, args in self._runs:
                with self._lock:
                    if self._stopping:
                        return
                    h = native.start(sink, False, *args)
                    self._handles.append(h)
                h.wait(None)
                with self._lock:
                    if self._stopping:
                        return  # stop() stops it and takes its result
                    self._results.append(h.stop(3600.0))
        except BaseException as e:  # noqa: BLE001 - re-raised by stop()
            self._error = e

    @property
    def running(self) -> bool:
        if self._thread is not None:
            return self._thread.is_alive()
        return any(h.running for h in self._handles)

    def wait(self, timeout: float | None = None) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        for h in self._handles:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not h.wait(left):
                return False
        return True

    def metrics(self) -> list[dict[str, Any]]:
        done = [m for r in self._results for m in r.get("metrics", [])]
        live = [m for h in self._handles[len(self._results) :] for m in h.metrics()]
        return done + live

    def checkpoint_stats(self) -> dict[str, Any]:
        done = [r.get("checkpoints", {}) for r in self._results]
        live = [h.checkpoint_stats() for h in self._handles[len(self._results) :]]
        return merge_checkpoint_stats(done + live)

    def stop(self, timeout: float = 5.0) -> dict[str, Any]:
        with self._lock:
            self._stopping = True
            # The stages the thread has not stopped (one that failed was: its error is raised).
            pending = self._handles[len(self._results) + (self._error is not None) :]
        if self._thread is None:
            errors = []
            for h in self._handles:
                try:
                    self._results.append(h.stop(timeout))
                except BaseException as e:  # noqa: BLE001 - the first is raised below
                    errors.append(e)
            if errors:
                raise errors[0]
        else:
            for h in pending:
                self._results.append(h.stop(timeout))
            self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        last = self._results[-1] if self._results else {}
        return {
            "output": last.get("output", []),
            "late": [b for r in self._results for b in r.get("late", [])],
            "metrics": [m for r in self._results for m in r.get("metrics", [])],
            "checkpoints": merge_checkpoint_stats([r.get("checkpoints", {}) for r in self._results]),
            "notes": [n for r in self._results for n in r.get("notes", [])],
        }


def merge_checkpoint_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The checkpoint costs of several stages as one run's: counts summed, the longest kept, the
    newest figures of the stage that checkpointed last (the last one that wrote any)."""
    stats = [s for s in stats if s]
    if not stats:
        return {}
    newest = ([s for s in stats if s.get("written")] or stats)[-1]
    out = dict(newest)
    out["written"] = sum(int(s.get("written", 0)) for s in stats)
    for k in ("max_pause_ms", "max_write_ms"):
        out[k] = max(float(s.get(k, 0.0)) for s in stats)
    return out


def with_event_time(node: dict[str, Any], ts: str | None) -> dict[str, Any]:
    """A copy of a stage's plan whose source reads event time from column ``ts`` (the column the
    stage before wrote it in)."""
    if node["op"] == "source":
        return {**node, "timestamp": ts}
    return {**node, "input": with_event_time(node["input"], ts)}


def ensure_topic(kafka: Any, name: str, partitions: int) -> None:
    """Create the internal topic unless it exists (another process may create it meanwhile)."""
    if name in kafka.topics():
        return
    try:
        kafka.create_topic(name, partitions)
    except Exception:
        if name not in kafka.topics():
            raise
