//! Expressions (through with_columns and filter) and the unwindowed group_by changelog.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::DataType;
use common::*;
use proptest::prelude::*;
use riverbed_stream::{Node, StreamError};
use serde_json::{json, Value};

/// Evaluate `exprs` as new columns over `input` (one batch).
fn eval(input: &RecordBatch, exprs: Vec<(&str, Value)>) -> RecordBatch {
    try_eval(input, exprs).unwrap_or_else(|e| panic!("evaluation failed: {e}"))
}

fn try_eval(input: &RecordBatch, exprs: Vec<(&str, Value)>) -> Result<RecordBatch, StreamError> {
    let plan = with_columns(
        source(None, 0),
        exprs.into_iter().map(|(n, v)| (n, ex(v))).collect(),
    );
    Ok(run_table(plan, input, None)?.all)
}

fn plan_error<T>(r: Result<T, StreamError>) -> (String, String) {
    match r {
        Err(StreamError::Plan { op, message }) => (op, message),
        Err(e) => panic!("expected a plan error, got {e}"),
        Ok(_) => panic!("expected a plan error, got a result"),
    }
}

fn numbers() -> RecordBatch {
    batch(vec![
        (
            "i",
            Arc::new(Int64Array::from(vec![Some(1), Some(-7), Some(7), None])) as ArrayRef,
        ),
        ("f", Arc::new(Float64Array::from(vec![0.5, 2.0, -1.5, 3.0]))),
        ("i32", Arc::new(Int32Array::from(vec![2, 3, 4, 5]))),
        (
            "s",
            Arc::new(StringArray::from(vec![
                Some("12"),
                Some("x"),
                None,
                Some("-3"),
            ])),
        ),
    ])
}

#[test]
fn arithmetic_coerces_ints_and_floats() {
    let out = eval(
        &numbers(),
        vec![
            ("i_plus_f", bin("+", col("i"), col("f"))),
            ("i_times_2", bin("*", col("i"), lit(json!(2)))),
            ("i_plus_i32", bin("+", col("i"), col("i32"))),
            ("i32_minus_1", bin("-", col("i32"), lit(json!(1)))),
            ("i_minus_half", bin("-", col("i"), lit(json!(0.5)))),
        ],
    );
    assert_eq!(dtype(&out, "i_plus_f"), DataType::Float64);
    assert_eq!(
        floats(&out, "i_plus_f"),
        vec![Some(1.5), Some(-5.0), Some(5.5), None]
    );
    assert_eq!(dtype(&out, "i_times_2"), DataType::Int64);
    assert_eq!(
        ints(&out, "i_times_2"),
        vec![Some(2), Some(-14), Some(14), None]
    );
    assert_eq!(dtype(&out, "i_plus_i32"), DataType::Int64);
    assert_eq!(
        ints(&out, "i_plus_i32"),
        vec![Some(3), Some(-4), Some(11), None]
    );
    assert_eq!(dtype(&out, "i32_minus_1"), DataType::Int64);
    assert_eq!(
        ints(&out, "i32_minus_1"),
        vec![Some(1), Some(2), Some(3), Some(4)]
    );
    assert_eq!(
        floats(&out, "i_minus_half"),
        vec![Some(0.5), Some(-7.5), Some(6.5), None]
    );
}

#[test]
fn division_is_true_division() {
    let out = eval(
        &numbers(),
        vec![
            ("half", bin("/", col("i"), lit(json!(2)))),
            ("lits", bin("/", lit(json!(7)), lit(json!(2)))),
            ("ints", bin("/", col("i32"), col("i32"))),
        ],
    );
    assert_eq!(dtype(&out, "half"), DataType::Float64);
    assert_eq!(
        floats(&out, "half"),
        vec![Some(0.5), Some(-3.5), Some(3.5), None]
    );
    assert_eq!(floats(&out, "lits"), vec![Some(3.5); 4]);
    assert_eq!(floats(&out, "ints"), vec![Some(1.0); 4]);
}

