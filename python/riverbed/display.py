"""Rich displays for notebooks: the ``_repr_html_`` of ``Pipeline``, ``Log``, ``Topic`` and ``Table``,
and ``plan_svg`` (a pipeline's operator graph as inline SVG).

>>> import riverbed as rb, pyarrow as pa
>>> t = pa.table({"sym": ["A", "B"], "qty": [5, 7], "ts": [0, 1_000]})
>>> p = rb.Pipeline.read(t, timestamp="ts").filter(rb.col("qty") > 1)
>>> svg = plan_svg(p.to_plan())
>>> svg.startswith("<svg") and svg.count('class="rb-node"')
2

Everything is self-contained: no scripts, no external resources, every piece of text escaped (and
characters XML cannot hold replaced), so the SVG is well-formed XML and the HTML is balanced.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from riverbed.log import Log, Topic
    from riverbed.pipeline import Pipeline
    from riverbed.table import Table

__all__ = ["log_html", "pipeline_html", "plan_svg", "table_html", "topic_html"]

TOPIC_TAIL = 10  # records a Topic's display shows
TABLE_HEAD = 20  # rows a Table's display shows
_MAX_ROWS = 100  # topics / partitions listed before "… more"
_CELL_CHARS = 80

_I64_MAX = 2**63 - 1
_I64_MIN = -(2**63)

# -- text -------------------------------------------------------------------------------------

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


# -- the plan graph ---------------------------------------------------------------------------

_FONT = "ui-monospace,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace"
_TITLE_PX, _LINE_PX = 12, 11
_TITLE_W, _LINE_W = 7.3, 6.7  # monospace advance per character at those sizes
_PAD, _HGAP, _VGAP = 8, 22, 34
_MIN_W, _MAX_W = 130, 270
_DETAIL_LINES = 2

# (fill, stroke) per kind of operator
_COLORS = {
    "source": ("#e2f1df", "#5b9a55"),
    "stateless": ("#e6edf7", "#6b86b3"),
    "stateful": ("#fcefd9", "#c48a2c"),
    "join": ("#eee3f7", "#8a63b3"),
    "udf": ("#fbf5cf", "#a8952e"),
    "other": ("#eeeeee", "#888888"),
}
_KIND = {
    "source": "source",
    "filter": "stateless",
    "with_columns": "stateless",
    "select": "stateless",
    "drop": "stateless",
    "rename": "stateless",
    "union": "stateless",
    "key_by": "stateless",
    "window": "stateful",
    "series": "stateful",
    "group_by": "stateful",
    "join": "join",
    "map_batches": "udf",
    "stateful_map": "udf",
}


@dataclass
class _Box:
    id: int
    op: str
    title: str
    lines: list[str]
    children: list[int] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    layer: int = 0
    x: float = 0.0
    metrics: dict[str, Any] | None = None


def _inputs(node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A plan node's inputs in the engine's order (``Node::inputs`` in plan.rs), with their role."""
    out: list[tuple[str, dict[str, Any]]] = []
    for role in ("left", "right"):
        if isinstance(node.get(role), dict):
            out.append((role, node[role]))
    out += [("", n) for n in node.get("inputs", ()) if isinstance(n, dict)]
    if isinstance(node.get("input"), dict):
        out.append(("", node["input"]))
    return out


_COL = re.compile(r'col\("([A-Za-z_][A-Za-z0-9_]*)"\)')


def _expr(e: object) -> str:
    """An expression of the plan, as ``rb.col`` expressions print, with plain column names."""
    from riverbed.expr import _fmt

    try:
        s = _fmt(e)
    except Exception:  # noqa: BLE001 - an unknown shape: show its JSON
        s = json.dumps(e, default=str)
    return _COL.sub(r"\1", s)


def _names(cols: object) -> str:
    return ", ".join(str(c) for c in cols) if isinstance(cols, (list, tuple)) else str(cols)


def _named(pairs: object) -> str:
    if not isinstance(pairs, (list, tuple)):
        return str(pairs)
    return ", ".join(f"{p[0]}={_expr(p[1])}" if isinstance(p, (list, tuple)) and len(p) == 2 else str(p) for p in pairs)


