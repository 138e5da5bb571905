//! Temporal joins and `stateful_map` from Rust: `join_asof` (every direction, with and without a
//! tolerance) and `join_interval` (inner and left) against brute-force models of their documented
//! semantics (pandas' `merge_asof`; a nested loop) on random keyed streams whose arrival is
//! shuffled within each side's lateness; late left and right records; plan validation; and the
//! order in which `stateful_map` hands records to its function.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use common::*;
use parking_lot::Mutex;
use proptest::prelude::*;
use riverbed_stream::join::{Direction, How, JoinKind};
use riverbed_stream::{BatchUdf, Node, Pipeline, SourceSpec, StreamError};

const KEYS: [&str; 3] = ["a", "b", "c"];

/// A record of either side: key, event time, payload (its arrival position on its side).
#[derive(Debug, Clone, Copy)]
struct Rec {
    k: &'static str,
    ts: i64,
    id: i64,
}

/// One side of a join: records in arrival order, the side's lateness and batch size.
#[derive(Clone)]
struct Side {
    recs: Vec<Rec>,
    lateness: i64,
    batch_size: usize,
}

impl std::fmt::Debug for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rs: Vec<String> = self
            .recs
            .iter()
            .map(|r| format!("{}@{}#{}", r.k, r.ts, r.id))
            .collect();
        write!(
            f,
            "lateness={} batch={} [{}]",
            self.lateness,
            self.batch_size,
            rs.join(", ")
        )
    }
}

/// One output row: key, left time, left payload, right payload (`None`: no match).
type Row = (String, i64, i64, Option<i64>);

fn batch_size() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), 1usize..20, Just(1000usize)]
}

/// Random keyed records over a small time range (so the two sides share times), delivered out of
/// order: each record is sorted by its time plus a jitter in `0..=d`, so it arrives at most `d`
/// behind the latest time before it; the lateness is at least `d`, so nothing is late.
/// `unique`: at most one record per (key, time).
fn side(min: usize, max: usize, unique: bool) -> impl Strategy<Value = Side> {
    (
        prop::collection::vec((0usize..KEYS.len(), 0i64..60, 0i64..=12), min..max),
        0i64..=12,
        0i64..=4,
        batch_size(),
    )
        .prop_map(move |(raw, d, extra, batch_size)| {
            let mut seen = BTreeSet::new();
            let mut recs: Vec<(i64, Rec)> = raw
                .into_iter()
                .filter(|&(k, ts, _)| !unique || seen.insert((k, ts)))
                .map(|(k, ts, j)| {
                    let rec = Rec {
                        k: KEYS[k],
                        ts,
                        id: 0,
                    };
                    (ts + j % (d + 1), rec)
                })
                .collect();
            recs.sort_by_key(|(arrival, _)| *arrival);
            let recs = recs
                .into_iter()
                .enumerate()
                .map(|(i, (_, r))| Rec { id: i as i64, ..r })
                .collect();
            Side {
                recs,
                lateness: d + extra,
                batch_size,
            }
        })
}

/// Left records and right records (unique times per key on the right for as-of joins, so the
/// matched right record is well defined).
fn sides(unique_right: bool) -> impl Strategy<Value = (Side, Side)> {
    (side(1, 50, false), side(0, 40, unique_right))
}

fn table(recs: &[Rec], key: &str, payload: &str) -> RecordBatch {
    batch(vec![
        (
            key,
            Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.k))) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(Int64Array::from_iter_values(recs.iter().map(|r| r.ts))),
        ),
        (
            payload,
            Arc::new(Int64Array::from_iter_values(recs.iter().map(|r| r.id))),
        ),
    ])
}

fn read(source: usize, lateness_ms: i64) -> Node {
    Node::Source {
        source,
        timestamp: Some("ts".to_string()),
        lateness_ms,
        idle_timeout_ms: 5_000,
        name: None,
        partitioned_by: None,
    }
}

/// Left `k, ts, lv` joined with right `rk, ts, rv` on `k = rk`.
fn join(kind: JoinKind, left_lateness: i64, right_lateness: i64) -> Node {
    Node::Join {
        left: Box::new(read(0, left_lateness)),
        right: Box::new(read(1, right_lateness)),
        kind,
        left_by: vec!["k".to_string()],
        right_by: vec!["rk".to_string()],
        left_on: None,
        right_on: None,
        suffix: "_right".to_string(),
        right_columns: None,
    }
}

