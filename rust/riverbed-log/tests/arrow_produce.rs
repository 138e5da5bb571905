//! Arrow in and out: `produce_arrow` routing, offsets and JSON encoding, schema errors, and the
//! `ArrowRecordSink` batch of a poll.

mod common;

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, DictionaryArray, Float64Array, Int64Array,
    RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, TimeUnit};
use common::*;
use riverbed_log::arrow::{produce_arrow, record_schema, ArrowRecordSink};
use riverbed_log::partitioner::partition_for_key;
use riverbed_log::{Consumer, LogError, StartSpec, Topic, TopicOptions};

fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).expect("valid batch")
}

fn kvt(n: usize, from: usize) -> RecordBatch {
    let keys: Vec<String> = (from..from + n)
        .map(|i| format!("user-{}", i % 17))
        .collect();
    let values: Vec<Vec<u8>> = (from..from + n)
        .map(|i| vec![i as u8, 0, 0xff, (i >> 8) as u8])
        .collect();
    let ts: Vec<i64> = (from..from + n)
        .map(|i| 1_700_000_000_000 + i as i64)
        .collect();
    batch(vec![
        ("key", Arc::new(StringArray::from(keys)) as ArrayRef),
        (
            "value",
            Arc::new(BinaryArray::from_iter_values(values.iter())),
        ),
        ("ts", Arc::new(Int64Array::from(ts))),
    ])
}

fn read_one(topic: &Topic, p: u32, offset: i64) -> riverbed_log::Result<Rec> {
    let mut out = None;
    topic.partition(p)?.read(offset, 1, usize::MAX, |r| {
        out = Some(Rec::from_view(p, r));
        false
    })?;
    Ok(out.expect("a record at the offset"))
}

#[test]
fn produce_arrow_routes_by_key_and_reports_offsets() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "a",
        &TopicOptions {
            partitions: Some(5),
            ..Default::default()
        },
    )?;
    // some records already there, so offsets do not start at 0
    for p in 0..5 {
        topic.produce(Some(b"pre"), Some(b"pre"), 1, &[], Some(p))?;
    }
    let b1 = kvt(60, 0);
    let b2 = kvt(40, 60);
    let (parts, offsets) = produce_arrow(
        &topic,
        &[b1.clone(), b2.clone()],
        Some("key"),
        Some("value"),
        Some("ts"),
    )?;
    assert_eq!((parts.len(), offsets.len()), (100, 100));
    let mut next = [1i64; 5];
    let rows: Vec<(String, Vec<u8>, i64)> = [b1, b2]
        .iter()
        .flat_map(|b| {
            let k = b.column(0).as_string::<i32>().clone();
            let v = b.column(1).as_binary::<i32>().clone();
            let t = b.column(2).as_primitive::<Int64Type>().clone();
            (0..b.num_rows())
                .map(move |i| (k.value(i).to_string(), v.value(i).to_vec(), t.value(i)))
                .collect::<Vec<_>>()
        })
        .collect();
    for (i, (k, v, t)) in rows.iter().enumerate() {
        let p = parts.value(i);
        assert_eq!(p as u32, partition_for_key(k.as_bytes(), 5), "row {i}");
        // rows of one partition get consecutive offsets in row order
        assert_eq!(offsets.value(i), next[p as usize], "row {i}");
        next[p as usize] += 1;
        let r = read_one(&topic, p as u32, offsets.value(i))?;
        assert_eq!(
            (r.key.as_deref(), r.value.as_deref(), r.timestamp),
            (Some(k.as_bytes()), Some(v.as_slice()), *t)
        );
    }
    let ends: Vec<i64> = topic.offsets()?.iter().map(|o| o.1).collect();
    assert_eq!(ends, next.to_vec());
    // an empty input produces nothing
    let (p, o) = produce_arrow(&topic, &[], Some("key"), Some("value"), Some("ts"))?;
    assert_eq!((p.len(), o.len()), (0, 0));
    log.close()?;
    Ok(())
}