def _window(spec: object) -> str:
    if not isinstance(spec, dict) or len(spec) != 1:
        return str(spec)
    ((kind, f),) = spec.items()
    f = f if isinstance(f, dict) else {}
    if kind == "tumbling":
        s = f"tumbling {_dur(f.get('size_ms'))}"
    elif kind == "hopping":
        s = f"hopping {_dur(f.get('size_ms'))} every {_dur(f.get('every_ms'))}"
    elif kind == "sliding":
        s = f"sliding {_dur(f.get('size_ms'))}"
    elif kind == "session":
        s = f"session gap {_dur(f.get('gap_ms'))}"
    elif kind == "count":
        s = f"count {f.get('n')}"
    else:
        s = str(kind)
    if f.get("offset_ms"):
        s += f" offset {_dur(f['offset_ms'])}"
    if f.get("grace_ms"):
        s += f" grace {_dur(f['grace_ms'])}"
    return s


def _series_op(op: object) -> str:
    if not isinstance(op, dict) or len(op) != 1:
        return str(op)
    ((kind, f),) = op.items()
    f = f if isinstance(f, dict) else {}
    alias = f.get("alias", kind)
    if kind == "rolling":
        span = f"{_dur(f['period_ms'])}" if f.get("period_ms") is not None else f"{f.get('rows')} rows"
        return f"{alias}={f.get('func')}({f.get('col')}, {span})"
    if kind == "time_since_previous":
        return f"{alias}={kind}()"
    args = ", ".join(str(v) for k, v in f.items() if k not in ("alias",) and v is not None)
    return f"{alias}={kind}({args})"


def _by(by: object) -> str:
    return f"by {_names(by)}" if by else ""


def _join(node: dict[str, Any]) -> tuple[str, list[str]]:
    kind = node.get("kind") or {}
    name, body = next(iter(kind.items())) if isinstance(kind, dict) and len(kind) == 1 else ("join", {})
    body = body if isinstance(body, dict) else {}
    if name == "asof":
        first = str(body.get("direction", "backward"))
        if body.get("tolerance_ms") is not None:
            first += f" ≤{_dur(body['tolerance_ms'])}"
    elif name == "interval":
        first = f"[{_dur(body.get('lower_ms'))}, {_dur(body.get('upper_ms'))}] {body.get('how', 'inner')}"
    else:
        first = ""
    lb, rb = node.get("left_by") or [], node.get("right_by") or []
    keys = "" if not lb and not rb else (_by(lb) if lb == rb else f"by {_names(lb)} = {_names(rb)}")
    on = node.get("right_on") or node.get("left_on")
    second = " ".join(s for s in (keys, f"on {on}" if on else "") if s)
    title = f"join_{name}" if name in ("asof", "interval") else "join"
    return title, [first, second]


def _describe(node: dict[str, Any]) -> tuple[str, list[str]]:
    """(title, detail lines) of a plan node's box."""
    op = str(node.get("op", "?"))
    if op == "source":
        title = f"read {node['name']}" if node.get("name") else f"read #{node.get('source', '?')}"
        line = f"event time {node.get('timestamp') or 'record ts'}"
        if node.get("lateness_ms"):
            line += f", lateness {_dur(node['lateness_ms'])}"
        return title, [line]
    if op == "filter":
        return op, [_expr(node.get("predicate"))]
    if op == "with_columns":
        return op, [_named(node.get("columns"))]
    if op in ("select", "drop", "key_by"):
        return op, [_names(node.get("columns", []))]
    if op == "rename":
        mapping = node.get("mapping") or []
        return op, [", ".join(f"{a}→{b}" for a, b in mapping)]
    if op == "union":
        return op, [f"{len(node.get('inputs', []))} inputs"]
    if op in ("map_batches", "stateful_map"):
        name = node.get("name") or f"udf #{node.get('udf', '?')}"
        return op, [str(name), _by(node.get("by"))]
    if op == "window":
        first = _window(node.get("window"))
        if node.get("by"):
            first += " " + _by(node["by"])
        if node.get("emit") == "update":
            first += " (updates)"
        return op, [first, _named(node.get("aggs"))]
    if op == "group_by":
        return op, [_by(node.get("by")), _named(node.get("aggs"))]
    if op == "series":
        return op, [_by(node.get("by")) or "global", ", ".join(_series_op(o) for o in node.get("ops", []))]
    if op == "join":
        return _join(node)
    return op, []


