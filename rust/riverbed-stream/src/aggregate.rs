//! Aggregates: a set of primitive accumulators (count, sum, mean, min, max, first, last, std,
//! var, count_distinct) kept struct-of-arrays by state id, and output expressions over them
//! (`sum("pv") / sum("v")`). Nulls are skipped; an aggregate over no values is null.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::{ArrowContext, Result, StreamError};
use crate::expr::{AggFunc, Expr};

#[derive(Debug, Clone)]
struct Prim {
    func: AggFunc,
    input: Option<Expr>,
    /// Type the input is cast to before accumulating (Int64 or Float64; anything for counts).
    acc_type: DataType,
    out_type: DataType,
}

/// Compiled `agg(...)` arguments.
#[derive(Debug, Clone)]
pub struct AggSet {
    prims: Vec<Prim>,
    outputs: Vec<(String, Expr)>,
    prim_schema: SchemaRef,
    out_fields: Vec<Field>,
}

fn numeric_kind(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Timestamp(_, _) => Some(DataType::Int64),
        t if t.is_integer() => Some(DataType::Int64),
        t if t.is_floating() || t.is_numeric() => Some(DataType::Float64),
        DataType::Null => Some(DataType::Float64),
        _ => None,
    }
}

/// Replace every `Agg` node by a column of primitive results, collecting the primitives.
fn extract(e: &Expr, prims: &mut Vec<(AggFunc, Option<Expr>)>) -> Expr {
    match e {
        // mean = sum / count of non-null values: shares state with sum(x) and needs no
        // accumulator of its own.
        Expr::Agg {
            func: AggFunc::Mean,
            expr: Some(x),
        } => extract(
            &Expr::Binary {
                op: crate::expr::BinaryOp::Div,
                left: Box::new(Expr::Agg {
                    func: AggFunc::Sum,
                    expr: Some(x.clone()),
                }),
                right: Box::new(Expr::Agg {
                    func: AggFunc::Count,
                    expr: Some(x.clone()),
                }),
            },
            prims,
        ),
        Expr::Agg { func, expr } => {
            let key = (*func, expr.as_deref().cloned());
            let i = prims.iter().position(|p| *p == key).unwrap_or_else(|| {
                prims.push(key);
                prims.len() - 1
            });
            Expr::Col(format!("__agg{i}"))
        }
        Expr::Col(_) | Expr::Lit(_) => e.clone(),
        Expr::Binary { op, left, right } => Expr::Binary {
            op: *op,
            left: Box::new(extract(left, prims)),
            right: Box::new(extract(right, prims)),
        },
        Expr::Unary { op, expr } => Expr::Unary {
            op: *op,
            expr: Box::new(extract(expr, prims)),
        },
        Expr::FillNull { expr, value } => Expr::FillNull {
            expr: Box::new(extract(expr, prims)),
            value: Box::new(extract(value, prims)),
        },
        Expr::Cast { expr, to } => Expr::Cast {
            expr: Box::new(extract(expr, prims)),
            to: *to,
        },
        Expr::Clip { expr, lower, upper } => Expr::Clip {
            expr: Box::new(extract(expr, prims)),
            lower: lower.as_ref().map(|x| Box::new(extract(x, prims))),
            upper: upper.as_ref().map(|x| Box::new(extract(x, prims))),
        },
        Expr::When {
            branches,
            otherwise,
        } => Expr::When {
            branches: branches
                .iter()
                .map(|(c, t)| (extract(c, prims), extract(t, prims)))
                .collect(),
            otherwise: Box::new(extract(otherwise, prims)),
        },
    }
}

