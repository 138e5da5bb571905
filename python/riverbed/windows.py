"""Window specifications for ``Pipeline.window``.

Time windows are epoch-aligned (shifted by ``offset``) and half-open ``[start, end)`` unless
noted; a window closes when the watermark reaches its end + ``grace``. Durations take ``"10s"``,
``"5m"``, a ``timedelta`` or integer milliseconds.

>>> import riverbed as rb
>>> rb.tumbling("1m").to_plan()
{'tumbling': {'size_ms': 60000, 'offset_ms': 0, 'grace_ms': 0}}
>>> rb.hopping("10s", every="5s")
hopping(size='10s', every='5s')
"""

from __future__ import annotations

import datetime as _dt
import numbers
from typing import Any

from riverbed._core import PlanError
from riverbed._units import duration_ms

__all__ = ["Window", "count_window", "hopping", "session", "sliding", "tumbling"]


def _positive_ms(value: object, kind: str, field: str) -> int:
    """A window length in ms; zero or negative raises PlanError naming the window and the field."""
    if isinstance(value, bool):
        raise TypeError(f"window ({kind}): {field} must be a duration, got a bool")
    if isinstance(value, numbers.Integral):
        ms = int(value)
    elif isinstance(value, _dt.timedelta):
        ms = round(value.total_seconds() * 1000)
    else:
        ms = duration_ms(value, f"window ({kind}): {field}")
    if ms <= 0:
        raise PlanError(f"window ({kind}): {field} must be positive, got {value!r}")
    duration_ms(ms, f"window ({kind}): {field}")  # and not absurdly long
    return ms


def _fmt_ms(ms: int) -> str:
    for unit, n in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms and ms % n == 0:
            return f"'{ms // n}{unit}'"
    return f"'{ms}ms'"


class Window:
    """A window specification; ``to_plan()`` gives the WindowSpec of the plan."""

    kind: str = ""

    def __init__(self, **fields_ms: int) -> None:
        self._fields = fields_ms

    def to_plan(self) -> dict[str, Any]:
        return {self.kind: dict(self._fields)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Window) and self.to_plan() == other.to_plan()

    def __hash__(self) -> int:
        return hash((self.kind, tuple(sorted(self._fields.items()))))

    def __repr__(self) -> str:
        parts = []
        for name, v in self._fields.items():
            if name.endswith("_ms"):
                if v == 0 and name in ("grace_ms", "offset_ms"):
                    continue
                parts.append(f"{name[:-3]}={_fmt_ms(v)}")
            else:
                parts.append(f"{name}={v}")
        fn = "count_window" if self.kind == "count" else self.kind
        return f"{fn}({', '.join(parts)})"


class Tumbling(Window):
    kind = "tumbling"


class Hopping(Window):
    kind = "hopping"


class Sliding(Window):
    kind = "sliding"


class Session(Window):
    kind = "session"


class CountWindow(Window):
    kind = "count"


def tumbling(size: object, grace: object = "0s", offset: object = "0s") -> Tumbling:
    """Back-to-back windows ``[k*size + offset, (k+1)*size + offset)``."""
    return Tumbling(
        size_ms=_positive_ms(size, "tumbling", "size"),
        offset_ms=duration_ms(offset, "window (tumbling): offset"),
        grace_ms=duration_ms(grace, "window (tumbling): grace"),
    )


def hopping(size: object, every: object, grace: object = "0s", offset: object = "0s") -> Hopping:
    """Overlapping windows of length ``size`` starting every ``every`` (Kafka Streams' hopping
    windows): a record belongs to every window ``[s, s + size)`` with ``s = offset (mod every)``
    that holds it."""
    return Hopping(
        size_ms=_positive_ms(size, "hopping", "size"),
        every_ms=_positive_ms(every, "hopping", "every"),
        offset_ms=duration_ms(offset, "window (hopping): offset"),
        grace_ms=duration_ms(grace, "window (hopping): grace"),
    )


def sliding(size: object, grace: object = "0s") -> Sliding:
    """Kafka Streams' sliding windows: every distinct set of records whose times lie within
    ``size`` of each other; ``[start, end]`` with both bounds inclusive."""
    return Sliding(size_ms=_positive_ms(size, "sliding", "size"), grace_ms=duration_ms(grace, "window (sliding): grace"))


def session(gap: object, grace: object = "0s") -> Session:
    """Sessions of activity: records within ``gap`` of each other share a session; the window
    bounds are the first and last record times."""
    return Session(gap_ms=_positive_ms(gap, "session", "gap"), grace_ms=duration_ms(grace, "window (session): grace"))


def count_window(n: int) -> CountWindow:
    """Every ``n`` records of a key, in event-time order; an incomplete last window is not emitted."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"window (count): n must be an int, got {type(n).__name__}")
    if n <= 0:
        raise PlanError(f"window (count): n must be positive, got {n}")
    return CountWindow(n=int(n))