def _boxes(plan: dict[str, Any]) -> list[_Box]:
    """The plan's operators in post-order (inputs before the node, in the engine's input order):
    the order ``Pipeline.metrics()`` lists them in."""
    boxes: list[_Box] = []

    def visit(node: dict[str, Any]) -> int:
        if node.get("op") == "named":  # a name for its input's operator, not an operator
            k = visit(node["input"])
            boxes[k].title += f' "{node.get("name")}"'
            return k
        kids = [(role, visit(child)) for role, child in _inputs(node)]
        title, lines = _describe(node)
        box = _Box(len(boxes), str(node.get("op", "?")), title, [s for s in lines if s][:_DETAIL_LINES])
        box.children = [k for _, k in kids]
        box.roles = [r for r, _ in kids]
        boxes.append(box)
        return box.id

    visit(plan)
    return boxes


def _layout(boxes: list[_Box]) -> int:
    """Layers (a source is 0; any other operator one below its deepest input) and x slots (leaves
    one slot each, left to right; an operator centred over its inputs); returns the slot count."""
    slots = 0
    for b in boxes:  # post-order: inputs first
        if b.children:
            b.layer = 1 + max(boxes[c].layer for c in b.children)
            b.x = sum(boxes[c].x for c in b.children) / len(b.children)
        else:
            b.x, slots = float(slots), slots + 1
    return max(slots, 1)


def _positive(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _metric_line(m: dict[str, Any]) -> str:
    line = (
        f"in {_compact(m.get('records_in', 0))} → out {_compact(m.get('records_out', 0))}"
        f" · late {_compact(m.get('late_records', 0))}"
    )
    if _positive(m.get("errors")):  # bad records skipped or dead-lettered (on_error)
        line += f" · errors {_compact(m['errors'])}"
    return line


def _metric_tip(m: dict[str, Any]) -> str:
    errors = f"errors {_num(m['errors'])}, " if "errors" in m else ""
    return (
        f"{m.get('operator', '')}: records in {_num(m.get('records_in', 0))}, out {_num(m.get('records_out', 0))}, "
        f"late {_num(m.get('late_records', 0))}, {errors}watermark {_watermark(m.get('watermark'))}, "
        f"state entries {_num(m.get('state_entries', 0))}"
    )


def plan_svg(plan: dict[str, Any], metrics: list[dict[str, Any]] | None = None) -> str:
    """The operator graph of ``plan`` (``Pipeline.to_plan()``) as an inline SVG document.

    Sources are at the top, each operator below its inputs with an arrow from each input (a
    join's labelled ``left``/``right``). Each box shows the operator and a short detail; with
    ``metrics`` (``Pipeline.metrics()``: one dict per operator, in the plan's post-order) it also
    shows the records in and out and the late records, and every number in its tooltip.
    """
    if not isinstance(plan, dict):
        raise TypeError(f"plan_svg takes a plan dict (Pipeline.to_plan()), got {type(plan).__name__}")
    boxes = _boxes(plan)
    if metrics and len(metrics) == len(boxes):
        for b, m in zip(boxes, metrics):
            b.metrics = m if isinstance(m, dict) else None
    with_metrics = any(b.metrics for b in boxes)
    n_lines = max(len(b.lines) for b in boxes)
    slots = _layout(boxes)
    layers = 1 + max(b.layer for b in boxes)

    # One width and height for every box, from the longest text (within limits).
    want = max(
        [len(b.title) * _TITLE_W for b in boxes]
        + [len(s) * _LINE_W for b in boxes for s in b.lines]
        + [len(_metric_line(b.metrics)) * _LINE_W for b in boxes if b.metrics]
    )
    w = int(min(max(want + 16, _MIN_W), _MAX_W))
    chars = int((w - 14) / _LINE_W)
    title_chars = int((w - 14) / _TITLE_W)
    h = 8 + 15 + 13 * n_lines + (13 if with_metrics else 0) + 4
    width = 2 * _PAD + slots * w + (slots - 1) * _HGAP
    height = 2 * _PAD + layers * h + (layers - 1) * _VGAP

    def left(b: _Box) -> float:
        return _PAD + b.x * (w + _HGAP)

    def top(b: _Box) -> float:
        return _PAD + b.layer * (h + _VGAP)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="rb-plan" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{_esc(_FONT)}" role="img" '
        f'aria-label="pipeline operator graph" style="max-width:100%;height:auto">'
    ]
    # edges first, so boxes are drawn over them
    for b in boxes:
        n = len(b.children)
        spread = min(w / (n + 1), 36.0)
        for i, (c, role) in enumerate(zip(b.children, b.roles)):
            child = boxes[c]
            x1, y1 = left(child) + w / 2, top(child) + h
            x2, y2 = left(b) + w / 2 + (i - (n - 1) / 2) * spread, top(b)
            # Straight down the input's own column (no other box is in it) to the gap above
            # the operator, then a curve within that gap: edges never cross boxes.
            turn = y2 - _VGAP
            mid = (turn + y2 - 6) / 2
            label = f"{child.title} → {b.title}" + (f" ({role})" if role else "")
            out.append(
                f'<g class="rb-edge" data-from="{child.id}" data-to="{b.id}"><title>{_esc(label)}</title>'
                f'<path d="M{x1:.1f},{y1:.1f} L{x1:.1f},{turn:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} '
                f'{x2:.1f},{y2 - 6:.1f}" fill="none" stroke="#8a8a8a" stroke-width="1.3"/>'
                f'<polygon points="{x2 - 4:.1f},{y2 - 7:.1f} {x2 + 4:.1f},{y2 - 7:.1f} {x2:.1f},{y2:.1f}" fill="#8a8a8a"/>'
            )
            if role:  # a join's inputs: named by the start of their edge
                out.append(f'<text x="{x1 + 5:.1f}" y="{y1 + 12:.1f}" font-size="10" fill="#666">{_esc(role)}</text>')
            out.append("</g>")
    for b in boxes:
        fill, stroke = _COLORS[_KIND.get(b.op, "other")]
        x, y = left(b), top(b)
        tip = "\n".join([b.title, *b.lines] + ([_metric_tip(b.metrics)] if b.metrics else []))
        out.append(
            f'<g class="rb-node" data-id="{b.id}" data-op="{_esc(b.op)}"><title>{_esc(tip)}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w}" height="{h}" rx="5" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + 7:.1f}" y="{y + 17:.1f}" font-size="{_TITLE_PX}" font-weight="bold" '
            f'fill="#1f1f1f">{_esc(_short(b.title, title_chars))}</text>'
        )
        ty = y + 17
        for line in b.lines:
            ty += 13
            out.append(
                f'<text x="{x + 7:.1f}" y="{ty:.1f}" font-size="{_LINE_PX}" fill="#333">{_esc(_short(line, chars))}</text>'
            )
        if b.metrics:
            bad = _positive(b.metrics.get("late_records")) or _positive(b.metrics.get("errors"))
            color = "#b00020" if bad else "#555"
            out.append(
                f'<text class="rb-metrics" x="{x + 7:.1f}" y="{y + h - 7:.1f}" font-size="{_LINE_PX}" '
                f'fill="{color}">{_esc(_short(_metric_line(b.metrics), chars))}</text>'
            )
        out.append("</g>")
    out.append("</svg>")
    return "".join(out)