impl AggSet {
    pub fn compile(aggs: &[(String, Expr)], input: &SchemaRef, op: &str) -> Result<AggSet> {
        if aggs.is_empty() {
            return Err(StreamError::plan(
                op,
                "agg() needs at least one aggregate, e.g. n=rb.count()",
            ));
        }
        let mut raw = Vec::new();
        let mut outputs = Vec::new();
        let mut owner: Vec<String> = Vec::new();
        for (name, e) in aggs {
            if !e.has_agg() {
                return Err(StreamError::plan(
                    op,
                    format!("'{name}' = {e} is not an aggregate; use rb.sum(...), rb.count(), ..."),
                ));
            }
            outputs.push((name.clone(), extract(e, &mut raw)));
            owner.resize(raw.len(), name.clone());
        }
        let mut prims = Vec::new();
        for ((func, input_expr), field) in raw.into_iter().zip(owner) {
            let named = |e: StreamError| crate::operator::name_field(e, &field);
            if let Some(ie) = &input_expr {
                if ie.has_agg() {
                    return Err(StreamError::plan(
                        op,
                        format!("{func:?}({ie}): aggregates cannot be nested"),
                    ));
                }
            }
            let in_type = match &input_expr {
                Some(ie) => Some(ie.data_type(input, op).map_err(named)?),
                None if func == AggFunc::Count => None,
                None => {
                    return Err(StreamError::plan(
                        op,
                        format!("{func:?}() needs a column or expression"),
                    ))
                }
            };
            let (acc_type, out_type) = match (func, &in_type) {
                (AggFunc::Count | AggFunc::CountDistinct, t) => {
                    (t.clone().unwrap_or(DataType::Null), DataType::Int64)
                }
                (f, Some(t)) => {
                    let k = numeric_kind(t).ok_or_else(|| {
                        named(StreamError::plan(
                            op,
                            format!(
                                "{f:?}({}) needs a numeric column, got {t}",
                                input_expr
                                    .as_ref()
                                    .map(|e| e.to_string())
                                    .unwrap_or_default()
                            ),
                        ))
                    })?;
                    match f {
                        AggFunc::Sum
                        | AggFunc::Min
                        | AggFunc::Max
                        | AggFunc::First
                        | AggFunc::Last => (k.clone(), k),
                        _ => (DataType::Float64, DataType::Float64),
                    }
                }
                (_, None) => unreachable!("checked above"),
            };
            prims.push(Prim {
                func,
                input: input_expr,
                acc_type,
                out_type,
            });
        }
        let prim_schema: SchemaRef = Arc::new(Schema::new(
            prims
                .iter()
                .enumerate()
                .map(|(i, p)| Field::new(format!("__agg{i}"), p.out_type.clone(), true))
                .collect::<Vec<_>>(),
        ));
        let mut out_fields = Vec::new();
        for (name, e) in &outputs {
            let t = e
                .data_type(&prim_schema, op)
                .map_err(|err| crate::operator::name_field(err, name))?;
            out_fields.push(Field::new(name, t, true));
        }
        Ok(AggSet {
            prims,
            outputs,
            prim_schema,
            out_fields,
        })
    }

    pub fn output_fields(&self) -> &[Field] {
        &self.out_fields
    }

