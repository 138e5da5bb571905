//! Window semantics on hand-made streams: late records, emit modes, grace, bounds and offsets,
//! plan validation, and watermarks across sources.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_schema::{DataType, TimeUnit};
use common::*;
use riverbed_stream::{Emit, Node, SourceSpec, StreamError, WindowSpec};

fn kv(keys: &[&str], ts: &[i64], vs: &[i64]) -> RecordBatch {
    batch(vec![
        ("k", Arc::new(StringArray::from(keys.to_vec())) as ArrayRef),
        ("ts", Arc::new(Int64Array::from(ts.to_vec()))),
        ("v", Arc::new(Int64Array::from(vs.to_vec()))),
    ])
}

fn tumbling(size_ms: i64, grace_ms: i64) -> WindowSpec {
    WindowSpec::Tumbling {
        size_ms,
        offset_ms: 0,
        grace_ms,
    }
}

fn count_sum(input: Node, spec: WindowSpec, emit: Emit) -> Node {
    window(
        input,
        spec,
        &["k"],
        emit,
        vec![("n", agg("count", None)), ("s", agg("sum", Some("v")))],
    )
}

/// (key, start, end, n, s) per output row, in output order.
fn rows(b: &RecordBatch) -> Vec<(String, i64, i64, i64, Option<i64>)> {
    let (k, st, en, n, s) = (
        strs(b, "k"),
        ints_nn(b, "window_start"),
        ints_nn(b, "window_end"),
        ints_nn(b, "n"),
        ints(b, "s"),
    );
    (0..b.num_rows())
        .map(|i| (k[i].clone().unwrap_or_default(), st[i], en[i], n[i], s[i]))
        .collect()
}

fn plan_error(r: Result<Ran, StreamError>) -> (String, String) {
    match r {
        Err(StreamError::Plan { op, message }) => (op, message),
        Err(e) => panic!("expected a plan error, got {e}"),
        Ok(_) => panic!("expected a plan error, the run succeeded"),
    }
}

#[test]
fn late_record_is_dropped_counted_and_reported() {
    // Lateness 0, one record per batch: after 15 the watermark is 15, closing [0, 10).
    let input = kv(&["a", "a", "a", "a"], &[5, 15, 3, 12], &[1, 10, 100, 1000]);
    let plan = count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final);
    let ran = run_table(plan, &input, Some(1)).expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 0, 10, 1, Some(1)),
            ("a".into(), 10, 20, 2, Some(1010)),
        ]
    );
    let m = ran.metrics("window");
    assert_eq!(m.late_records, 1);
    assert_eq!(m.records_in, 4);
    assert_eq!(m.records_out, 2);
    assert_eq!(ran.late_rows(), 1);
    let late = &ran.out.late[0];
    assert_eq!(ints_nn(late, "ts"), vec![3]);
    assert_eq!(ints_nn(late, "v"), vec![100]);
    assert_eq!(strs(late, "k"), vec![Some("a".to_string())]);
}

#[test]
fn record_exactly_at_the_window_end_watermark_is_late() {
    // The window [0, 10) closes when the watermark reaches 10 (>= end + grace).
    let input = kv(&["a", "a", "a"], &[1, 10, 9], &[1, 2, 3]);
    let plan = count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final);
    let ran = run_table(plan, &input, Some(1)).expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 0, 10, 1, Some(1)),
            ("a".into(), 10, 20, 1, Some(2))
        ]
    );
    assert_eq!(ran.metrics("window").late_records, 1);
}

#[test]
fn lateness_admits_disorder_within_it() {
    let input = kv(&["a", "a", "a", "a"], &[5, 15, 3, 12], &[1, 10, 100, 1000]);
    let plan = count_sum(source(Some("ts"), 12), tumbling(10, 0), Emit::Final);
    let ran = run_table(plan, &input, Some(1)).expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 0, 10, 2, Some(101)),
            ("a".into(), 10, 20, 2, Some(1010)),
        ]
    );
    assert_eq!(ran.late_rows(), 0);
}

#[test]
fn grace_keeps_a_window_open() {
    // [0, 10) with grace 5 closes at watermark 15: 4 (after 12) joins, 7 (after 16) is late.
    let input = kv(&["a"; 5], &[1, 12, 4, 16, 7], &[1, 2, 4, 8, 16]);
    let graced = count_sum(source(Some("ts"), 0), tumbling(10, 5), Emit::Final);
    let ran = run_table(graced, &input, Some(1)).expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 0, 10, 2, Some(5)),
            ("a".into(), 10, 20, 2, Some(10)),
        ]
    );
    assert_eq!(ran.metrics("window").late_records, 1);
    assert_eq!(ints_nn(&ran.out.late[0], "ts"), vec![7]);

    // Without grace both 4 and 7 are late.
    let plain = count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final);
    let ran = run_table(plain, &input, Some(1)).expect("run");
    assert_eq!(rows(&ran.all)[0], ("a".into(), 0, 10, 1, Some(1)));
    assert_eq!(ran.metrics("window").late_records, 2);
}