# -- Pipeline ---------------------------------------------------------------------------------


def _sink(p: Pipeline) -> str:
    sink = getattr(p, "_sink", None)
    if sink is None or sink.kind == "collect":
        return ""
    if sink.topic is not None:
        key = f" (key {sink.key})" if sink.key else ""
        return f"→ {'Kafka topic' if sink.kind == 'kafka' else 'topic'} {sink.topic}{key}"
    fn = sink.func
    return f"→ {getattr(fn, '__qualname__', None) or getattr(fn, '__name__', None) or type(fn).__name__}"


def _metrics_table(metrics: list[dict[str, Any]]) -> str:
    def flagged(v: object) -> str:
        return f'<td class="rb-n rb-late">{_esc(_num(v))}</td>' if _positive(v) else _ncell(v)

    errors = any("errors" in m for m in metrics)
    rows = []
    for m in metrics:
        wm = m.get("watermark")
        rows.append(
            f"<tr>{_cell(m.get('operator', ''))}{_ncell(m.get('records_in', 0))}{_ncell(m.get('records_out', 0))}"
            + flagged(m.get("late_records", 0))
            + (flagged(m.get("errors", 0)) if errors else "")
            + _ncell(wm, _watermark(wm), None if wm is None else str(wm))
            + f"{_ncell(m.get('state_entries', 0))}</tr>"
        )
    headers = ("operator", "records in", "records out", "late") + (("errors",) if errors else ()) + ("watermark", "state entries")
    return _table(headers, rows, headers[1:])


