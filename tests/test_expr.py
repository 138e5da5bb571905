"""Expressions: every operator and method against values computed independently in plain Python
(or pyarrow), on data with nulls; and PlanError for plans that cannot work, naming the operator
and the field."""

from __future__ import annotations

import datetime as dt
import math
import random

import pyarrow as pa
import pytest

import riverbed as rb
from riverbed.exceptions import PlanError

N = 300


def _data(seed: int = 1) -> pa.Table:
    rng = random.Random(seed)

    def maybe(v, p=0.15):
        return None if rng.random() < p else v

    rows = []
    for i in range(N):
        rows.append(
            {
                "ts": i,
                "a": maybe(rng.randint(-50, 50)),
                "b": rng.choice([v for v in range(-9, 10) if v != 0]),
                "p": rng.randint(1, 40),  # positive ints
                "q": rng.randint(1, 7),
                "x": maybe(round(rng.uniform(0.1, 20.0), 3)),
                "y": rng.choice([-1, 1]) * round(rng.uniform(0.01, 5.0), 3),  # never 0
                "xi": float(rng.randint(-1000, 1000)),  # integral floats
                "s": maybe(rng.choice(["foo", "bar", "baz", ""])),
                "sn": rng.choice(["1.5", "-2", "3.25", "0"]),
                "f": maybe(rng.random() < 0.5),
                "g": maybe(rng.random() < 0.5),
            }
        )
    schema = pa.schema(
        [
            ("ts", pa.int64()),
            ("a", pa.int64()),
            ("b", pa.int64()),
            ("p", pa.int64()),
            ("q", pa.int64()),
            ("x", pa.float64()),
            ("y", pa.float64()),
            ("xi", pa.float64()),
            ("s", pa.string()),
            ("sn", pa.string()),
            ("f", pa.bool_()),
            ("g", pa.bool_()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


DATA = _data()
ROWS = DATA.to_pylist()


def evaluate(**exprs: rb.Expr) -> pa.Table:
    """The input rows with the expressions as extra columns, in input order."""
    out = rb.Pipeline.read(DATA, timestamp="ts", batch_size=64).with_columns(**exprs).collect()
    return out.sort_by("ts")


def nullsafe(fn):
    """fn applied when no argument is None, else None (SQL/Arrow null propagation)."""

    def g(*args):
        return None if any(a is None for a in args) else fn(*args)

    return g


def check(values: list, expected: list, rel: float = 1e-9) -> None:
    assert len(values) == len(expected)
    for i, (v, e) in enumerate(zip(values, expected)):
        if e is None:
            assert v is None, f"row {i} ({ROWS[i]}): got {v!r}, expected null"
        elif isinstance(e, float):
            assert v is not None and not isinstance(v, bool), f"row {i}: got {v!r}, expected {e!r}"
            if math.isnan(e):
                assert math.isnan(v), f"row {i}: got {v!r}, expected nan"
            else:
                assert v == pytest.approx(e, rel=rel, abs=1e-12), f"row {i} ({ROWS[i]}): got {v!r}, expected {e!r}"
        else:
            assert v == e and type(v) is type(e), f"row {i} ({ROWS[i]}): got {v!r}, expected {e!r}"


c = rb.col

# (name, expression, reference on a row dict, expected Arrow type or None)
CASES = [
    ("add", c("a") + c("b"), nullsafe(lambda a, b: a + b), ("a", "b"), pa.int64()),
    ("sub", c("a") - c("b"), nullsafe(lambda a, b: a - b), ("a", "b"), pa.int64()),
    ("mul", c("a") * c("b"), nullsafe(lambda a, b: a * b), ("a", "b"), pa.int64()),
    ("add_lit", c("a") + 7, nullsafe(lambda a: a + 7), ("a",), pa.int64()),
    ("radd", 7 + c("a"), nullsafe(lambda a: 7 + a), ("a",), pa.int64()),
    ("rsub", 100 - c("a"), nullsafe(lambda a: 100 - a), ("a",), pa.int64()),
    ("rmul", 3 * c("a"), nullsafe(lambda a: 3 * a), ("a",), pa.int64()),
    ("add_float_lit", c("a") + 0.5, nullsafe(lambda a: a + 0.5), ("a",), pa.float64()),
    ("add_int_float", c("a") + c("x"), nullsafe(lambda a, x: a + x), ("a", "x"), pa.float64()),
    ("div_int", c("a") / c("b"), nullsafe(lambda a, b: a / b), ("a", "b"), pa.float64()),  # true division
    ("div_float", c("x") / c("y"), nullsafe(lambda x, y: x / y), ("x", "y"), pa.float64()),
    ("div_lit", c("x") / 4, nullsafe(lambda x: x / 4), ("x",), pa.float64()),
    ("rdiv", 1 / c("x"), nullsafe(lambda x: 1 / x), ("x",), pa.float64()),
    ("mod_pos_int", c("p") % c("q"), nullsafe(lambda p, q: p % q), ("p", "q"), pa.int64()),
    ("rmod", 100 % c("q"), nullsafe(lambda q: 100 % q), ("q",), pa.int64()),
    ("mod_pos_float", c("x") % 1.5, nullsafe(lambda x: math.fmod(x, 1.5)), ("x",), pa.float64()),
    ("neg", -c("a"), nullsafe(lambda a: -a), ("a",), pa.int64()),
    ("abs", c("a").abs(), nullsafe(abs), ("a",), pa.int64()),
    ("abs_builtin", abs(c("y")), nullsafe(abs), ("y",), pa.float64()),
    ("log", c("x").log(), nullsafe(math.log), ("x",), pa.float64()),
    ("exp", c("y").exp(), nullsafe(math.exp), ("y",), pa.float64()),
    ("sqrt", c("x").sqrt(), nullsafe(math.sqrt), ("x",), pa.float64()),
    ("eq", c("a") == c("b"), nullsafe(lambda a, b: a == b), ("a", "b"), pa.bool_()),
    ("ne", c("a") != 3, nullsafe(lambda a: a != 3), ("a",), pa.bool_()),
    ("lt", c("a") < c("b"), nullsafe(lambda a, b: a < b), ("a", "b"), pa.bool_()),
    ("le", c("a") <= 0, nullsafe(lambda a: a <= 0), ("a",), pa.bool_()),
    ("gt", c("x") > 10.5, nullsafe(lambda x: x > 10.5), ("x",), pa.bool_()),
    ("ge", c("x") >= c("y"), nullsafe(lambda x, y: x >= y), ("x", "y"), pa.bool_()),
    ("reflected_cmp", 5 < c("a"), nullsafe(lambda a: 5 < a), ("a",), pa.bool_()),
    ("int_vs_float", c("a") > 2.5, nullsafe(lambda a: a > 2.5), ("a",), pa.bool_()),
    ("str_eq", c("s") == "foo", nullsafe(lambda s: s == "foo"), ("s",), pa.bool_()),
    ("str_lt", c("s") < "bb", nullsafe(lambda s: s < "bb"), ("s",), pa.bool_()),
    ("is_null", c("a").is_null(), lambda a: a is None, ("a",), pa.bool_()),
    ("is_not_null", c("s").is_not_null(), lambda s: s is not None, ("s",), pa.bool_()),
    ("fill_null_lit", c("a").fill_null(0), lambda a: 0 if a is None else a, ("a",), pa.int64()),
    ("fill_null_expr", c("x").fill_null(c("y")), lambda x, y: y if x is None else x, ("x", "y"), pa.float64()),
    ("fill_null_str", c("s").fill_null("?"), lambda s: "?" if s is None else s, ("s",), pa.string()),
    ("cast_int_float", c("a").cast("float64"), nullsafe(float), ("a",), pa.float64()),
    ("cast_int_str", c("a").cast("utf8"), nullsafe(str), ("a",), pa.string()),
    ("cast_int_bool", c("a").cast("bool"), nullsafe(bool), ("a",), pa.bool_()),
    ("cast_bool_int", c("f").cast("int64"), nullsafe(int), ("f",), pa.int64()),
    ("cast_float_int", c("xi").cast(pa.int64()), nullsafe(int), ("xi",), pa.int64()),
    ("cast_str_float", c("sn").cast(pa.float64()), nullsafe(float), ("sn",), pa.float64()),
    ("cast_pa_string", c("b").cast(pa.string()), nullsafe(str), ("b",), pa.string()),
    ("clip_both", c("a").clip(-10, 10), nullsafe(lambda a: min(max(a, -10), 10)), ("a",), pa.int64()),
    ("clip_lower", c("a").clip(lower=0), nullsafe(lambda a: max(a, 0)), ("a",), pa.int64()),
    ("clip_upper", c("y").clip(upper=1.0), nullsafe(lambda y: min(y, 1.0)), ("y",), pa.float64()),
    ("clip_exprs", c("a").clip(c("b"), 20), nullsafe(lambda a, b: min(max(a, b), 20)), ("a", "b"), pa.int64()),
    (
        "nested",
        ((c("a") * 2 + c("b")) / (c("q") + 0.5)).abs().sqrt(),
        nullsafe(lambda a, b, q: math.sqrt(abs((a * 2 + b) / (q + 0.5)))),
        ("a", "b", "q"),
        pa.float64(),
    ),
]


@pytest.mark.parametrize("name,expr,ref,args,typ", CASES, ids=[case[0] for case in CASES])
def test_expression_matches_python(name, expr, ref, args, typ):
    out = evaluate(r=expr)
    assert out.schema.field("r").type == typ
    check(out.column("r").to_pylist(), [ref(*(row[k] for k in args)) for row in ROWS])


def test_modulo_with_negative_operands_follows_python():
    out = evaluate(m=c("a") % c("b"), fm=c("y") % 1.5)
    check(out.column("m").to_pylist(), [None if r["a"] is None else r["a"] % r["b"] for r in ROWS])
    check(out.column("fm").to_pylist(), [r["y"] % 1.5 for r in ROWS])


def kleene_and(a, b):
    if a is False or b is False:
        return False
    if a is None or b is None:
        return None
    return True


def kleene_or(a, b):
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


def test_boolean_logic_is_kleene():
    """& | ~ follow SQL/Kleene three-valued logic, as pyarrow's and_kleene/or_kleene do."""
    import pyarrow.compute as pc

    out = evaluate(and_=c("f") & c("g"), or_=c("f") | c("g"), not_=~c("f"), mixed=(c("a") > 0) & ~c("g"))
    f, g = [r["f"] for r in ROWS], [r["g"] for r in ROWS]
    check(out.column("and_").to_pylist(), [kleene_and(x, y) for x, y in zip(f, g)])
    check(out.column("or_").to_pylist(), [kleene_or(x, y) for x, y in zip(f, g)])
    check(out.column("not_").to_pylist(), [None if x is None else not x for x in f])
    gt = [None if r["a"] is None else r["a"] > 0 for r in ROWS]
    check(out.column("mixed").to_pylist(), [kleene_and(x, None if y is None else not y) for x, y in zip(gt, g)])
    # the same reference as pyarrow's own kernels
    assert out.column("and_").to_pylist() == pc.and_kleene(DATA["f"], DATA["g"]).to_pylist()
    assert out.column("or_").to_pylist() == pc.or_kleene(DATA["f"], DATA["g"]).to_pylist()


def test_python_literals_with_bool_ops():
    out = evaluate(t=c("f") & True, o=False | c("g"))
    check(out.column("t").to_pylist(), [kleene_and(r["f"], True) for r in ROWS])
    check(out.column("o").to_pylist(), [kleene_or(False, r["g"]) for r in ROWS])


def test_when_then_otherwise():
    e = rb.when(c("a") > 20).then("big").when(c("a") < -20).then("small").otherwise(c("s"))
    e2 = rb.when(c("f")).then(c("a")).otherwise(-1)  # null condition counts as false
    e3 = rb.when(c("b") > 0).then(1.5)  # no otherwise: null
    out = evaluate(w=e, w2=e2, w3=e3)

    def ref(r):
        if r["a"] is not None and r["a"] > 20:
            return "big"
        if r["a"] is not None and r["a"] < -20:
            return "small"
        return r["s"]

    check(out.column("w").to_pylist(), [ref(r) for r in ROWS])
    check(out.column("w2").to_pylist(), [r["a"] if r["f"] is True else -1 for r in ROWS])
    check(out.column("w3").to_pylist(), [1.5 if r["b"] > 0 else None for r in ROWS])


def test_cast_to_timestamp():
    out = evaluate(t=(c("ts") * 1000 + 1_700_000_000_000).cast("timestamp_ms"))
    typ = out.schema.field("t").type
    assert pa.types.is_timestamp(typ) and typ.unit == "ms"
    assert out.column("t").cast(pa.int64()).to_pylist() == [1_700_000_000_000 + 1000 * r["ts"] for r in ROWS]


def test_datetime_literal_compares_with_timestamp_column():
    t0 = dt.datetime(2023, 11, 14, 22, 13, 20, 100_000, tzinfo=dt.timezone.utc)  # 1_700_000_000_100 ms
    out = evaluate(after=(c("ts") + 1_700_000_000_000).cast("timestamp_ms") >= t0)
    check(out.column("after").to_pylist(), [r["ts"] >= 100 for r in ROWS])


def test_filter_keeps_only_true_rows():
    out = rb.Pipeline.read(DATA, timestamp="ts").filter((c("a") > 0) | c("f")).collect().sort_by("ts")
    expected = [r["ts"] for r in ROWS if kleene_or(None if r["a"] is None else r["a"] > 0, r["f"]) is True]
    assert out.column("ts").to_pylist() == expected
    assert out.schema == DATA.schema


def test_with_columns_see_input_not_each_other():
    out = evaluate(a=c("a") + 1, z=c("a") * 10)  # z uses the input a, not the new one
    check(out.column("a").to_pylist(), [None if r["a"] is None else r["a"] + 1 for r in ROWS])
    check(out.column("z").to_pylist(), [None if r["a"] is None else r["a"] * 10 for r in ROWS])
    assert out.column_names == DATA.column_names + ["z"]  # a replaced in place


def test_expr_has_no_truth_value():
    with pytest.raises(TypeError, match="&"):
        bool(c("a") > 1)
    with pytest.raises(TypeError, match="&"):
        (c("a") > 1) and (c("b") > 1)
    with pytest.raises(TypeError):
        if c("a") == 1:
            pass


def test_plan_shapes():
    assert (c("a") + 1).to_plan() == {"binary": {"op": "+", "left": {"col": "a"}, "right": {"lit": 1}}}
    assert (1 - c("a")).to_plan() == {"binary": {"op": "-", "left": {"lit": 1}, "right": {"col": "a"}}}
    assert (~c("f")).to_plan() == {"unary": {"op": "not", "expr": {"col": "f"}}}
    assert rb.count().to_plan() == {"agg": {"func": "count"}}
    assert (rb.sum("pv") / rb.sum("v")).to_plan() == {
        "binary": {
            "op": "/",
            "left": {"agg": {"func": "sum", "expr": {"col": "pv"}}},
            "right": {"agg": {"func": "sum", "expr": {"col": "v"}}},
        }
    }
    assert c("x").clip(upper=3).to_plan() == {"clip": {"expr": {"col": "x"}, "lower": None, "upper": {"lit": 3}}}
    assert rb.when(c("f")).then(1).otherwise(2).to_plan() == {
        "when": {"branches": [[{"col": "f"}, {"lit": 1}]], "otherwise": {"lit": 2}}
    }
    assert c("x").cast(pa.timestamp("ms")).to_plan() == {"cast": {"expr": {"col": "x"}, "to": "timestamp_ms"}}
    with pytest.raises(ValueError):
        c("x").cast("decimal")
    with pytest.raises(TypeError):
        c("x") + object()
    with pytest.raises(ValueError):
        rb.lit(2**70)


# -- PlanError: raised when the step is written, naming the operator and the field --------------


def _read() -> rb.Pipeline:
    return rb.Pipeline.read(DATA, timestamp="ts")


def assert_plan_error(build, *words: str, any_of: tuple[str, ...] = ()) -> None:
    with pytest.raises(PlanError) as ei:
        build()
    msg = str(ei.value)
    for w in words:
        assert w in msg, f"{w!r} not in PlanError message {msg!r}"
    if any_of:
        assert any(w in msg for w in any_of), f"none of {any_of} in PlanError message {msg!r}"


def test_unknown_column_in_filter():
    assert_plan_error(lambda: _read().filter(c("no_such_column") > 1), "filter", "no_such_column")


def test_unknown_column_in_with_columns():
    assert_plan_error(lambda: _read().with_columns(out_col=c("missing_col") * 2), "with_columns", "missing_col")


def test_unknown_column_in_select_drop_rename():
    assert_plan_error(lambda: _read().select("ts", "ghost_col"), "select", "ghost_col")
    assert_plan_error(lambda: _read().rename({"ghost_col": "z"}), "rename", "ghost_col")


def test_unknown_timestamp_column():
    assert_plan_error(lambda: rb.Pipeline.read(DATA, timestamp="event_time_col"), "read", "event_time_col")


def test_timestamp_column_of_wrong_type():
    assert_plan_error(lambda: rb.Pipeline.read(DATA, timestamp="s"), "read", any_of=("timestamp", '"s"', "'s'", "`s`"))


def test_type_mismatch_arithmetic_on_string():
    assert_plan_error(
        lambda: _read().with_columns(total_price=c("s") + 1), "with_columns", any_of=('"s"', "'s'", "`s`", "total_price")
    )


def test_type_mismatch_compare_string_with_int():
    assert_plan_error(lambda: _read().filter(c("s") > 3), "filter")


def test_type_mismatch_log_of_string():
    assert_plan_error(lambda: _read().with_columns(logged=c("s").log()), "with_columns", any_of=('"s"', "'s'", "logged"))


def test_type_mismatch_and_on_int():
    assert_plan_error(lambda: _read().filter(c("a") & c("f")), "filter")


def test_filter_predicate_must_be_boolean():
    assert_plan_error(lambda: _read().filter(c("a") + 1), "filter")


def test_when_branches_must_agree():
    assert_plan_error(lambda: _read().with_columns(label=rb.when(c("f")).then("text").otherwise(c("f"))), "with_columns")


@pytest.mark.parametrize(
    "build,op,field",
    [
        (lambda: _read().with_columns(total_price=c("s") + 1), "with_columns", "total_price"),
        (lambda: _read().with_columns(logged=c("s").log()), "with_columns", "logged"),
        (lambda: _read().with_columns(label=rb.when(c("f")).then("text").otherwise(c("f"))), "with_columns", "label"),
        (lambda: _read().window(rb.tumbling("1s")).agg(total_s=rb.sum("s")), "window", "total_s"),
    ],
    ids=["arith", "log", "when", "agg"],
)
def test_type_errors_name_the_output_field(build, op, field):
    assert_plan_error(build, op, field)


def test_aggregate_outside_aggregation():
    assert_plan_error(lambda: _read().with_columns(total_qty=rb.sum("a")), "with_columns", "total_qty")
    assert_plan_error(lambda: _read().filter(rb.count() > 1), "filter")


def test_aggregate_of_wrong_type():
    assert_plan_error(
        lambda: _read().window(rb.tumbling("1s")).agg(total_s=rb.sum("s")), "window", any_of=("total_s", '"s"', "'s'")
    )


def test_unknown_window_key_and_agg_column():
    assert_plan_error(lambda: _read().window(rb.tumbling("1s"), by="nokey").agg(n=rb.count()), "window", "nokey")
    assert_plan_error(lambda: _read().window(rb.tumbling("1s")).agg(m=rb.max("nocol")), "window", "nocol")
    assert_plan_error(lambda: _read().group_by("nokey").agg(n=rb.count()), "group_by", "nokey")
