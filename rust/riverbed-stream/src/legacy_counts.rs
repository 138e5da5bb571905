//! `count(x)` as riverbed planned it before 2026-12: `sum(x.is_not_null().cast("int64"))`.
//!
//! The engine counts non-null values itself now (`Agg { func: Count, expr: Some(x) }`), which
//! changes the signature and the state layout of an operator using it. A checkpoint taken by an
//! older riverbed holds the state of the old form, so a run resuming from one is built from the
//! plan with its counts written the old way ([`counts_as_sums`]): the results are the same
//! (a sum of 0/1 per record is the count of non-null values), and the run goes on checkpointing
//! in the form its checkpoints are in.

use crate::expr::{AggFunc, Expr};
use crate::plan::Node;

/// `plan` with every `count(x)` written as the old sum; `None` when it has none.
pub fn counts_as_sums(plan: &Node) -> Option<Node> {
    let mut out = plan.clone();
    let mut changed = false;
    rewrite_node(&mut out, &mut changed);
    changed.then_some(out)
}

fn rewrite_node(node: &mut Node, changed: &mut bool) {
    match node {
        Node::Window { aggs, .. } | Node::GroupBy { aggs, .. } => {
            for (_, e) in aggs {
                rewrite_expr(e, changed);
            }
        }
        _ => {}
    }
    match node {
        Node::Source { .. } => {}
        Node::Union { inputs } => inputs.iter_mut().for_each(|n| rewrite_node(n, changed)),
        Node::Join { left, right, .. } => {
            rewrite_node(left, changed);
            rewrite_node(right, changed);
        }
        Node::Filter { input, .. }
        | Node::WithColumns { input, .. }
        | Node::Select { input, .. }
        | Node::Drop { input, .. }
        | Node::Rename { input, .. }
        | Node::MapBatches { input, .. }
        | Node::KeyBy { input, .. }
        | Node::Window { input, .. }
        | Node::GroupBy { input, .. }
        | Node::Series { input, .. }
        | Node::StatefulMap { input, .. }
        | Node::Named { input, .. } => rewrite_node(input, changed),
    }
}

fn rewrite_expr(e: &mut Expr, changed: &mut bool) {
    if let Expr::Agg {
        func: AggFunc::Count,
        expr: Some(x),
    } = e
    {
        // Built from the JSON the old Python facade sent, so it is the value it decoded to.
        let old = serde_json::json!({"agg": {"func": "sum", "expr": {"cast": {
            "expr": {"unary": {"op": "is_not_null", "expr": serde_json::to_value(&**x).expect("an expression serialises")}},
            "to": "int64"
        }}}});
        *e = serde_json::from_value(old).expect("the old form of count(x) decodes");
        *changed = true;
        return;
    }
    match e {
        Expr::Binary { left, right, .. } => {
            rewrite_expr(left, changed);
            rewrite_expr(right, changed);
        }
        Expr::Unary { expr, .. } | Expr::Cast { expr, .. } => rewrite_expr(expr, changed),
        Expr::FillNull { expr, value } => {
            rewrite_expr(expr, changed);
            rewrite_expr(value, changed);
        }
        Expr::Clip { expr, lower, upper } => {
            rewrite_expr(expr, changed);
            for b in [lower, upper].into_iter().flatten() {
                rewrite_expr(b, changed);
            }
        }
        Expr::When {
            branches,
            otherwise,
        } => {
            for (c, v) in branches {
                rewrite_expr(c, changed);
                rewrite_expr(v, changed);
            }
            rewrite_expr(otherwise, changed);
        }
        Expr::Agg { expr, .. } => {
            if let Some(x) = expr {
                rewrite_expr(x, changed);
            }
        }
        Expr::Col(_) | Expr::Lit(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_of_a_column_is_written_as_the_old_sum_and_nothing_else_changes() {
        let decode = |v: serde_json::Value| -> Node { serde_json::from_value(v).unwrap() };
        let src = serde_json::json!({"op": "source", "source": 0, "timestamp": "ts"});
        let window = |aggs: serde_json::Value| {
            decode(serde_json::json!({"op": "window", "input": src,
                "window": {"tumbling": {"size_ms": 1000}}, "by": ["k"], "aggs": aggs}))
        };
        let native = window(serde_json::json!([
            ["n", {"agg": {"func": "count"}}],
            ["nx", {"agg": {"func": "count", "expr": {"col": "x"}}}],
            ["r", {"binary": {"op": "/", "left": {"agg": {"func": "count", "expr": {"col": "x"}}},
                               "right": {"agg": {"func": "count"}}}}]
        ]));
        // What the facade sent for the same pipeline before.
        let old_count = serde_json::json!({"agg": {"func": "sum", "expr": {"cast": {
            "expr": {"unary": {"op": "is_not_null", "expr": {"col": "x"}}}, "to": "int64"}}}});
        let old = window(serde_json::json!([
            ["n", {"agg": {"func": "count"}}],
            ["nx", old_count],
            ["r", {"binary": {"op": "/", "left": old_count, "right": {"agg": {"func": "count"}}}}]
        ]));
        let got = counts_as_sums(&native).expect("it has count(x)");
        assert_eq!(got, old);
        assert_eq!(
            crate::signature::signature(&got, &[]),
            crate::signature::signature(&old, &[])
        );
        assert_eq!(counts_as_sums(&old), None);
    }
}