def pipeline_html(p: Pipeline) -> str:
    """``Pipeline._repr_html_``: the operator graph, the output schema and, once it has run, the
    metrics of each operator."""

    def render() -> str:
        plan = p.to_plan()
        metrics = p.metrics()
        n_ops = len(_boxes(plan))
        status = "running" if p.running else ("ran" if metrics else "not run yet")
        head = " · ".join(
            s for s in (_count(n_ops, "operator"), _sink(p), status) if s
        )
        schema = p.schema
        if schema is None:
            cols = _table(("column", "type"), ['<tr><td colspan="2" class="rb-dim">decided by a Python function</td></tr>'])
        else:
            cols = _table(("column", "type"), [f"<tr>{_cell(f.name)}{_cell(str(f.type))}</tr>" for f in schema])
        parts = [f'<div><div class="rb-cap">output schema</div>{cols}</div>']
        if metrics:
            parts.append(f'<div><div class="rb-cap">metrics</div>{_metrics_table(metrics)}</div>')
        body = (
            f"<div>{plan_svg(plan, metrics)}</div>"
            f'<div class="rb-cols">{"".join(parts)}</div>'
            f"<details><summary>explain()</summary><pre>{_esc(p.explain())}</pre></details>"
        )
        return _wrap("Pipeline", f'<span class="rb-dim">{_esc(head)}</span>', body)

    return _safe("Pipeline", render)


# -- Log and Topic ----------------------------------------------------------------------------


def _retention(config: dict[str, Any]) -> str:
    parts = []
    if config.get("retention_ms") is not None:
        parts.append(_dur(config["retention_ms"]))
    if config.get("retention_bytes") is not None:
        parts.append(_bytes(config["retention_bytes"]))
    return ", ".join(parts) or "forever"


def log_html(log: Log) -> str:
    """``Log._repr_html_``: its topics with their partitions, records (from the offsets) and size."""

    def render() -> str:
        path = f"<code>{_esc(log.path)}</code>"
        if log.closed:
            return _wrap("Log", f'{path} <span class="rb-dim">· closed</span>', "")
        names = sorted(log.topics())
        rows, total_records, total_bytes = [], 0, 0
        for name in names[:_MAX_ROWS]:
            try:
                d = log[name].describe()
            except Exception as e:  # noqa: BLE001 - deleted meanwhile: say so in its row
                rows.append(f'<tr>{_cell(name)}<td colspan="6" class="rb-dim">{_esc(type(e).__name__)}</td></tr>')
                continue
            parts, config = d["partitions"], d["config"]
            records = sum(q["latest"] - q["earliest"] for q in parts)
            size = sum(q["size_bytes"] for q in parts)
            total_records, total_bytes = total_records + records, total_bytes + size
            rows.append(
                f"<tr>{_cell(name)}{_ncell(len(parts))}{_ncell(records)}"
                f"{_size_cell(size)}{_ncell(sum(q['segments'] for q in parts))}"
                f"{_cell(config.get('cleanup', ''))}{_cell(_retention(config))}</tr>"
            )
        if len(names) > _MAX_ROWS:
            rows.append(f'<tr><td colspan="7" class="rb-dim">… {len(names) - _MAX_ROWS} more topics</td></tr>')
        head = f'{path} <span class="rb-dim">· {_count(len(names), "topic")}'
        if names:
            head += f" · {_count(total_records, 'record')} · {_esc(_bytes(total_bytes))}"
        head += "</span>"
        if not names:
            return _wrap("Log", head, "")
        headers = ("topic", "partitions", "records", "size", "segments", "cleanup", "retention")
        return _wrap("Log", head, _table(headers, rows, ("partitions", "records", "size", "segments")))

    return _safe("Log", render)


