//! Expressions, polars-like, evaluated a batch at a time with Arrow compute kernels.
//!
//! JSON shapes (externally tagged): `{"col": "x"}`, `{"lit": 1.5}` (null, bool, int, float,
//! string), `{"binary": {"op": "+", "left": E, "right": E}}` with ops `+ - * / % == != < <= > >=
//! and or`, `{"unary": {"op": "neg", "expr": E}}` with ops `neg not abs log exp sqrt is_null
//! is_not_null`, `{"fill_null": {"expr": E, "value": E}}`, `{"cast": {"expr": E, "to": "float64"}}`
//! (`int64 float64 utf8 bool timestamp_ms`), `{"clip": {"expr": E, "lower": E|null, "upper":
//! E|null}}`, `{"when": {"branches": [[cond, then], ...], "otherwise": E}}`, and, inside
//! aggregations only, `{"agg": {"func": "sum", "expr": E}}` (`count` takes no expr).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Expr {
    Col(String),
    Lit(Literal),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    FillNull {
        expr: Box<Expr>,
        value: Box<Expr>,
    },
    Cast {
        expr: Box<Expr>,
        to: CastType,
    },
    Clip {
        expr: Box<Expr>,
        #[serde(default)]
        lower: Option<Box<Expr>>,
        #[serde(default)]
        upper: Option<Box<Expr>>,
    },
    When {
        branches: Vec<(Expr, Expr)>,
        otherwise: Box<Expr>,
    },
    Agg {
        func: AggFunc,
        #[serde(default)]
        expr: Option<Box<Expr>>,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// As the derive would, except a float that JSON cannot hold (NaN, ±inf) is written
/// `{"float": "NaN"}`: serde_json would write it `null`, the same as a null literal, and a
/// checkpoint signature (`signature.rs`) could not tell the two apart.
impl Serialize for Literal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Literal::Null => s.serialize_unit(),
            Literal::Bool(b) => s.serialize_bool(*b),
            Literal::Int(i) => s.serialize_i64(*i),
            Literal::Float(x) if x.is_finite() => s.serialize_f64(*x),
            Literal::Float(x) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("float", &format!("{x:?}"))?;
                m.end()
            }
            Literal::Str(t) => s.serialize_str(t),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    #[serde(rename = "+")]
    Add,
    #[serde(rename = "-")]
    Sub,
    #[serde(rename = "*")]
    Mul,
    #[serde(rename = "/")]
    Div,
    #[serde(rename = "%")]
    Rem,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    NotEq,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    LtEq,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    GtEq,
    #[serde(rename = "and")]
    And,
    #[serde(rename = "or")]
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnaryOp {
    Neg,
    Not,
    Abs,
    Log,
    Exp,
    Sqrt,
    IsNull,
    IsNotNull,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CastType {
    Int64,
    Float64,
    Utf8,
    Bool,
    TimestampMs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggFunc {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    First,
    Last,
    Std,
    Var,
    CountDistinct,
}

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    new_null_array, Array, ArrayRef, BooleanArray, Datum, Float64Array, RecordBatch, Scalar,
};
use arrow_schema::{DataType, Schema, TimeUnit};

use crate::error::{ArrowContext, Result, StreamError};

impl Expr {
    pub fn col(name: &str) -> Expr {
        Expr::Col(name.to_string())
    }

    /// True if an `Agg` node appears anywhere inside.
    pub fn has_agg(&self) -> bool {
        let mut found = false;
        self.visit(&mut |e| found |= matches!(e, Expr::Agg { .. }));
        found
    }

    /// Columns the expression reads.
    pub fn columns(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |e| {
            if let Expr::Col(c) = e {
                out.push(c.clone())
            }
        });
        out
    }

    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Col(_) | Expr::Lit(_) => {}
            Expr::Binary { left, right, .. } => {
                left.visit(f);
                right.visit(f);
            }
            Expr::Unary { expr, .. } | Expr::Cast { expr, .. } => expr.visit(f),
            Expr::FillNull { expr, value } => {
                expr.visit(f);
                value.visit(f);
            }
            Expr::Clip { expr, lower, upper } => {
                expr.visit(f);
                for b in [lower, upper].into_iter().flatten() {
                    b.visit(f);
                }
            }
            Expr::When {
                branches,
                otherwise,
            } => {
                for (c, t) in branches {
                    c.visit(f);
                    t.visit(f);
                }
                otherwise.visit(f);
            }
            Expr::Agg { expr, .. } => {
                if let Some(e) = expr {
                    e.visit(f)
                }
            }
        }
    }

    /// The result type against `schema`, found by evaluating on an empty batch, so that
    /// validation and execution can never disagree. Errors name `op` and the problem.
    pub fn data_type(&self, schema: &Arc<Schema>, op: &str) -> Result<DataType> {
        for c in self.columns() {
            if schema.index_of(&c).is_err() {
                let cols: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(StreamError::plan(
                    op,
                    format!("unknown column '{c}'; the input has {cols:?}"),
                ));
            }
        }
        let empty = RecordBatch::new_empty(schema.clone());
        match self.evaluate(&empty) {
            Ok(a) => Ok(a.data_type().clone()),
            Err(StreamError::Arrow { source, .. }) => {
                Err(StreamError::plan(op, format!("{self}: {source}")))
            }
            Err(StreamError::Schema(m)) | Err(StreamError::Plan { message: m, .. }) => {
                Err(StreamError::plan(op, m))
            }
            Err(e) => Err(e),
        }
    }

    /// Evaluate against a batch; the result has one value per row.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef> {
        let v = self.eval(batch)?;
        Ok(if v.scalar {
            v.expand(batch.num_rows())?
        } else {
            v.array
        })
    }

    fn eval(&self, batch: &RecordBatch) -> Result<Value> {
        Ok(match self {
            Expr::Col(name) => Value::array(
                batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| StreamError::Schema(format!("unknown column '{name}'")))?,
            ),
            Expr::Lit(l) => Value::scalar(l.to_array()),
            Expr::Binary { op, left, right } => {
                binary(*op, left.eval(batch)?, right.eval(batch)?, self)?
            }
            Expr::Unary { op, expr } => unary(*op, expr.eval(batch)?, self)?,
            Expr::FillNull { expr, value } => {
                let (a, b) = coerce_pair(expr.eval(batch)?, value.eval(batch)?, self)?;
                let n = batch.num_rows();
                let a = a.expand(n)?;
                let mask = arrow_arith::boolean::is_not_null(&a).ctx("fill_null")?;
                let filled = arrow_select::zip::zip(&mask, &a, &*b.datum()).ctx("fill_null")?;
                Value::array(filled)
            }
            Expr::Cast { expr, to } => {
                let v = expr.eval(batch)?;
                let target = to.data_type();
                let a = match (v.array.data_type(), &target) {
                    (DataType::Timestamp(_, _), DataType::Int64) => arrow_cast::cast(
                        &arrow_cast::cast(
                            &v.array,
                            &DataType::Timestamp(TimeUnit::Millisecond, None),
                        )
                        .ctx("cast")?,
                        &target,
                    ),
                    _ => arrow_cast::cast(&v.array, &target),
                }
                .ctx("cast")?;
                Value {
                    array: a,
                    scalar: v.scalar,
                }
            }
            Expr::Clip { expr, lower, upper } => {
                let mut v = expr.eval(batch)?;
                if let Some(lo) = lower {
                    let lo = lo.eval(batch)?;
                    let (a, b) = coerce_pair(v, lo, self)?;
                    let below = arrow_ord::cmp::lt(&*a.datum(), &*b.datum()).ctx("clip")?;
                    v = zip_values(&below, b, a, batch.num_rows())?;
                }
                if let Some(hi) = upper {
                    let hi = hi.eval(batch)?;
                    let (a, b) = coerce_pair(v, hi, self)?;
                    let above = arrow_ord::cmp::gt(&*a.datum(), &*b.datum()).ctx("clip")?;
                    v = zip_values(&above, b, a, batch.num_rows())?;
                }
                v
            }
            Expr::When {
                branches,
                otherwise,
            } => {
                let n = batch.num_rows();
                let mut result = otherwise.eval(batch)?;
                for (cond, then) in branches.iter().rev() {
                    let c = cond.eval(batch)?.expand(n)?;
                    let c = c.as_boolean_opt().ok_or_else(|| {
                        StreamError::Schema(format!(
                            "when(): condition {cond} is {} not bool",
                            c.data_type()
                        ))
                    })?;
                    // A null condition counts as false.
                    let c = arrow_select::nullif::nullif(
                        c,
                        &arrow_arith::boolean::is_null(c).ctx("when")?,
                    )
                    .ctx("when")?;
                    let c: BooleanArray = c
                        .as_boolean()
                        .iter()
                        .map(|x| Some(x.unwrap_or(false)))
                        .collect();
                    let (t, r) = coerce_pair(then.eval(batch)?, result, self)?;
                    result = zip_values(&c, t, r, n)?;
                }
                result
            }
            Expr::Agg { .. } => {
                return Err(StreamError::Schema(format!(
                    "{self}: aggregations are only allowed in agg(...)"
                )))
            }
        })
    }
}