#[test]
fn modulo_is_floored_like_python() {
    let input = batch(vec![
        (
            "a",
            Arc::new(Int64Array::from(vec![-7, 7, -6, 6, 5, -1])) as ArrayRef,
        ),
        (
            "x",
            Arc::new(Float64Array::from(vec![-7.5, 7.5, -6.0, 6.0, 5.5, -0.25])),
        ),
    ]);
    let out = eval(
        &input,
        vec![
            ("m3", bin("%", col("a"), lit(json!(3)))),
            ("mneg3", bin("%", col("a"), lit(json!(-3)))),
            ("fm2", bin("%", col("x"), lit(json!(2)))),
            ("fmneg2", bin("%", col("x"), lit(json!(-2.0)))),
        ],
    );
    // Python: [-7, 7, -6, 6, 5, -1] % 3 and % -3.
    assert_eq!(ints_nn(&out, "m3"), vec![2, 1, 0, 0, 2, 2]);
    assert_eq!(ints_nn(&out, "mneg3"), vec![-1, -2, 0, 0, -1, -1]);
    assert_eq!(dtype(&out, "fm2"), DataType::Float64);
    assert_eq!(
        floats(&out, "fm2"),
        [0.5, 1.5, 0.0, 0.0, 1.5, 1.75].map(Some).to_vec()
    );
    assert_eq!(
        floats(&out, "fmneg2"),
        [-1.5, -0.5, 0.0, 0.0, -0.5, -0.25].map(Some).to_vec()
    );
}

#[test]
fn modulo_does_not_overflow_near_i64_max() {
    let input = batch(vec![(
        "a",
        Arc::new(Int64Array::from(vec![i64::MAX - 1, -1, i64::MIN + 1])) as ArrayRef,
    )]);
    let out = try_eval(
        &input,
        vec![
            ("by_max", bin("%", col("a"), lit(json!(i64::MAX)))),
            ("by_min", bin("%", col("a"), lit(json!(i64::MIN)))),
        ],
    )
    .expect("a % b is defined for every b != 0 without overflow");
    // Python: (2**63 - 2) % (2**63 - 1) == 2**63 - 2; -1 % (2**63 - 1) == 2**63 - 2;
    // (-2**63 + 1) % (2**63 - 1) == 0.
    assert_eq!(ints_nn(&out, "by_max"), vec![i64::MAX - 1, i64::MAX - 1, 0]);
    // Python: x % -2**63 for x = 2**63 - 2, -1, -2**63 + 1.
    assert_eq!(ints_nn(&out, "by_min"), vec![-2, -1, i64::MIN + 1]);
}

#[test]
fn float_modulo_is_exact_like_python() {
    let input = batch(vec![(
        "x",
        Arc::new(Float64Array::from(vec![0.1, 2.3, 1e-20, -0.1])) as ArrayRef,
    )]);
    let out = eval(&input, vec![("m", bin("%", col("x"), lit(json!(1.0))))]);
    // Python: 0.1 % 1.0 == 0.1, 2.3 % 1.0 == 0.2999999999999998 (fmod is exact),
    // 1e-20 % 1.0 == 1e-20, -0.1 % 1.0 == 0.9.
    assert_eq!(
        floats(&out, "m"),
        vec![Some(0.1), Some(2.3 % 1.0), Some(1e-20), Some(1.0 - 0.1)]
    );
}

#[test]
fn comparisons_coerce_and_propagate_nulls() {
    let out = eval(
        &numbers(),
        vec![
            ("lt", bin("<", col("i"), col("f"))),
            ("ge", bin(">=", col("i32"), lit(json!(3.5)))),
            ("eq", bin("==", col("i32"), lit(json!(2.0)))),
            ("ne", bin("!=", col("s"), lit(json!("x")))),
            ("le", bin("<=", col("s"), lit(json!("12")))),
            ("null", bin(">", col("i"), lit(Value::Null))),
        ],
    );
    assert_eq!(
        bools(&out, "lt"),
        vec![Some(false), Some(true), Some(false), None]
    );
    assert_eq!(
        bools(&out, "ge"),
        vec![Some(false), Some(false), Some(true), Some(true)]
    );
    assert_eq!(
        bools(&out, "eq"),
        vec![Some(true), Some(false), Some(false), Some(false)]
    );
    assert_eq!(
        bools(&out, "ne"),
        vec![Some(true), Some(false), None, Some(true)]
    );
    // String order: "-3" < "12" < "x".
    assert_eq!(
        bools(&out, "le"),
        vec![Some(true), Some(false), None, Some(true)]
    );
    assert_eq!(bools(&out, "null"), vec![None; 4]);
}

