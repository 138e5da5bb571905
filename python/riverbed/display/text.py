"""Text for the notebook displays (``riverbed.display``, ``riverbed.display.svg``): numbers, sizes,
times and watermarks as people read them, and every value escaped for HTML and XML (characters
XML cannot hold replaced), with the small tables and the style the displays share."""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections.abc import Callable, Sequence

_CELL_CHARS = 80

_I64_MAX = 2**63 - 1
_I64_MIN = -(2**63)

# Characters XML 1.0 cannot hold, even escaped (C0 controls but tab/newline/CR, lone surrogates,
# U+FFFE/U+FFFF): replaced, so the SVG parses as XML.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _esc(value: object) -> str:
    """``value`` as text safe in HTML/XML content and in double- or single-quoted attributes."""
    s = value if isinstance(value, str) else str(value)
    return html.escape(_NOT_XML.sub("\ufffd", s), quote=True)


def _short(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(n - 1, 0)] + "…"


def _num(n: object) -> str:
    """An exact count with thousands separators."""
    return f"{n:,}" if isinstance(n, int) and not isinstance(n, bool) else str(n)


def _count(n: int, word: str) -> str:
    return f"{_num(n)} {word}{'' if n == 1 else 's'}"


def _compact(n: object) -> str:
    """A count in at most ~6 characters: 1234, 12.3k, 4.56M."""
    if not isinstance(n, int) or isinstance(n, bool):
        return str(n)
    for limit, div, unit in ((10_000, 1, ""), (10**6, 10**3, "k"), (10**9, 10**6, "M"), (10**12, 10**9, "G")):
        if abs(n) < limit:
            return str(n) if div == 1 else f"{n / div:.3g}{unit}"
    return f"{n / 10**12:.3g}T"


def _bytes(n: object) -> str:
    if not isinstance(n, int) or isinstance(n, bool):
        return str(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _dur(ms: object) -> str:
    """Milliseconds as the largest exact unit: 60000 -> 1m, 1500 -> 1500ms."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return str(ms)
    sign, v = ("-" if ms < 0 else ""), abs(ms)
    for unit, n in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if v and v % n == 0:
            return f"{sign}{v // n}{unit}"
    return f"{sign}{v}ms"


def _ts(ms: object) -> str:
    """Epoch milliseconds as UTC time (``2023-11-14 22:13:20.000``); other values as they are."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return str(ms)
    try:
        t = _dt.datetime(1970, 1, 1) + _dt.timedelta(milliseconds=ms)
    except OverflowError:
        return str(ms)
    return t.isoformat(sep=" ", timespec="milliseconds")


def _watermark(wm: object) -> str:
    if not isinstance(wm, int) or isinstance(wm, bool):
        return "–" if wm is None else str(wm)
    if wm >= _I64_MAX - 1:
        return "end"
    if wm <= _I64_MIN + 1:
        return "–"
    # Epoch-millisecond event times read best as dates; small values (test data) as numbers.
    return _ts(wm) if abs(wm) >= 10**11 else str(wm)


def _text(value: object) -> str:
    """A cell value as plain text: bytes decoded as UTF-8 where they are, else shown as b'…'."""
    if value is None:
        return "null"
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return repr(b)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, _dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, default=_text, ensure_ascii=False)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def _cell(value: object, tag: str = "td", cls: str = "") -> str:
    """A table cell for ``value`` (null dimmed; long text shortened, in full as a tooltip)."""
    attr = f' class="{cls}"' if cls else ""
    if value is None:
        return f'<{tag} class="rb-null{" " + cls if cls else ""}">null</{tag}>'
    s = _text(value)
    if len(s) > _CELL_CHARS:
        return f'<{tag}{attr} title="{_esc(s)}">{_esc(_short(s, _CELL_CHARS))}</{tag}>'
    return f"<{tag}{attr}>{_esc(s)}</{tag}>"


def _ncell(value: object, text: str | None = None, title: str | None = None) -> str:
    """A right-aligned numeric cell."""
    t = f' title="{_esc(title)}"' if title else ""
    return f'<td class="rb-n"{t}>{_esc(_num(value) if text is None else text)}</td>'


def _size_cell(n: int) -> str:
    return _ncell(n, _bytes(n), f"{_num(n)} bytes")


def _table(headers: Sequence[str], rows: list[str], numeric: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="rb-n">{_esc(h)}</th>' if h in numeric else f"<th>{_esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_STYLE = (
    "<style>"
    ".rb-repr{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:12px;line-height:1.35}"
    ".rb-repr table{border-collapse:collapse;margin:2px 0 6px 0;font-size:12px}"
    ".rb-repr th,.rb-repr td{padding:1px 8px;text-align:left;vertical-align:top;"
    "border-bottom:1px solid rgba(128,128,128,.3);white-space:pre}"
    ".rb-repr .rb-n{text-align:right;font-variant-numeric:tabular-nums}"
    ".rb-repr .rb-dim,.rb-repr .rb-null{opacity:.6}"
    ".rb-repr .rb-null{font-style:italic}"
    ".rb-repr .rb-late{color:#b00020}"
    ".rb-repr .rb-cap{font-weight:600;margin-top:4px}"
    ".rb-repr .rb-cols{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}"
    ".rb-repr pre{font-size:11px;margin:2px 0}"
    "</style>"
)


def _wrap(kind: str, head: str, body: str) -> str:
    return f'<div class="rb-repr rb-{kind}">{_STYLE}<div><b>{_esc("riverbed " + kind)}</b> {head}</div>{body}</div>'


def _safe(kind: str, render: Callable[[], str]) -> str:
    """``render()``, or a short note of why it failed: a display should not raise."""
    try:
        return render()
    except Exception as e:  # noqa: BLE001 - shown instead of a traceback in the notebook
        return _wrap(kind, "", f'<div class="rb-late">cannot display: {_esc(type(e).__name__)}: {_esc(e)}</div>')

def _positive(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _names(cols: object) -> str:
    return ", ".join(str(c) for c in cols) if isinstance(cols, (list, tuple)) else str(cols)
