//! An operator's identity in a checkpoint (issue 13, part 3): a restart with a changed plan
//! restores a named operator's state only if its whole definition is unchanged, including the
//! insides of `when` and `clip` (which `explain()` once printed elided); checkpoints of format
//! 2 are still read and matched as before.

mod common;

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Int64Array, StringArray};
use arrow_schema::{DataType, Field, Schema};
use common::*;
use riverbed_stream::checkpoint::{CheckpointStore, VERSION};
use riverbed_stream::control::CheckpointConfig;
use riverbed_stream::{
    CollectSink, Emit, Node, Pipeline, RunControl, SourceSpec, StreamError, WindowSpec,
};
use serde_json::{json, Value};

fn spec() -> SourceSpec {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let n = 500;
    let b = batch(vec![
        (
            "k",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("k{}", i % 3)),
            )),
        ),
        (
            "ts",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i * 100))),
        ),
        (
            "v",
            Arc::new(Int64Array::from_iter_values((0..n).map(|i| i % 13))),
        ),
    ]);
    SourceSpec::table(schema, vec![b], Some(50)).expect("a valid table source")
}

/// The aggregate under test, from its JSON: `when(v > 5).then(v.clip(0, 10)).otherwise(0)`.
fn base_expr() -> Value {
    json!({"when": {"branches": [[bin(">", col("v"), lit(json!(5))),
                                  {"clip": {"expr": col("v"), "lower": lit(json!(0)), "upper": lit(json!(10))}}]],
                    "otherwise": lit(json!(0))}})
}

/// `source -> [with_columns] -> window(10 s by k, s = sum(expr), n = count()).named("w")`.
fn plan(expr: &Value, extra_step: bool, size_ms: i64) -> Node {
    let mut input = source(Some("ts"), 0);
    if extra_step {
        input = with_columns(input, vec![("v2", ex(bin("*", col("v"), lit(json!(2)))))]);
    }
    let w = window(
        input,
        WindowSpec::Tumbling {
            size_ms,
            offset_ms: 0,
            grace_ms: 0,
        },
        &["k"],
        Emit::Final,
        vec![
            ("s", ex(json!({"agg": {"func": "sum", "expr": expr}}))),
            ("n", agg("count", None)),
        ],
    );
    Node::Named {
        input: Box::new(w),
        name: "w".into(),
    }
}

fn run(p: &Node, dir: &std::path::Path) -> Result<Vec<String>, StreamError> {
    let pipeline = Pipeline::new(p.clone(), vec![spec()], vec![])?;
    let control = RunControl {
        checkpoint: Some(CheckpointConfig {
            dir: dir.to_path_buf(),
            interval: Duration::from_millis(1),
            reset: false,
        }),
        ..Default::default()
    };
    let mut sink = CollectSink::default();
    Ok(pipeline.run(&mut sink, false, &control)?.notes)
}

/// Every kind of expression, changed in one place inside the named window's aggregate.
fn variants() -> Vec<(&'static str, Value)> {
    let when = |cond: Value, then: Value, otherwise: Value| json!({"when": {"branches": [[cond, then]], "otherwise": otherwise}});
    let clip = |lower: Value, upper: Value| json!({"clip": {"expr": col("v"), "lower": lower, "upper": upper}});
    let gt5 = bin(">", col("v"), lit(json!(5)));
    let clip010 = clip(lit(json!(0)), lit(json!(10)));
    vec![
        (
            "when condition",
            when(
                bin(">", col("v"), lit(json!(6))),
                clip010.clone(),
                lit(json!(0)),
            ),
        ),
        (
            "comparison op",
            when(
                bin(">=", col("v"), lit(json!(5))),
                clip010.clone(),
                lit(json!(0)),
            ),
        ),
        (
            "when otherwise",
            when(gt5.clone(), clip010.clone(), lit(json!(-1))),
        ),
        (
            "clip upper",
            when(
                gt5.clone(),
                clip(lit(json!(0)), lit(json!(11))),
                lit(json!(0)),
            ),
        ),
        (
            "clip lower",
            when(
                gt5.clone(),
                clip(lit(json!(1)), lit(json!(10))),
                lit(json!(0)),
            ),
        ),
        (
            "clip bound dropped",
            when(gt5.clone(), clip(lit(json!(0)), Value::Null), lit(json!(0))),
        ),
        (
            "int -> float literal",
            when(gt5.clone(), clip010.clone(), lit(json!(0.0))),
        ),
        (
            "column",
            when(
                bin(">", col("ts"), lit(json!(5))),
                clip010.clone(),
                lit(json!(0)),
            ),
        ),
        (
            "extra branch",
            json!({"when": {"branches": [[gt5.clone(), clip010.clone()], [bin("<", col("v"), lit(json!(2))), lit(json!(1))]],
                            "otherwise": lit(json!(0))}}),
        ),
        (
            "unary",
            when(
                gt5.clone(),
                json!({"unary": {"op": "abs", "expr": clip010.clone()}}),
                lit(json!(0)),
            ),
        ),
        (
            "fill_null",
            when(
                gt5.clone(),
                json!({"fill_null": {"expr": clip010.clone(), "value": lit(json!(0))}}),
                lit(json!(0)),
            ),
        ),
        (
            "cast",
            when(
                gt5.clone(),
                json!({"cast": {"expr": clip010.clone(), "to": "float64"}}),
                lit(json!(0)),
            ),
        ),
        (
            "arithmetic",
            when(
                gt5.clone(),
                bin("+", clip010.clone(), lit(json!(0))),
                lit(json!(0)),
            ),
        ),
        (
            "boolean logic",
            when(
                bin("and", gt5.clone(), bin("<", col("v"), lit(json!(99)))),
                clip010,
                lit(json!(0)),
            ),
        ),
    ]
}

