//! An operator's identity in a checkpoint: a canonical serialisation of its own definition.
//!
//! A restart with a changed plan restores an operator's state only when its signature is the
//! one it was checkpointed with, so the signature must change with every part of the
//! definition: it is the plan node as serde writes it (the plan format Python hands over),
//! without its inputs, as JSON with object keys sorted and no whitespace. Nothing depends on the
//! order of a Python dict or on how `explain()` prints a node.
//!
//! It must also stay the same across riverbed versions for an unchanged plan. So: a field added
//! to a plan node later is left out when it holds its default (`skip_serializing_if`), and the
//! settings that only say when the watermark moves, not what the state holds (`idle_timeout_ms`),
//! are left out. A test below pins the exact text.

use serde_json::Value;

use crate::plan::Node;
use crate::source::SourceSpec;

/// Fields of a node that are its inputs, not its definition.
const INPUTS: [&str; 4] = ["input", "inputs", "left", "right"];

/// The signature of plan node `node`: `<op> <canonical JSON>`, e.g.
/// `window {"aggs":[["n",{"agg":{"func":"count"}}]],"by":["k"],"emit":"final","op":"window",...}`.
/// A source also names what it reads (topic or table, its columns with their types, and its
/// partitions), so a checkpoint's source positions are only taken for the same input, and state
/// kept for one column type is never read back as another (`read(schema=)` changed, or a schema
/// inferred from a sample that grew).
pub fn signature(node: &Node, specs: &[SourceSpec]) -> String {
    let mut v = serde_json::to_value(node).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        for k in INPUTS {
            m.remove(k);
        }
        if let Node::Source { source, .. } = node {
            m.remove("idle_timeout_ms");
            if let Some(s) = specs.get(*source) {
                m.insert("origin".into(), Value::from(s.origin()));
                m.insert("columns".into(), Value::from(s.schema().fields().len()));
                let types = s
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| {
                        Value::from(vec![f.name().to_string(), format!("{:?}", f.data_type())])
                    })
                    .collect::<Vec<_>>();
                m.insert(SCHEMA.into(), Value::from(types));
                m.insert("partitions".into(), Value::from(s.partitions()));
            }
        }
    }
    let mut out = String::from(node.op_name());
    out.push(' ');
    canonical(&v, &mut out);
    out
}

/// The key of a source signature's column types.
const SCHEMA: &str = "schema";

/// Whether the checkpointed signature `stored` is that of the node whose signature is now
/// `mine`. A source's signature names its column types since 2026-12; one stored by an older
/// riverbed, without them, is compared without them (its checkpoints keep working).
pub fn fits(stored: &str, mine: &str) -> bool {
    if stored == mine {
        return true;
    }
    let (Some(old), Some(mut new)) = (read_fields(stored), read_fields(mine)) else {
        return false;
    };
    if old.contains_key(SCHEMA) || new.remove(SCHEMA).is_none() {
        return false;
    }
    // The stored text is canonical already: compare it with this one's, types left out.
    let mut text = String::from("read ");
    canonical(&Value::Object(new), &mut text);
    text == stored
}