#[test]
fn emit_update_last_row_per_window_is_final() {
    let keys = ["a", "b", "a", "b", "a", "a", "b", "a", "b", "a"];
    let ts = [1, 2, 3, 11, 4, 12, 14, 25, 21, 19];
    let vs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    let input = kv(&keys, &ts, &vs);
    let spec = tumbling(10, 0);
    let fin = run_table(
        count_sum(source(Some("ts"), 10), spec, Emit::Final),
        &input,
        Some(2),
    )
    .expect("run");
    let upd = run_table(
        count_sum(source(Some("ts"), 10), spec, Emit::Update),
        &input,
        Some(2),
    )
    .expect("run");
    let final_rows = rows(&fin.all);
    assert_eq!(
        final_rows,
        vec![
            ("a".into(), 0, 10, 3, Some(9)),
            ("b".into(), 0, 10, 1, Some(2)),
            ("a".into(), 10, 20, 2, Some(16)),
            ("b".into(), 10, 20, 2, Some(11)),
            ("a".into(), 20, 30, 1, Some(8)),
            ("b".into(), 20, 30, 1, Some(9)),
        ]
    );
    let update_rows = rows(&upd.all);
    assert!(
        update_rows.len() > final_rows.len(),
        "updates are emitted as windows change: {update_rows:?}"
    );
    // An update row is emitted before the window closes: the first update of [0, 10) for a
    // has only the first record.
    assert_eq!(update_rows[0], ("a".into(), 0, 10, 1, Some(1)));
    let mut last = std::collections::BTreeMap::new();
    for r in &update_rows {
        last.insert((r.0.clone(), r.1, r.2), r.clone());
    }
    let mut lasts: Vec<_> = last.into_values().collect();
    lasts.sort_by_key(|r| (r.1, r.0.clone()));
    assert_eq!(lasts, final_rows);
}

#[test]
fn negative_times_and_offsets_use_floored_window_starts() {
    let input = kv(&["a", "a", "a", "a"], &[-1, -10, 2, 3], &[1, 2, 4, 8]);
    // Offset 3: windows [-7, 3), [3, 13), ... ; -10 falls in [-17, -7).
    let spec = WindowSpec::Tumbling {
        size_ms: 10,
        offset_ms: 3,
        grace_ms: 0,
    };
    let ran = run_table(
        count_sum(source(Some("ts"), 100), spec, Emit::Final),
        &input,
        None,
    )
    .expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), -17, -7, 1, Some(2)),
            ("a".into(), -7, 3, 2, Some(5)),
            ("a".into(), 3, 13, 1, Some(8)),
        ]
    );
    // An offset beyond the size is the same alignment (13 ≡ 3 mod 10).
    let spec = WindowSpec::Tumbling {
        size_ms: 10,
        offset_ms: 13,
        grace_ms: 0,
    };
    let again = run_table(
        count_sum(source(Some("ts"), 100), spec, Emit::Final),
        &input,
        None,
    )
    .expect("run");
    assert_eq!(rows(&again.all), rows(&ran.all));
}

#[test]
fn hopping_windows_hold_every_record_size_over_every_times() {
    let input = kv(&["a", "a"], &[12, 14], &[1, 2]);
    let spec = WindowSpec::Hopping {
        size_ms: 10,
        every_ms: 5,
        offset_ms: 0,
        grace_ms: 0,
    };
    let ran = run_table(
        count_sum(source(Some("ts"), 0), spec, Emit::Final),
        &input,
        None,
    )
    .expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 5, 15, 2, Some(3)),
            ("a".into(), 10, 20, 2, Some(3))
        ]
    );
}

#[test]
fn sliding_windows_follow_kafka_streams() {
    // size 10, records at 0, 5, 20: left windows [-10,0] [-5,5] [10,20]; right window of 0 is
    // [1, 11] (5 follows within 10); none after 5 or 20.
    let input = kv(&["a", "a", "a"], &[0, 5, 20], &[1, 2, 4]);
    let spec = WindowSpec::Sliding {
        size_ms: 10,
        grace_ms: 0,
    };
    let ran = run_table(
        count_sum(source(Some("ts"), 0), spec, Emit::Final),
        &input,
        Some(1),
    )
    .expect("run");
    let mut got = rows(&ran.all);
    got.sort_by_key(|r| (r.1, r.2));
    assert_eq!(
        got,
        vec![
            ("a".into(), -10, 0, 1, Some(1)),
            ("a".into(), -5, 5, 2, Some(3)),
            ("a".into(), 1, 11, 1, Some(2)),
            ("a".into(), 10, 20, 1, Some(4)),
        ]
    );
}

