"""How keys compare, on the Python side as in the engine: a dictionary-encoded (categorical) key
by its values, float -0.0 as 0.0 and every NaN as one key (as polars groups them)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

# One NaN object: NaN != NaN, but a dict and a tuple compare keys by identity first.
_NAN = float("nan")


def key_value(v: Any) -> Any:
    """A key value (from ``to_pylist``), or a tuple of them (several key columns), as the engine
    keys it."""
    if isinstance(v, float):
        return _NAN if v != v else v + 0.0
    if isinstance(v, tuple):
        return tuple(key_value(x) for x in v)
    return v


def key_column(c: pa.ChunkedArray) -> pa.ChunkedArray:
    """A key column for grouping with pyarrow (which groups floats by their bits and does not
    unify differing dictionaries)."""
    import pyarrow.compute as pc  # here: importing it costs ~20 ms at start-up

    if pa.types.is_dictionary(c.type):
        c = c.cast(c.type.value_type)
    if pa.types.is_floating(c.type):
        c = pc.if_else(pc.is_nan(c), pa.scalar(float("nan"), c.type), pc.add(c, pa.scalar(0.0, c.type)))
    return c
