//! Log topics as sources (JSON with an explicit or inferred schema, raw) and as sinks.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use common::*;
use riverbed_log::arrow::ArrowRecordSink;
use riverbed_log::{FsyncPolicy, Log, LogOptions, StartSpec, Topic, TopicOptions};
use riverbed_stream::{
    CollectSink, Emit, Format, Node, Pipeline, RunControl, SourceSpec, StreamError, TopicSink,
    WindowSpec,
};
use serde_json::{json, Value};

const SYMS: [&str; 3] = ["AAPL", "GOOG", "MSFT"];

fn open_log(dir: &Path) -> Log {
    Log::open(
        dir,
        LogOptions {
            fsync: FsyncPolicy::Never,
            cleanup_interval: None,
        },
    )
    .expect("open log")
}

fn topic(log: &Log, name: &str, partitions: u32) -> Arc<Topic> {
    log.topic(
        name,
        &TopicOptions {
            partitions: Some(partitions),
            ..Default::default()
        },
    )
    .expect("create topic")
}

/// A produced record, as the source should report it.
#[derive(Debug, Clone, PartialEq)]
struct Produced {
    partition: i64,
    offset: i64,
    timestamp: i64,
    key: String,
    sym: String,
    px: f64,
    qty: i64,
}

/// 30 trades alternating between the two partitions; record time 1000 + 250 i, value field
/// `ts` = record time.
fn produce_trades(t: &Topic) -> Vec<Produced> {
    (0..30)
        .map(|i| {
            let sym = SYMS[i % 3];
            let px = 100.0 + i as f64 * 0.25;
            let qty = (i as i64 * 7) % 11 - 3;
            let ts = 1_000 + 250 * i as i64;
            let value = json!({"sym": sym, "px": px, "qty": qty, "ts": ts}).to_string();
            let (p, offset) = t
                .produce(
                    Some(sym.as_bytes()),
                    Some(value.as_bytes()),
                    ts,
                    &[],
                    Some((i % 2) as u32),
                )
                .expect("produce");
            Produced {
                partition: p as i64,
                offset,
                timestamp: ts,
                key: sym.to_string(),
                sym: sym.to_string(),
                px,
                qty,
            }
        })
        .collect()
}

fn trade_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sym", DataType::Utf8, true),
        Field::new("px", DataType::Float64, true),
        Field::new("qty", DataType::Int64, true),
        Field::new("ts", DataType::Int64, true),
    ]))
}

fn read_source(lateness_ms: i64, timestamp: Option<&str>) -> Node {
    source(timestamp, lateness_ms)
}

fn produced_rows(b: &arrow_array::RecordBatch) -> Vec<Produced> {
    let (p, o, t) = (
        ints_nn(b, "partition"),
        ints_nn(b, "offset"),
        ints_nn(b, "timestamp"),
    );
    let (k, sym, px, qty) = (
        strs(b, "key"),
        strs(b, "sym"),
        floats(b, "px"),
        ints(b, "qty"),
    );
    let mut rows: Vec<Produced> = (0..b.num_rows())
        .map(|i| Produced {
            partition: p[i],
            offset: o[i],
            timestamp: t[i],
            key: k[i].clone().expect("key"),
            sym: sym[i].clone().expect("sym"),
            px: px[i].expect("px"),
            qty: qty[i].expect("qty"),
        })
        .collect();
    rows.sort_by_key(|r| (r.partition, r.offset));
    rows
}

fn sorted(mut v: Vec<Produced>) -> Vec<Produced> {
    v.sort_by_key(|r| (r.partition, r.offset));
    v
}

#[test]
fn json_source_with_explicit_schema_has_metadata_columns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "trades", 2);
    let produced = produce_trades(&t);
    let spec = SourceSpec::log(t.clone(), Format::Json, Some(trade_schema()), 4)?;
    assert_eq!(spec.partitions(), 2);
    let ran = run_specs(read_source(0, None), vec![spec])?;
    let schema = ran.all.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "sym",
            "px",
            "qty",
            "ts",
            "key",
            "timestamp",
            "partition",
            "offset"
        ]
    );
    assert_eq!(dtype(&ran.all, "key"), DataType::Binary);
    assert_eq!(
        dtype(&ran.all, "timestamp"),
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    assert_eq!(dtype(&ran.all, "partition"), DataType::Int32);
    assert_eq!(dtype(&ran.all, "offset"), DataType::Int64);
    // Every batch holds at most batch_size records of one partition.
    for b in &ran.batches {
        assert!(b.num_rows() <= 4);
        let p = ints_nn(b, "partition");
        assert!(p.iter().all(|&x| x == p[0]), "{p:?}");
    }
    assert_eq!(produced_rows(&ran.all), sorted(produced));
    Ok(())
}