#[test]
fn sessions_join_within_gap_inclusive_and_merge() {
    // gap 5: 0, 4, 9 chain (9 - 4 == 5 joins); 20 is alone. Then for key b: 0 and 10 are two
    // sessions until 5 arrives and bridges them.
    let input = kv(
        &["a", "a", "a", "a", "b", "b", "b"],
        &[0, 4, 9, 20, 0, 10, 5],
        &[1, 2, 4, 8, 16, 32, 64],
    );
    let spec = WindowSpec::Session {
        gap_ms: 5,
        grace_ms: 0,
    };
    let ran = run_table(
        count_sum(source(Some("ts"), 20), spec, Emit::Final),
        &input,
        Some(1),
    )
    .expect("run");
    let mut got = rows(&ran.all);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".into(), 0, 9, 3, Some(7)),
            ("a".into(), 20, 20, 1, Some(8)),
            ("b".into(), 0, 10, 3, Some(112)),
        ]
    );
}

#[test]
fn session_record_after_close_is_late() {
    let input = kv(&["a", "a", "a"], &[0, 20, 3], &[1, 2, 4]);
    let spec = WindowSpec::Session {
        gap_ms: 5,
        grace_ms: 0,
    };
    let ran = run_table(
        count_sum(source(Some("ts"), 0), spec, Emit::Final),
        &input,
        Some(1),
    )
    .expect("run");
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 0, 0, 1, Some(1)),
            ("a".into(), 20, 20, 1, Some(2))
        ]
    );
    assert_eq!(ran.metrics("window").late_records, 1);
    assert_eq!(ints_nn(&ran.out.late[0], "ts"), vec![3]);
}

#[test]
fn count_windows_use_event_time_order_and_drop_incomplete() {
    let input = kv(
        &["a", "a", "a", "b", "a", "a"],
        &[3, 1, 2, 0, 6, 5],
        &[3, 1, 2, 9, 6, 5],
    );
    let ran = run_table(
        count_sum(
            source(Some("ts"), 10),
            WindowSpec::Count { n: 2 },
            Emit::Final,
        ),
        &input,
        Some(1),
    )
    .expect("run");
    let mut got = rows(&ran.all);
    got.sort();
    // a sorted: 1 2 | 3 5 | 6 (incomplete); b: 0 (incomplete).
    assert_eq!(
        got,
        vec![
            ("a".into(), 1, 2, 2, Some(3)),
            ("a".into(), 3, 5, 2, Some(8))
        ]
    );
}

#[test]
fn count_window_record_behind_the_watermark_is_late() {
    let input = kv(&["a", "a", "a"], &[10, 20, 15], &[1, 2, 4]);
    let ran = run_table(
        count_sum(
            source(Some("ts"), 0),
            WindowSpec::Count { n: 2 },
            Emit::Final,
        ),
        &input,
        Some(1),
    )
    .expect("run");
    assert_eq!(rows(&ran.all), vec![("a".into(), 10, 20, 2, Some(3))]);
    assert_eq!(ran.metrics("window").late_records, 1);
    assert_eq!(ran.late_rows(), 1);
}

#[test]
fn windows_without_keys_aggregate_everything() {
    let input = kv(&["a", "b", "c"], &[1, 2, 11], &[1, 2, 4]);
    let plan = window(
        source(Some("ts"), 0),
        tumbling(10, 0),
        &[],
        Emit::Final,
        vec![("n", agg("count", None)), ("s", agg("sum", Some("v")))],
    );
    let ran = run_table(plan, &input, None).expect("run");
    let names: Vec<String> = ran
        .all
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["window_start", "window_end", "n", "s"]);
    assert_eq!(ints_nn(&ran.all, "n"), vec![2, 1]);
    assert_eq!(ints(&ran.all, "s"), vec![Some(3), Some(4)]);
}

#[test]
fn timestamp_columns_give_millisecond_timestamp_bounds() {
    // Microsecond event times: windows are computed in ms and reported as Timestamp(ms).
    let us = TimestampMicrosecondArray::from(vec![1_500, 9_999, 10_000]);
    let input = batch(vec![
        (
            "k",
            Arc::new(StringArray::from(vec!["a", "a", "a"])) as ArrayRef,
        ),
        ("ts", Arc::new(us)),
        ("v", Arc::new(Int64Array::from(vec![1, 2, 4]))),
    ]);
    let plan = count_sum(source(Some("ts"), 0), tumbling(5, 0), Emit::Final);
    let ran = run_table(plan, &input, None).expect("run");
    assert_eq!(
        dtype(&ran.all, "window_start"),
        DataType::Timestamp(TimeUnit::Millisecond, None)
    );
    // 1.5 ms and 9.999 ms -> ms 1 and 9; 10 ms -> 10.
    assert_eq!(ints_nn(&ran.all, "window_start"), vec![0, 5, 10]);
    assert_eq!(ints_nn(&ran.all, "window_end"), vec![5, 10, 15]);
    assert_eq!(ints_nn(&ran.all, "n"), vec![1, 1, 1]);
}

