"""riverbed.testing: TestDriver and the pytest plugin (fixtures rb_log, rb_driver).

The first test is the README's: it uses nothing but the plugin's fixtures and TestDriver, as a
user testing their own pipeline would.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

import riverbed as rb
from riverbed.testing import TestDriver

TRADE = pa.schema([("sym", pa.string()), ("px", pa.float64()), ("qty", pa.int64()), ("ts", pa.int64())])


def one_minute_bars(trades):
    """The pipeline under test, as the application builds it on its real topic."""
    return (
        rb.Pipeline.read(trades, schema=TRADE, timestamp="ts", lateness="5s", name="trades")
        .window(rb.tumbling("1m", grace="10s"), by="sym")
        .agg(trades=rb.count(), volume=rb.sum("qty"), vwap=rb.sum(rb.col("px") * rb.col("qty")) / rb.sum("qty"))
    )


def test_one_minute_bars(rb_log, rb_driver):
    driver = rb_driver(one_minute_bars(rb_log.topic("trades", partitions=2)))
    driver.send(
        "trades",
        [
            {"sym": "AAPL", "px": 100.0, "qty": 10, "ts": 1_000},
            {"sym": "MSFT", "px": 50.0, "qty": 4, "ts": 2_000},
            {"sym": "AAPL", "px": 102.0, "qty": 30, "ts": 59_000},
            {"sym": "MSFT", "px": 51.0, "qty": 1, "ts": 66_000},  # the next minute
        ],
        key="sym",
    )
    # AAPL and MSFT are in different partitions; the watermark is the slower one's 59s - 5s
    assert driver.output().num_rows == 0
    driver.advance_watermark(69_999)  # the first minute's end + grace is 70s
    assert driver.output().num_rows == 0

    driver.advance_watermark(70_000)
    bars = driver.output()
    assert bars.sort_by("sym").to_pylist() == [
        {"sym": "AAPL", "window_start": 0, "window_end": 60_000, "trades": 2, "volume": 40, "vwap": 101.5},
        {"sym": "MSFT", "window_start": 0, "window_end": 60_000, "trades": 1, "volume": 4, "vwap": 50.0},
    ]

    # a trade of the closed minute arriving now is late: dropped, not counted
    driver.send("trades", {"sym": "AAPL", "px": 999.0, "qty": 1, "ts": 30_000}, key="sym")
    late = driver.late()  # as the topic source reads it: with key, timestamp, partition, offset
    assert late.select(["sym", "px", "qty", "ts", "key"]).to_pylist() == [
        {"sym": "AAPL", "px": 999.0, "qty": 1, "ts": 30_000, "key": b"AAPL"}
    ]
    assert driver.output().equals(bars)
    window = [m for m in driver.metrics() if m["operator"].startswith("window")]
    assert window[0]["late_records"] == 1

    driver.advance_watermark(dt.datetime(1970, 1, 1, 0, 2, 10, tzinfo=dt.timezone.utc))
    assert driver.output().num_rows == 3  # MSFT's second minute closed too


# -- the pytest plugin -----------------------------------------------------------------------


def test_plugin_is_registered(request, rb_log, tmp_path):
    assert request.config.pluginmanager.has_plugin("riverbed")
    assert rb_log.path.parent == tmp_path
    rb_log.topic("t").produce({"a": 1}, timestamp=0)
    assert rb_log["t"].read().num_rows == 1


def test_rb_driver_closes_its_drivers_at_teardown(rb_driver):
    # (the teardown half is checked by test_close_deletes_the_log through close())
    d = rb_driver(rb.Pipeline.read(TRADE.empty_table(), timestamp="ts", name="trades"), partitions=3)
    assert isinstance(d, TestDriver) and not d.closed
    assert d.topic("trades").partitions == 3


# -- multi-partition watermarks ----------------------------------------------------------------


def counts_per_minute():
    return rb.Pipeline.read(TRADE.empty_table(), timestamp="ts", name="trades").window(rb.tumbling("1m"), by="sym").agg(n=rb.count())


def rows(*specs):
    return [{"sym": s, "px": 1.0, "qty": 1, "ts": ts} for s, ts in specs]


def test_a_partition_without_data_holds_windows_open(rb_driver):
    driver = rb_driver(counts_per_minute(), partitions=2)
    # AAPL hashes to partition 1 of 2, MSFT to partition 0
    assert [p for p, _ in driver.send("trades", rows(("AAPL", 1_000), ("AAPL", 61_000), ("AAPL", 300_000)), key="sym")] == [1, 1, 1]
    assert driver.output().num_rows == 0  # partition 0 has seen nothing: the watermark is its

    driver.send("trades", rows(("MSFT", 130_000)), key="sym")  # partition 0 reaches 130s
    assert driver.output().to_pylist() == [
        {"sym": "AAPL", "window_start": 0, "window_end": 60_000, "n": 1},
        {"sym": "AAPL", "window_start": 60_000, "window_end": 120_000, "n": 1},
    ]

    driver.advance_watermark(360_000)
    assert driver.output().sort_by([("window_start", "ascending")]).to_pylist()[2:] == [
        {"sym": "MSFT", "window_start": 120_000, "window_end": 180_000, "n": 1},
        {"sym": "AAPL", "window_start": 300_000, "window_end": 360_000, "n": 1},
    ]


def test_one_partition_closes_windows_by_its_own_data(rb_driver):
    driver = rb_driver(counts_per_minute())  # an in-memory source: one partition
    driver.send("trades", rows(("AAPL", 1_000), ("AAPL", 61_000), ("AAPL", 300_000)), key="sym")
    assert driver.output().column("window_start").to_pylist() == [0, 60_000]


def test_partition_and_round_robin_routing(rb_driver):
    driver = rb_driver(counts_per_minute(), partitions=3)
    assert [p for p, _ in driver.send("trades", rows(("A", 0), ("A", 1), ("A", 2), ("A", 3)))] == [0, 1, 2, 0]
    assert driver.send("trades", rows(("A", 4)), partition=2) == [(2, 1)]
    keyed = driver.send("trades", rows(("TSLA", 5), ("GOOG", 6)), key="sym")
    topic = driver.topic("trades")
    assert [p for p, _ in keyed] == [topic.partition_for("TSLA"), topic.partition_for("GOOG")]
    assert [p for p, _ in keyed] == [(rb.murmur2(k) & 0x7FFFFFFF) % 3 for k in (b"TSLA", b"GOOG")]
    records = topic.read()
    assert records.num_rows == 7
    assert records.filter(pa.compute.equal(records["key"], b"TSLA"))["timestamp"].cast(pa.int64()).to_pylist() == [5]


def test_records_are_processed_one_at_a_time_in_send_order(rb_driver):
    driver = rb_driver(counts_per_minute())
    driver.send("trades", rows(("A", 70_000), ("A", 10_000)))  # one call, but record by record
    assert driver.late().column("ts").to_pylist() == [10_000]


def test_advance_watermark_never_moves_back(rb_driver):
    driver = rb_driver(counts_per_minute())
    assert driver.watermark is None
    driver.send("trades", rows(("A", 1_000)))
    driver.advance_watermark(120_000)
    driver.advance_watermark(30_000)
    assert driver.watermark == 120_000
    driver.send("trades", rows(("A", 90_000)))  # its minute closed at 120s
    assert driver.output().column("n").to_pylist() == [1]
    assert driver.late().column("ts").to_pylist() == [90_000]


def test_output_is_deterministic(rb_driver):
    def drive():
        driver = rb_driver(counts_per_minute(), partitions=4)
        for i in range(50):
            driver.send("trades", rows((f"S{i % 7}", i * 7_919 % 400_000)), key="sym")
            if i % 10 == 9:
                driver.advance_watermark(i * 10_000)
        return driver.run()

    a, b = drive(), drive()
    assert a.output.num_rows > 0 and a.late.num_rows > 0
    assert a.output.equals(b.output) and a.late.equals(b.late) and a.metrics == b.metrics


# -- addressing sources ------------------------------------------------------------------------

QUOTE = pa.schema([("sym", pa.string()), ("bid", pa.float64()), ("ts", pa.int64())])


def join_pipeline():
    trades = rb.Pipeline.read(TRADE.empty_table(), timestamp="ts", name="trades")
    quotes = rb.Pipeline.read(QUOTE.empty_table(), timestamp="ts", name="quotes")
    return trades, quotes, trades.join_asof(quotes, on="ts", by="sym")


@pytest.mark.parametrize("how", ["name", "index", "object"])
def test_sources_by_name_index_or_object(rb_driver, how):
    trades, quotes, joined = join_pipeline()
    ref = {"name": ("trades", "quotes"), "index": (0, 1), "object": (trades, quotes)}[how]
    driver = rb_driver(joined, partitions={ref[0]: 2, ref[1]: 3})
    assert [driver.topic(r).partitions for r in ref] == [2, 3]
    driver.send(ref[1], [{"sym": "A", "bid": 1.0, "ts": 0}, {"sym": "A", "bid": 2.0, "ts": 10}], key="sym")
    driver.send(ref[0], rows(("A", 5), ("A", 15)), key="sym")
    driver.advance_watermark(100)
    out = driver.output()
    assert out.select(["ts", "bid"]).to_pylist() == [{"ts": 5, "bid": 1.0}, {"ts": 15, "bid": 2.0}]
    assert [m["operator"] for m in driver.metrics()][:2] == ["trades", "quotes"]


def test_metrics_are_named_like_the_pipelines_own():
    _, _, joined = join_pipeline()
    p = joined.window(rb.tumbling("1m")).agg(n=rb.count())
    p.collect()
    with TestDriver(p, partitions=3) as driver:
        driver.send("trades", rows(("A", 5), ("B", 7)), key="sym")
        driver.advance_watermark(60_000)
        got = driver.metrics()
    assert [m["operator"] for m in got] == [m["operator"] for m in p.metrics()]
    assert got[0]["records_in"] == got[0]["records_out"] == 2


def test_unknown_source(rb_driver):
    _, _, joined = join_pipeline()
    driver = rb_driver(joined)
    for exc in (KeyError, ValueError):
        with pytest.raises(exc, match=r"no source named 'trade'.*'trades'.*'quotes'"):
            driver.send("trade", rows(("A", 0)))
    with pytest.raises(KeyError, match=r"no source #2.*'trades'"):
        driver.send(2, rows(("A", 0)))
    with pytest.raises(KeyError, match="not read by the pipeline"):
        driver.send(rb.Pipeline.read(TRADE.empty_table()), rows(("A", 0)))
    with pytest.raises(KeyError, match="no source named 'nope'"):
        TestDriver(joined, partitions={"nope": 2})
    with pytest.raises(TypeError, match="addressed by name"):
        driver.send(1.5, rows(("A", 0)))


# -- input ----------------------------------------------------------------------------------


def test_rows_not_matching_the_schema(rb_driver):
    driver = rb_driver(counts_per_minute(), partitions=2)
    good = {"sym": "A", "px": 1.0, "qty": 1, "ts": 0}
    with pytest.raises(ValueError, match=r"column\(s\) \['qtty'\] are not in the source's schema \(sym: string, px: double"):
        driver.send("trades", [{**good, "qtty": 1}])
    with pytest.raises(ValueError, match=r"no column\(s\) \['px'\] of the source's schema"):
        driver.send("trades", [{"sym": "A", "qty": 1, "ts": 0}])
    with pytest.raises(ValueError, match=r"column 'qty' does not fit the source's type int64.*'many'"):
        driver.send("trades", [good, {**good, "qty": "many"}])
    with pytest.raises(ValueError, match=r"column 'ts' \(the event-time column\) has nulls"):
        driver.send("trades", [{**good, "ts": None}])
    with pytest.raises(ValueError, match="column 'qty' does not fit"):
        driver.send("trades", pa.table({"sym": ["A"], "px": [1.0], "qty": ["x"], "ts": [0]}))
    with pytest.raises(TypeError, match="rows must be dicts"):
        driver.send("trades", [("A", 1.0, 1, 0)])
    with pytest.raises(ValueError, match="rows have no column 'symbol'"):
        driver.send("trades", [good], key="symbol")
    with pytest.raises(ValueError, match="partition 2 does not exist"):
        driver.send("trades", [good], partition=2)
    assert driver.topic("trades").read().num_rows == 0  # nothing of a bad call was sent
    assert driver.send("trades", [good, {**good, "px": None}]) == [(0, 0), (1, 0)]


def test_tables_and_dataframes(rb_driver):
    pd = pytest.importorskip("pandas")
    driver = rb_driver(counts_per_minute())
    driver.send("trades", pd.DataFrame({"sym": ["A", "A"], "px": [1.0, 2.0], "qty": [1, 2], "ts": [0, 1_000]}))
    driver.send("trades", pa.table({"ts": [2_000], "qty": [3], "px": [3.0], "sym": ["A"]}))  # any column order
    driver.send("trades", pa.table({"sym": ["A"], "px": [4], "qty": [4], "ts": pa.array([3_000], pa.int32())}))  # castable
    driver.advance_watermark(60_000)
    assert driver.output().column("n").to_pylist() == [4]


def test_timestamp_columns_and_record_time(rb_log, rb_driver):
    clicks = rb.Pipeline.read(
        rb_log.topic("clicks", partitions=3), schema=pa.schema([("page", pa.string()), ("user", pa.string())]), name="clicks"
    )
    p = clicks.window(rb.tumbling("10s"), by="page").agg(n=rb.count())
    driver = rb_driver(p)
    with pytest.raises(ValueError, match="event time is the record timestamp; pass timestamp="):
        driver.send("clicks", [{"page": "/", "user": "u1"}])
    driver.send("clicks", [{"page": "/", "user": "u1", "timestamp": 1_000}], key="user")
    driver.send("clicks", [{"page": "/", "user": "u2", "at": 2_000}], key="user", timestamp="at")
    driver.send("clicks", [{"page": "/a", "user": "u3"}], timestamp=dt.datetime(1970, 1, 1, 0, 0, 12))
    sent = driver.topic("clicks").read()
    assert sorted(sent["timestamp"].cast(pa.int64()).to_pylist()) == [1_000, 2_000, 12_000]
    assert sorted(v for v in sent["value"].to_pylist()) == [b'{"page":"/","user":"u1"}', b'{"page":"/","user":"u2"}', b'{"page":"/a","user":"u3"}']
    driver.advance_watermark(10_000)
    out = driver.output()
    assert out.column("n").to_pylist() == [2]
    assert out.schema.field("window_start").type == pa.timestamp("ms", tz="UTC")


def test_a_pipeline_writing_to_a_topic(rb_log, rb_driver):
    out_topic = rb_log.topic("bars")
    p = counts_per_minute().write(out_topic)
    driver = rb_driver(p)
    driver.send("trades", rows(("A", 0), ("A", 61_000)))
    assert driver.output("bars").column("n").to_pylist() == [1]
    assert driver.output(out_topic).num_rows == 1
    assert out_topic.read().num_rows == 0  # the driver collects; it does not write the real sink
    with pytest.raises(ValueError, match="does not write to 'other'"):
        driver.output("other")


def test_a_table_is_driven_through_its_changelog(rb_driver):
    table = rb.Pipeline.read(TRADE.empty_table(), timestamp="ts", name="trades").group_by("sym").agg(volume=rb.sum("qty"))
    driver = rb_driver(table)
    driver.send("trades", [{"sym": "A", "px": 1.0, "qty": q, "ts": q} for q in (1, 2, 3)])
    assert driver.output().column("volume").to_pylist() == [1, 3, 6]


# -- lifecycle ------------------------------------------------------------------------------


def test_close_deletes_the_log():
    with TestDriver(counts_per_minute()) as driver:
        driver.send("trades", rows(("A", 0)))
        path = driver.log.path
        assert path.exists()
    assert driver.closed and not path.exists()
    with pytest.raises(RuntimeError, match="closed"):
        driver.send("trades", rows(("A", 0)))
    driver.close()  # idempotent


def test_not_a_pipeline():
    with pytest.raises(TypeError, match="TestDriver takes an rb.Pipeline"):
        TestDriver(pa.table({"a": [1]}))
    with pytest.raises(ValueError, match="partitions must be between 1"):
        TestDriver(counts_per_minute(), partitions=0)


def test_a_topic_table_joined_with_tombstones(rb_log, rb_driver):
    names = rb_log.table(rb_log.topic("names", partitions=2, cleanup="compact"), schema=pa.schema([("name", pa.string())]))
    trades = rb.Pipeline.read(TRADE.empty_table(), timestamp="ts", name="trades")
    driver = rb_driver(trades.join_table(names, on="sym"))
    driver.send(names, [{"sym": "AAPL", "name": "Apple"}], key="sym", timestamp=0)  # the Table addresses its source
    driver.delete(names, "AAPL", timestamp=20)
    with pytest.raises(ValueError, match="tombstone has no value"):
        driver.delete("trades", "AAPL", timestamp=0)
    driver.send("trades", rows(("AAPL", 10), ("AAPL", 30)))
    assert driver.output().num_rows == 0  # the names topic's other partition holds the watermark
    driver.advance_watermark(100)
    assert driver.output().select(["ts", "name"]).to_pylist() == [{"ts": 10, "name": "Apple"}, {"ts": 30, "name": None}]