#[test]
fn json_source_with_inferred_schema() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "trades", 2);
    let produced = produce_trades(&t);
    // A field only some records have is inferred too (null elsewhere).
    t.produce(
        Some(b"AAPL"),
        Some(br#"{"sym": "AAPL", "px": 1.5, "qty": 2, "ts": 99999, "note": "late fill"}"#),
        99_999,
        &[],
        Some(0),
    )?;
    let spec = SourceSpec::log(t.clone(), Format::Json, None, 1000)?;
    let schema = spec.schema();
    let ty = |n: &str| schema.field_with_name(n).map(|f| f.data_type().clone());
    assert_eq!(ty("sym")?, DataType::Utf8);
    assert_eq!(ty("px")?, DataType::Float64);
    assert_eq!(ty("qty")?, DataType::Int64);
    assert_eq!(ty("note")?, DataType::Utf8);
    assert_eq!(ty("offset")?, DataType::Int64);
    let ran = run_specs(read_source(0, None), vec![spec])?;
    assert_eq!(ran.all.num_rows(), 31);
    let notes: Vec<Option<String>> = strs(&ran.all, "note");
    assert_eq!(notes.iter().filter(|n| n.is_some()).count(), 1);
    let mut rows = produced_rows(&ran.all);
    rows.retain(|r| r.timestamp != 99_999);
    assert_eq!(rows, sorted(produced));
    Ok(())
}

#[test]
fn inference_needs_json_records() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "empty", 2);
    match SourceSpec::log(t, Format::Json, None, 10) {
        Err(StreamError::Plan { op, message }) => {
            assert_eq!(op, "read");
            assert!(message.contains("'empty'"), "{message}");
        }
        Err(e) => panic!("expected a plan error, got {e}"),
        Ok(_) => panic!("expected a plan error"),
    }
    Ok(())
}

#[test]
fn windows_over_record_timestamps_match_brute_force() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "trades", 2);
    let produced = produce_trades(&t);
    let spec = SourceSpec::log(t.clone(), Format::Json, Some(trade_schema()), 3)?;
    // timestamp=None: the record timestamp is the event time.
    let plan = window(
        read_source(0, None),
        WindowSpec::Tumbling {
            size_ms: 1_000,
            offset_ms: 0,
            grace_ms: 0,
        },
        &["sym"],
        Emit::Final,
        vec![("n", agg("count", None)), ("q", agg("sum", Some("qty")))],
    );
    let ran = run_specs(plan, vec![spec])?;
    assert_eq!(ran.late_rows(), 0);
    assert_eq!(
        dtype(&ran.all, "window_start"),
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    let mut want: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for r in &produced {
        let e = want
            .entry((r.timestamp.div_euclid(1000) * 1000, r.sym.clone()))
            .or_default();
        e.0 += 1;
        e.1 += r.qty;
    }
    let (st, en, sym, n, q) = (
        ints_nn(&ran.all, "window_start"),
        ints_nn(&ran.all, "window_end"),
        strs(&ran.all, "sym"),
        ints_nn(&ran.all, "n"),
        ints_nn(&ran.all, "q"),
    );
    let mut got = BTreeMap::new();
    for i in 0..ran.all.num_rows() {
        assert_eq!(en[i] - st[i], 1_000);
        got.insert((st[i], sym[i].clone().unwrap_or_default()), (n[i], q[i]));
    }
    assert_eq!(got, want);
    Ok(())
}

fn expect_decode_error(r: Result<Ran, StreamError>, topic_name: &str, partition: u32, offset: i64) {
    match r {
        Err(StreamError::Decode {
            topic,
            partition: p,
            offset: o,
            message,
        }) => {
            assert_eq!(
                (topic.as_str(), p, o),
                (topic_name, partition, offset),
                "{message}"
            );
        }
        Err(e) => panic!("expected a decode error, got {e}"),
        Ok(_) => panic!("expected a decode error, the run succeeded"),
    }
}

