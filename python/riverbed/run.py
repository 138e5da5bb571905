"""Running a pipeline: bounded runs (with a progress bar), background runs (``start``/``stop``),
checkpoint arguments and worker counts, and what a run returns (``RunResult``). ``Pipeline``
(``riverbed.pipeline``) builds the plan; the methods here run it."""

from __future__ import annotations

import atexit
import operator
import time
import warnings
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from riverbed import _core
from riverbed._tabular import concat as _concat
from riverbed._units import duration_ms, timeout_s

__all__ = ["RunResult", "Running"]

# A pipeline's own type, for the methods that return it.
_P = TypeVar("_P", bound="Running")


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



# Pipelines started in the background: stopped when the interpreter exits, so no run calls into
# Python (a callback sink, a UDF) while it is being torn down.
_RUNNING: weakref.WeakSet[Running] = weakref.WeakSet()


@atexit.register
def _stop_running() -> None:
    for p in list(_RUNNING):
        try:
            p.stop(timeout=5.0)
        except BaseException:  # noqa: BLE001 - exiting: nothing left to report to
            pass


class Running:
    """The run control of a ``Pipeline`` (its base class): what the builder leaves to running."""

    _node: dict[str, Any]
    _sources: list[_core.Source]
    _udfs: list[Any]
    _sink: _core.Sink | None
    _inner: Any
    _handle: Any
    _last: RunResult | None
    _on_error: tuple[str | None, _core.Topic | None]
    _state_dir: str | None
    _group: str | None
    _from_topic: list[bool]

    @property
    def schema(self) -> pa.Schema | None:
        raise NotImplementedError

    def _late_schema(self) -> pa.Schema | None:
        raise NotImplementedError

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
        self: _P,
        follow: bool = True,
        *,
        name: str | None = None,
        checkpoint_interval: object = None,
        reset: bool = False,
        workers: int | None = None,
    ) -> _P:
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

    def __enter__(self: _P) -> _P:
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