    pub fn new_store(&self) -> Result<AccStore> {
        let cols = self
            .prims
            .iter()
            .map(|p| {
                Ok(match p.func {
                    AggFunc::Count => PrimState::Count(Vec::new()),
                    AggFunc::Sum if p.acc_type == DataType::Int64 => {
                        PrimState::SumI(Vec::new(), Vec::new())
                    }
                    AggFunc::Sum | AggFunc::Mean => PrimState::SumF(Vec::new(), Vec::new()),
                    // Integers (and timestamps) keep exact int64 state: f64 would round past 2^53.
                    AggFunc::Min if p.acc_type == DataType::Int64 => {
                        PrimState::MinI(Vec::new(), Vec::new())
                    }
                    AggFunc::Max if p.acc_type == DataType::Int64 => {
                        PrimState::MaxI(Vec::new(), Vec::new())
                    }
                    AggFunc::First if p.acc_type == DataType::Int64 => {
                        PrimState::FirstI(Vec::new(), Vec::new(), Vec::new())
                    }
                    AggFunc::Last if p.acc_type == DataType::Int64 => {
                        PrimState::LastI(Vec::new(), Vec::new(), Vec::new())
                    }
                    AggFunc::Min => PrimState::Min(Vec::new(), Vec::new()),
                    AggFunc::Max => PrimState::Max(Vec::new(), Vec::new()),
                    AggFunc::First => PrimState::First(Vec::new(), Vec::new(), Vec::new()),
                    AggFunc::Last => PrimState::Last(Vec::new(), Vec::new(), Vec::new()),
                    AggFunc::Std | AggFunc::Var => {
                        PrimState::Moments(Vec::new(), Vec::new(), Vec::new())
                    }
                    AggFunc::CountDistinct => PrimState::Distinct(
                        Vec::new(),
                        RowConverter::new(vec![SortField::new(p.acc_type.clone())])
                            .ctx("count_distinct")?,
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AccStore {
            cols,
            len: 0,
            free: Vec::new(),
        })
    }

    /// Evaluate and cast each primitive's input on `batch`.
    pub fn inputs(&self, batch: &RecordBatch) -> Result<Vec<Option<ArrayRef>>> {
        self.prims
            .iter()
            .map(|p| {
                let Some(e) = &p.input else { return Ok(None) };
                let a = e.evaluate(batch)?;
                let a = match a.data_type() {
                    DataType::Timestamp(u, _) if *u != TimeUnit::Millisecond => {
                        arrow_cast::cast(&a, &DataType::Timestamp(TimeUnit::Millisecond, None))
                            .ctx("aggregate input")?
                    }
                    _ => a,
                };
                if matches!(p.func, AggFunc::Count | AggFunc::CountDistinct) {
                    return Ok(Some(a));
                }
                Ok(Some(
                    arrow_cast::cast(&a, &p.acc_type).ctx("aggregate input")?,
                ))
            })
            .collect()
    }

    /// The output columns for states `sids`, in order.
    pub fn finish(&self, store: &AccStore, sids: &[u32]) -> Result<Vec<ArrayRef>> {
        let cols: Vec<ArrayRef> = store
            .cols
            .iter()
            .zip(&self.prims)
            .map(|(c, p)| c.finish(p, sids))
            .collect::<Result<_>>()?;
        let batch =
            RecordBatch::try_new(self.prim_schema.clone(), cols).ctx("aggregate results")?;
        self.outputs
            .iter()
            .zip(&self.out_fields)
            .map(|((_, e), f)| {
                let a = e.evaluate(&batch)?;
                if a.data_type() == f.data_type() {
                    Ok(a)
                } else {
                    arrow_cast::cast(&a, f.data_type()).ctx("aggregate output")
                }
            })
            .collect()
    }
}

enum Kind {
    Min,
    First,
    Other,
}

#[derive(Debug)]
enum PrimState {
    Count(Vec<i64>),
    /// sum, values seen
    SumI(Vec<i64>, Vec<i64>),
    SumF(Vec<f64>, Vec<i64>),
    Min(Vec<f64>, Vec<i64>),
    Max(Vec<f64>, Vec<i64>),
    /// event time, value, values seen
    First(Vec<i64>, Vec<f64>, Vec<i64>),
    Last(Vec<i64>, Vec<f64>, Vec<i64>),
    /// Welford: n, mean, m2
    Moments(Vec<i64>, Vec<f64>, Vec<f64>),
    /// Exact int64 variants: value, values seen (min/max); event time, value, seen (first/last).
    MinI(Vec<i64>, Vec<i64>),
    MaxI(Vec<i64>, Vec<i64>),
    FirstI(Vec<i64>, Vec<i64>, Vec<i64>),
    LastI(Vec<i64>, Vec<i64>, Vec<i64>),
    Distinct(Vec<HashSet<Box<[u8]>>>, RowConverter),
}

/// Accumulator states, one slot per state id, reused after `free`.
#[derive(Debug)]
pub struct AccStore {
    cols: Vec<PrimState>,
    len: usize,
    free: Vec<u32>,
}

impl AccStore {
    pub fn alloc(&mut self) -> u32 {
        if let Some(s) = self.free.pop() {
            return s;
        }
        let s = self.len;
        self.len += 1;
        for c in &mut self.cols {
            match c {
                PrimState::Count(n) => n.push(0),
                PrimState::SumI(s, n) => {
                    s.push(0);
                    n.push(0)
                }
                PrimState::SumF(s, n) => {
                    s.push(0.0);
                    n.push(0)
                }
                PrimState::Min(v, n) => {
                    v.push(f64::INFINITY);
                    n.push(0)
                }
                PrimState::Max(v, n) => {
                    v.push(f64::NEG_INFINITY);
                    n.push(0)
                }
                PrimState::First(t, v, n) | PrimState::Last(t, v, n) => {
                    t.push(0);
                    v.push(0.0);
                    n.push(0)
                }
                PrimState::Moments(n, m, m2) => {
                    n.push(0);
                    m.push(0.0);
                    m2.push(0.0)
                }
                PrimState::MinI(v, n) | PrimState::MaxI(v, n) => {
                    v.push(0);
                    n.push(0)
                }
                PrimState::FirstI(t, v, n) | PrimState::LastI(t, v, n) => {
                    t.push(0);
                    v.push(0);
                    n.push(0)
                }
                PrimState::Distinct(sets, _) => sets.push(HashSet::new()),
            }
        }
        s as u32
    }

    /// Reset a state and make its slot available again.
    pub fn free(&mut self, sid: u32) {
        let i = sid as usize;
        for c in &mut self.cols {
            match c {
                PrimState::Count(n) => n[i] = 0,
                PrimState::SumI(s, n) => {
                    s[i] = 0;
                    n[i] = 0
                }
                PrimState::SumF(s, n) => {
                    s[i] = 0.0;
                    n[i] = 0
                }
                PrimState::Min(v, n) => {
                    v[i] = f64::INFINITY;
                    n[i] = 0
                }
                PrimState::Max(v, n) => {
                    v[i] = f64::NEG_INFINITY;
                    n[i] = 0
                }
                PrimState::First(t, v, n) | PrimState::Last(t, v, n) => {
                    t[i] = 0;
                    v[i] = 0.0;
                    n[i] = 0
                }
                PrimState::Moments(n, m, m2) => {
                    n[i] = 0;
                    m[i] = 0.0;
                    m2[i] = 0.0
                }
                PrimState::MinI(v, n) | PrimState::MaxI(v, n) => {
                    v[i] = 0;
                    n[i] = 0
                }
                PrimState::FirstI(t, v, n) | PrimState::LastI(t, v, n) => {
                    t[i] = 0;
                    v[i] = 0;
                    n[i] = 0
                }
                PrimState::Distinct(sets, _) => sets[i] = HashSet::new(),
            }
        }
        self.free.push(sid);
    }

    /// About how many bytes `snapshot` writes (distinct-value sets not counted).
    pub fn state_bytes(&self) -> usize {
        let columns: usize = self
            .cols
            .iter()
            .map(|c| match c {
                PrimState::Count(_) => 1,
                PrimState::Distinct(..) => 0,
                PrimState::SumI(..)
                | PrimState::MinI(..)
                | PrimState::MaxI(..)
                | PrimState::SumF(..)
                | PrimState::Min(..)
                | PrimState::Max(..) => 2,
                _ => 3,
            })
            .sum();
        16 + self.free.len() * 4 + self.cols.len() * 24 + columns * 8 * self.len
    }

    /// Every state slot (for checkpoints).
    pub fn snapshot(&self, w: &mut crate::state::StateWriter) {
        w.len(self.len);
        w.u32s(&self.free);
        w.len(self.cols.len());
        for c in &self.cols {
            match c {
                PrimState::Count(n) => w.i64s(n),
                PrimState::SumI(s, n) | PrimState::MinI(s, n) | PrimState::MaxI(s, n) => {
                    w.i64s(s);
                    w.i64s(n)
                }
                PrimState::SumF(s, n) | PrimState::Min(s, n) | PrimState::Max(s, n) => {
                    w.f64s(s);
                    w.i64s(n)
                }
                PrimState::First(t, v, n) | PrimState::Last(t, v, n) => {
                    w.i64s(t);
                    w.f64s(v);
                    w.i64s(n)
                }
                PrimState::Moments(n, m, m2) => {
                    w.i64s(n);
                    w.f64s(m);
                    w.f64s(m2)
                }
                PrimState::FirstI(t, v, n) | PrimState::LastI(t, v, n) => {
                    w.i64s(t);
                    w.i64s(v);
                    w.i64s(n)
                }
                PrimState::Distinct(sets, _) => {
                    w.len(sets.len());
                    for s in sets {
                        w.len(s.len());
                        for v in s {
                            w.bytes(v);
                        }
                    }
                }
            }
        }
    }

    /// Load the slots of a snapshot of a store of the same aggregates.
    pub fn restore(&mut self, r: &mut crate::state::StateReader<'_>) -> Result<()> {
        let len = r.len()?;
        let free = r.u32s()?;
        if r.len()? != self.cols.len() {
            return Err(StreamError::Checkpoint("the aggregates changed".into()));
        }
        let check = |v: usize| -> Result<()> {
            if v != len {
                return Err(StreamError::Checkpoint("mangled aggregate state".into()));
            }
            Ok(())
        };
        for c in &mut self.cols {
            match c {
                PrimState::Count(n) => {
                    *n = r.i64s()?;
                    check(n.len())?
                }
                PrimState::SumI(s, n) | PrimState::MinI(s, n) | PrimState::MaxI(s, n) => {
                    *s = r.i64s()?;
                    *n = r.i64s()?;
                    check(s.len())?;
                    check(n.len())?
                }
                PrimState::SumF(s, n) | PrimState::Min(s, n) | PrimState::Max(s, n) => {
                    *s = r.f64s()?;
                    *n = r.i64s()?;
                    check(s.len())?;
                    check(n.len())?
                }
                PrimState::First(t, v, n) | PrimState::Last(t, v, n) => {
                    *t = r.i64s()?;
                    *v = r.f64s()?;
                    *n = r.i64s()?;
                    check(t.len())?;
                    check(v.len())?;
                    check(n.len())?
                }
                PrimState::Moments(n, m, m2) => {
                    *n = r.i64s()?;
                    *m = r.f64s()?;
                    *m2 = r.f64s()?;
                    check(n.len())?;
                    check(m.len())?;
                    check(m2.len())?
                }
                PrimState::FirstI(t, v, n) | PrimState::LastI(t, v, n) => {
                    *t = r.i64s()?;
                    *v = r.i64s()?;
                    *n = r.i64s()?;
                    check(t.len())?;
                    check(v.len())?;
                    check(n.len())?
                }
                PrimState::Distinct(sets, _) => {
                    let n = r.len()?;
                    check(n)?;
                    *sets = (0..n)
                        .map(|_| {
                            let k = r.len()?;
                            (0..k)
                                .map(|_| Ok(r.bytes()?.to_vec().into_boxed_slice()))
                                .collect::<Result<HashSet<_>>>()
                        })
                        .collect::<Result<Vec<_>>>()?;
                }
            }
        }
        self.len = len;
        self.free = free;
        Ok(())
    }

    /// Live states (allocated and not freed).
    pub fn live(&self) -> usize {
        self.len - self.free.len()
    }

    /// Add input rows `rows[j]` to states `sids[j]`; `ts` holds every input row's event time.
    pub fn update(
        &mut self,
        rows: &[u32],
        sids: &[u32],
        inputs: &[Option<ArrayRef>],
        ts: &[i64],
    ) -> Result<()> {
        for (c, input) in self.cols.iter_mut().zip(inputs) {
            c.update(rows, sids, input.as_ref(), ts)?;
        }
        Ok(())
    }

    /// Fold state `src` into `dst` (session merges); `src` is freed.
    pub fn merge(&mut self, dst: u32, src: u32) {
        let (d, s) = (dst as usize, src as usize);
        for c in &mut self.cols {
            match c {
                PrimState::Count(n) => n[d] += n[s],
                PrimState::SumI(v, n) => {
                    v[d] = v[d].wrapping_add(v[s]);
                    n[d] += n[s]
                }
                PrimState::SumF(v, n) => {
                    v[d] += v[s];
                    n[d] += n[s]
                }
                PrimState::Min(v, n) => {
                    v[d] = v[d].min(v[s]);
                    n[d] += n[s]
                }
                PrimState::Max(v, n) => {
                    v[d] = v[d].max(v[s]);
                    n[d] += n[s]
                }
                PrimState::First(t, v, n) => {
                    if n[s] > 0 && (n[d] == 0 || t[s] < t[d]) {
                        t[d] = t[s];
                        v[d] = v[s];
                    }
                    n[d] += n[s]
                }
                PrimState::Last(t, v, n) => {
                    if n[s] > 0 && (n[d] == 0 || t[s] >= t[d]) {
                        t[d] = t[s];
                        v[d] = v[s];
                    }
                    n[d] += n[s]
                }
                PrimState::Moments(n, m, m2) => {
                    let (na, nb) = (n[d] as f64, n[s] as f64);
                    if n[s] > 0 {
                        let tot = na + nb;
                        let delta = m[s] - m[d];
                        m[d] += delta * nb / tot;
                        m2[d] += m2[s] + delta * delta * na * nb / tot;
                        n[d] += n[s];
                    }
                }
                PrimState::MinI(v, n) => {
                    if n[s] > 0 && (n[d] == 0 || v[s] < v[d]) {
                        v[d] = v[s];
                    }
                    n[d] += n[s]
                }
                PrimState::MaxI(v, n) => {
                    if n[s] > 0 && (n[d] == 0 || v[s] > v[d]) {
                        v[d] = v[s];
                    }
                    n[d] += n[s]
                }
                PrimState::FirstI(t, v, n) => {
                    if n[s] > 0 && (n[d] == 0 || t[s] < t[d]) {
                        t[d] = t[s];
                        v[d] = v[s];
                    }
                    n[d] += n[s]
                }
                PrimState::LastI(t, v, n) => {
                    if n[s] > 0 && (n[d] == 0 || t[s] >= t[d]) {
                        t[d] = t[s];
                        v[d] = v[s];
                    }
                    n[d] += n[s]
                }
                PrimState::Distinct(sets, _) => {
                    let src_set = std::mem::take(&mut sets[s]);
                    sets[d].extend(src_set);
                }
            }
        }
        self.free(src);
    }
}

fn floats(a: Option<&ArrayRef>) -> Option<&Float64Array> {
    a.map(|a| a.as_primitive::<Float64Type>())
}

impl PrimState {
    fn update(
        &mut self,
        rows: &[u32],
        sids: &[u32],
        input: Option<&ArrayRef>,
        ts: &[i64],
    ) -> Result<()> {
        let self_kind = match self {
            PrimState::MinI(..) => Kind::Min,
            PrimState::FirstI(..) => Kind::First,
            _ => Kind::Other,
        };
        macro_rules! each {
            ($arr:expr, |$r:ident, $s:ident, $x:ident| $body:block) => {{
                let arr = $arr;
                let vals = arr.values();
                if arr.null_count() == 0 {
                    for (&$r, &$s) in rows.iter().zip(sids) {
                        let $x = vals[$r as usize];
                        let $s = $s as usize;
                        $body
                    }
                } else {
                    for (&$r, &$s) in rows.iter().zip(sids) {
                        if arr.is_null($r as usize) {
                            continue;
                        }
                        let $x = vals[$r as usize];
                        let $s = $s as usize;
                        $body
                    }
                }
            }};
        }
        match self {
            PrimState::Count(n) => match input {
                None => {
                    for &s in sids {
                        n[s as usize] += 1;
                    }
                }
                Some(a) => {
                    for (&r, &s) in rows.iter().zip(sids) {
                        if a.is_valid(r as usize) {
                            n[s as usize] += 1;
                        }
                    }
                }
            },
            PrimState::SumI(v, n) => {
                let a = input.map(|a| a.as_primitive::<Int64Type>());
                if let Some(a) = a {
                    each!(a, |_r, s, x| {
                        v[s] = v[s].wrapping_add(x);
                        n[s] += 1;
                    });
                }
            }
            PrimState::SumF(v, n) => {
                if let Some(a) = floats(input) {
                    each!(a, |_r, s, x| {
                        v[s] += x;
                        n[s] += 1;
                    });
                }
            }
            PrimState::Min(v, n) => {
                if let Some(a) = input {
                    let a = arrow_cast::cast(a, &DataType::Float64).ctx("min")?;
                    each!(a.as_primitive::<Float64Type>(), |_r, s, x| {
                        if x < v[s] || n[s] == 0 {
                            v[s] = x;
                        }
                        n[s] += 1;
                    });
                }
            }
            PrimState::Max(v, n) => {
                if let Some(a) = input {
                    let a = arrow_cast::cast(a, &DataType::Float64).ctx("max")?;
                    each!(a.as_primitive::<Float64Type>(), |_r, s, x| {
                        if x > v[s] || n[s] == 0 {
                            v[s] = x;
                        }
                        n[s] += 1;
                    });
                }
            }
            PrimState::First(t, v, n) => {
                if let Some(a) = input {
                    let a = arrow_cast::cast(a, &DataType::Float64).ctx("first")?;
                    each!(a.as_primitive::<Float64Type>(), |r, s, x| {
                        let rt = ts[r as usize];
                        if n[s] == 0 || rt < t[s] {
                            t[s] = rt;
                            v[s] = x;
                        }
                        n[s] += 1;
                    });
                }
            }
            PrimState::Last(t, v, n) => {
                if let Some(a) = input {
                    let a = arrow_cast::cast(a, &DataType::Float64).ctx("last")?;
                    each!(a.as_primitive::<Float64Type>(), |r, s, x| {
                        let rt = ts[r as usize];
                        if n[s] == 0 || rt >= t[s] {
                            t[s] = rt;
                            v[s] = x;
                        }
                        n[s] += 1;
                    });
                }
            }
            PrimState::Moments(n, m, m2) => {
                if let Some(a) = floats(input) {
                    each!(a, |_r, s, x| {
                        n[s] += 1;
                        let d = x - m[s];
                        m[s] += d / n[s] as f64;
                        m2[s] += d * (x - m[s]);
                    });
                }
            }
            PrimState::MinI(v, n) | PrimState::MaxI(v, n) => {
                let min = matches!(self_kind, Kind::Min);
                if let Some(a) = input.map(|a| a.as_primitive::<Int64Type>()) {
                    each!(a, |_r, s, x| {
                        if n[s] == 0 || (min && x < v[s]) || (!min && x > v[s]) {
                            v[s] = x;
                        }
                        n[s] += 1;
                    });
                }
            }
            PrimState::FirstI(t, v, n) | PrimState::LastI(t, v, n) => {
                let first = matches!(self_kind, Kind::First);
                if let Some(a) = input.map(|a| a.as_primitive::<Int64Type>()) {
                    each!(a, |r, s, x| {
                        let rt = ts[r as usize];
                        if n[s] == 0 || (first && rt < t[s]) || (!first && rt >= t[s]) {
                            t[s] = rt;
                            v[s] = x;
                        }
                        n[s] += 1;
                    });
                }
            }
            PrimState::Distinct(sets, conv) => {
                if let Some(a) = input {
                    let encoded = conv
                        .convert_columns(std::slice::from_ref(a))
                        .ctx("count_distinct")?;
                    for (&r, &s) in rows.iter().zip(sids) {
                        if a.is_valid(r as usize) {
                            let row = encoded.row(r as usize);
                            let set = &mut sets[s as usize];
                            if !set.contains(row.as_ref()) {
                                set.insert(row.as_ref().into());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&self, p: &Prim, sids: &[u32]) -> Result<ArrayRef> {
        let opt_f = |n: &[i64], f: &dyn Fn(usize) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter(sids.iter().map(|&s| {
                let s = s as usize;
                (n[s] > 0).then(|| f(s))
            })))
        };
        let arr: ArrayRef = match self {
            PrimState::Count(n) => Arc::new(Int64Array::from_iter_values(
                sids.iter().map(|&s| n[s as usize]),
            )),
            PrimState::Distinct(sets, _) => Arc::new(Int64Array::from_iter_values(
                sids.iter().map(|&s| sets[s as usize].len() as i64),
            )),
            PrimState::SumI(v, n) => Arc::new(Int64Array::from_iter(sids.iter().map(|&s| {
                let s = s as usize;
                (n[s] > 0).then(|| v[s])
            }))),
            PrimState::SumF(v, n) if p.func == AggFunc::Mean => opt_f(n, &|s| v[s] / n[s] as f64),
            PrimState::SumF(v, n) | PrimState::Min(v, n) | PrimState::Max(v, n) => {
                opt_f(n, &|s| v[s])
            }
            PrimState::First(_, v, n) | PrimState::Last(_, v, n) => opt_f(n, &|s| v[s]),
            PrimState::MinI(v, n)
            | PrimState::MaxI(v, n)
            | PrimState::FirstI(_, v, n)
            | PrimState::LastI(_, v, n) => Arc::new(Int64Array::from_iter(sids.iter().map(|&s| {
                let s = s as usize;
                (n[s] > 0).then(|| v[s])
            }))),
            PrimState::Moments(n, _, m2) => {
                let std = p.func == AggFunc::Std;
                Arc::new(Float64Array::from_iter(sids.iter().map(|&s| {
                    let s = s as usize;
                    (n[s] > 1).then(|| {
                        let var = m2[s] / (n[s] - 1) as f64;
                        if std {
                            var.sqrt()
                        } else {
                            var
                        }
                    })
                })))
            }
        };
        if arr.data_type() == &p.out_type {
            Ok(arr)
        } else {
            arrow_cast::cast(&arr, &p.out_type).ctx("aggregate result")
        }
    }
}
