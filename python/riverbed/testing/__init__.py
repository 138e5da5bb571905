"""Testing pipelines: ``TestDriver`` and a pytest plugin.

``TestDriver`` is the Python counterpart of Kafka Streams' ``TopologyTestDriver``, for
multi-partition pipelines. It replaces every source of a pipeline by a topic in a private,
temporary embedded log; you ``send`` records to those topics, move the watermark with
``advance_watermark``, and read what the pipeline emitted with ``output()`` and ``late()``:

>>> import riverbed as rb, pyarrow as pa
>>> from riverbed.testing import TestDriver
>>> schema = pa.schema([("sym", pa.string()), ("qty", pa.int64()), ("ts", pa.int64())])
>>> bars = (rb.Pipeline.read(schema.empty_table(), timestamp="ts", name="trades")
...           .window(rb.tumbling("1m"), by="sym").agg(n=rb.count(), qty=rb.sum("qty")))
>>> with TestDriver(bars, partitions=2) as driver:
...     _ = driver.send("trades", [{"sym": "A", "qty": 5, "ts": 1_000}, {"sym": "A", "qty": 2, "ts": 30_000}], key="sym")
...     driver.output().num_rows                  # no window has closed yet
...     driver.advance_watermark(60_000)
...     driver.output().to_pylist()
0
[{'sym': 'A', 'window_start': 0, 'window_end': 60000, 'n': 2, 'qty': 7}]

How the driver runs the pipeline (deterministically):

* Every ``output()``/``late()``/``metrics()`` after a change replays *everything sent so far*
  from scratch, as a bounded run (nothing is kept between runs; a replay takes milliseconds for
  test-sized inputs).
* Records are processed **one at a time, in the order they were sent** (as Kafka Streams' test
  driver does), each partition of each source being its own input.
* A partition's watermark is the largest event time it has seen minus the source's ``lateness``;
  the pipeline's watermark is the **minimum over all partitions** — so a partition that got no
  data holds every window open, as a live consumer would until the partition's ``idle_timeout``.
  ``advance_watermark(t)`` raises every partition's watermark to at least ``t`` at that point of
  the sequence; records sent after it with an event time before ``t`` are late for the windows
  that closed.
* A replay ends at the driver's watermark: it is *not* an end-of-input flush. Before any
  ``advance_watermark`` only what the data's own watermark closes is emitted.

Records are stored in the topics as a producer would write them: the value is a JSON object of
the source's columns (``format="raw"`` sources: the ``value`` column as is), the key comes from
the ``key=`` column and picks the partition with Kafka's murmur2 partitioner (records without a
key go round-robin over the partitions, unless ``partition=`` is given). JSON cannot carry NaN:
a NaN float arrives as null, as it would through a real topic.

The pytest plugin (registered as the ``pytest11`` entry point ``riverbed``) provides the
fixtures ``rb_log`` (an ``rb.Log`` in ``tmp_path``) and ``rb_driver`` (a factory of
``TestDriver`` closed at teardown):

.. code-block:: python

    def test_bars(rb_driver):
        driver = rb_driver(bars, partitions=2)
        driver.send("trades", [{"sym": "A", "qty": 5, "ts": 1_000}], key="sym")
        driver.advance_watermark(60_000)
        assert driver.output().column("n").to_pylist() == [1]
"""

from riverbed.testing.driver import TestDriver, UnknownSourceError
from riverbed.testing.mock_kafka import MockKafka

__all__ = ["MockKafka", "TestDriver", "UnknownSourceError"]