def _tail(topic: Topic, n: int, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last ``n`` records of the topic (the last ``n`` of each partition, the latest ``n`` of
    those by timestamp), oldest first."""
    import pyarrow as pa

    ends = {q["partition"]: q["latest"] for q in parts if q["latest"] > q["earliest"]}
    if not ends:
        return []
    rows: list[dict[str, Any]] = []
    with topic.consumer() as c:
        for q in parts:
            c.seek(q["partition"], max(q["earliest"], q["latest"] - n) if q["partition"] in ends else q["latest"])
        for _ in range(4 * len(ends) + 4):  # each poll reads something, or we stop
            pos = c.position()
            if all(pos.get(p, end) >= end for p, end in ends.items()):
                break
            batch = c.poll(max_records=n * len(ends), timeout=0.0)
            if batch.num_rows == 0:
                break
            ts = batch.column("timestamp").cast(pa.int64()).to_pylist()
            for r, t in zip(batch.to_pylist(), ts):
                if r["offset"] < ends.get(r["partition"], -1):
                    rows.append({**r, "timestamp": t})
    rows.sort(key=lambda r: (r["timestamp"], r["partition"], r["offset"]))
    return rows[-n:]


def topic_html(topic: Topic, n: int = TOPIC_TAIL) -> str:
    """``Topic._repr_html_``: each partition's earliest and latest offsets and size, and the last
    few records (keys and values as text where they are UTF-8)."""

    def render() -> str:
        d = topic.describe()
        parts, config = d["partitions"], d["config"]
        records = sum(q["latest"] - q["earliest"] for q in parts)
        size = sum(q["size_bytes"] for q in parts)
        head = (
            f'<code>{_esc(topic.name)}</code> <span class="rb-dim">· {_count(len(parts), "partition")}'
            f" · {_count(records, 'record')} · {_esc(_bytes(size))} · cleanup {_esc(config.get('cleanup', ''))}"
            f" · retention {_esc(_retention(config))}</span>"
        )
        prow = [
            f"<tr>{_ncell(q['partition'])}{_ncell(q['earliest'])}{_ncell(q['latest'])}"
            f"{_ncell(q['latest'] - q['earliest'])}{_size_cell(q['size_bytes'])}{_ncell(q['segments'])}</tr>"
            for q in parts[:_MAX_ROWS]
        ]
        if len(parts) > _MAX_ROWS:
            prow.append(f'<tr><td colspan="6" class="rb-dim">… {len(parts) - _MAX_ROWS} more partitions</td></tr>')
        pheaders = ("partition", "earliest", "latest", "records", "size", "segments")
        body = _table(pheaders, prow, pheaders)
        tail = _tail(topic, n, parts)
        if tail:
            with_headers = any(r["headers"] for r in tail)
            rrows = []
            for r in tail:
                cells = (
                    f"{_ncell(r['partition'])}{_ncell(r['offset'])}"
                    f"{_ncell(r['timestamp'], _ts(r['timestamp']), str(r['timestamp']))}{_cell(r['key'])}{_cell(r['value'])}"
                )
                if with_headers:
                    hs = ", ".join(f"{h['key']}={_text(h['value'])}" for h in r["headers"])
                    cells += _cell(hs)
                rrows.append(f"<tr>{cells}</tr>")
            rheaders = ("partition", "offset", "timestamp (UTC)", "key", "value") + (("headers",) if with_headers else ())
            body += f'<div class="rb-cap">last {_count(len(tail), "record")}</div>'
            body += _table(rheaders, rrows, ("partition", "offset", "timestamp (UTC)"))
        else:
            body += '<div class="rb-dim">no records</div>'
        return _wrap("Topic", head, body)

    return _safe("Topic", render)


# -- Table ------------------------------------------------------------------------------------


def table_html(table: Table, n: int = TABLE_HEAD) -> str:
    """``Table._repr_html_``: the key, the number of rows and the first rows (running the table
    first if it has never run, as every read does)."""

    def render() -> str:
        view = table.to_arrow()
        state = "running" if table.running else "loaded"
        head = (
            f'<span class="rb-dim">key: {_esc(_names(table.key))} · {_count(view.num_rows, "row")} · {state}</span>'
        )
        cols = view.column_names
        first = view.slice(0, n).to_pylist()
        numeric = {f.name for f in view.schema if _is_numeric(f.type)}
        rows = ["<tr>" + "".join(_cell(r[c], cls="rb-n" if c in numeric else "") for c in cols) + "</tr>" for r in first]
        if view.num_rows > n:
            rows.append(f'<tr><td colspan="{max(len(cols), 1)}" class="rb-dim">… {_num(view.num_rows - n)} more rows</td></tr>')
        return _wrap("Table", head, _table(cols, rows, numeric) if cols else "")

    return _safe("Table", render)


def _is_numeric(t: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))
