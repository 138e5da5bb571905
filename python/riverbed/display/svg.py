"""A pipeline's operator graph as inline SVG (``plan_svg``): one box per operator, laid out
by depth, with its metrics when the pipeline has run. Self-contained and well-formed XML (every
piece of text escaped, see ``riverbed.display.text``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from riverbed.display.text import (
    _compact,
    _dur,
    _esc,
    _names,
    _num,
    _positive,
    _short,
    _watermark,
)

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