#[test]
fn rows_without_value_column_are_json_objects() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "j",
        &TopicOptions {
            partitions: Some(3),
            ..Default::default()
        },
    )?;
    let b = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![7, 8, 9])) as ArrayRef),
        (
            "name",
            Arc::new(StringArray::from(vec![
                Some("a \"quoted\"\nline"),
                None,
                Some("ü"),
            ])),
        ),
        ("score", Arc::new(Float64Array::from(vec![1.5, -2.0, 0.25]))),
        ("ok", Arc::new(BooleanArray::from(vec![true, false, true]))),
        (
            "at",
            Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000, 3_500])),
        ),
    ]);
    // key from a non-string column: the JSON text of each value
    let (parts, offsets) = produce_arrow(
        &topic,
        std::slice::from_ref(&b),
        Some("id"),
        None,
        Some("at"),
    )?;
    let names = [Some("a \"quoted\"\nline"), None, Some("ü")];
    for i in 0..3 {
        let id = 7 + i as i64;
        let key = id.to_string();
        assert_eq!(parts.value(i) as u32, partition_for_key(key.as_bytes(), 3));
        let r = read_one(&topic, parts.value(i) as u32, offsets.value(i))?;
        assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
        assert_eq!(r.timestamp, [1_000, 2_000, 3_500][i]);
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
        let obj = v.as_object().ok_or("row is a JSON object")?;
        assert_eq!(obj.get("id"), Some(&serde_json::json!(id)));
        assert_eq!(
            obj.get("name"),
            Some(&serde_json::json!(names[i])),
            "row {i}"
        );
        assert_eq!(
            obj.get("score").and_then(|s| s.as_f64()),
            Some([1.5, -2.0, 0.25][i])
        );
        assert_eq!(obj.get("ok"), Some(&serde_json::json!(i != 1)));
        assert!(obj.contains_key("at"));
        assert_eq!(obj.len(), 5, "{obj:?}");
    }
    log.close()?;
    Ok(())
}

#[test]
fn schema_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "e",
        &TopicOptions {
            partitions: Some(2),
            ..Default::default()
        },
    )?;
    let b = kvt(5, 0);
    for (k, v, t, missing) in [
        (Some("nokey"), Some("value"), Some("ts"), "nokey"),
        (Some("key"), Some("novalue"), Some("ts"), "novalue"),
        (Some("key"), Some("value"), Some("nots"), "nots"),
    ] {
        match produce_arrow(&topic, std::slice::from_ref(&b), k, v, t) {
            Err(LogError::Schema(msg)) => assert!(msg.contains(missing), "{msg}"),
            other => panic!("missing column {missing}: {other:?}"),
        }
    }
    let with_null_ts = batch(vec![
        (
            "key",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
        ),
    ]);
    match produce_arrow(&topic, &[with_null_ts], Some("key"), None, Some("ts")) {
        Err(LogError::Schema(msg)) => assert!(
            msg.contains("ts") && msg.contains("null") && msg.contains('2'),
            "{msg}"
        ),
        other => panic!("null timestamp: {other:?}"),
    }
    let bad_ts = batch(vec![(
        "ts",
        Arc::new(StringArray::from(vec!["yesterday"])) as ArrayRef,
    )]);
    assert!(matches!(
        produce_arrow(&topic, &[bad_ts], None, None, Some("ts")),
        Err(LogError::Schema(_))
    ));
    // nothing was written by the failed calls
    assert_eq!(topic.offsets()?, vec![(0, 0), (0, 0)]);
    // a compacted topic needs a key on every row
    let compacted = log.topic(
        "c",
        &TopicOptions {
            cleanup: Some(riverbed_log::Cleanup::Compact),
            ..Default::default()
        },
    )?;
    let null_key = batch(vec![(
        "key",
        Arc::new(StringArray::from(vec![Some("a"), None])) as ArrayRef,
    )]);
    match produce_arrow(&compacted, &[null_key], Some("key"), None, None) {
        Err(LogError::InvalidArgument(msg)) => assert!(msg.contains("row 1"), "{msg}"),
        other => panic!("null key on a compacted topic: {other:?}"),
    }
    assert_eq!(compacted.offsets()?, vec![(0, 0)]);
    log.close()?;
    Ok(())
}

#[test]
fn timestamp_units_are_converted_to_ms() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic("t", &TopicOptions::default())?;
    let secs = arrow_array::TimestampSecondArray::from(vec![2]);
    let micros = arrow_array::TimestampMicrosecondArray::from(vec![2_999, -1]);
    let nanos = arrow_array::TimestampNanosecondArray::from(vec![5_000_000]);
    for (col, want) in [
        (Arc::new(secs) as ArrayRef, vec![2_000]),
        (Arc::new(micros) as ArrayRef, vec![2, -1]),
        (Arc::new(nanos) as ArrayRef, vec![5]),
    ] {
        let b = batch(vec![("ts", col)]);
        let (_, offsets) = produce_arrow(&topic, &[b], None, None, Some("ts"))?;
        for (i, w) in want.iter().enumerate() {
            assert_eq!(read_one(&topic, 0, offsets.value(i))?.timestamp, *w);
        }
    }
    log.close()?;
    Ok(())
}