#[test]
fn and_or_not_are_kleene() {
    let t = Some(true);
    let f = Some(false);
    let input = batch(vec![
        (
            "a",
            Arc::new(BooleanArray::from(vec![t, t, t, f, f, f, None, None, None])) as ArrayRef,
        ),
        (
            "b",
            Arc::new(BooleanArray::from(vec![t, f, None, t, f, None, t, f, None])),
        ),
    ]);
    let out = eval(
        &input,
        vec![
            ("and", bin("and", col("a"), col("b"))),
            ("or", bin("or", col("a"), col("b"))),
            ("not", json!({"unary": {"op": "not", "expr": col("a")}})),
            ("and_lit", bin("and", col("b"), lit(json!(false)))),
            ("or_lit", bin("or", lit(json!(true)), col("b"))),
        ],
    );
    assert_eq!(bools(&out, "and"), vec![t, f, None, f, f, f, None, f, None]);
    assert_eq!(bools(&out, "or"), vec![t, t, t, t, f, None, t, None, None]);
    assert_eq!(bools(&out, "not"), vec![f, f, f, t, t, t, None, None, None]);
    assert_eq!(bools(&out, "and_lit"), vec![f; 9]);
    assert_eq!(bools(&out, "or_lit"), vec![t; 9]);
}

#[test]
fn and_or_with_a_null_literal_are_kleene() {
    let t = Some(true);
    let f = Some(false);
    let input = batch(vec![(
        "b",
        Arc::new(BooleanArray::from(vec![t, f, None])) as ArrayRef,
    )]);
    let out = try_eval(
        &input,
        vec![
            ("and", bin("and", col("b"), lit(Value::Null))),
            ("or", bin("or", lit(Value::Null), col("b"))),
        ],
    )
    .expect("null is a valid Kleene operand");
    assert_eq!(bools(&out, "and"), vec![None, f, None]);
    assert_eq!(bools(&out, "or"), vec![t, None, None]);
}

#[test]
fn filter_keeps_only_true_rows() {
    let plan = Node::Filter {
        input: Box::new(source(None, 0)),
        predicate: ex(bin(
            "or",
            bin(">", col("i"), lit(json!(0))),
            bin("==", col("s"), lit(json!("x"))),
        )),
    };
    let ran = run_table(plan, &numbers(), Some(1)).expect("run");
    // Row 0: i > 0; row 1: s == "x"; row 2: i > 0; row 3: i null, s "-3" -> null or false.
    assert_eq!(ints(&ran.all, "i"), vec![Some(1), Some(-7), Some(7)]);
    assert_eq!(ran.metrics("filter").records_in, 4);
    assert_eq!(ran.metrics("filter").records_out, 3);
}

#[test]
fn fill_null_cast_clip() {
    let out = eval(
        &numbers(),
        vec![
            (
                "fill0",
                json!({"fill_null": {"expr": col("i"), "value": lit(json!(0))}}),
            ),
            (
                "fillf",
                json!({"fill_null": {"expr": col("i"), "value": lit(json!(0.5))}}),
            ),
            (
                "fillc",
                json!({"fill_null": {"expr": col("s"), "value": lit(json!("none"))}}),
            ),
            ("f_int", json!({"cast": {"expr": col("f"), "to": "int64"}})),
            ("i_str", json!({"cast": {"expr": col("i"), "to": "utf8"}})),
            (
                "s_int",
                json!({"cast": {"expr": col("i32"), "to": "float64"}}),
            ),
            ("i_bool", json!({"cast": {"expr": col("i"), "to": "bool"}})),
            (
                "clip",
                json!({"clip": {"expr": col("i"), "lower": lit(json!(-5)), "upper": lit(json!(5))}}),
            ),
            (
                "clip_lo",
                json!({"clip": {"expr": col("i"), "lower": lit(json!(2))}}),
            ),
            (
                "clip_f",
                json!({"clip": {"expr": col("f"), "upper": lit(json!(1))}}),
            ),
        ],
    );
    assert_eq!(
        ints(&out, "fill0"),
        vec![Some(1), Some(-7), Some(7), Some(0)]
    );
    assert_eq!(
        floats(&out, "fillf"),
        vec![Some(1.0), Some(-7.0), Some(7.0), Some(0.5)]
    );
    assert_eq!(
        strs(&out, "fillc"),
        ["12", "x", "none", "-3"]
            .map(|s| Some(s.to_string()))
            .to_vec()
    );
    assert_eq!(dtype(&out, "f_int"), DataType::Int64);
    assert_eq!(
        ints(&out, "f_int"),
        vec![Some(0), Some(2), Some(-1), Some(3)]
    );
    assert_eq!(dtype(&out, "i_str"), DataType::Utf8);
    assert_eq!(
        strs(&out, "i_str"),
        vec![Some("1".into()), Some("-7".into()), Some("7".into()), None]
    );
    assert_eq!(
        floats(&out, "s_int"),
        vec![Some(2.0), Some(3.0), Some(4.0), Some(5.0)]
    );
    assert_eq!(
        bools(&out, "i_bool"),
        vec![Some(true), Some(true), Some(true), None]
    );
    assert_eq!(ints(&out, "clip"), vec![Some(1), Some(-5), Some(5), None]);
    assert_eq!(ints(&out, "clip_lo"), vec![Some(2), Some(2), Some(7), None]);
    assert_eq!(
        floats(&out, "clip_f"),
        vec![Some(0.5), Some(1.0), Some(-1.5), Some(1.0)]
    );
}