impl CastType {
    pub fn data_type(&self) -> DataType {
        match self {
            CastType::Int64 => DataType::Int64,
            CastType::Float64 => DataType::Float64,
            CastType::Utf8 => DataType::Utf8,
            CastType::Bool => DataType::Boolean,
            CastType::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

impl Literal {
    fn to_array(&self) -> ArrayRef {
        match self {
            Literal::Null => new_null_array(&DataType::Null, 1),
            Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
            Literal::Int(i) => Arc::new(arrow_array::Int64Array::from(vec![*i])),
            Literal::Float(f) => Arc::new(Float64Array::from(vec![*f])),
            Literal::Str(s) => Arc::new(arrow_array::StringArray::from(vec![s.as_str()])),
        }
    }
}

/// An evaluated expression: a column, or a one-row scalar broadcast lazily.
#[derive(Clone)]
struct Value {
    array: ArrayRef,
    scalar: bool,
}

impl Value {
    fn array(array: ArrayRef) -> Value {
        Value {
            array,
            scalar: false,
        }
    }
    fn scalar(array: ArrayRef) -> Value {
        Value {
            array,
            scalar: true,
        }
    }
    fn datum(&self) -> Box<dyn Datum + '_> {
        if self.scalar {
            Box::new(Scalar::new(self.array.clone()))
        } else {
            Box::new(self.array.clone())
        }
    }
    fn expand(&self, n: usize) -> Result<ArrayRef> {
        if !self.scalar {
            return Ok(self.array.clone());
        }
        let idx = arrow_array::UInt32Array::from(vec![0u32; n]);
        arrow_select::take::take(&self.array, &idx, None).ctx("broadcast")
    }
    fn cast(&self, to: &DataType) -> Result<Value> {
        if self.array.data_type() == to {
            return Ok(self.clone());
        }
        Ok(Value {
            array: arrow_cast::cast(&self.array, to).ctx("cast")?,
            scalar: self.scalar,
        })
    }
}

fn zip_values(mask: &BooleanArray, a: Value, b: Value, n: usize) -> Result<Value> {
    let _ = n;
    Ok(Value::array(
        arrow_select::zip::zip(mask, &*a.datum(), &*b.datum()).ctx("zip")?,
    ))
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Timestamp(_, _) | DataType::Null)
}

/// Timestamps compare and compute as int64 milliseconds.
fn normalise(v: Value) -> Result<Value> {
    match v.array.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => v.cast(&DataType::Int64),
        DataType::Timestamp(_, _) => v
            .cast(&DataType::Timestamp(TimeUnit::Millisecond, None))?
            .cast(&DataType::Int64),
        _ => Ok(v),
    }
}