#[test]
fn arrow_record_sink_builds_the_poll_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "s",
        &TopicOptions {
            partitions: Some(2),
            ..Default::default()
        },
    )?;
    topic.produce(
        Some(b"k0"),
        Some(b"v0"),
        10,
        &[(b"h1", Some(b"x")), (b"h2", None)],
        Some(0),
    )?;
    topic.produce(None, None, 20, &[], Some(1))?;
    topic.produce(
        Some(b"k2"),
        Some(&[0, 159, 146, 150]),
        30,
        &[(b"only", Some(b""))],
        Some(1),
    )?;

    let c = Consumer::new(&log, topic.clone(), None, StartSpec::Earliest)?;
    let mut sink = ArrowRecordSink::new(topic.name.clone(), 16);
    c.poll(100, std::time::Duration::ZERO, &mut sink)?;
    assert_eq!(riverbed_log::RecordSink::len(&sink), 3);
    let b = sink.finish()?;
    assert_eq!(b.schema(), record_schema());
    let names: Vec<&str> = b
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "topic",
            "partition",
            "offset",
            "timestamp",
            "key",
            "value",
            "headers"
        ]
    );
    assert_eq!(b.num_rows(), 3);
    assert_eq!(
        b.column(3).data_type(),
        &DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    );
    // order: partitions are polled round-robin, so sort rows by (partition, offset)
    let parts = b.column(1).as_primitive::<Int32Type>();
    let offs = b.column(2).as_primitive::<Int64Type>();
    let mut order: Vec<usize> = (0..3).collect();
    order.sort_by_key(|&i| (parts.value(i), offs.value(i)));
    let topics = b.column(0).as_string::<i32>();
    let ts = b.column(3).as_primitive::<TimestampMillisecondType>();
    let keys = b.column(4).as_binary::<i32>();
    let vals = b.column(5).as_binary::<i32>();
    let headers = b.column(6).as_list::<i32>();
    let row = |i: usize| {
        let hs = headers.value(i);
        let hs = hs.as_struct();
        let hk = hs.column(0).as_string::<i32>();
        let hv = hs.column(1).as_binary::<i32>();
        let hdrs: Vec<(String, Option<Vec<u8>>)> = (0..hs.len())
            .map(|j| {
                (
                    hk.value(j).to_string(),
                    (!hv.is_null(j)).then(|| hv.value(j).to_vec()),
                )
            })
            .collect();
        (
            topics.value(i).to_string(),
            parts.value(i),
            offs.value(i),
            ts.value(i),
            (!keys.is_null(i)).then(|| keys.value(i).to_vec()),
            (!vals.is_null(i)).then(|| vals.value(i).to_vec()),
            hdrs,
        )
    };
    let rows: Vec<_> = order.iter().map(|&i| row(i)).collect();
    assert_eq!(
        rows,
        vec![
            (
                "s".to_string(),
                0,
                0,
                10,
                Some(b"k0".to_vec()),
                Some(b"v0".to_vec()),
                vec![
                    ("h1".to_string(), Some(b"x".to_vec())),
                    ("h2".to_string(), None)
                ]
            ),
            ("s".to_string(), 1, 0, 20, None, None, vec![]),
            (
                "s".to_string(),
                1,
                1,
                30,
                Some(b"k2".to_vec()),
                Some(vec![0, 159, 146, 150]),
                vec![("only".to_string(), Some(vec![]))]
            ),
        ]
    );
    // the sink is reusable: finish() starts a new, empty batch
    let empty = sink.finish()?;
    assert_eq!(empty.num_rows(), 0);
    topic.produce(Some(b"k3"), Some(b"v3"), 40, &[], Some(0))?;
    c.poll(100, std::time::Duration::ZERO, &mut sink)?;
    let b = sink.finish()?;
    assert_eq!(b.num_rows(), 1);
    assert_eq!(b.column(2).as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(b.column(6).as_list::<i32>().value(0).len(), 0);
    log.close()?;
    Ok(())
}

#[test]
fn json_keys_from_oddly_named_columns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "o",
        &TopicOptions {
            partitions: Some(7),
            ..Default::default()
        },
    )?;
    for name in ["we\"ird", "ключ", "back\\slash", "tab\tname"] {
        let b = batch(vec![
            (
                name,
                Arc::new(Int64Array::from(vec![Some(123), None, Some(-5)])) as ArrayRef,
            ),
            ("f", Arc::new(Float64Array::from(vec![0.5, 1.0, 2.5]))),
        ]);
        let (parts, offsets) = produce_arrow(
            &topic,
            std::slice::from_ref(&b),
            Some(name),
            Some("f"),
            None,
        )?;
        for (i, want) in [Some("123"), None, Some("-5")].iter().enumerate() {
            let r = read_one(&topic, parts.value(i) as u32, offsets.value(i))?;
            assert_eq!(
                r.key.as_deref(),
                want.map(str::as_bytes),
                "column {name:?} row {i}"
            );
            if let Some(k) = want {
                assert_eq!(parts.value(i) as u32, partition_for_key(k.as_bytes(), 7));
            }
            let f: f64 = std::str::from_utf8(r.value.as_deref().unwrap_or_default())?.parse()?;
            assert_eq!(f, [0.5, 1.0, 2.5][i]);
        }
    }
    log.close()?;
    Ok(())
}