#[test]
fn pre_epoch_microsecond_event_times_fall_in_the_earlier_window() {
    // -0.5 ms happened before 0: it belongs to [-10, 0), not [0, 10).
    let us = TimestampMicrosecondArray::from(vec![-500, 500]);
    let input = batch(vec![
        ("k", Arc::new(StringArray::from(vec!["a", "a"])) as ArrayRef),
        ("ts", Arc::new(us)),
        ("v", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    let plan = count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final);
    let ran = run_table(plan, &input, None).expect("run");
    assert_eq!(ints_nn(&ran.all, "window_start"), vec![-10, 0]);
    assert_eq!(ints_nn(&ran.all, "n"), vec![1, 1]);
}

#[test]
fn union_watermark_is_the_minimum_over_sources() {
    // Source 1 runs far ahead; the watermark waits for source 0, so its records are on time.
    let a = kv(&["a", "a", "a"], &[5, 6, 7], &[1, 2, 4]);
    let b = kv(&["b", "b", "b"], &[100, 200, 300], &[8, 16, 32]);
    let src = |i: usize| Node::Source {
        source: i,
        timestamp: Some("ts".into()),
        lateness_ms: 0,
        idle_timeout_ms: 5_000,
        name: None,
        partitioned_by: None,
    };
    let plan = count_sum(
        Node::Union {
            inputs: vec![src(0), src(1)],
        },
        tumbling(1000, 0),
        Emit::Final,
    );
    let specs = vec![
        SourceSpec::table(a.schema(), vec![a.clone()], Some(1)).expect("table"),
        SourceSpec::table(b.schema(), vec![b.clone()], Some(1)).expect("table"),
    ];
    let ran = run_specs(plan, specs).expect("run");
    assert_eq!(ran.late_rows(), 0);
    let mut got = rows(&ran.all);
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".into(), 0, 1000, 3, Some(7)),
            ("b".into(), 0, 1000, 3, Some(56))
        ]
    );
}

#[test]
fn hopping_every_must_not_exceed_size() {
    let input = kv(&["a"], &[1], &[1]);
    let spec = WindowSpec::Hopping {
        size_ms: 10,
        every_ms: 11,
        offset_ms: 0,
        grace_ms: 0,
    };
    let (op, msg) = plan_error(run_table(
        count_sum(source(Some("ts"), 0), spec, Emit::Final),
        &input,
        None,
    ));
    assert_eq!(op, "window");
    assert!(msg.contains("every") && msg.contains("size"), "{msg}");
    // every == size is a tumbling window, and fine.
    let spec = WindowSpec::Hopping {
        size_ms: 10,
        every_ms: 10,
        offset_ms: 0,
        grace_ms: 0,
    };
    let ran = run_table(
        count_sum(source(Some("ts"), 0), spec, Emit::Final),
        &input,
        None,
    )
    .expect("every == size is valid");
    assert_eq!(rows(&ran.all), vec![("a".into(), 0, 10, 1, Some(1))]);
}

#[test]
fn non_positive_sizes_are_plan_errors_naming_the_field() {
    let input = kv(&["a"], &[1], &[1]);
    let cases: Vec<(WindowSpec, &str)> = vec![
        (tumbling(0, 0), "size"),
        (tumbling(-5, 0), "size"),
        (tumbling(10, -1), "grace"),
        (
            WindowSpec::Hopping {
                size_ms: 0,
                every_ms: 1,
                offset_ms: 0,
                grace_ms: 0,
            },
            "size",
        ),
        (
            WindowSpec::Hopping {
                size_ms: 10,
                every_ms: 0,
                offset_ms: 0,
                grace_ms: 0,
            },
            "every",
        ),
        (
            WindowSpec::Sliding {
                size_ms: 0,
                grace_ms: 0,
            },
            "size",
        ),
        (
            WindowSpec::Session {
                gap_ms: 0,
                grace_ms: 0,
            },
            "gap",
        ),
        (
            WindowSpec::Session {
                gap_ms: 1,
                grace_ms: -1,
            },
            "grace",
        ),
        (WindowSpec::Count { n: 0 }, "n"),
        (WindowSpec::Count { n: -3 }, "n"),
    ];
    for (spec, field) in cases {
        let (op, msg) = plan_error(run_table(
            count_sum(source(Some("ts"), 0), spec, Emit::Final),
            &input,
            None,
        ));
        assert_eq!(op, "window", "{spec:?}");
        assert!(msg.starts_with(field), "{spec:?}: {msg}");
    }
    // Negative lateness is the source's error.
    let (op, msg) = plan_error(run_table(
        count_sum(source(Some("ts"), -1), tumbling(10, 0), Emit::Final),
        &input,
        None,
    ));
    assert_eq!(op, "read");
    assert!(msg.contains("lateness"), "{msg}");
}