/// Bring two operands to one type: numbers to int64 or float64, null to the other side's type.
fn coerce_pair(a: Value, b: Value, e: &Expr) -> Result<(Value, Value)> {
    let (a, b) = (normalise(a)?, normalise(b)?);
    let (ta, tb) = (a.array.data_type().clone(), b.array.data_type().clone());
    if ta == tb {
        return Ok((a, b));
    }
    if ta == DataType::Null {
        return Ok((a.cast(&tb)?, b));
    }
    if tb == DataType::Null {
        let c = b.cast(&ta)?;
        return Ok((a, c));
    }
    if is_numeric(&ta) && is_numeric(&tb) {
        let target = if ta.is_floating() || tb.is_floating() {
            DataType::Float64
        } else {
            DataType::Int64
        };
        return Ok((a.cast(&target)?, b.cast(&target)?));
    }
    let stringy =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    if stringy(&ta) && stringy(&tb) {
        return Ok((a.cast(&DataType::Utf8)?, b.cast(&DataType::Utf8)?));
    }
    Err(StreamError::Schema(format!(
        "{e}: cannot combine {ta} and {tb}"
    )))
}

fn binary(op: BinaryOp, l: Value, r: Value, e: &Expr) -> Result<Value> {
    use arrow_arith::numeric as num;
    use arrow_ord::cmp;
    let scalar = l.scalar && r.scalar;
    let out: ArrayRef = match op {
        BinaryOp::And | BinaryOp::Or => {
            let n = if l.scalar {
                r.array.len()
            } else {
                l.array.len()
            };
            // A null literal is a bool of unknown value here (Kleene logic).
            let as_bool = |v: ArrayRef| -> Result<ArrayRef> {
                if v.data_type() == &DataType::Null {
                    arrow_cast::cast(&v, &DataType::Boolean).ctx("boolean")
                } else {
                    Ok(v)
                }
            };
            let (a, b) = (as_bool(l.expand(n)?)?, as_bool(r.expand(n)?)?);
            let (Some(a), Some(b)) = (a.as_boolean_opt(), b.as_boolean_opt()) else {
                return Err(StreamError::Schema(format!(
                    "{e}: & and | need bool operands, got {} and {}",
                    a.data_type(),
                    b.data_type()
                )));
            };
            Arc::new(
                if op == BinaryOp::And {
                    arrow_arith::boolean::and_kleene(a, b)
                } else {
                    arrow_arith::boolean::or_kleene(a, b)
                }
                .ctx("boolean")?,
            )
        }
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Rem | BinaryOp::Div => {
            let (mut a, mut b) = coerce_pair(l, r, e)?;
            if !is_numeric(a.array.data_type()) {
                return Err(StreamError::Schema(format!(
                    "{e}: arithmetic needs numbers, got {}",
                    a.array.data_type()
                )));
            }
            if op == BinaryOp::Div {
                // True division, as in polars and Python.
                a = a.cast(&DataType::Float64)?;
                b = b.cast(&DataType::Float64)?;
            }
            let (da, db) = (a.datum(), b.datum());
            match op {
                BinaryOp::Add => num::add(&*da, &*db),
                BinaryOp::Sub => num::sub(&*da, &*db),
                BinaryOp::Mul => num::mul(&*da, &*db),
                BinaryOp::Div => num::div(&*da, &*db),
                // Python's (floored) modulo: the result takes the divisor's sign.
                _ => {
                    let n = if a.scalar {
                        b.array.len()
                    } else {
                        a.array.len()
                    };
                    let n = if a.scalar && b.scalar { 1 } else { n };
                    return Ok(Value {
                        array: floored_rem(&a, &b, n)?,
                        scalar,
                    });
                }
            }
            .ctx("arithmetic")?
        }
        _ => {
            let (a, b) = coerce_pair(l, r, e)?;
            let (da, db) = (a.datum(), b.datum());
            Arc::new(
                match op {
                    BinaryOp::Eq => cmp::eq(&*da, &*db),
                    BinaryOp::NotEq => cmp::neq(&*da, &*db),
                    BinaryOp::Lt => cmp::lt(&*da, &*db),
                    BinaryOp::LtEq => cmp::lt_eq(&*da, &*db),
                    BinaryOp::Gt => cmp::gt(&*da, &*db),
                    _ => cmp::gt_eq(&*da, &*db),
                }
                .ctx("comparison")?,
            )
        }
    };
    Ok(Value { array: out, scalar })
}