#[test]
fn cast_of_strings_and_timestamps() {
    let input = batch(vec![
        (
            "s",
            Arc::new(StringArray::from(vec!["12", "-3"])) as ArrayRef,
        ),
        (
            "t",
            Arc::new(TimestampMicrosecondArray::from(vec![1_234_567, 2_999])),
        ),
    ]);
    let out = eval(
        &input,
        vec![
            ("s_int", json!({"cast": {"expr": col("s"), "to": "int64"}})),
            ("t_ms", json!({"cast": {"expr": col("t"), "to": "int64"}})),
            ("t_plus", bin("+", col("t"), lit(json!(1)))),
        ],
    );
    assert_eq!(ints_nn(&out, "s_int"), vec![12, -3]);
    // Timestamps become int64 milliseconds, in casts and in arithmetic.
    assert_eq!(ints_nn(&out, "t_ms"), vec![1_234, 2]);
    assert_eq!(dtype(&out, "t_plus"), DataType::Int64);
    assert_eq!(ints_nn(&out, "t_plus"), vec![1_235, 3]);
}

#[test]
fn when_otherwise_takes_the_first_true_branch() {
    let out = eval(
        &numbers(),
        vec![
            (
                "size",
                json!({"when": {
                    "branches": [
                        [bin(">", col("i"), lit(json!(5))), lit(json!("big"))],
                        [bin(">", col("i"), lit(json!(0))), lit(json!("pos"))]
                    ],
                    "otherwise": lit(json!("other"))
                }}),
            ),
            (
                "num",
                json!({"when": {
                    "branches": [[bin(">", col("f"), lit(json!(1))), col("i")]],
                    "otherwise": col("f")
                }}),
            ),
            (
                "nul",
                json!({"when": {
                    "branches": [[bin("<", col("i"), lit(json!(0))), lit(json!(1))]],
                    "otherwise": lit(Value::Null)
                }}),
            ),
        ],
    );
    // The null i makes both conditions null, which counts as false.
    assert_eq!(
        strs(&out, "size"),
        ["pos", "other", "big", "other"]
            .map(|s| Some(s.to_string()))
            .to_vec()
    );
    // int and float branches meet as float64; row 3 takes the null i.
    assert_eq!(
        floats(&out, "num"),
        vec![Some(0.5), Some(-7.0), Some(-1.5), None]
    );
    assert_eq!(ints(&out, "nul"), vec![None, Some(1), None, None]);
}

#[test]
fn null_checks_and_unary_math() {
    let out = eval(
        &numbers(),
        vec![
            (
                "isnull",
                json!({"unary": {"op": "is_null", "expr": col("i")}}),
            ),
            (
                "notnull",
                json!({"unary": {"op": "is_not_null", "expr": col("s")}}),
            ),
            ("neg", json!({"unary": {"op": "neg", "expr": col("i")}})),
            ("abs", json!({"unary": {"op": "abs", "expr": col("i")}})),
            ("sqrt", json!({"unary": {"op": "sqrt", "expr": col("i32")}})),
            (
                "lit_null",
                json!({"unary": {"op": "is_null", "expr": lit(Value::Null)}}),
            ),
        ],
    );
    assert_eq!(
        bools(&out, "isnull"),
        vec![Some(false), Some(false), Some(false), Some(true)]
    );
    assert_eq!(
        bools(&out, "notnull"),
        vec![Some(true), Some(true), Some(false), Some(true)]
    );
    assert_eq!(ints(&out, "neg"), vec![Some(-1), Some(7), Some(-7), None]);
    assert_eq!(ints(&out, "abs"), vec![Some(1), Some(7), Some(7), None]);
    let sqrt = floats(&out, "sqrt");
    assert!((sqrt[2].expect("sqrt 4") - 2.0).abs() < 1e-12);
    assert_eq!(bools(&out, "lit_null"), vec![Some(true); 4]);
}

