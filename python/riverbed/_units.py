"""Durations and timestamps as riverbed accepts them: everything becomes integer milliseconds."""

from __future__ import annotations

import datetime as _dt
import numbers
import re
import time

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")

Duration = "int | str | datetime.timedelta"


def duration_ms(value: object, field: str = "duration", allow_negative: bool = False) -> int:
    """``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1d"``, a ``timedelta`` or integer ms -> ms.

    >>> duration_ms("1.5s")
    1500
    """
    if isinstance(value, bool):
        raise TypeError(f"{field} must be a duration, got a bool")
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
    return ms


def timestamp_ms(value: object, field: str = "timestamp") -> int:
    """An int (ms since the epoch), a ``datetime`` (naive means UTC) or ``None`` (now) -> ms."""
    if value is None:
        return time.time_ns() // 1_000_000
    if isinstance(value, bool):
        raise TypeError(f"{field} must be int milliseconds, a datetime or None, got a bool")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return (value - _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)) // _dt.timedelta(milliseconds=1)
    raise TypeError(f"{field} must be int milliseconds, a datetime or None, got {type(value).__name__}: {value!r}")