#[test]
fn malformed_json_is_a_decode_error_naming_the_record() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "bad", 2);
    for i in 0..4 {
        for p in 0..2 {
            let v = if p == 1 && i == 2 {
                r#"{"sym": "AAPL", "qty": 1,"#.to_string()
            } else {
                json!({"sym": "GOOG", "qty": i, "ts": i}).to_string()
            };
            t.produce(None, Some(v.as_bytes()), 1_000 + i, &[], Some(p))?;
        }
    }
    for batch_size in [1, 3, 100] {
        let spec = SourceSpec::log(t.clone(), Format::Json, Some(trade_schema()), batch_size)?;
        expect_decode_error(run_specs(read_source(0, None), vec![spec]), "bad", 1, 2);
    }
    // Inference skips the malformed value, but reading it still fails.
    let spec = SourceSpec::log(t.clone(), Format::Json, None, 100)?;
    expect_decode_error(run_specs(read_source(0, None), vec![spec]), "bad", 1, 2);
    Ok(())
}

#[test]
fn a_value_with_two_objects_is_a_decode_error() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "two", 1);
    t.produce(None, Some(br#"{"qty": 1}"#), 1, &[], None)?;
    t.produce(None, Some(br#"{"qty": 2} {"qty": 3}"#), 2, &[], None)?;
    t.produce(None, Some(br#"{"qty": 4}"#), 3, &[], None)?;
    let spec = SourceSpec::log(t.clone(), Format::Json, Some(trade_schema()), 10)?;
    expect_decode_error(run_specs(read_source(0, None), vec![spec]), "two", 0, 1);
    Ok(())
}

#[test]
fn pretty_printed_and_null_values_decode() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "pretty", 1);
    t.produce(
        Some(b"k1"),
        Some(b"{\n  \"sym\": \"AAPL\",\n  \"qty\": 5\n}"),
        10,
        &[],
        None,
    )?;
    // A tombstone (null value) decodes as a row of nulls.
    t.produce(Some(b"k2"), None, 11, &[], None)?;
    t.produce(
        Some(b"k3"),
        Some(br#"{"sym": "MSFT", "qty": 6}"#),
        12,
        &[],
        None,
    )?;
    let spec = SourceSpec::log(t.clone(), Format::Json, Some(trade_schema()), 10)?;
    let ran = run_specs(read_source(0, None), vec![spec])?;
    assert_eq!(
        strs(&ran.all, "sym"),
        vec![Some("AAPL".into()), None, Some("MSFT".into())]
    );
    assert_eq!(ints(&ran.all, "qty"), vec![Some(5), None, Some(6)]);
    assert_eq!(
        strs(&ran.all, "key"),
        ["k1", "k2", "k3"].map(|s| Some(s.to_string())).to_vec()
    );
    assert_eq!(ints_nn(&ran.all, "offset"), vec![0, 1, 2]);
    assert_eq!(ints_nn(&ran.all, "timestamp"), vec![10, 11, 12]);
    Ok(())
}

#[test]
fn raw_source_keeps_value_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "raw", 1);
    t.produce(None, Some(&[0u8, 159, 146, 150]), 5, &[], None)?;
    t.produce(None, None, 6, &[], None)?;
    let spec = SourceSpec::log(t.clone(), Format::Raw, None, 10)?;
    let ran = run_specs(read_source(0, None), vec![spec])?;
    assert_eq!(dtype(&ran.all, "value"), DataType::Binary);
    let v = ran
        .all
        .column_by_name("value")
        .expect("value column")
        .as_binary::<i32>()
        .iter()
        .map(|x| x.map(<[u8]>::to_vec))
        .collect::<Vec<_>>();
    assert_eq!(v, vec![Some(vec![0u8, 159, 146, 150]), None]);
    assert_eq!(null_count(&ran.all, "key"), 2);
    Ok(())
}

#[test]
fn topic_sink_writes_window_results_as_json() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let input = topic(&log, "trades", 2);
    let produced = produce_trades(&input);
    let out = topic(&log, "trade-windows", 1);
    let spec = SourceSpec::log(input.clone(), Format::Json, Some(trade_schema()), 5)?;
    // Event time from the value's int64 `ts`, so the window bounds are plain integers.
    let plan = window(
        read_source(0, Some("ts")),
        WindowSpec::Tumbling {
            size_ms: 2_000,
            offset_ms: 0,
            grace_ms: 0,
        },
        &["sym"],
        Emit::Final,
        vec![
            ("n", agg("count", None)),
            ("q", agg("sum", Some("qty"))),
            ("hi", agg("max", Some("px"))),
        ],
    );
    let pipeline = Pipeline::new(plan, vec![spec], vec![])?;
    let mut sink = TopicSink {
        topic: out.clone(),
        keys: vec!["sym".into()],
        timestamp: Some("window_start".into()),
    };
    let result = pipeline.run(&mut sink, false, &RunControl::default())?;
    assert!(result.late.is_empty());

    let mut records = ArrowRecordSink::new(out.name.clone(), 100);
    out.read_bounded(StartSpec::Earliest, StartSpec::Latest, &mut records)?;
    let b = records.finish()?;
    let mut want: BTreeMap<(i64, String), (i64, i64, f64)> = BTreeMap::new();
    for r in &produced {
        let e = want
            .entry((r.timestamp.div_euclid(2000) * 2000, r.sym.clone()))
            .or_insert((0, 0, f64::MIN));
        e.0 += 1;
        e.1 += r.qty;
        e.2 = e.2.max(r.px);
    }
    assert_eq!(b.num_rows(), want.len());
    let keys = strs(&b, "key");
    let stamps = ints_nn(&b, "timestamp");
    let values = b
        .column_by_name("value")
        .expect("value column")
        .as_binary::<i32>();
    let mut got = BTreeMap::new();
    for i in 0..b.num_rows() {
        let v: Value = serde_json::from_slice(values.value(i))?;
        let obj = v.as_object().expect("a JSON object per row");
        let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["hi", "n", "q", "sym", "window_end", "window_start"]
        );
        let start = obj["window_start"].as_i64().expect("int start");
        let sym = obj["sym"].as_str().expect("sym").to_string();
        assert_eq!(obj["window_end"].as_i64(), Some(start + 2_000));
        // The record key is the sym column and its timestamp the window start.
        assert_eq!(keys[i].as_deref(), Some(sym.as_str()));
        assert_eq!(stamps[i], start);
        got.insert(
            (start, sym),
            (
                obj["n"].as_i64().expect("n"),
                obj["q"].as_i64().expect("q"),
                obj["hi"].as_f64().expect("hi"),
            ),
        );
    }
    assert_eq!(got, want);

    // The same plan into a collecting sink gives the same rows.
    let mut collect = CollectSink::default();
    pipeline.run(&mut collect, false, &RunControl::default())?;
    let rows: usize = collect.batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, want.len());
    Ok(())
}