fn run_join(kind: JoinKind, left: &Side, right: &Side) -> Ran {
    let (lt, rt) = (table(&left.recs, "k", "lv"), table(&right.recs, "rk", "rv"));
    let specs = vec![
        SourceSpec::table(lt.schema(), vec![lt], Some(left.batch_size)).expect("left table"),
        SourceSpec::table(rt.schema(), vec![rt], Some(right.batch_size)).expect("right table"),
    ];
    run_specs(join(kind, left.lateness, right.lateness), specs).expect("the run succeeds")
}

/// Output rows in output order.
fn rows_of(b: &RecordBatch) -> Vec<Row> {
    let (k, ts, lv, rv) = (
        strs(b, "k"),
        ints_nn(b, "ts"),
        ints_nn(b, "lv"),
        ints(b, "rv"),
    );
    (0..b.num_rows())
        .map(|i| (k[i].clone().expect("non-null key"), ts[i], lv[i], rv[i]))
        .collect()
}

/// pandas `merge_asof` per left record: `backward` takes the last right record at or before the
/// left time, `forward` the first at or after it, `nearest` the closer of the two (ties go
/// backward); with a tolerance, a match farther than it is no match.
fn model_asof(left: &[Rec], right: &[Rec], dir: Direction, tol: Option<i64>) -> Vec<Row> {
    let mut rows: Vec<Row> = left
        .iter()
        .map(|l| {
            let mut same: Vec<&Rec> = right.iter().filter(|r| r.k == l.k).collect();
            same.sort_by_key(|r| r.ts);
            let back = same.iter().rev().find(|r| r.ts <= l.ts);
            let fwd = same.iter().find(|r| r.ts >= l.ts);
            let pick = match dir {
                Direction::Backward => back,
                Direction::Forward => fwd,
                Direction::Nearest => match (back, fwd) {
                    (Some(b), Some(f)) => Some(if f.ts - l.ts < l.ts - b.ts { f } else { b }),
                    (b, f) => b.or(f),
                },
            };
            let pick = pick.filter(|r| tol.is_none_or(|t| (r.ts - l.ts).abs() <= t));
            (l.k.to_string(), l.ts, l.id, pick.map(|r| r.id))
        })
        .collect();
    rows.sort();
    rows
}

/// Every (left, right) pair of a key with `left.ts + lower <= right.ts <= left.ts + upper`;
/// `how=left` adds each left record without a match once, with a null right side.
fn model_interval(left: &[Rec], right: &[Rec], lower: i64, upper: i64, how: How) -> Vec<Row> {
    let mut rows = Vec::new();
    for l in left {
        let matched: Vec<&Rec> = right
            .iter()
            .filter(|r| r.k == l.k && l.ts + lower <= r.ts && r.ts <= l.ts + upper)
            .collect();
        if matched.is_empty() && how == How::Left {
            rows.push((l.k.to_string(), l.ts, l.id, None));
        }
        rows.extend(
            matched
                .into_iter()
                .map(|r| (l.k.to_string(), l.ts, l.id, Some(r.id))),
        );
    }
    rows.sort();
    rows
}

/// The output equals the model (as a multiset), nothing is late, every left record reaches the
/// join, and each key's rows come out in (left time, left arrival) order.
fn check_join(
    kind: JoinKind,
    left: &Side,
    right: &Side,
    want: Vec<Row>,
) -> Result<(), TestCaseError> {
    let ran = run_join(kind, left, right);
    let op = kind.name();
    prop_assert_eq!(ran.late_rows(), 0, "nothing is late");
    prop_assert_eq!(ran.metrics(op).late_records, 0);
    prop_assert_eq!(
        ran.metrics(op).records_in,
        (left.recs.len() + right.recs.len()) as u64
    );
    let got = rows_of(&ran.all);
    let mut per_key: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for (k, ts, lv, _) in &got {
        per_key.entry(k).or_default().push((*ts, *lv));
    }
    for (k, order) in per_key {
        prop_assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "key {} out of event-time order: {:?} ({:?})",
            k,
            order,
            kind
        );
    }
    let mut got = got;
    got.sort();
    prop_assert_eq!(got, want, "{:?}", kind);
    Ok(())
}