#[test]
fn window_without_event_time_is_a_plan_error() {
    let input = kv(&["a"], &[1], &[1]);
    let (op, msg) = plan_error(run_table(
        count_sum(source(None, 0), tumbling(10, 0), Emit::Final),
        &input,
        None,
    ));
    assert_eq!(op, "window");
    assert!(msg.contains("timestamp"), "{msg}");

    // The event-time column dropped before the window.
    let dropped = Node::Drop {
        input: Box::new(source(Some("ts"), 0)),
        columns: vec!["ts".into()],
    };
    let (op, msg) = plan_error(run_table(
        count_sum(dropped, tumbling(10, 0), Emit::Final),
        &input,
        None,
    ));
    assert_eq!(op, "window");
    assert!(msg.contains("timestamp"), "{msg}");

    // An unknown or non-time event-time column.
    let (op, msg) = plan_error(run_table(
        count_sum(source(Some("nope"), 0), tumbling(10, 0), Emit::Final),
        &input,
        None,
    ));
    assert_eq!(op, "read");
    assert!(msg.contains("'nope'"), "{msg}");
    let (op, msg) = plan_error(run_table(
        count_sum(source(Some("k"), 0), tumbling(10, 0), Emit::Final),
        &input,
        None,
    ));
    assert_eq!(op, "read");
    assert!(msg.contains("'k'"), "{msg}");
}

#[test]
fn window_plan_decodes_from_documented_json() {
    let plan: Node = serde_json::from_value(serde_json::json!({
        "op": "window", "window": {"tumbling": {"size_ms": 10}}, "by": ["k"], "emit": "final",
        "aggs": [["n", {"agg": {"func": "count"}}]],
        "input": {"op": "filter",
                  "predicate": {"binary": {"op": ">", "left": {"col": "v"}, "right": {"lit": 0}}},
                  "input": {"op": "source", "source": 0, "timestamp": "ts", "lateness_ms": 100}}
    }))
    .expect("the documented plan decodes");
    let input = kv(&["a", "a", "b", "a"], &[1, 2, 3, 12], &[1, -1, 5, 7]);
    let ran = run_table(plan, &input, Some(2)).expect("run");
    let got: Vec<_> = strs(&ran.all, "k")
        .into_iter()
        .zip(ints_nn(&ran.all, "window_start"))
        .zip(ints_nn(&ran.all, "n"))
        .map(|((k, s), n)| (k.unwrap_or_default(), s, n))
        .collect();
    assert_eq!(
        got,
        vec![("a".into(), 0, 1), ("b".into(), 0, 1), ("a".into(), 10, 1)]
    );
    // Unknown fields are rejected.
    let bad = serde_json::from_value::<Node>(serde_json::json!({
        "op": "source", "source": 0, "timestamp": "ts", "latenes_ms": 1
    }));
    assert!(bad.is_err());
}

