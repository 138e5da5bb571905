"""``training_set``: point-in-time-correct training tables from label events and features.

Each label row gets, per feature source, the feature values as they were at the label's time —
never a value computed from an event after it (the leakage that quietly inflates offline scores).

>>> import riverbed as rb, pyarrow as pa
>>> ticks = pa.table({"sym": ["A"] * 4, "px": [1.0, 2.0, 3.0, 4.0], "ts": [0, 10, 20, 30]})
>>> feats = rb.Pipeline.read(ticks, timestamp="ts").rolling(by="sym", rows=2, px_mean=rb.mean("px"))
>>> labels = pa.table({"sym": ["A", "A"], "ts": [15, 25], "y": [0, 1]})
>>> rb.training_set(labels, [feats.select("sym", "ts", "px_mean")], on="ts", by="sym").column("px_mean").to_pylist()
[1.5, 2.5]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from riverbed.pipeline import Pipeline, _names
from riverbed.table import Table

__all__ = ["training_set"]

_WINDOW_COLUMNS = ("window_start", "window_end")


def training_set(
    labels: object,
    features: Pipeline | Table | Iterable[Pipeline | Table],
    on: str = "ts",
    by: str | Iterable[str] | None = None,
    *,
    tolerance: object = None,
    lateness: object = None,
    collect: bool = True,
) -> pa.Table | Pipeline:
    """Join every label row with each feature source as of the label's time ``on``, per key ``by``.

    ``labels``: a Pipeline, or anything ``Pipeline.read`` takes (a pyarrow/pandas/polars table, a
    topic), read with event time ``on``. ``features``: pipelines (a per-record feature is valid
    from its event time; a window's aggregates from its ``window_end``, i.e. only once every
    event in it is before the label) and tables (``log.table(...)``/``to_table(...)``, as of the
    label time). ``tolerance``: ignore feature values older than that. Columns that clash with
    earlier ones get the suffix ``_<n>`` of their feature source (1, 2, ...).

    Returns the training table (``collect=False``: the pipeline, e.g. to run it in follow mode
    for live features).
    """
    if isinstance(labels, Pipeline):
        if lateness is not None:
            raise ValueError("training_set: lateness= applies to labels read here; a Pipeline of labels has its own (Pipeline.read(lateness=))")
        p = labels
    else:
        p = Pipeline.read(labels, timestamp=on, lateness="0s" if lateness is None else lateness)
    sources: list[Any] = [features] if isinstance(features, (Pipeline, Table)) else list(features)
    if not sources:
        raise ValueError("training_set: give at least one feature pipeline or table")
    keys = [] if by is None else _names((by,), "training_set by")
    for i, f in enumerate(sources, start=1):
        suffix = f"_{i}"
        if isinstance(f, Table):
            if not keys:
                raise ValueError("training_set: joining a table needs by= (the label columns matching its key)")
            p = p.join_table(f, on=keys, suffix=suffix)
        elif isinstance(f, Pipeline):
            schema = f.schema
            windowed = schema is not None and all(c in schema.names for c in _WINDOW_COLUMNS)
            if windowed:
                # A window's value is complete only when it ends: match on window_end <= label time.
                p = p.join_asof(f, by=keys or None, tolerance=tolerance, right_on="window_end", suffix=suffix)
                p = p.drop(*[n for n in (p.schema.names if p.schema is not None else []) if n in _WINDOW_COLUMNS or any(n == c + suffix for c in _WINDOW_COLUMNS)])
            else:
                p = p.join_asof(f, on=on, by=keys or None, tolerance=tolerance, suffix=suffix)
        else:
            raise TypeError(f"training_set: features must be Pipelines or Tables, got {type(f).__name__}")
    return p.collect() if collect else p
