"""The notebook displays: ``plan_svg`` and the ``_repr_html_`` of Pipeline, Log, Topic and Table.

Every repr is parsed with ``html.parser`` under a strict check (every tag closed in order, no raw
``<``/``>``/``&`` in text, no bare ``&``), every SVG with ``xml.etree.ElementTree``; the tests then
compare what the display claims (offsets, record counts, metrics, record values) with the API.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pyarrow as pa
import pytest

import riverbed as rb
from riverbed import display
from riverbed.display import plan_svg

SVG = "{http://www.w3.org/2000/svg}"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
NASTY = "a<b & \"c\" 'd' </td><script>x</script>"


# -- checking helpers -------------------------------------------------------------------------------


class StrictHTML(HTMLParser):
    """Fails on an unclosed or mis-nested tag and on unescaped text; collects tables' cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cells: list[list[str]] = []  # per open table: the current row's cells
        self._cell: list[str] | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_startendtag(self, tag, attrs):
        pass  # <path .../> in the SVG

    def handle_endtag(self, tag):
        assert tag not in VOID, f"end tag for void element <{tag}>"
        assert self.stack, f"</{tag}> closes nothing"
        assert self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1]}> (open: {self.stack})"
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell or []))
            self._cell = None

    def _add(self, s: str) -> None:
        self.text.append(s)
        if self._cell is not None:
            self._cell.append(s)

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "style":
            return
        for ch in "<>&":
            assert ch not in data, f"unescaped {ch!r} in text {data!r}"
        self._add(data)

    def handle_entityref(self, name):
        assert name in ("lt", "gt", "amp", "quot", "apos", "nbsp"), name
        self._add({"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'", "nbsp": "\xa0"}[name])

    def handle_charref(self, name):
        self._add(chr(int(name[1:], 16) if name[0] in "xX" else int(name)))


def parse_html(doc: str) -> StrictHTML:
    assert isinstance(doc, str) and doc.startswith("<div")
    assert not re.search(r"&(?!(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);)", doc), "a bare & in the HTML"
    assert "<script" not in doc.lower()
    assert not re.search(r"""(?:src|href)\s*=""", doc), "a reference to an external resource"
    p = StrictHTML()
    p.feed(doc)
    p.close()
    assert p.stack == [], f"unclosed tags: {p.stack}"
    return p


def text_of(doc: str) -> str:
    return "".join(parse_html(doc).text)


def table_after(doc: str, first_header: str) -> list[list[str]]:
    """The rows (header row first) of the table whose first header cell is ``first_header``."""
    tables = [t for t in parse_html(doc).tables if t and t[0] and t[0][0] == first_header]
    assert tables, f"no table headed {first_header!r}"
    return tables[0]