fn check_asof(
    left: &Side,
    right: &Side,
    direction: Direction,
    tolerance_ms: Option<i64>,
) -> Result<(), TestCaseError> {
    let want = model_asof(&left.recs, &right.recs, direction, tolerance_ms);
    let kind = JoinKind::Asof {
        direction,
        tolerance_ms,
    };
    check_join(kind, left, right, want)
}

fn check_interval(
    left: &Side,
    right: &Side,
    lower_ms: i64,
    upper_ms: i64,
    how: How,
) -> Result<(), TestCaseError> {
    let want = model_interval(&left.recs, &right.recs, lower_ms, upper_ms, how);
    let kind = JoinKind::Interval {
        lower_ms,
        upper_ms,
        how,
    };
    check_join(kind, left, right, want)
}

fn bounds() -> impl Strategy<Value = (i64, i64)> {
    (-20i64..20, 0i64..25).prop_map(|(lower, width)| (lower, lower + width))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn asof_backward_matches_merge_asof((left, right) in sides(true), tol in 0i64..15) {
        check_asof(&left, &right, Direction::Backward, None)?;
        check_asof(&left, &right, Direction::Backward, Some(tol))?;
    }

    #[test]
    fn asof_forward_matches_merge_asof((left, right) in sides(true), tol in 0i64..15) {
        check_asof(&left, &right, Direction::Forward, None)?;
        check_asof(&left, &right, Direction::Forward, Some(tol))?;
    }

    #[test]
    fn asof_nearest_matches_merge_asof((left, right) in sides(true), tol in 0i64..15) {
        check_asof(&left, &right, Direction::Nearest, None)?;
        check_asof(&left, &right, Direction::Nearest, Some(tol))?;
    }

    #[test]
    fn interval_matches_nested_loop((left, right) in sides(false), (lower, upper) in bounds()) {
        check_interval(&left, &right, lower, upper, How::Inner)?;
        check_interval(&left, &right, lower, upper, How::Left)?;
    }
}