#[test]
fn whole_row_json_includes_key_and_timestamp_columns() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "w",
        &TopicOptions {
            partitions: Some(2),
            ..Default::default()
        },
    )?;
    let b = kvt(4, 0);
    let (parts, offsets) = produce_arrow(
        &topic,
        std::slice::from_ref(&b),
        Some("key"),
        None,
        Some("ts"),
    )?;
    for i in 0..4 {
        let r = read_one(&topic, parts.value(i) as u32, offsets.value(i))?;
        let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap_or_default())?;
        assert_eq!(v.get("key"), Some(&serde_json::json!(format!("user-{i}"))));
        assert_eq!(
            v.get("ts"),
            Some(&serde_json::json!(1_700_000_000_000i64 + i as i64))
        );
        assert!(v.get("value").is_some_and(|x| !x.is_null()), "{v}");
        assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
    }
    log.close()?;
    Ok(())
}

#[test]
fn rows_without_keys_stick_to_one_partition() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "n",
        &TopicOptions {
            partitions: Some(4),
            ..Default::default()
        },
    )?;
    let b = batch(vec![(
        "v",
        Arc::new(StringArray::from(vec!["a", "b", "c", "d", "e"])) as ArrayRef,
    )]);
    let (parts, offsets) = produce_arrow(&topic, std::slice::from_ref(&b), None, Some("v"), None)?;
    let p = parts.value(0);
    assert!(
        (0..5).all(|i| parts.value(i) == p),
        "one produce call without keys goes to one partition"
    );
    assert_eq!(offsets.values().to_vec(), vec![0, 1, 2, 3, 4]);
    let r = read_one(&topic, p as u32, 2)?;
    assert_eq!((r.key, r.value.as_deref()), (None, Some(&b"c"[..])));
    // the next keyless call moves on to another partition
    let (parts2, _) = produce_arrow(&topic, &[b], None, Some("v"), None)?;
    assert_ne!(parts2.value(0), p);
    log.close()?;
    Ok(())
}

/// A dictionary-encoded string column (pandas categoricals, `dictionary_encode()`) holds strings:
/// its keys must be the string bytes, as for a plain string column, so that they route like
/// `partition_for_key(b"AAPL")` and read back as `AAPL`, not as the JSON text `"AAPL"`.
#[test]
fn dictionary_encoded_string_keys_are_plain_strings() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = open(dir.path());
    let topic = log.topic(
        "d",
        &TopicOptions {
            partitions: Some(7),
            ..Default::default()
        },
    )?;
    let symbols = ["AAPL", "MSFT", "AAPL", "GOOG", "MSFT", "AAPL", "TSLA"];
    let keys: DictionaryArray<Int32Type> = symbols.iter().copied().collect();
    assert_eq!(
        keys.data_type(),
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    );
    // the value column is dictionary-encoded too: its values are the strings as well
    let prices: Vec<String> = symbols.iter().map(|s| format!("px-{s}")).collect();
    let values: DictionaryArray<Int32Type> = prices.iter().map(String::as_str).collect();
    let ts: Vec<i64> = (0..symbols.len() as i64)
        .map(|i| 1_700_000_000_000 + i)
        .collect();
    let b = batch(vec![
        ("sym", Arc::new(keys) as ArrayRef),
        ("px", Arc::new(values) as ArrayRef),
        ("ts", Arc::new(Int64Array::from(ts))),
    ]);
    let (parts, offsets) = produce_arrow(&topic, &[b], Some("sym"), Some("px"), Some("ts"))?;
    assert_eq!((parts.len(), offsets.len()), (symbols.len(), symbols.len()));
    for (i, s) in symbols.iter().enumerate() {
        assert_eq!(
            parts.value(i) as u32,
            partition_for_key(s.as_bytes(), 7),
            "row {i} routes like the plain string {s}"
        );
    }
    // every AAPL row lands in the same partition as a plain-string AAPL key
    let plain = batch(vec![(
        "sym",
        Arc::new(StringArray::from(vec!["AAPL"])) as ArrayRef,
    )]);
    let (plain_parts, _) = produce_arrow(&topic, &[plain], Some("sym"), None, None)?;
    assert_eq!(plain_parts.value(0), parts.value(0));
    for (i, s) in symbols.iter().enumerate() {
        let r = read_one(&topic, parts.value(i) as u32, offsets.value(i))?;
        assert_eq!(r.key.as_deref(), Some(s.as_bytes()), "row {i} key");
        assert_eq!(
            r.value.as_deref(),
            Some(format!("px-{s}").as_bytes()),
            "row {i} value"
        );
        assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
    }
    log.close()?;
    Ok(())
}
