//! A run split between worker threads gives what one worker gives: the same windows and the
//! same late records, over four in-memory partitions (four table sources in a union) with
//! records out of order within and beyond lateness.

mod common;

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use common::*;
use riverbed_stream::{CollectSink, Emit, Node, Pipeline, RunControl, SourceSpec, WindowSpec};

/// Partition `p` of the input: keys k0..k16, times rising with jitter, every 53rd record 2 s
/// behind (late unless its window is still open).
fn part(p: i64, n: i64) -> RecordBatch {
    let keys: Vec<String> = (0..n).map(|i| format!("k{}", (i * 7 + p) % 17)).collect();
    let ts: Vec<i64> = (0..n)
        .map(|i| {
            let t = 1_000_000 + i * 11 + (i * 31 + p * 5) % 40;
            if i % 53 == 52 {
                t - 2_000
            } else {
                t
            }
        })
        .collect();
    batch(vec![
        ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
        ("ts", Arc::new(Int64Array::from(ts))),
        (
            "v",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 4 + p))),
        ),
    ])
}

fn union_of(parts: usize) -> Node {
    Node::Union {
        inputs: (0..parts)
            .map(|i| Node::Source {
                source: i,
                timestamp: Some("ts".into()),
                lateness_ms: 50,
                idle_timeout_ms: 5_000,
                name: None,
                partitioned_by: None,
            })
            .collect(),
    }
}

/// Sorted rows of `batches` as text (every column), and the number of rows.
fn canon(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| {
                    arrow_cast::display::array_value_to_string(c, i).expect("a printable cell")
                })
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

fn run(plan: &Node, workers: usize) -> (Vec<String>, Vec<String>, Vec<i64>) {
    let specs: Vec<SourceSpec> = (0..4)
        .map(|p| {
            let b = part(p, 3_000);
            SourceSpec::table(b.schema(), vec![b], Some(97)).expect("a table source")
        })
        .collect();
    let pipeline = Pipeline::new(plan.clone(), specs, vec![]).expect("a valid plan");
    let mut sink = CollectSink::default();
    let control = RunControl {
        workers,
        ..Default::default()
    };
    let out = pipeline
        .run(&mut sink, false, &control)
        .expect("the run succeeds");
    let order: Vec<i64> = sink
        .batches
        .iter()
        .flat_map(|b| ints_nn(b, "window_start"))
        .collect();
    (canon(&sink.batches), canon(&out.late), order)
}

fn spec(kind: &str) -> WindowSpec {
    match kind {
        "tumbling" => WindowSpec::Tumbling {
            size_ms: 500,
            offset_ms: 0,
            grace_ms: 0,
        },
        "hopping" => WindowSpec::Hopping {
            size_ms: 600,
            every_ms: 200,
            offset_ms: 0,
            grace_ms: 100,
        },
        "sliding" => WindowSpec::Sliding {
            size_ms: 300,
            grace_ms: 0,
        },
        "session" => WindowSpec::Session {
            gap_ms: 40,
            grace_ms: 0,
        },
        _ => WindowSpec::Count { n: 4 },
    }
}

#[test]
fn every_window_kind_gives_the_one_worker_result_on_several() {
    for kind in ["tumbling", "hopping", "sliding", "session", "count"] {
        for by in [&["k"][..], &[][..]] {
            let plan = window(
                union_of(4),
                spec(kind),
                by,
                Emit::Final,
                vec![("n", agg("count", None)), ("s", agg("sum", Some("v")))],
            );
            let (out1, late1, _) = run(&plan, 1);
            assert!(!out1.is_empty(), "{kind} {by:?}");
            assert!(
                !late1.is_empty(),
                "{kind} {by:?}: the input has late records"
            );
            for workers in [2, 3, 5] {
                let (out, late, order) = run(&plan, workers);
                assert_eq!(out, out1, "{kind} by {by:?} on {workers} workers");
                assert_eq!(late, late1, "{kind} by {by:?} on {workers} workers: late");
                if kind == "tumbling" || kind == "hopping" {
                    assert!(
                        order.windows(2).all(|w| w[0] <= w[1]),
                        "{kind} on {workers} workers: output in window order"
                    );
                }
            }
        }
    }
}