#[test]
fn unknown_columns_are_plan_errors_naming_them() {
    let (op, msg) = plan_error(try_eval(
        &numbers(),
        vec![("x", bin("+", col("nope"), lit(json!(1))))],
    ));
    assert_eq!(op, "with_columns");
    assert!(msg.contains("'nope'"), "{msg}");
    assert!(msg.contains("'x'"), "the output field is named: {msg}");

    let filter = Node::Filter {
        input: Box::new(source(None, 0)),
        predicate: ex(bin(">", col("missing"), lit(json!(0)))),
    };
    let (op, msg) = plan_error(run_table(filter, &numbers(), None));
    assert_eq!(op, "filter");
    assert!(msg.contains("'missing'"), "{msg}");

    let grouped = Node::GroupBy {
        input: Box::new(source(None, 0)),
        by: vec!["i".into()],
        aggs: vec![("t".into(), agg("sum", Some("ghost")))],
    };
    let (op, msg) = plan_error(run_table(grouped, &numbers(), None));
    assert_eq!(op, "group_by");
    assert!(msg.contains("'ghost'"), "{msg}");

    let by_unknown = Node::GroupBy {
        input: Box::new(source(None, 0)),
        by: vec!["who".into()],
        aggs: vec![("n".into(), agg("count", None))],
    };
    let (op, msg) = plan_error(run_table(by_unknown, &numbers(), None));
    assert_eq!(op, "group_by");
    assert!(msg.contains("'who'"), "{msg}");

    let select = Node::Select {
        input: Box::new(source(None, 0)),
        columns: vec!["i".into(), "zz".into()],
    };
    let (op, msg) = plan_error(run_table(select, &numbers(), None));
    assert_eq!(op, "select");
    assert!(msg.contains("'zz'"), "{msg}");
}

#[test]
fn type_errors_are_plan_errors() {
    let (op, msg) = plan_error(try_eval(
        &numbers(),
        vec![("x", bin("+", col("s"), lit(json!(1))))],
    ));
    assert_eq!(op, "with_columns");
    assert!(msg.contains("'x'"), "{msg}");
    let filter = Node::Filter {
        input: Box::new(source(None, 0)),
        predicate: ex(bin("+", col("i"), lit(json!(1)))),
    };
    let (op, msg) = plan_error(run_table(filter, &numbers(), None));
    assert_eq!(op, "filter");
    assert!(msg.contains("not bool"), "{msg}");
    let not_agg = Node::GroupBy {
        input: Box::new(source(None, 0)),
        by: vec!["s".into()],
        aggs: vec![("t".into(), ex(col("i")))],
    };
    let (op, msg) = plan_error(run_table(not_agg, &numbers(), None));
    assert_eq!(op, "group_by");
    assert!(msg.contains("'t'"), "{msg}");
}

#[test]
fn with_columns_evaluates_against_the_input_not_each_other() {
    let out = eval(
        &numbers(),
        vec![
            ("i", bin("*", col("i32"), lit(json!(10)))),
            ("j", bin("+", col("i"), lit(json!(1)))),
        ],
    );
    assert_eq!(
        ints(&out, "i"),
        vec![Some(20), Some(30), Some(40), Some(50)]
    );
    // j reads the input's i, not the replaced one.
    assert_eq!(ints(&out, "j"), vec![Some(2), Some(-6), Some(8), None]);
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["i", "f", "i32", "s", "j"]);
}

#[test]
fn group_by_keeps_null_and_empty_string_keys_apart() {
    let input = batch(vec![
        (
            "k",
            Arc::new(StringArray::from(vec![
                Some(""),
                None,
                Some(""),
                None,
                Some("a"),
            ])) as ArrayRef,
        ),
        ("v", Arc::new(Int64Array::from(vec![1, 2, 4, 8, 16]))),
    ]);
    let plan = Node::GroupBy {
        input: Box::new(source(None, 0)),
        by: vec!["k".into()],
        aggs: vec![("t".into(), agg("sum", Some("v")))],
    };
    let ran = run_table(plan, &input, None).expect("run");
    let mut got: Vec<(Option<String>, i64)> = strs(&ran.all, "k")
        .into_iter()
        .zip(ints_nn(&ran.all, "t"))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![(None, 10), (Some("".into()), 5), (Some("a".into()), 16)]
    );
}