/// The fields of a source's signature (`read {...}`); `None` for any other.
fn read_fields(sig: &str) -> Option<serde_json::Map<String, Value>> {
    match serde_json::from_str::<Value>(sig.strip_prefix("read ")?) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// What differs between two signatures of a source, in words (`column 'v' was Int64, is
/// Float64; partitions was 1, is 2`); `None` when they do not parse as source signatures.
pub fn source_change(stored: &str, mine: &str) -> Option<String> {
    let (old, new) = (read_fields(stored)?, read_fields(mine)?);
    let columns = |m: &serde_json::Map<String, Value>| -> Vec<(String, String)> {
        m.get(SCHEMA)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| {
                        Some((
                            c.get(0)?.as_str()?.to_string(),
                            c.get(1)?.as_str()?.to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut said = Vec::new();
    if old.contains_key(SCHEMA) {
        let (was, is) = (columns(&old), columns(&new));
        for (name, t) in &was {
            match is.iter().find(|(n, _)| n == name) {
                Some((_, u)) if u != t => said.push(format!("column '{name}' was {t}, is {u}")),
                None => said.push(format!("column '{name}' ({t}) is gone")),
                _ => {}
            }
        }
        for (name, u) in &is {
            if !was.iter().any(|(n, _)| n == name) {
                said.push(format!("column '{name}' ({u}) is new"));
            }
        }
    }
    let mut keys: Vec<&String> = old
        .keys()
        .chain(new.keys())
        .filter(|k| *k != SCHEMA)
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if old.get(k) != new.get(k) {
            let show = |v: Option<&Value>| v.map_or("absent".to_string(), Value::to_string);
            said.push(format!(
                "{k} was {}, is {}",
                show(old.get(k)),
                show(new.get(k))
            ));
        }
    }
    Some(said.join("; "))
}

/// `v` as JSON with sorted object keys and no whitespace. serde_json writes numbers (shortest
/// round-trip form) and escapes strings the same way in every version.
pub fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(k.as_str()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_source_signature_without_types_fits_the_same_source_with_them() {
        let old = r#"read {"columns":2,"op":"source","origin":"topic 'e'","partitions":1}"#;
        let new = r#"read {"columns":2,"op":"source","origin":"topic 'e'","partitions":1,"schema":[["a","Int64"],["b","Utf8"]]}"#;
        assert!(fits(old, new));
        assert!(fits(new, new));
        let other = new.replace("Int64", "Float64");
        assert!(!fits(new, &other), "a column type changed");
        assert!(!fits(
            &old.replace("\"partitions\":1", "\"partitions\":2"),
            new
        ));
        assert!(!fits("window {}", "window {\"a\":1}"));
        assert_eq!(
            source_change(new, &other).as_deref(),
            Some("column 'a' was Int64, is Float64")
        );
        let fewer = new
            .replace(r#",["b","Utf8"]"#, "")
            .replace("\"columns\":2", "\"columns\":1");
        assert_eq!(
            source_change(new, &fewer).as_deref(),
            Some("column 'b' (Utf8) is gone; columns was 2, is 1")
        );
    }

    use super::*;

    fn node(json: &str) -> Node {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_signature_of_a_window_is_pinned() {
        // Pinned text: a change here breaks the restore of every checkpoint taken before it.
        let n = node(
            r#"{"op": "window", "window": {"tumbling": {"size_ms": 60000}}, "by": ["symbol"],
                "aggs": [["v", {"binary": {"op": "/", "left": {"agg": {"func": "sum", "expr": {"col": "pv"}}},
                                            "right": {"agg": {"func": "sum", "expr": {"col": "q"}}}}}],
                         ["n", {"agg": {"func": "count"}}]],
                "input": {"op": "source", "source": 0, "timestamp": "ts", "lateness_ms": 2000}}"#,
        );
        assert_eq!(
            signature(&n, &[]),
            r#"window {"aggs":[["v",{"binary":{"left":{"agg":{"expr":{"col":"pv"},"func":"sum"}},"op":"/","right":{"agg":{"expr":{"col":"q"},"func":"sum"}}}}],["n",{"agg":{"expr":null,"func":"count"}}]],"by":["symbol"],"emit":"final","op":"window","window":{"tumbling":{"grace_ms":0,"offset_ms":0,"size_ms":60000}}}"#
        );
    }

    #[test]
    fn inputs_and_idle_timeout_are_not_part_of_it() {
        let a = node(
            r#"{"op": "filter", "predicate": {"col": "ok"}, "input": {"op": "source", "source": 0}}"#,
        );
        let b = node(
            r#"{"op": "filter", "predicate": {"col": "ok"},
                "input": {"op": "select", "columns": ["ok"], "input": {"op": "source", "source": 1}}}"#,
        );
        assert_eq!(signature(&a, &[]), signature(&b, &[]));
        let s1 = node(r#"{"op": "source", "source": 0, "idle_timeout_ms": 10}"#);
        let s2 = node(r#"{"op": "source", "source": 0, "idle_timeout_ms": 99}"#);
        assert_eq!(signature(&s1, &[]), signature(&s2, &[]));
        assert!(signature(&s1, &[]).starts_with("read "));
        let s3 = node(r#"{"op": "source", "source": 0, "lateness_ms": 5}"#);
        assert_ne!(signature(&s1, &[]), signature(&s3, &[]));
    }

    #[test]
    fn every_part_of_an_expression_changes_it() {
        let base = r#"{"when": {"branches": [[{"binary": {"op": ">", "left": {"col": "x"}, "right": {"lit": 1}}},
                         {"clip": {"expr": {"col": "x"}, "lower": {"lit": 0}, "upper": {"lit": 9.5}}}]],
                         "otherwise": {"cast": {"expr": {"fill_null": {"expr": {"col": "y"}, "value": {"lit": "a"}}}, "to": "float64"}}}}"#;
        let variants = [
            base.replace(r#""op": ">""#, r#""op": ">=""#),
            base.replace(r#"{"lit": 1}"#, r#"{"lit": 2}"#),
            base.replace(r#"{"lit": 1}"#, r#"{"lit": 1.0}"#),
            base.replace(r#"{"lit": 0}"#, r#"{"lit": -1}"#),
            base.replace(r#""upper": {"lit": 9.5}"#, r#""upper": null"#),
            base.replace(r#""to": "float64""#, r#""to": "int64""#),
            base.replace(r#"{"lit": "a"}"#, r#"{"lit": "b"}"#),
            base.replace(r#"{"col": "y"}"#, r#"{"col": "z"}"#),
        ];
        let sig = |e: &str| {
            let n = node(&format!(
                r#"{{"op": "group_by", "by": ["k"], "aggs": [["s", {{"agg": {{"func": "sum", "expr": {e}}}}}]],
                    "input": {{"op": "source", "source": 0}}}}"#
            ));
            signature(&n, &[])
        };
        let b = sig(base);
        for v in &variants {
            assert_ne!(v.as_str(), base, "the variant must change the expression");
            assert_ne!(sig(v), b, "{v}");
        }
        // NaN and infinite literals are not null ones (JSON has no NaN).
        let lits: Vec<String> = ["null", "NaN", "inf", "-inf"]
            .iter()
            .map(|l| {
                let lit = match *l {
                    "null" => crate::expr::Literal::Null,
                    other => crate::expr::Literal::Float(other.parse().unwrap()),
                };
                let n = Node::Filter {
                    input: Box::new(node(r#"{"op": "source", "source": 0}"#)),
                    predicate: crate::expr::Expr::Lit(lit),
                };
                signature(&n, &[])
            })
            .collect();
        assert_eq!(
            lits.iter().collect::<std::collections::HashSet<_>>().len(),
            4,
            "{lits:?}"
        );
        // The same definition spelt with its keys in another order: the same signature.
        let reordered = base.replace(
            r#"{"op": ">", "left": {"col": "x"}, "right": {"lit": 1}}"#,
            r#"{"right": {"lit": 1}, "left": {"col": "x"}, "op": ">"}"#,
        );
        assert_ne!(reordered, base);
        assert_eq!(sig(&reordered), b);
    }
}