#[test]
fn window_aggregates_ignore_nulls_and_report_null_over_no_values() {
    let input = batch(vec![
        (
            "k",
            Arc::new(StringArray::from(vec!["a", "a", "b"])) as ArrayRef,
        ),
        ("ts", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("v", Arc::new(Int64Array::from(vec![Some(4), None, None]))),
    ]);
    let plan = window(
        source(Some("ts"), 0),
        tumbling(10, 0),
        &["k"],
        Emit::Final,
        vec![
            ("n", agg("count", None)),
            ("nv", agg("count", Some("v"))),
            ("s", agg("sum", Some("v"))),
            ("m", agg("mean", Some("v"))),
            ("lo", agg("min", Some("v"))),
        ],
    );
    let ran = run_table(plan, &input, None).expect("run");
    assert_eq!(ints_nn(&ran.all, "n"), vec![2, 1]);
    assert_eq!(ints_nn(&ran.all, "nv"), vec![1, 0]);
    assert_eq!(ints(&ran.all, "s"), vec![Some(4), None]);
    assert_eq!(floats(&ran.all, "m"), vec![Some(4.0), None]);
    assert_eq!(ints(&ran.all, "lo"), vec![Some(4), None]);
}

#[test]
fn first_last_std_and_composite_aggregates() {
    // Records out of order within lateness: first/last follow event time, not arrival.
    let input = kv(&["a", "a", "a", "a"], &[5, 1, 9, 3], &[50, 10, 90, 30]);
    let plan = window(
        source(Some("ts"), 100),
        tumbling(10, 0),
        &["k"],
        Emit::Final,
        vec![
            ("first", agg("first", Some("v"))),
            ("last", agg("last", Some("v"))),
            ("var", agg("var", Some("v"))),
            ("nd", agg("count_distinct", Some("v"))),
            (
                "avg",
                ex(bin(
                    "/",
                    serde_json::json!({"agg": {"func": "sum", "expr": {"col": "v"}}}),
                    serde_json::json!({"agg": {"func": "count"}}),
                )),
            ),
        ],
    );
    let ran = run_table(plan, &input, Some(1)).expect("run");
    assert_eq!(ints(&ran.all, "first"), vec![Some(10)]);
    assert_eq!(ints(&ran.all, "last"), vec![Some(90)]);
    // Sample variance of 10, 30, 50, 90: mean 45, squares 1225+225+25+2025 = 3500, / 3.
    let var = floats(&ran.all, "var")[0].expect("var");
    assert!((var - 3500.0 / 3.0).abs() < 1e-9, "{var}");
    assert_eq!(ints(&ran.all, "nd"), vec![Some(4)]);
    assert_eq!(floats(&ran.all, "avg"), vec![Some(45.0)]);
}

#[test]
fn count_window_leftovers_do_not_block_downstream_windows() {
    // Key a: 1 2 | 3 (incomplete). The outer window over window_start must still close at the
    // end of the input.
    let input = kv(&["a", "a", "a"], &[1, 2, 3], &[1, 2, 4]);
    let inner = count_sum(
        source(Some("ts"), 0),
        WindowSpec::Count { n: 2 },
        Emit::Final,
    );
    let outer = window(
        inner,
        tumbling(100, 0),
        &[],
        Emit::Final,
        vec![
            ("windows", agg("count", None)),
            ("records", agg("sum", Some("n"))),
        ],
    );
    let ran = run_table(outer, &input, Some(1)).expect("run");
    assert_eq!(ints_nn(&ran.all, "window_start"), vec![0]);
    assert_eq!(ints_nn(&ran.all, "windows"), vec![1]);
    assert_eq!(ints_nn(&ran.all, "records"), vec![2]);
}

#[test]
fn tumbling_over_tumbling_output() {
    let input = kv(
        &["a", "b", "a", "a", "b"],
        &[1, 5, 12, 25, 31],
        &[1, 2, 4, 8, 16],
    );
    let inner = count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final);
    let outer = window(
        inner,
        tumbling(20, 0),
        &[],
        Emit::Final,
        vec![
            ("windows", agg("count", None)),
            ("records", agg("sum", Some("n"))),
        ],
    );
    let ran = run_table(outer, &input, Some(1)).expect("run");
    assert_eq!(ran.late_rows(), 0);
    // Inner: a[0,10) b[0,10) a[10,20) | a[20,30) b[30,40).
    assert_eq!(ints_nn(&ran.all, "window_start"), vec![0, 20]);
    assert_eq!(ints_nn(&ran.all, "windows"), vec![3, 2]);
    assert_eq!(ints_nn(&ran.all, "records"), vec![3, 2]);
}

struct Doubler;

impl riverbed_stream::BatchUdf for Doubler {
    fn call(&self, batch: RecordBatch) -> riverbed_stream::Result<RecordBatch> {
        let v = ints_nn(&batch, "v");
        let doubled: ArrayRef = Arc::new(Int64Array::from_iter_values(v.iter().map(|x| 2 * x)));
        let mut cols: Vec<(&str, ArrayRef)> = vec![
            ("k", batch.column_by_name("k").expect("k").clone()),
            ("ts", batch.column_by_name("ts").expect("ts").clone()),
        ];
        cols.push(("v2", doubled));
        Ok(RecordBatch::try_from_iter(cols).expect("batch"))
    }
    fn name(&self) -> String {
        "doubler".into()
    }
}

#[test]
fn window_after_a_udf_is_built_from_the_first_batch() {
    let input = kv(&["a", "a", "b", "a"], &[1, 2, 3, 15], &[1, 2, 4, 8]);
    let mapped = Node::MapBatches {
        input: Box::new(source(Some("ts"), 0)),
        udf: 0,
        name: None,
    };
    let plan = window(
        mapped,
        tumbling(10, 0),
        &["k"],
        Emit::Final,
        vec![("n", agg("count", None)), ("s", agg("sum", Some("v2")))],
    );
    let spec = SourceSpec::table(input.schema(), vec![input.clone()], Some(2)).expect("table");
    let p =
        riverbed_stream::Pipeline::new(plan, vec![spec], vec![Arc::new(Doubler)]).expect("plan");
    assert!(p.schema().is_none(), "the schema is only known at run time");
    assert_eq!(p.event_time_column(), Some("window_start"));
    let mut sink = riverbed_stream::CollectSink::default();
    let out = p
        .run(&mut sink, false, &riverbed_stream::RunControl::default())
        .expect("run");
    assert!(out.late.is_empty());
    let all = arrow_select::concat::concat_batches(&sink.batches[0].schema(), &sink.batches)
        .expect("concat");
    assert_eq!(
        rows(&all),
        vec![
            ("a".into(), 0, 10, 2, Some(6)),
            ("b".into(), 0, 10, 1, Some(8)),
            ("a".into(), 10, 20, 1, Some(16)),
        ]
    );
    // A missing UDF is a plan error.
    let plan = Node::MapBatches {
        input: Box::new(source(Some("ts"), 0)),
        udf: 3,
        name: None,
    };
    let (op, msg) = plan_error(run_table(plan, &input, None));
    assert_eq!(op, "map_batches");
    assert!(msg.contains("#3"), "{msg}");
}