#[test]
fn every_expression_kind_changed_in_a_named_window_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    let base = plan(&base_expr(), false, 10_000);
    run(&base, dir.path())?;
    for (what, v) in variants() {
        assert_ne!(v, base_expr(), "{what}: the variant must differ");
        let err = run(&plan(&v, false, 10_000), dir.path()).expect_err(what);
        let msg = err.to_string();
        assert!(matches!(err, StreamError::Checkpoint(_)), "{what}: {msg}");
        assert!(
            msg.contains("operator 'w' changed") && msg.contains("reset=True"),
            "{what}: {msg}"
        );
    }
    // Unchanged: it restores, also with a step added before the window (matched by name).
    assert!(run(&base, dir.path())?.is_empty());
    let notes = run(&plan(&base_expr(), true, 10_000), dir.path())?;
    assert!(
        notes.iter().any(|n| n.contains("carries over by name (w)")),
        "{notes:?}"
    );
    Ok(())
}

/// Rewrite the newest checkpoint in `dir` as riverbed wrote it in format 2: the operators'
/// signatures are their lines of the `explain()` of that time, and the magic says version 2.
fn downgrade_to_version_2(dir: &std::path::Path, p: &Node) -> TestResult {
    let store = CheckpointStore::open(dir)?;
    let mut c = store.latest()?.0.ok_or("no checkpoint")?;
    assert_eq!(c.version, VERSION);
    let specs = vec![spec()];
    let Node::Named { input: w, .. } = p else {
        unreachable!()
    };
    let mut lines = vec![riverbed_stream::explain::describe(
        w.inputs()[0],
        &specs,
        true,
    )];
    if let Some(inner) = w.inputs()[0].inputs().first() {
        lines.insert(0, riverbed_stream::explain::describe(inner, &specs, true));
    }
    lines.push(riverbed_stream::explain::describe(w, &specs, true));
    assert_eq!(c.operators.len(), lines.len());
    for (o, l) in c.operators.iter_mut().zip(lines) {
        o.signature = l;
    }
    c.plan = riverbed_stream::explain::explain(p, &specs, true);
    c.seq += 1;
    store.write(&c)?;
    let file = dir.join(format!("{:020}.ckpt", c.seq));
    let mut bytes = std::fs::read(&file)?;
    // The CRC covers the body only; the signature covers the whole file: sign it again, as
    // the log signs what it writes.
    let signed = bytes.len() - riverbed_stream::checkpoint_key::TRAILER_LEN;
    bytes.truncate(signed);
    bytes[..8].copy_from_slice(b"RBCKPT02");
    let mut mac = riverbed_stream::checkpoint_key::CheckpointKey::for_dir(dir)?.signer();
    hmac::Mac::update(&mut mac, &bytes);
    bytes.extend(riverbed_stream::checkpoint_key::trailer(mac));
    std::fs::write(&file, bytes)?;
    assert_eq!(store.latest()?.0.ok_or("no checkpoint")?.version, 2);
    Ok(())
}

#[test]
fn a_version_2_checkpoint_is_matched_as_before() -> TestResult {
    let base = plan(&base_expr(), false, 10_000);
    // The same plan: restored place by place (the format-2 plan text matches).
    let dir = tempfile::tempdir()?;
    run(&base, dir.path())?;
    downgrade_to_version_2(dir.path(), &base)?;
    assert!(run(&base, dir.path())?.is_empty());
    // A step added before the named window: its state carries over by name.
    let dir = tempfile::tempdir()?;
    run(&base, dir.path())?;
    downgrade_to_version_2(dir.path(), &base)?;
    let notes = run(&plan(&base_expr(), true, 10_000), dir.path())?;
    assert!(
        notes.iter().any(|n| n.contains("carries over by name (w)")),
        "{notes:?}"
    );
    // The window itself changed: refused, naming it.
    let dir = tempfile::tempdir()?;
    run(&base, dir.path())?;
    downgrade_to_version_2(dir.path(), &base)?;
    let err = run(&plan(&base_expr(), false, 20_000), dir.path()).unwrap_err();
    assert!(err.to_string().contains("operator 'w' changed"), "{err}");
    Ok(())
}