def parse_svg(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == SVG + "svg"
    return root


def svg_in(doc: str) -> ET.Element:
    m = re.search(r"<svg\b.*?</svg>", doc, re.S)
    assert m, "no <svg> in the HTML"
    return parse_svg(m.group(0))


def nodes(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter(SVG + "g") if g.get("class") == "rb-node"]


def edges(root: ET.Element) -> list[tuple[int, int]]:
    return [(int(g.get("data-from")), int(g.get("data-to"))) for g in root.iter(SVG + "g") if g.get("class") == "rb-edge"]


def box_text(g: ET.Element) -> list[str]:
    return [t.text or "" for t in g.iter(SVG + "text")]


def box_tip(g: ET.Element) -> str:
    return g.find(SVG + "title").text or ""


def by_op(root: ET.Element, op: str) -> list[ET.Element]:
    return [g for g in nodes(root) if g.get("data-op") == op]


def plan_nodes(plan: dict) -> int:
    """Operators of a plan, counted independently of display.py."""
    kids = [plan[k] for k in ("input", "left", "right") if k in plan] + list(plan.get("inputs", []))
    return 1 + sum(plan_nodes(k) for k in kids)


TRADES = pa.table(
    {
        "sym": ["A", "B", "A", "B", "A"],
        "qty": [5, 7, 1, 3, 9],
        "px": [1.0, 2.0, 1.5, 2.5, 1.25],
        "ts": [0, 1_000, 61_000, 62_000, 125_000],
    }
)


def trades(name: str | None = None) -> rb.Pipeline:
    return rb.Pipeline.read(TRADES, timestamp="ts", name=name)


# -- plan_svg ---------------------------------------------------------------------------------------


def test_chain_svg_boxes_edges_and_details():
    p = trades("trades").filter(rb.col("qty") > 2).window(rb.tumbling("1m"), by="sym").agg(n=rb.count(), q=rb.sum("qty"))
    root = parse_svg(plan_svg(p.to_plan()))
    assert [g.get("data-op") for g in nodes(root)] == ["source", "filter", "window"]  # post-order
    assert edges(root) == [(0, 1), (1, 2)]
    read, filt, win = (box_text(g) for g in nodes(root))
    assert read[0] == "read trades" and "event time ts" in read[1]
    assert filt[0] == "filter" and filt[1] == "(qty > 2)"
    assert win[0] == "window" and win[1] == "tumbling 1m by sym" and win[2] == "n=count(), q=sum(qty)"
    assert not [t for t in root.iter(SVG + "text") if t.get("class") == "rb-metrics"]  # never ran
    # layered: each operator below its input
    ys = [float(g.find(SVG + "rect").get("y")) for g in nodes(root)]
    assert ys == sorted(ys) and len(set(ys)) == 3


def test_join_svg_has_two_inputs_labelled_left_and_right():
    right = trades("quotes").rename({"qty": "q"}).with_columns(q2=rb.col("q") * 2)
    p = trades("trades").filter(rb.col("qty") > 0).join_asof(right, on="ts", by="sym", tolerance="30s")
    plan = p.to_plan()
    root = parse_svg(plan_svg(plan))
    assert len(nodes(root)) == plan_nodes(plan) == 6
    es = edges(root)
    assert len(es) == 5
    (join,) = by_op(root, "join")
    jid = int(join.get("data-id"))
    into_join = [e for e in es if e[1] == jid]
    assert len(into_join) == 2
    texts = box_text(join)
    assert texts[0] == "join_asof" and "backward ≤30s" in texts[1] and "by sym on ts" in texts[2]
    labels = [t.text for g in root.iter(SVG + "g") if g.get("class") == "rb-edge" for t in g.iter(SVG + "text")]
    assert labels == ["left", "right"]
    # the left input is the filter, the right one the with_columns
    ops = {int(g.get("data-id")): g.get("data-op") for g in nodes(root)}
    assert [ops[f] for f, t in into_join] == ["filter", "with_columns"]
    # both sources at the top
    tops = {g.get("data-op"): float(g.find(SVG + "rect").get("y")) for g in nodes(root)}
    assert tops["source"] == min(tops.values())


def test_interval_join_and_table_join_details():
    p = trades("l").join_interval(trades("r"), on="sym", lower="-5m", upper="1m", how="left")
    root = parse_svg(plan_svg(p.to_plan()))
    (join,) = by_op(root, "join")
    assert box_text(join)[:3] == ["join_interval", "[-5m, 1m] left", "by sym"]
    assert len(nodes(root)) == 3 and len(edges(root)) == 2


def test_union_svg_counts_every_input():
    p = trades("a").union(trades("b").filter(rb.col("qty") > 1), trades("c").select("sym", "qty", "px", "ts"))
    p = p.window(rb.hopping("10s", every="5s"), by="sym").agg(n=rb.count())
    plan = p.to_plan()
    root = parse_svg(plan_svg(plan))
    assert len(nodes(root)) == plan_nodes(plan) == 7
    es = edges(root)
    assert len(es) == 6
    (union,) = by_op(root, "union")
    assert len([e for e in es if e[1] == int(union.get("data-id"))]) == 3
    assert box_text(union)[1] == "3 inputs"
    assert box_text(by_op(root, "window")[0])[1] == "hopping 10s every 5s by sym"
    # no two boxes overlap
    rects = [[float(r.get(k)) for k in ("x", "y", "width", "height")] for g in nodes(root) for r in [g.find(SVG + "rect")]]
    for i, a in enumerate(rects):
        for b in rects[i + 1 :]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
    assert int(root.get("width")) >= max(r[0] + r[2] for r in rects)
    assert int(root.get("height")) >= max(r[1] + r[3] for r in rects)


def test_other_operators_render():
    p = (
        trades("t")
        .key_by("sym")
        .lag("px", by="sym")
        .rolling(by="sym", period="5m", px_mean=rb.mean("px"))
        .drop("qty")
        .map_batches(lambda b: b, name="identity")
    )
    root = parse_svg(plan_svg(p.to_plan()))
    assert [g.get("data-op") for g in nodes(root)] == ["source", "key_by", "series", "drop", "map_batches"]
    series = box_text(by_op(root, "series")[0])
    assert series[1] == "by sym" and "px_lag1=lag(px, 1)" in series[2]
    assert box_text(by_op(root, "map_batches")[0])[1] == "identity"
    table = trades().group_by("sym").agg(n=rb.count())
    root = parse_svg(plan_svg(table.changelog.to_plan()))
    assert box_text(by_op(root, "group_by")[0])[1:] == ["by sym", "n=count()"]
    state = trades().stateful_map(lambda s, rs: (s, rs), by="sym", name="passthrough")
    assert box_text(by_op(parse_svg(plan_svg(state.to_plan())), "stateful_map")[0])[1:] == ["passthrough", "by sym"]


def test_metrics_on_every_box_in_post_order():
    late_rows = pa.table({"k": ["a"] * 4, "ts": [0, 120_000, 1_000, 121_000]})  # the 1_000 record is late
    p = (
        rb.Pipeline.read(late_rows, timestamp="ts", batch_size=1, name="events")
        .with_columns(one=rb.lit(1))
        .window(rb.tumbling("1m"), by="k")
        .agg(n=rb.count())
    )
    res = p.run()
    metrics = p.metrics()
    assert sum(m["late_records"] for m in metrics) >= 1
    root = parse_svg(plan_svg(p.to_plan(), metrics))
    boxes = nodes(root)
    assert len(boxes) == len(metrics)
    for g, m in zip(boxes, metrics):
        op = g.get("data-op")
        assert m["operator"] == "events" if op == "source" else m["operator"].split("#")[0] == op
        (line,) = [t.text for t in g.iter(SVG + "text") if t.get("class") == "rb-metrics"]
        assert line == f"in {m['records_in']} → out {m['records_out']} · late {m['late_records']}"
        tip = box_tip(g)
        assert f"state entries {m['state_entries']:,}" in tip and f"records in {m['records_in']:,}" in tip
    window = by_op(root, "window")[0]
    (line,) = [t for t in window.iter(SVG + "text") if t.get("class") == "rb-metrics"]
    assert line.get("fill") == "#b00020"  # late records are highlighted
    assert res.output.num_rows == metrics[-1]["records_out"]
    # metrics that do not fit the plan are left out, not misattributed
    root = parse_svg(plan_svg(p.to_plan(), metrics[:-1]))
    assert not [t for t in root.iter(SVG + "text") if t.get("class") == "rb-metrics"]


def test_big_counts_are_compact_in_boxes_and_exact_in_tooltips():
    plan = trades().to_plan()
    m = {"operator": "read#0", "records_in": 12_345_678, "records_out": 9_999, "late_records": 0, "watermark": 0, "state_entries": 0}
    (g,) = nodes(parse_svg(plan_svg(plan, [m])))
    assert box_text(g)[-1] == "in 12.3M → out 9999 · late 0"
    assert "records in 12,345,678" in box_tip(g)


def test_svg_escapes_text():
    tbl = pa.table({NASTY: ["x", "y"], "ts": [0, 1]})
    p = rb.Pipeline.read(tbl, timestamp="ts", name="src\x00\x1b" + NASTY).filter(rb.col(NASTY) != NASTY)
    svg = plan_svg(p.to_plan())
    assert "<script" not in svg and "</td>" not in svg
    root = parse_svg(svg)  # well-formed despite <, &, quotes and control characters
    read, filt = nodes(root)
    assert box_tip(read).startswith("read src\ufffd\ufffd" + NASTY)
    assert NASTY in box_tip(filt)


def test_plan_svg_rejects_non_plans():
    with pytest.raises(TypeError):
        plan_svg("not a plan")  # type: ignore[arg-type]


# -- Pipeline ---------------------------------------------------------------------------------------


def test_pipeline_html_before_and_after_a_run():
    p = trades("trades").filter(rb.col("qty") > 2).window(rb.tumbling("1m"), by="sym").agg(n=rb.count(), q=rb.sum("qty"))
    before = p._repr_html_()
    assert before == display.pipeline_html(p)
    text = text_of(before)
    assert "riverbed Pipeline" in text and "3 operators" in text and "not run yet" in text
    assert "metrics" not in text
    schema = table_after(before, "column")
    assert schema[1:] == [[f.name, str(f.type)] for f in p.schema]
    assert len(nodes(svg_in(before))) == 3
    assert "<pre>" in before and "window" in text  # explain()

    p.run()
    after = p._repr_html_()
    rows = table_after(after, "operator")
    counts = ["records_in", "records_out", "late_records"] + (["errors"] if "errors" in p.metrics()[0] else [])
    assert rows[0] == ["operator", "records in", "records out", "late"] + counts[3:] + ["watermark", "state entries"]
    wm = len(counts) + 1
    assert [r[:wm] + r[wm + 1 :] for r in rows[1:]] == [
        [m["operator"], *(f"{m[k]:,}" for k in counts), f"{m['state_entries']:,}"] for m in p.metrics()
    ]
    assert rows[-1][wm] == "end"  # the watermark after the whole input
    root = svg_in(after)
    assert len([t for t in root.iter(SVG + "text") if t.get("class") == "rb-metrics"]) == 3
    assert "ran" in text_of(after)


@pytest.mark.skipif(not hasattr(rb.Pipeline, "on_error"), reason="no on_error")
def test_errors_are_shown_when_records_fail():
    def no_sevens(batch: pa.RecordBatch) -> pa.RecordBatch:
        if 7 in batch.column("qty").to_pylist():
            raise ValueError("seven")
        return batch

    p = trades("t").map_batches(no_sevens, name="no_sevens").on_error("skip")
    assert p.collect().num_rows == TRADES.num_rows - 1
    (m,) = [m for m in p.metrics() if m["operator"].startswith("no_sevens") or m["operator"].startswith("map_batches")]
    assert m["errors"] == 1
    doc = p._repr_html_()
    (box,) = by_op(svg_in(doc), "map_batches")
    (line,) = [t for t in box.iter(SVG + "text") if t.get("class") == "rb-metrics"]
    assert line.text.endswith("· errors 1") and line.get("fill") == "#b00020"
    rows = table_after(doc, "operator")
    errors = rows[0].index("errors")
    assert [r[errors] for r in rows[1:]] == [str(x["errors"]) for x in p.metrics()]


def test_pipeline_html_udf_schema_sink_and_escaping(log):
    out = log.topic("out")
    tbl = pa.table({NASTY: ["<i>x</i>"], "ts": [0]})
    p = rb.Pipeline.read(tbl, timestamp="ts", name=NASTY).map_batches(lambda b: b, name=NASTY).write(out)
    doc = p._repr_html_()
    text = text_of(doc)
    assert "decided by a Python function" in text and "→ topic out" in text
    assert NASTY in text  # explain() names the function
    svg_in(doc)
    q = rb.Pipeline.read(tbl, timestamp="ts").with_columns(**{"x<y": rb.col(NASTY)})
    cells = table_after(q._repr_html_(), "column")
    assert [NASTY, "string"] in cells and ["x<y", "string"] in cells


# -- Log and Topic ----------------------------------------------------------------------------------


def test_log_html_lists_topics_with_offsets(log):
    a = log.topic("alpha", partitions=3)
    b = log.topic("beta", cleanup="compact")
    for i in range(25):
        a.produce({"i": i}, key=f"k{i % 5}")
    b.produce("v", key="k")
    doc = log._repr_html_()
    assert doc == display.log_html(log)
    rows = table_after(doc, "topic")
    assert rows[0] == ["topic", "partitions", "records", "size", "segments", "cleanup", "retention"]
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {"alpha", "beta"}
    for t, cleanup in ((a, "delete"), (b, "compact")):
        d = t.describe()["partitions"]
        row = by_name[t.name]
        assert row[1] == str(t.partitions)
        assert row[2] == f"{sum(hi - lo for lo, hi in t.offsets().values()):,}"
        assert row[4] == str(sum(p["segments"] for p in d))
        assert row[5] == cleanup
    assert "<table>" in doc
    text = text_of(doc)
    assert str(log.path) in text and "2 topics" in text and "26 records" in text


def test_log_html_empty_and_closed(log_dir):
    lg = rb.Log(log_dir, fsync="never", cleanup_interval=None)
    assert "0 topics" in text_of(lg._repr_html_())
    lg.close()
    assert "closed" in text_of(lg._repr_html_())


def test_topic_html_offsets_and_last_records(log):
    t = log.topic("events", partitions=3)
    sent = []
    for i in range(40):
        value = {"i": i, "s": NASTY} if i % 3 else f"plain {i} {NASTY}"
        sent.append((t.produce(value, key=f"user-{i % 4}", timestamp=1_700_000_000_000 + i * 1000), value))
    t.produce(b"\xff\x00binary", key=None, timestamp=1_700_000_100_000, partition=0)
    doc = t._repr_html_()
    assert doc == display.topic_html(t)
    parts = table_after(doc, "partition")
    assert parts[0] == ["partition", "earliest", "latest", "records", "size", "segments"]
    offsets = t.offsets()
    described = {p["partition"]: p for p in t.describe()["partitions"]}
    assert [[int(c.replace(",", "")) for c in r[:4]] for r in parts[1:]] == [
        [p, lo, hi, hi - lo] for p, (lo, hi) in sorted(offsets.items())
    ]
    assert [r[5] for r in parts[1:]] == [str(described[p]["segments"]) for p in sorted(described)]

    recs = [tb for tb in parse_html(doc).tables if tb[0][:2] == ["partition", "offset"]][0]
    assert recs[0] == ["partition", "offset", "timestamp (UTC)", "key", "value"]
    rows = recs[1:]
    assert len(rows) == display.TOPIC_TAIL
    # the newest records, oldest first: the last 9 sent, then the binary one
    expected = [(p, o, v) for (p, o), v in sent[-(display.TOPIC_TAIL - 1) :]]
    for row, (p, o, v) in zip(rows, expected):
        assert row[0] == str(p) and row[1] == str(o)
        assert row[4] == (v if isinstance(v, str) else json.dumps(v, separators=(",", ":")))
    assert rows[0][2] == "2023-11-14 22:13:51.000" and rows[0][3] == "user-3"
    assert rows[-1][3] == "null" and rows[-1][4] == repr(b"\xff\x00binary")
    text = text_of(doc)
    assert "41 records" in text and "3 partitions" in text and NASTY in text


def test_topic_html_after_retention_and_empty(log):
    t = log.topic("r", partitions=1, segment_bytes=1024, retention_bytes=2000)
    for i in range(100):
        t.produce({"i": i, "pad": "x" * 40}, timestamp=1_700_000_000_000 + i)
    log.cleanup()
    (lo, hi), = t.offsets().values()
    assert lo > 0
    doc = t._repr_html_()
    parts = table_after(doc, "partition")
    assert parts[1][:4] == ["0", f"{lo:,}", f"{hi:,}", f"{hi - lo:,}"]
    recs = [tb for tb in parse_html(doc).tables if tb[0][:2] == ["partition", "offset"]][0][1:]
    assert [int(r[1]) for r in recs] == list(range(hi - display.TOPIC_TAIL, hi))
    assert recs[-1][4] == '{"i":99,"pad":"' + "x" * 40 + '"}'

    empty = log.topic("empty", partitions=2)
    doc = empty._repr_html_()
    assert "no records" in text_of(doc)
    assert table_after(doc, "partition")[1:] == [["0", "0", "0", "0", "0 B", "1"], ["1", "0", "0", "0", "0 B", "1"]]


def test_topic_html_headers_column(log):
    t = log.topic("h")
    t.produce("v1", headers={"trace": b"abc", "bin": b"\xff"})
    t.produce("v2")
    recs = [tb for tb in parse_html(t._repr_html_()).tables if tb[0][:2] == ["partition", "offset"]][0]
    assert recs[0][-1] == "headers"
    assert recs[1][-1] == "trace=abc, bin=" + repr(b"\xff") and recs[2][-1] == ""


def test_reprs_report_errors_instead_of_raising(log):
    t = log.topic("gone")
    log.delete_topic("gone")
    doc = t._repr_html_()
    assert "cannot display" in text_of(doc) and "TopicNotFound" in text_of(doc)


# -- Table ------------------------------------------------------------------------------------------


def test_table_html_key_rows_and_first_rows():
    n = display.TABLE_HEAD + 5
    tbl = pa.table({"sym": [f"S{i}" for i in range(n)], "note": [NASTY] * n, "px": [float(i) for i in range(n)], "ts": list(range(n))})
    table = rb.Pipeline.read(tbl, timestamp="ts").to_table("sym")
    doc = table._repr_html_()
    assert doc == display.table_html(table)
    text = text_of(doc)
    assert "riverbed Table" in text and "key: sym" in text and f"{n} rows" in text and "loaded" in text
    rows = table_after(doc, "sym")
    assert rows[0] == ["sym", "note", "px", "ts"]
    view = table.to_arrow()
    first = view.slice(0, display.TABLE_HEAD).to_pylist()
    assert rows[1 : 1 + display.TABLE_HEAD] == [[r["sym"], r["note"], repr(r["px"]), str(r["ts"])] for r in first]
    assert rows[-1] == ["… 5 more rows"]


def test_table_html_of_a_topic_decodes_binary_keys(log):
    t = log.topic("prices", cleanup="compact")
    t.produce({"px": 1.0}, key="A", timestamp=1)
    t.produce({"px": 2.0}, key="B", timestamp=2)
    t.produce({"px": 3.0}, key="A", timestamp=3)
    doc = log.table(t)._repr_html_()
    rows = table_after(doc, "px")
    keys = rows[0].index("key")
    assert sorted(r[keys] for r in rows[1:]) == ["A", "B"]
    assert "2 rows" in text_of(doc)


def test_named_operator_is_its_input_box_with_the_name():
    rows = pa.table({"k": ["a", "b", "a"], "ts": [0, 1, 70_000]})
    p = rb.Pipeline.read(rows, timestamp="ts").window(rb.tumbling("1m"), by="k").agg(n=rb.count()).named("per-minute")
    p.run(progress=False)
    metrics = p.metrics()
    assert [m["operator"] for m in metrics] == ["read#0", "per-minute"]
    root = parse_svg(plan_svg(p.to_plan(), metrics))
    assert [g.get("data-op") for g in nodes(root)] == ["source", "window"]  # no box of its own
    win = box_text(by_op(root, "window")[0])
    assert win[0] == 'window "per-minute"' and win[1] == "tumbling 1m by k"
    assert [t.text for t in by_op(root, "window")[0].iter(SVG + "text") if t.get("class") == "rb-metrics"] == ["in 3 → out 3 · late 0"]