#[test]
fn renamed_event_time_column_still_drives_windows() {
    let input = kv(&["a", "a", "a"], &[1, 12, 3], &[1, 2, 4]);
    let renamed = Node::Rename {
        input: Box::new(source(Some("ts"), 0)),
        mapping: vec![("ts".into(), "when".into())],
    };
    let ran = run_table(
        count_sum(renamed, tumbling(10, 0), Emit::Final),
        &input,
        Some(1),
    )
    .expect("run");
    // The watermark still follows the source's ts: 3 arrives after 12 and is late.
    assert_eq!(
        rows(&ran.all),
        vec![
            ("a".into(), 0, 10, 1, Some(1)),
            ("a".into(), 10, 20, 1, Some(2))
        ]
    );
    assert_eq!(ints_nn(&ran.out.late[0], "when"), vec![3]);
}

#[test]
fn null_event_time_is_a_run_error() {
    let input = batch(vec![
        ("k", Arc::new(StringArray::from(vec!["a", "a"])) as ArrayRef),
        ("ts", Arc::new(Int64Array::from(vec![Some(1), None]))),
        ("v", Arc::new(Int64Array::from(vec![1, 2]))),
    ]);
    let r = run_table(
        count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final),
        &input,
        None,
    );
    match r {
        Err(StreamError::Schema(m)) => assert!(m.contains("'ts'") && m.contains("null"), "{m}"),
        Err(e) => panic!("expected a schema error, got {e}"),
        Ok(_) => panic!("a null event time must fail the run"),
    }
}

#[test]
fn null_and_multi_column_keys_are_their_own_groups() {
    let input = batch(vec![
        (
            "k",
            Arc::new(StringArray::from(vec![Some("a"), None, None, Some("a")])) as ArrayRef,
        ),
        ("g", Arc::new(Int64Array::from(vec![1, 1, 1, 2]))),
        ("ts", Arc::new(Int64Array::from(vec![1, 2, 3, 4]))),
        ("v", Arc::new(Int64Array::from(vec![1, 2, 4, 8]))),
    ]);
    let single = window(
        source(Some("ts"), 0),
        tumbling(10, 0),
        &["k"],
        Emit::Final,
        vec![("s", agg("sum", Some("v")))],
    );
    let ran = run_table(single, &input, None).expect("run");
    let mut got: Vec<(Option<String>, Option<i64>)> = strs(&ran.all, "k")
        .into_iter()
        .zip(ints(&ran.all, "s"))
        .collect();
    got.sort();
    assert_eq!(got, vec![(None, Some(6)), (Some("a".into()), Some(9))]);

    let double = window(
        source(Some("ts"), 0),
        tumbling(10, 0),
        &["k", "g"],
        Emit::Final,
        vec![("s", agg("sum", Some("v")))],
    );
    let ran = run_table(double, &input, None).expect("run");
    let mut got: Vec<(Option<String>, i64, Option<i64>)> = strs(&ran.all, "k")
        .into_iter()
        .zip(ints_nn(&ran.all, "g"))
        .zip(ints(&ran.all, "s"))
        .map(|((k, g), s)| (k, g, s))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (None, 1, Some(6)),
            (Some("a".into()), 1, Some(1)),
            (Some("a".into()), 2, Some(8))
        ]
    );
}

