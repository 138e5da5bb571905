"""Durations and timestamps as riverbed accepts them: everything becomes integer milliseconds."""

from __future__ import annotations

import datetime as _dt
import math
import numbers
import re
import time

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")

Duration = "int | str | datetime.timedelta"

# The longest duration (~31,700 years): event times plus windows, lateness and grace stay far
# from overflowing int64 milliseconds.
MAX_DURATION_MS = 10**15
_I64_MAX = 2**63 - 1


def duration_ms(
    value: object, field: str = "duration", allow_negative: bool = False, max_ms: int = MAX_DURATION_MS
) -> int:
    """``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1d"``, a ``timedelta`` or integer ms -> ms.
    The one place a duration of the public API is checked: a bad one is a ``ValueError`` (or
    ``TypeError``) naming ``field``; at most ``max_ms`` (about 31,700 years by default).

    >>> duration_ms("1.5s")
    1500
    """
    if isinstance(value, bool):
        raise TypeError(f"{field} must be a duration, got a bool")
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        raise ValueError(f"{field} must be a finite duration, got {value!r}")
    if isinstance(value, numbers.Integral):
        ms = int(value)
    elif isinstance(value, _dt.timedelta):
        ms = round(value.total_seconds() * 1000)
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError(f"{field}: cannot parse duration {value!r}; use e.g. '250ms', '10s', '5m', '1h', '1d'")
        ms = round(float(m.group(1)) * _UNITS_MS[m.group(2)])
    else:
        raise TypeError(f"{field} must be int milliseconds, a string like '10s' or a timedelta, got {type(value).__name__}")
    if ms < 0 and not allow_negative:
        raise ValueError(f"{field} must not be negative, got {value!r}")
    if abs(ms) > max_ms:
        raise ValueError(f"{field}: {value!r} is too long (at most {max_ms} ms)")
    return ms


def timeout_s(value: object, field: str = "timeout", no_limit: bool = True) -> float | None:
    """A timeout in seconds (a number; ``None`` or ``inf``: no limit where ``no_limit``) ->
    seconds, or ``None`` for no limit. NaN, negative, infinite (unless ``no_limit``) and
    absurdly long ones are a ``ValueError`` naming ``field``: checked by the same function as
    every native call taking a timeout.

    >>> timeout_s(1.5), timeout_s(float("inf"))
    (1.5, None)
    """
    from riverbed import _core

    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        raise TypeError(f"{field} must be a number of seconds, got {type(value).__name__}")
    if isinstance(value, numbers.Integral) and abs(value) > _I64_MAX:  # float() would overflow
        value = -math.inf if value < 0 else _I64_MAX
    return _core.timeout_seconds(field, None if value is None else float(value), no_limit)


def timestamp_ms(value: object, field: str = "timestamp") -> int:
    """An int (ms since the epoch), a ``datetime`` (naive means UTC) or ``None`` (now) -> ms."""
    if value is None:
        return time.time_ns() // 1_000_000
    if isinstance(value, bool):
        raise TypeError(f"{field} must be int milliseconds, a datetime or None, got a bool")
    if isinstance(value, numbers.Integral):
        if not -_I64_MAX - 1 <= value <= _I64_MAX:
            raise ValueError(f"{field}: {value!r} is outside the range of int64 milliseconds")
        return int(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return (value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(milliseconds=1)
    raise TypeError(f"{field} must be int milliseconds, a datetime or None, got {type(value).__name__}: {value!r}")
