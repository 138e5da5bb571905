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
The HTML is ``riverbed.display.reprs``, the graph's layout ``riverbed.display.svg``, the text and
table helpers they share ``riverbed.display.text``.
"""

from riverbed.display.reprs import TABLE_HEAD, TOPIC_TAIL, log_html, pipeline_html, table_html, topic_html
from riverbed.display.svg import plan_svg

__all__ = ["TABLE_HEAD", "TOPIC_TAIL", "log_html", "pipeline_html", "plan_svg", "table_html", "topic_html"]