#[test]
fn union_and_source_plan_errors() {
    let a = kv(&["a"], &[1], &[1]);
    let other = batch(vec![("x", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]);
    let src = |i: usize, ts: Option<&str>| Node::Source {
        source: i,
        timestamp: ts.map(str::to_string),
        lateness_ms: 0,
        idle_timeout_ms: 5_000,
        name: None,
        partitioned_by: None,
    };
    let table = |b: &RecordBatch| SourceSpec::table(b.schema(), vec![b.clone()], None).expect("t");
    let union = |inputs| Node::Union { inputs };

    let (op, msg) = plan_error(run_specs(
        union(vec![src(0, None), src(1, None)]),
        vec![table(&a), table(&other)],
    ));
    assert_eq!(op, "union");
    assert!(msg.contains("schemas differ"), "{msg}");

    let (op, msg) = plan_error(run_specs(
        union(vec![src(0, Some("ts")), src(1, None)]),
        vec![table(&a), table(&a)],
    ));
    assert_eq!(op, "union");
    assert!(msg.contains("event-time"), "{msg}");

    let (op, msg) = plan_error(run_specs(
        union(vec![src(0, None), src(0, None)]),
        vec![table(&a)],
    ));
    assert_eq!(op, "read");
    assert!(msg.contains("twice"), "{msg}");

    let (op, msg) = plan_error(run_specs(src(2, None), vec![table(&a)]));
    assert_eq!(op, "read");
    assert!(msg.contains("#2"), "{msg}");

    let (op, msg) = plan_error(run_specs(union(vec![]), vec![table(&a)]));
    assert_eq!(op, "union");
    assert!(msg.contains("inputs"), "{msg}");
}

#[test]
fn runs_are_repeatable_and_stoppable() {
    let input = kv(&["a", "b", "a"], &[1, 2, 15], &[1, 2, 4]);
    let plan = count_sum(source(Some("ts"), 0), tumbling(10, 0), Emit::Final);
    let spec = SourceSpec::table(input.schema(), vec![input.clone()], Some(1)).expect("table");
    let p = riverbed_stream::Pipeline::new(plan, vec![spec], vec![]).expect("plan");
    let run = |control: &riverbed_stream::RunControl| {
        let mut sink = riverbed_stream::CollectSink::default();
        p.run(&mut sink, false, control).expect("run");
        sink.batches
    };
    let control = riverbed_stream::RunControl::default();
    let first = run(&control);
    assert_eq!(first, run(&riverbed_stream::RunControl::default()));
    assert_eq!(first.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    // The control reports the final metrics of the run.
    let metrics = control.metrics.lock().clone();
    let w = metrics
        .iter()
        .find(|m| m.operator.starts_with("window"))
        .expect("window metrics");
    assert_eq!((w.records_in, w.records_out, w.state_entries), (3, 3, 0));
    assert_eq!(w.watermark, Some(i64::MAX));
    // A run asked to stop before it starts produces nothing.
    let stopped = riverbed_stream::RunControl::default();
    stopped
        .stop
        .store(true, std::sync::atomic::Ordering::Release);
    assert!(run(&stopped).is_empty());
}

#[test]
fn int64_min_max_first_last_are_exact_beyond_2_pow_53() {
    // Nanosecond epoch times are ~1.7e18, far beyond f64's 53-bit mantissa.
    let big = 1_700_000_000_000_000_001_i64;
    let input = kv(&["a", "a"], &[1, 2], &[big, big + 2]);
    let plan = window(
        source(Some("ts"), 0),
        tumbling(10, 0),
        &["k"],
        Emit::Final,
        vec![
            ("lo", agg("min", Some("v"))),
            ("hi", agg("max", Some("v"))),
            ("first", agg("first", Some("v"))),
            ("last", agg("last", Some("v"))),
            ("s", agg("sum", Some("v"))),
        ],
    );
    let ran = run_table(plan, &input, None).expect("run");
    // sum is exact (int64 accumulator); the others must be too.
    assert_eq!(ints(&ran.all, "s"), vec![Some(2 * big + 2)]);
    assert_eq!(ints(&ran.all, "lo"), vec![Some(big)]);
    assert_eq!(ints(&ran.all, "hi"), vec![Some(big + 2)]);
    assert_eq!(ints(&ran.all, "first"), vec![Some(big)]);
    assert_eq!(ints(&ran.all, "last"), vec![Some(big + 2)]);
}

/// `last` over records with equal event times: the later arrival wins, as in tumbling windows.
fn last_of_ties(spec: WindowSpec) -> Vec<Option<i64>> {
    let input = kv(&["a"; 4], &[5, 5, 5, 5], &[1, 2, 3, 4]);
    let plan = window(
        source(Some("ts"), 0),
        spec,
        &["k"],
        Emit::Final,
        vec![
            ("last", agg("last", Some("v"))),
            ("first", agg("first", Some("v"))),
        ],
    );
    let ran = run_table(plan, &input, Some(1)).expect("run");
    let mut out = ints(&ran.all, "first");
    out.extend(ints(&ran.all, "last"));
    out
}

#[test]
fn first_last_ties_follow_arrival_in_time_windows() {
    assert_eq!(last_of_ties(tumbling(10, 0)), vec![Some(1), Some(4)]);
    let session = WindowSpec::Session {
        gap_ms: 1,
        grace_ms: 0,
    };
    assert_eq!(last_of_ties(session), vec![Some(1), Some(4)]);
}

#[test]
fn first_last_ties_follow_arrival_in_buffered_windows() {
    for _ in 0..20 {
        assert_eq!(
            last_of_ties(WindowSpec::Count { n: 4 }),
            vec![Some(1), Some(4)]
        );
        let sliding = WindowSpec::Sliding {
            size_ms: 10,
            grace_ms: 0,
        };
        // One window [-5, 5] holds all four records.
        assert_eq!(last_of_ties(sliding), vec![Some(1), Some(4)]);
    }
}