/// Python's modulo: the remainder takes the divisor's sign (`-7 % 3 == 2`). Where the truncated
/// remainder's sign differs from the divisor's, add the divisor once (no overflow: opposite
/// signs). Computed per element so -0.0 and NaN behave as in Python.
fn floored_rem(a: &Value, b: &Value, n: usize) -> Result<ArrayRef> {
    use arrow_array::types::Int64Type;
    let float = a.array.data_type().is_floating() || b.array.data_type().is_floating();
    if float {
        let (x, y) = (
            a.cast(&DataType::Float64)?.expand(n)?,
            b.cast(&DataType::Float64)?.expand(n)?,
        );
        let out: Float64Array = arrow_arith::arity::binary(
            x.as_primitive::<Float64Type>(),
            y.as_primitive::<Float64Type>(),
            |x, y| {
                let r = x % y;
                if r != 0.0 && (r < 0.0) != (y < 0.0) {
                    r + y
                } else {
                    r
                }
            },
        )
        .ctx("%")?;
        return Ok(Arc::new(out));
    }
    let (x, y) = (
        a.cast(&DataType::Int64)?.expand(n)?,
        b.cast(&DataType::Int64)?.expand(n)?,
    );
    let out: arrow_array::Int64Array = arrow_arith::arity::try_binary(
        x.as_primitive::<Int64Type>(),
        y.as_primitive::<Int64Type>(),
        |x, y| {
            if y == 0 {
                return Err(arrow_schema::ArrowError::DivideByZero);
            }
            let r = x.wrapping_rem(y);
            Ok(if r != 0 && (r < 0) != (y < 0) {
                r + y
            } else {
                r
            })
        },
    )
    .ctx("%")?;
    Ok(Arc::new(out))
}