fn recs(keys: &[&'static str], ts: &[i64]) -> Vec<Rec> {
    keys.iter()
        .zip(ts)
        .enumerate()
        .map(|(i, (&k, &ts))| Rec {
            k,
            ts,
            id: i as i64,
        })
        .collect()
}

fn one_by_one(recs: Vec<Rec>, lateness: i64) -> Side {
    Side {
        recs,
        lateness,
        batch_size: 1,
    }
}

#[test]
fn left_record_behind_the_left_watermark_is_dropped_and_counted() {
    // Lateness 0, one record per batch: after a@10 the left watermark is 10, so a@5 is late.
    let left = one_by_one(recs(&["a", "a", "a"], &[10, 5, 20]), 0);
    let right = one_by_one(recs(&["a", "a"], &[4, 9]), 0);
    let kinds = [
        (
            JoinKind::Asof {
                direction: Direction::Backward,
                tolerance_ms: None,
            },
            vec![
                ("a".to_string(), 10, 0, Some(1)),
                ("a".to_string(), 20, 2, Some(1)),
            ],
        ),
        (
            JoinKind::Interval {
                lower_ms: -6,
                upper_ms: 0,
                how: How::Left,
            },
            vec![
                ("a".to_string(), 10, 0, Some(0)),
                ("a".to_string(), 10, 0, Some(1)),
                ("a".to_string(), 20, 2, None),
            ],
        ),
    ];
    for (kind, want) in kinds {
        let ran = run_join(kind, &left, &right);
        let mut got = rows_of(&ran.all);
        got.sort();
        assert_eq!(got, want, "{kind:?}");
        assert_eq!(ran.metrics(kind.name()).late_records, 1, "{kind:?}");
        assert_eq!(ran.late_rows(), 1, "{kind:?}");
        let late = &ran.out.late[0];
        assert_eq!(ints_nn(late, "ts"), vec![5], "{kind:?}");
        assert_eq!(ints_nn(late, "lv"), vec![1], "{kind:?}");
    }
}

#[test]
fn right_record_behind_the_right_watermark_is_dropped_and_counted() {
    // After a@10 on the right its watermark is 10: a@5 arriving next is late and matches nothing.
    let left = one_by_one(recs(&["a"], &[6]), 100);
    let right = one_by_one(recs(&["a", "a"], &[10, 5]), 0);
    let kind = JoinKind::Asof {
        direction: Direction::Backward,
        tolerance_ms: None,
    };
    let ran = run_join(kind, &left, &right);
    assert_eq!(rows_of(&ran.all), vec![("a".to_string(), 6, 0, None)]);
    assert_eq!(ran.metrics("join_asof").late_records, 1);
}

fn join_with(
    kind: JoinKind,
    left_by: &[&str],
    right_by: &[&str],
    left_on: Option<&str>,
    right_on: Option<&str>,
    right_columns: Option<&[&str]>,
) -> Node {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match join(kind, 0, 0) {
        Node::Join {
            left,
            right,
            kind,
            suffix,
            ..
        } => Node::Join {
            left,
            right,
            kind,
            left_by: strings(left_by),
            right_by: strings(right_by),
            left_on: left_on.map(str::to_string),
            right_on: right_on.map(str::to_string),
            suffix,
            right_columns: right_columns.map(strings),
        },
        _ => unreachable!(),
    }
}

fn build(plan: Node) -> Result<Pipeline, StreamError> {
    let (l, r) = (
        table(&recs(&["a"], &[1]), "k", "lv"),
        table(&recs(&["a"], &[1]), "rk", "rv"),
    );
    let specs = vec![
        SourceSpec::table(l.schema(), vec![l], None).expect("left table"),
        SourceSpec::table(r.schema(), vec![r], None).expect("right table"),
    ];
    Pipeline::new(plan, specs, vec![])
}

#[test]
fn join_plan_errors_name_the_field() {
    let asof = JoinKind::Asof {
        direction: Direction::Backward,
        tolerance_ms: None,
    };
    let interval = JoinKind::Interval {
        lower_ms: -5,
        upper_ms: 5,
        how: How::Inner,
    };
    let k: &[&str] = &["k"];
    let rk: &[&str] = &["rk"];
    let cases: Vec<(Node, &str, &[&str])> = vec![
        (
            join_with(asof, k, &[], None, None, None),
            "join_asof",
            &["by:"],
        ),
        (
            join_with(interval, &["k", "lv"], rk, None, None, None),
            "join_interval",
            &["by:"],
        ),
        (
            join_with(asof, &["nope"], rk, None, None, None),
            "join_asof",
            &["by:", "'nope'", "left"],
        ),
        (
            join_with(asof, k, &["nope"], None, None, None),
            "join_asof",
            &["by:", "'nope'", "right"],
        ),
        (
            join_with(interval, k, rk, None, Some("nope"), None),
            "join_interval",
            &["on:", "'nope'"],
        ),
        (
            join_with(asof, k, rk, Some("lv"), None, None),
            "join_asof",
            &["on:", "'lv'"],
        ),
        (
            join_with(asof, k, rk, None, None, Some(&["rv", "nope"])),
            "join_asof",
            &["right_columns:", "'nope'"],
        ),
        (
            join_with(
                JoinKind::Interval {
                    lower_ms: 5,
                    upper_ms: 1,
                    how: How::Left,
                },
                k,
                rk,
                None,
                None,
                None,
            ),
            "join_interval",
            &["lower", "upper"],
        ),
        (
            join_with(
                JoinKind::Asof {
                    direction: Direction::Nearest,
                    tolerance_ms: Some(-1),
                },
                k,
                rk,
                None,
                None,
                None,
            ),
            "join_asof",
            &["tolerance", "-1"],
        ),
    ];
    for (plan, want_op, words) in cases {
        match build(plan.clone()) {
            Err(StreamError::Plan { op, message }) => {
                assert_eq!(op, want_op, "{message}");
                for w in words {
                    assert!(message.contains(w), "'{w}' not in '{message}' ({plan:?})");
                }
            }
            Err(e) => panic!("expected a plan error for {plan:?}, got {e}"),
            Ok(_) => panic!("expected a plan error for {plan:?}, the plan was accepted"),
        }
    }
    // The boundaries are valid: a zero tolerance and an empty-width interval.
    let zero_tol = JoinKind::Asof {
        direction: Direction::Forward,
        tolerance_ms: Some(0),
    };
    let point = JoinKind::Interval {
        lower_ms: 3,
        upper_ms: 3,
        how: How::Inner,
    };
    for kind in [zero_tol, point] {
        build(join_with(kind, k, rk, Some("ts"), Some("ts"), None))
            .unwrap_or_else(|e| panic!("{kind:?} is valid: {e}"));
    }
}

/// Records every batch it is handed and counts records per key: each output row is the number
/// of records of its key handed over so far, itself included.
#[derive(Default)]
struct CountPerKey {
    seen: Mutex<Vec<RecordBatch>>,
    counts: Mutex<HashMap<String, i64>>,
}

impl BatchUdf for CountPerKey {
    fn call(&self, batch: RecordBatch) -> riverbed_stream::Result<RecordBatch> {
        let keys = strs(&batch, "k");
        let mut counts = self.counts.lock();
        let n: Vec<i64> = keys
            .iter()
            .map(|k| {
                let c = counts.entry(k.clone().expect("non-null key")).or_default();
                *c += 1;
                *c
            })
            .collect();
        self.seen.lock().push(batch.clone());
        Ok(batch_of(vec![
            ("k", batch.column_by_name("k").expect("k").clone()),
            ("ts", batch.column_by_name("ts").expect("ts").clone()),
            ("id", batch.column_by_name("id").expect("id").clone()),
            ("n", Arc::new(Int64Array::from(n)) as ArrayRef),
        ]))
    }
    fn name(&self) -> String {
        "count_per_key".into()
    }
}

fn batch_of(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(cols).expect("a valid batch")
}

fn check_stateful(input: &Side) -> Result<(), TestCaseError> {
    let t = table(&input.recs, "k", "id");
    let spec = SourceSpec::table(t.schema(), vec![t], Some(input.batch_size)).expect("table");
    let plan = Node::StatefulMap {
        input: Box::new(read(0, input.lateness)),
        by: vec!["k".to_string()],
        udf: 0,
        name: None,
    };
    let udf = Arc::new(CountPerKey::default());
    let p = Pipeline::new(plan, vec![spec], vec![udf.clone()]).expect("plan");
    let mut sink = riverbed_stream::CollectSink::default();
    let out = p
        .run(&mut sink, false, &riverbed_stream::RunControl::default())
        .expect("run");
    prop_assert!(out.late.is_empty(), "nothing is late");

    // Each handed-over batch: each key's records together, in (time, arrival) order; and each
    // key's records over all batches in (time, arrival) order.
    let mut per_key: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut handed: Vec<i64> = Vec::new();
    for b in udf.seen.lock().iter() {
        let (k, ts, id) = (strs(b, "k"), ints_nn(b, "ts"), ints_nn(b, "id"));
        let mut done: BTreeSet<String> = BTreeSet::new();
        for i in 0..b.num_rows() {
            let key = k[i].clone().expect("non-null key");
            if i > 0 && k[i - 1] != k[i] {
                let prev = k[i - 1].clone().expect("non-null key");
                done.insert(prev);
                prop_assert!(
                    !done.contains(&key),
                    "key {} comes back after other keys in one batch: {:?}",
                    key,
                    k
                );
            }
            per_key.entry(key).or_default().push((ts[i], id[i]));
            handed.push(id[i]);
        }
    }
    for (k, order) in &per_key {
        prop_assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "key {} handed over out of (time, arrival) order: {:?}",
            k,
            order
        );
    }
    handed.sort_unstable();
    let all: Vec<i64> = (0..input.recs.len() as i64).collect();
    prop_assert_eq!(handed, all, "every record is handed over exactly once");

    // So the per-key state sees event-time order: n is each record's rank in its key.
    let mut want: Vec<(String, i64, i64, i64)> = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<&Rec>> = BTreeMap::new();
    for r in &input.recs {
        by_key.entry(r.k).or_default().push(r);
    }
    for (k, mut rs) in by_key {
        rs.sort_by_key(|r| (r.ts, r.id));
        want.extend(
            rs.iter()
                .enumerate()
                .map(|(i, r)| (k.to_string(), r.ts, r.id, i as i64 + 1)),
        );
    }
    want.sort();
    let mut got: Vec<(String, i64, i64, i64)> = Vec::new();
    for b in &sink.batches {
        let (k, ts, id, n) = (
            strs(b, "k"),
            ints_nn(b, "ts"),
            ints_nn(b, "id"),
            ints_nn(b, "n"),
        );
        got.extend(
            (0..b.num_rows()).map(|i| (k[i].clone().unwrap_or_default(), ts[i], id[i], n[i])),
        );
    }
    got.sort();
    prop_assert_eq!(got, want);
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn stateful_map_hands_over_each_key_in_event_time_order(input in side(1, 80, false)) {
        check_stateful(&input)?;
    }
}