#[test]
fn follow_mode_idle_inputs_flush_windows() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open_log(dir.path());
    let t = topic(&log, "live", 2);
    let put = |ts: i64, p: u32| -> TestResult {
        let v = json!({"sym": "AAPL", "qty": 1, "ts": ts}).to_string();
        t.produce(Some(b"AAPL"), Some(v.as_bytes()), ts, &[], Some(p))?;
        Ok(())
    };
    // Partition 1 stays empty: without idleness it would hold the watermark back forever.
    for ts in [1_000, 1_100, 1_200] {
        put(ts, 0)?;
    }
    let spec = SourceSpec::log(t.clone(), Format::Json, Some(trade_schema()), 10)?;
    let plan = window(
        Node::Source {
            source: 0,
            timestamp: None,
            lateness_ms: 0,
            idle_timeout_ms: 100,
            name: None,
            partitioned_by: None,
        },
        WindowSpec::Tumbling {
            size_ms: 1_000,
            offset_ms: 0,
            grace_ms: 0,
        },
        &["sym"],
        Emit::Final,
        vec![("n", agg("count", None))],
    );
    let pipeline = Pipeline::new(plan, vec![spec], vec![])?;
    let control = RunControl::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let wait = std::time::Duration::from_secs(5);
    std::thread::scope(|s| -> TestResult {
        let runner = s.spawn(|| {
            let mut sink = riverbed_stream::sink::FnSink(move |b| {
                let _ = tx.send(b);
                Ok(())
            });
            pipeline.run(&mut sink, true, &control)
        });
        let stop = || {
            control
                .stop
                .store(true, std::sync::atomic::Ordering::Release)
        };
        let first = rx.recv_timeout(wait);
        if first.is_err() {
            stop();
        }
        let first = first?;
        assert_eq!(ints_nn(&first, "window_start"), vec![1_000]);
        assert_eq!(ints_nn(&first, "n"), vec![3]);
        // New data on the other partition, then quiet again: the next window closes too.
        put(2_500, 1)?;
        put(2_600, 1)?;
        let second = rx.recv_timeout(wait);
        stop();
        let second = second?;
        assert_eq!(ints_nn(&second, "window_start"), vec![2_000]);
        assert_eq!(ints_nn(&second, "n"), vec![2]);
        let out = runner.join().expect("the runner does not panic")?;
        assert!(out.late.is_empty());
        Ok(())
    })?;
    Ok(())
}
