//! `explain()`: a plan as text, one line per node, every expression and setting in full.
//!
//! The text of riverbed 0.x before checkpoint format 3 ("legacy") is kept too: checkpoints of
//! format 1 and 2 hold it (the whole plan, and each operator's line as its signature), and a
//! restart compares against it to find their state. It printed `when(..)` and `.clip(..)`
//! without their contents, which is why format 3 identifies operators by `signature.rs` instead.

use crate::expr::{Expr, Literal};
use crate::plan::Node;
use crate::source::SourceSpec;

/// The plan under `node`, one indented line per node (`legacy`: as format-2 checkpoints hold it).
pub fn explain(node: &Node, specs: &[SourceSpec], legacy: bool) -> String {
    let mut out = String::new();
    walk(node, specs, 0, legacy, &mut out);
    out
}

fn walk(node: &Node, specs: &[SourceSpec], depth: usize, legacy: bool, out: &mut String) {
    out.push_str(&"  ".repeat(depth));
    out.push_str(&describe(node, specs, legacy));
    out.push('\n');
    for i in node.inputs() {
        walk(i, specs, depth + 1, legacy, out);
    }
}

/// An expression as `explain()` prints it (`legacy`: as riverbed did before checkpoint format 3).
fn expr(e: &Expr, legacy: bool) -> String {
    if legacy {
        Legacy(e).to_string()
    } else {
        e.to_string()
    }
}

fn named_exprs(items: &[(String, Expr)], legacy: bool) -> String {
    items
        .iter()
        .map(|(n, e)| format!("{n}={}", expr(e, legacy)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plan node's line of `explain()`: what it does, without its inputs.
pub fn describe(node: &Node, specs: &[SourceSpec], legacy: bool) -> String {
    match node {
        Node::Source {
            source,
            timestamp,
            lateness_ms,
            ..
        } => {
            let what = specs.get(*source).map_or("?".to_string(), |s| {
                format!(
                    "{}, {} columns, {} partition(s)",
                    s.origin(),
                    s.schema().fields().len(),
                    s.partitions()
                )
            });
            format!(
                "read #{source} [{what}] event_time={} lateness={lateness_ms}ms",
                timestamp.as_deref().unwrap_or("record timestamp")
            )
        }
        Node::Filter { predicate, .. } => format!("filter {}", expr(predicate, legacy)),
        Node::WithColumns { columns, .. } => {
            format!("with_columns {}", named_exprs(columns, legacy))
        }
        Node::Select { columns, .. } => format!("select {columns:?}"),
        Node::Drop { columns, .. } => format!("drop {columns:?}"),
        Node::Rename { mapping, .. } => format!("rename {mapping:?}"),
        Node::Union { inputs } => format!("union of {}", inputs.len()),
        Node::KeyBy { columns, .. } => format!("key_by {columns:?}"),
        Node::Series { by, ops, .. } => {
            let ops = format!("{ops:?}");
            // Format-2 text predates `min_periods` (never set in a plan of that time).
            let ops = if legacy {
                ops.replace(", min_periods: None", "")
            } else {
                ops
            };
            format!("series by {by:?} {ops}")
        }
        Node::MapBatches { udf, name, .. } => format!(
            "map_batches {}",
            name.clone().unwrap_or_else(|| format!("udf #{udf}"))
        ),
        Node::Window {
            window,
            by,
            emit,
            aggs,
            ..
        } => format!(
            "window {} {window:?} by {by:?} emit={emit:?} aggs [{}]",
            window.kind(),
            named_exprs(aggs, legacy)
        ),
        Node::Join {
            kind,
            left_by,
            right_by,
            left_on,
            right_on,
            suffix,
            right_columns,
            ..
        } => {
            let mut s = format!(
                "{} {kind:?} left_by {left_by:?} right_by {right_by:?}{}",
                kind.name(),
                right_on
                    .as_ref()
                    .map_or(String::new(), |r| format!(" right_on={r}"))
            );
            if !legacy {
                if let Some(l) = left_on {
                    s.push_str(&format!(" left_on={l}"));
                }
                s.push_str(&format!(" suffix={suffix:?}"));
                if let Some(c) = right_columns {
                    s.push_str(&format!(" right_columns={c:?}"));
                }
            }
            s
        }
        Node::StatefulMap { by, udf, name, .. } => format!(
            "stateful_map {} by {by:?}",
            name.clone().unwrap_or_else(|| format!("udf #{udf}"))
        ),
        Node::GroupBy { by, aggs, .. } => {
            format!("group_by {by:?} aggs [{}]", named_exprs(aggs, legacy))
        }
        Node::Named { name, .. } => format!("named {name:?}"),
    }
}

/// An expression as riverbed printed it before checkpoint format 3 (contents of `when` and
/// `clip` elided). Frozen: format-2 checkpoints hold this text.
struct Legacy<'a>(&'a Expr);

impl std::fmt::Display for Legacy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Expr::Col(c) => write!(f, "col({c:?})"),
            Expr::Lit(l) => match l {
                Literal::Null => write!(f, "null"),
                Literal::Bool(b) => write!(f, "{b}"),
                Literal::Int(i) => write!(f, "{i}"),
                Literal::Float(x) => write!(f, "{x}"),
                Literal::Str(s) => write!(f, "{s:?}"),
            },
            Expr::Binary { op, left, right } => {
                let s = serde_json::to_value(op)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                write!(f, "({} {s} {})", Legacy(left), Legacy(right))
            }
            Expr::Unary { op, expr } => write!(f, "{op:?}({})", Legacy(expr)),
            Expr::FillNull { expr, value } => {
                write!(f, "{}.fill_null({})", Legacy(expr), Legacy(value))
            }
            Expr::Cast { expr, to } => write!(f, "{}.cast({to:?})", Legacy(expr)),
            Expr::Clip { expr, .. } => write!(f, "{}.clip(..)", Legacy(expr)),
            Expr::When { .. } => write!(f, "when(..)"),
            Expr::Agg { func, expr } => match expr {
                Some(e) => write!(f, "{func:?}({})", Legacy(e)),
                None => write!(f, "{func:?}()"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(json: &str) -> Expr {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn explain_prints_every_expression_in_full() {
        let x = e(
            r#"{"when": {"branches": [[{"binary": {"op": ">", "left": {"col": "x"}, "right": {"lit": 1}}}, {"lit": 1.0}],
                                             [{"unary": {"op": "is_null", "expr": {"col": "y"}}}, {"lit": null}]],
                               "otherwise": {"clip": {"expr": {"col": "x"}, "lower": {"lit": -2.5}, "upper": null}}}}"#,
        );
        assert_eq!(
            x.to_string(),
            r#"when((col("x") > 1)).then(1.0).when(IsNull(col("y"))).then(null).otherwise(col("x").clip(-2.5, None))"#
        );
        assert_eq!(Legacy(&x).to_string(), "when(..)");
        let c = e(r#"{"clip": {"expr": {"col": "x"}, "upper": {"lit": 3}}}"#);
        assert_eq!(c.to_string(), r#"col("x").clip(None, 3)"#);
        assert_eq!(Legacy(&c).to_string(), r#"col("x").clip(..)"#);
    }
}
