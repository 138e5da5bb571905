"""The ``_repr_html_`` of ``Pipeline``, ``Log``, ``Topic`` and ``Table`` (see ``riverbed.display``):
self-contained HTML, every value escaped, tags balanced."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from riverbed.display.svg import _boxes, plan_svg
from riverbed.display.text import (
    _bytes,
    _cell,
    _count,
    _dur,
    _esc,
    _names,
    _ncell,
    _num,
    _positive,
    _safe,
    _size_cell,
    _table,
    _text,
    _ts,
    _watermark,
    _wrap,
)

if TYPE_CHECKING:
    from riverbed.log import Log, Topic
    from riverbed.pipeline import Pipeline
    from riverbed.table import Table

__all__ = ["log_html", "pipeline_html", "plan_svg", "table_html", "topic_html"]

TOPIC_TAIL = 10  # records a Topic's display shows
TABLE_HEAD = 20  # rows a Table's display shows
_MAX_ROWS = 100  # topics / partitions listed before "… more"

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
