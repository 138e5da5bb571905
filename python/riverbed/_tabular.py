"""Anything tabular as Arrow: pandas and polars DataFrames, pyarrow Tables, RecordBatches and
readers, and objects with ``__arrow_c_stream__`` — for reading into a pipeline
(``frame_table``, ``conform``), for producing to a topic (``arrow_input``), and for what Python
functions return (``to_batch``). The one place these conversions live.
"""

from __future__ import annotations

import pyarrow as pa

from riverbed import _core


def is_pandas(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "pandas" and hasattr(obj, "columns")


def is_polars(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "polars" and hasattr(obj, "columns")


def plain_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_large_string(t) or str(t) == "string_view":
        return pa.string()
    if pa.types.is_large_binary(t) or str(t) == "binary_view":
        return pa.binary()
    return t


def plain(tbl: pa.Table) -> pa.Table:
    """A DataFrame's Arrow export with plain string/binary types and no pandas metadata."""
    schema = pa.schema([f.with_type(plain_type(f.type)) for f in tbl.schema])
    if not schema.equals(tbl.schema):
        tbl = tbl.cast(schema)
    return tbl.replace_schema_metadata(None)


def frame_table(obj: object) -> pa.Table:
    """A pandas or polars DataFrame as a Table."""
    if is_pandas(obj):
        return plain(pa.Table.from_pandas(obj, preserve_index=False))
    return plain(obj.to_arrow())  # type: ignore[attr-defined]


def conform(tbl: pa.Table, schema: pa.Schema | None) -> pa.Table:
    if schema is None:
        return tbl
    missing = [n for n in schema.names if n not in tbl.column_names]
    if missing:
        raise ValueError(f"read: data has no column(s) {missing} of the given schema")
    return tbl.select(schema.names).cast(schema)


def to_batch(result: object, where: str) -> pa.RecordBatch:
    """A UDF's return value as one RecordBatch."""
    if isinstance(result, pa.RecordBatch):
        return result
    if isinstance(result, pa.Table):
        tbl = result
    elif is_pandas(result) or is_polars(result):
        tbl = frame_table(result)
    elif hasattr(result, "__arrow_c_stream__"):
        tbl = pa.table(result)
    elif hasattr(result, "__arrow_c_array__"):
        return pa.record_batch(result)
    else:
        raise TypeError(
            f"{where} must return a pyarrow RecordBatch or Table, or a pandas or polars DataFrame, "
            f"got {type(result).__name__}"
        )
    batches = tbl.combine_chunks().to_batches()
    if not batches:
        return pa.RecordBatch.from_arrays([pa.array([], type=f.type) for f in tbl.schema], schema=tbl.schema)
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def concat(batches: list[pa.RecordBatch], schema: pa.Schema | None) -> pa.Table:
    """Output batches as one Table; with no batches, an empty Table of ``schema`` when known."""
    if not batches:
        # Table.from_batches, unlike schema.empty_table() or pa.table({}), never imports pandas.
        return pa.Table.from_batches([], schema=schema if schema is not None else pa.schema([]))
    first = batches[0].schema
    if all(b.schema.equals(first) for b in batches):
        return pa.Table.from_batches(batches)
    batches = [b for b in batches if b.num_rows] or batches[:1]
    first = batches[0].schema
    if all(b.schema.equals(first) for b in batches):
        return pa.Table.from_batches(batches)
    return pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")


def arrow_input(data: object, index: bool = False) -> object:
    """Anything tabular as an object with ``__arrow_c_stream__``. A pandas index is a column only
    with ``index=True`` (pandas' own ``to_parquet``/``to_json`` convention), named after the index
    (``index`` when unnamed)."""
    if type(data).__module__.startswith("pandas"):
        import pandas as pd

        if not isinstance(data, pd.DataFrame):
            raise TypeError(f"data must be a DataFrame, got a pandas {type(data).__name__}")
        if index:
            names = [n if n is not None else ("index" if data.index.nlevels == 1 else f"level_{i}") for i, n in enumerate(data.index.names)]
            data = data.rename_axis(names).reset_index()
        if not data.columns.is_unique:
            dup = data.columns[data.columns.duplicated()][0]
            raise _core.SchemaError(f"column name {dup!r} appears more than once; rename one (a JSON object cannot hold a key twice)")
        return pa.Table.from_pandas(data, preserve_index=False)
    if index:
        raise ValueError("index=True applies to a pandas DataFrame only")
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (pa.Table, pa.RecordBatchReader)) or hasattr(data, "__arrow_c_stream__"):
        return data
    raise TypeError(
        "data must be a pyarrow Table/RecordBatch, a pandas or polars DataFrame, "
        f"or an object with __arrow_c_stream__, got {type(data).__name__}"
    )