fn float_map(v: &Value, f: impl Fn(f64) -> f64) -> Result<ArrayRef> {
    let a = arrow_cast::cast(&v.array, &DataType::Float64).ctx("math")?;
    let out: Float64Array = a.as_primitive::<Float64Type>().unary(f);
    Ok(Arc::new(out))
}

fn unary(op: UnaryOp, v: Value, e: &Expr) -> Result<Value> {
    let scalar = v.scalar;
    let v = normalise(v)?;
    let t = v.array.data_type().clone();
    let need_num = |name: &str| -> Result<()> {
        if is_numeric(&t) {
            Ok(())
        } else {
            Err(StreamError::Schema(format!(
                "{e}: {name} needs a number, got {t}"
            )))
        }
    };
    let out: ArrayRef = match op {
        UnaryOp::Neg => {
            need_num("negation")?;
            arrow_arith::numeric::neg(&v.array).ctx("neg")?
        }
        UnaryOp::Not => {
            let b = v
                .array
                .as_boolean_opt()
                .ok_or_else(|| StreamError::Schema(format!("{e}: ~ needs a bool, got {t}")))?;
            Arc::new(arrow_arith::boolean::not(b).ctx("not")?)
        }
        UnaryOp::Abs => {
            need_num("abs")?;
            if t.is_floating() {
                float_map(&v, f64::abs)?
            } else {
                let a = arrow_cast::cast(&v.array, &DataType::Int64).ctx("abs")?;
                Arc::new(
                    a.as_primitive::<arrow_array::types::Int64Type>()
                        .unary::<_, arrow_array::types::Int64Type>(|x| x.wrapping_abs()),
                )
            }
        }
        UnaryOp::Log => {
            need_num("log")?;
            float_map(&v, f64::ln)?
        }
        UnaryOp::Exp => {
            need_num("exp")?;
            float_map(&v, f64::exp)?
        }
        UnaryOp::Sqrt => {
            need_num("sqrt")?;
            float_map(&v, f64::sqrt)?
        }
        UnaryOp::IsNull => Arc::new(arrow_arith::boolean::is_null(&v.array).ctx("is_null")?),
        UnaryOp::IsNotNull => {
            Arc::new(arrow_arith::boolean::is_not_null(&v.array).ctx("is_not_null")?)
        }
    };
    Ok(Value { array: out, scalar })
}

impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Col(c) => write!(f, "col({c:?})"),
            Expr::Lit(l) => match l {
                Literal::Null => write!(f, "null"),
                Literal::Bool(b) => write!(f, "{b}"),
                Literal::Int(i) => write!(f, "{i}"),
                // Debug: `1.0`, not `1`, so a float literal is told from an int one.
                Literal::Float(x) => write!(f, "{x:?}"),
                Literal::Str(s) => write!(f, "{s:?}"),
            },
            Expr::Binary { op, left, right } => {
                let s = serde_json::to_value(op)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                write!(f, "({left} {s} {right})")
            }
            Expr::Unary { op, expr } => write!(f, "{op:?}({expr})").map(|_| ()),
            Expr::FillNull { expr, value } => write!(f, "{expr}.fill_null({value})"),
            Expr::Cast { expr, to } => write!(f, "{expr}.cast({to:?})"),
            Expr::Clip { expr, lower, upper } => {
                let bound =
                    |b: &Option<Box<Expr>>| b.as_ref().map_or("None".into(), |b| b.to_string());
                write!(f, "{expr}.clip({}, {})", bound(lower), bound(upper))
            }
            Expr::When {
                branches,
                otherwise,
            } => {
                for (i, (cond, then)) in branches.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "when({cond}).then({then})")?;
                }
                write!(f, ".otherwise({otherwise})")
            }
            Expr::Agg { func, expr } => match expr {
                Some(e) => write!(f, "{func:?}({e})").map(|_| ()),
                None => write!(f, "{func:?}()"),
            },
        }
    }
}
