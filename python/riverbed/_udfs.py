"""Python functions as the engine calls them: one batch in, one batch out. ``map_batches``
takes any tabular result, ``map`` goes record by record, and ``stateful_map`` keeps per-key
state around the user's function, checkpointed as data (``riverbed._state_codec``)."""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa

from riverbed import _state_codec
from riverbed._keys import key_value as _key_value
from riverbed._tabular import to_batch as _to_batch
from riverbed.exceptions import CheckpointError


class StatefulUdf:
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


def batch_udf(fn: Callable[[pa.RecordBatch], object], label: str) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """``map_batches``: ``fn``'s RecordBatch, Table or pandas/polars DataFrame as a RecordBatch."""
    where = f"map_batches function {label!r}"

    @functools.wraps(fn)
    def udf(batch: pa.RecordBatch) -> pa.RecordBatch:
        return _to_batch(fn(batch), where)

    return udf


def record_udf(
    fn: Callable[[dict[str, Any]], dict[str, Any] | None], schema: pa.Schema | None
) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """``map``: ``fn`` per record (a dict; None drops it), the output schema fixed by ``schema``
    or else by the first non-empty result."""
    state: dict[str, pa.Schema | None] = {"schema": schema}

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

    return per_record