#[derive(Debug, Clone)]
struct GRec {
    k: &'static str,
    g: i64,
    v: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Totals {
    n: i64,
    sum: Option<i64>,
    max: Option<i64>,
    last: Option<i64>,
}

impl Totals {
    fn add(&mut self, v: Option<i64>) {
        self.n += 1;
        if let Some(v) = v {
            self.sum = Some(self.sum.unwrap_or(0) + v);
            self.max = Some(self.max.map_or(v, |m| m.max(v)));
            self.last = Some(v);
        }
    }
}

fn group_case() -> impl Strategy<Value = (Vec<GRec>, usize, bool)> {
    (
        prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "c", "d"]),
                0i64..3,
                prop::option::weighted(0.8, -100i64..100),
            )
                .prop_map(|(k, g, v)| GRec { k, g, v }),
            1..100,
        ),
        1usize..25,
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Each input batch yields one changelog row per key it touched, in key order, carrying that
    /// key's running totals; the last row per key equals brute-force totals over everything.
    #[test]
    fn group_by_changelog_matches_running_totals((recs, bs, two_keys) in group_case()) {
        let input = batch(vec![
            ("k", Arc::new(StringArray::from_iter_values(recs.iter().map(|r| r.k))) as ArrayRef),
            ("g", Arc::new(Int64Array::from_iter_values(recs.iter().map(|r| r.g)))),
            ("v", Arc::new(Int64Array::from_iter(recs.iter().map(|r| r.v)))),
        ]);
        let by: Vec<String> = if two_keys { vec!["k".into(), "g".into()] } else { vec!["k".into()] };
        let plan = Node::GroupBy {
            input: Box::new(source(None, 0)),
            by,
            aggs: vec![
                ("n".into(), agg("count", None)),
                ("s".into(), agg("sum", Some("v"))),
                ("hi".into(), agg("max", Some("v"))),
                ("last".into(), agg("last", Some("v"))),
            ],
        };
        let ran = run_table(plan, &input, Some(bs)).expect("run");
        let key = |r: &GRec| (r.k.to_string(), if two_keys { r.g } else { 0 });
        prop_assert_eq!(ran.batches.len(), recs.len().div_ceil(bs));
        let mut running: BTreeMap<(String, i64), Totals> = BTreeMap::new();
        for (chunk, out) in recs.chunks(bs).zip(&ran.batches) {
            for r in chunk {
                running.entry(key(r)).or_default().add(r.v);
            }
            let touched: std::collections::BTreeSet<(String, i64)> = chunk.iter().map(key).collect();
            let ks = strs(out, "k");
            let gs = if two_keys { ints_nn(out, "g") } else { vec![0; out.num_rows()] };
            let got_keys: Vec<(String, i64)> = ks
                .into_iter()
                .zip(gs)
                .map(|(k, g)| (k.unwrap_or_default(), g))
                .collect();
            // One row per touched key, ordered by key.
            prop_assert_eq!(&got_keys, &touched.iter().cloned().collect::<Vec<_>>());
            let (n, s, hi, last) = (ints_nn(out, "n"), ints(out, "s"), ints(out, "hi"), ints(out, "last"));
            for (i, k) in got_keys.iter().enumerate() {
                let got = Totals { n: n[i], sum: s[i], max: hi[i], last: last[i] };
                prop_assert_eq!(Some(&got), running.get(k), "key {:?}", k);
            }
        }
        // The last row per key is the brute-force total.
        let mut last_row: BTreeMap<(String, i64), Totals> = BTreeMap::new();
        let all = &ran.all;
        let ks = strs(all, "k");
        let gs = if two_keys { ints_nn(all, "g") } else { vec![0; all.num_rows()] };
        let (n, s, hi, last) = (ints_nn(all, "n"), ints(all, "s"), ints(all, "hi"), ints(all, "last"));
        for i in 0..all.num_rows() {
            last_row.insert(
                (ks[i].clone().unwrap_or_default(), gs[i]),
                Totals { n: n[i], sum: s[i], max: hi[i], last: last[i] },
            );
        }
        let mut brute: BTreeMap<(String, i64), Totals> = BTreeMap::new();
        for r in &recs {
            brute.entry(key(r)).or_default().add(r.v);
        }
        prop_assert_eq!(last_row, brute);
    }
}
