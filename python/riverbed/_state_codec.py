"""The codec of ``stateful_map`` state in checkpoints: data, never code.

The default codec (``state_codec="data"``) writes Python values of these types and reads them back
as the same types and values: ``None``, ``bool``, ``int`` (any size), ``float`` (NaN and -0.0
kept), ``str``, ``bytes``, ``bytearray``, ``list``, ``tuple``, ``dict`` (keys of these types),
``set``, ``frozenset``, ``datetime.datetime`` (naive, fixed offset, or a ``zoneinfo`` zone),
``datetime.date``, ``datetime.time``, ``datetime.timedelta``, ``decimal.Decimal``, pyarrow
``Table`` and ``RecordBatch`` (Arrow IPC), numpy arrays and scalars (not of ``object`` dtype).
Subclasses (``defaultdict``, ``OrderedDict``, named tuples, enums) are not these types: a state
holding one fails at checkpoint time with a ``TypeError`` naming the type and where it is.

``state_codec="pickle"`` pickles the state instead (any picklable object). Every checkpoint file is
signed with HMAC-SHA256 under the log's key (``<log>/~checkpoints/checkpoint.key``, mode 0600)
and refused unless the signature matches, so only checkpoints this log wrote are ever unpickled;
and pickled state is unpickled only when the pipeline asks for ``state_codec="pickle"``.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import io
import math
import pickle
import struct
import sys
from typing import Any

import pyarrow as pa

__all__ = ["CODECS", "decode", "encode"]

CODECS = ("data", "pickle")
_MAGIC = b"RBST\x01"
_DATA, _PICKLE = b"D", b"P"
_MAX_DEPTH = 200
_SUPPORTED = (
    "None, bool, int, float, str, bytes, bytearray, list, tuple, dict, set, frozenset, datetime, "
    "date, time, timedelta, Decimal, pyarrow Table/RecordBatch, numpy arrays and scalars"
)


class StateDecodeError(ValueError):
    """Checkpointed state that is not what this codec writes."""


def encode(value: object, codec: str) -> bytes:
    """The bytes that keep ``value`` in a checkpoint."""
    if codec == "pickle":
        return _MAGIC + _PICKLE + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    out = io.BytesIO()
    out.write(_MAGIC + _DATA)
    _Writer(out).value(value, "state", 0)
    return out.getvalue()


def decode(data: bytes, codec: str) -> Any:
    """The value ``encode`` wrote. Pickled state is unpickled only under ``codec="pickle"`` (the
    checkpoint file it came from has been verified as this log's by then)."""
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 1:
        raise StateDecodeError(
            "the checkpointed stateful_map state is in no format this riverbed reads (an unsigned "
            "pickle of an older riverbed, or not written by riverbed); pass reset=True to start over"
        )
    kind, body = data[len(_MAGIC) : len(_MAGIC) + 1], memoryview(data)[len(_MAGIC) + 1 :]
    if kind == _PICKLE:
        if codec != "pickle":
            raise StateDecodeError(
                "the checkpointed stateful_map state was pickled (state_codec='pickle'); pass "
                "state_codec='pickle' to restore it, or reset=True to start over"
            )
        return pickle.loads(body)
    if kind != _DATA:
        raise StateDecodeError(f"unknown stateful_map state codec {kind!r} in the checkpoint")
    r = _Reader(body)
    try:
        v = r.value(0)
    except (IndexError, KeyError, struct.error, ValueError, TypeError, OverflowError, decimal.InvalidOperation, pa.ArrowException) as e:
        raise StateDecodeError(f"the checkpointed stateful_map state is damaged: {e}") from None
    if r.pos != len(body):
        raise StateDecodeError(f"the checkpointed stateful_map state is damaged: {len(body) - r.pos} bytes after its end")
    return v


def _numpy() -> Any:
    return sys.modules.get("numpy")


class _Writer:
    def __init__(self, out: io.BytesIO) -> None:
        self.w = out.write

    def n(self, k: int) -> None:
        self.w(struct.pack("<Q", k))

    def blob(self, b: bytes | memoryview) -> None:
        self.n(len(b))
        self.w(b)

    def text(self, s: str) -> None:
        self.blob(s.encode("utf-8", "surrogatepass"))

    def value(self, v: object, where: str, depth: int) -> None:  # noqa: C901, PLR0912 - one branch per type
        if depth > _MAX_DEPTH:
            raise TypeError(f"{where} is nested more than {_MAX_DEPTH} deep; the state codec keeps shallower data")
        t = type(v)
        np = _numpy()
        if v is None:
            self.w(b"N")
        elif t is bool:
            self.w(b"T" if v else b"F")
        elif t is int:
            assert isinstance(v, int)
            b = v.to_bytes((v.bit_length() + 8) // 8 or 1, "little", signed=True)
            self.w(b"i")
            self.blob(b)
        elif t is float:
            self.w(b"f" + struct.pack("<d", v))
        elif t is str:
            self.w(b"s")
            self.text(v)  # type: ignore[arg-type]
        elif t is bytes or t is bytearray:
            self.w(b"b" if t is bytes else b"y")
            self.blob(v)  # type: ignore[arg-type]
        elif t is list or t is tuple or t is set or t is frozenset:
            self.w({list: b"l", tuple: b"t", set: b"S", frozenset: b"Z"}[t])
            items = list(v)  # type: ignore[call-overload]
            self.n(len(items))
            for i, x in enumerate(items):
                self.value(x, f"{where}[{i}]" if t in (list, tuple) else f"an element of {where}", depth + 1)
        elif t is dict:
            assert isinstance(v, dict)
            self.w(b"d")
            self.n(len(v))
            for k, x in v.items():
                self.value(k, f"a key of {where}", depth + 1)
                self.value(x, f"{where}[{k!r}]", depth + 1)
        elif t is _dt.datetime:
            assert isinstance(v, _dt.datetime)
            tz = v.tzinfo
            zone = getattr(tz, "key", None)
            if tz is None:
                self.w(b"M0")
            elif type(tz) is _dt.timezone:
                self.w(b"M1")
            elif zone is not None and type(tz).__module__ == "zoneinfo":
                self.w(b"M2")
                self.text(zone)
                v = v.replace(tzinfo=None)
            else:
                raise TypeError(f"{where} is a datetime in time zone {tz!r} ({type(tz).__name__}), which the state codec does not keep; use zoneinfo or a fixed offset, or state_codec='pickle'")
            self.text(v.isoformat())
            self.w(bytes([v.fold]))
        elif t is _dt.date:
            self.w(b"a")
            self.text(v.isoformat())  # type: ignore[union-attr]
        elif t is _dt.time:
            assert isinstance(v, _dt.time)
            if v.tzinfo is not None:
                raise TypeError(f"{where} is a time with a time zone, which the state codec does not keep; use state_codec='pickle'")
            self.w(b"h")
            self.text(v.isoformat())
        elif t is _dt.timedelta:
            assert isinstance(v, _dt.timedelta)
            self.w(b"e" + struct.pack("<qqq", v.days, v.seconds, v.microseconds))
        elif t is decimal.Decimal:
            self.w(b"c")
            self.text(str(v))
        elif t is pa.Table or t is pa.RecordBatch:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, v.schema) as w:  # type: ignore[union-attr]
                w.write(v)  # type: ignore[arg-type]
            self.w(b"A" if t is pa.Table else b"R")
            self.blob(sink.getvalue().to_pybytes())
        elif np is not None and t is np.ndarray:
            self._ndarray(v, where)
        elif np is not None and isinstance(v, np.generic) and t.__module__ == "numpy":
            arr = np.asarray(v)
            self._check_dtype(arr.dtype, where)
            self.w(b"g")
            self.text(arr.dtype.str)
            self.blob(arr.tobytes())
        else:
            name = t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"
            raise TypeError(
                f"{where} is a {name}, which the default state codec does not keep (it keeps data: {_SUPPORTED}); "
                "convert it to one of these, or pass state_codec='pickle' to stateful_map"
            )

    @staticmethod
    def _check_dtype(dtype: Any, where: str) -> None:
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise TypeError(f"{where} is a numpy value of dtype {dtype}, which the state codec does not keep (no object or structured dtypes); use state_codec='pickle'")

    def _ndarray(self, v: Any, where: str) -> None:
        self._check_dtype(v.dtype, where)
        self.w(b"n")
        self.text(v.dtype.str)
        self.n(v.ndim)
        for d in v.shape:
            self.n(d)
        self.blob(v.tobytes(order="C"))


class _Reader:
    def __init__(self, body: memoryview) -> None:
        self.b, self.pos = body, 0

    def take(self, k: int) -> memoryview:
        if k > len(self.b) - self.pos:
            raise ValueError(f"truncated: {k} bytes wanted at {self.pos}, {len(self.b) - self.pos} left")
        s = self.b[self.pos : self.pos + k]
        self.pos += k
        return s

    def n(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def blob(self) -> bytes:
        return bytes(self.take(self.n()))

    def text(self) -> str:
        return self.blob().decode("utf-8", "surrogatepass")

    def count(self) -> int:
        k = self.n()
        if k > len(self.b) - self.pos:  # every item takes a byte at least
            raise ValueError(f"a count of {k} with {len(self.b) - self.pos} bytes left")
        return k

    def value(self, depth: int) -> Any:  # noqa: C901, PLR0911, PLR0912 - one branch per type
        if depth > _MAX_DEPTH:
            raise ValueError(f"nested more than {_MAX_DEPTH} deep")
        tag = bytes(self.take(1))
        if tag == b"N":
            return None
        if tag in (b"T", b"F"):
            return tag == b"T"
        if tag == b"i":
            return int.from_bytes(self.blob(), "little", signed=True)
        if tag == b"f":
            return struct.unpack("<d", self.take(8))[0]
        if tag == b"s":
            return self.text()
        if tag == b"b":
            return self.blob()
        if tag == b"y":
            return bytearray(self.blob())
        if tag in (b"l", b"t", b"S", b"Z"):
            items = [self.value(depth + 1) for _ in range(self.count())]
            return {b"l": list, b"t": tuple, b"S": set, b"Z": frozenset}[tag](items)
        if tag == b"d":
            out = {}
            for _ in range(self.count()):
                k = self.value(depth + 1)
                out[k] = self.value(depth + 1)
            return out
        if tag == b"M":
            kind = bytes(self.take(1))
            zone = self.text() if kind == b"2" else None
            v = _dt.datetime.fromisoformat(self.text())
            fold = self.take(1)[0]
            if kind not in (b"0", b"1", b"2") or fold > 1 or (kind != b"1") != (v.tzinfo is None):
                raise ValueError("a datetime of an unknown kind")
            if zone is not None:
                import zoneinfo

                v = v.replace(tzinfo=zoneinfo.ZoneInfo(zone))
            return v.replace(fold=fold)
        if tag == b"a":
            return _dt.date.fromisoformat(self.text())
        if tag == b"h":
            return _dt.time.fromisoformat(self.text())
        if tag == b"e":
            d, s, us = struct.unpack("<qqq", self.take(24))
            return _dt.timedelta(days=d, seconds=s, microseconds=us)
        if tag == b"c":
            return decimal.Decimal(self.text())
        if tag in (b"A", b"R"):
            t = pa.ipc.open_stream(self.blob()).read_all()
            t.validate(full=True)
            if tag == b"A":
                return t
            batches = t.combine_chunks().to_batches()
            return batches[0] if batches else pa.RecordBatch.from_pylist([], schema=t.schema)
        if tag in (b"n", b"g"):
            return self._numpy(tag)
        raise ValueError(f"unknown tag {tag!r} at byte {self.pos - 1}")

    def _numpy(self, tag: bytes) -> Any:
        import numpy as np

        dtype = np.dtype(self.text())
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"a numpy dtype the codec never writes ({dtype})")
        if tag == b"g":
            return np.frombuffer(self.blob(), dtype=dtype)[0] if dtype.itemsize else dtype.type()
        ndim = self.n()
        if ndim > 64:
            raise ValueError(f"an array of {ndim} dimensions")
        shape = tuple(self.n() for _ in range(ndim))
        data = self.blob()
        if math.prod(shape) * dtype.itemsize != len(data):
            raise ValueError(f"an array of shape {shape} and dtype {dtype} with {len(data)} bytes")
        return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
