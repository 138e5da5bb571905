//! The physical plan of a consumer-group run: its stages, cut at every change of key, as Kafka
//! Streams does it.
//!
//! In a group run each process holds the state of the partitions assigned to it. That is right
//! for an operator keyed by what the input topic is partitioned by (all records of a key are in
//! one partition), and wrong for any other key: its records are spread over partitions, hence
//! over processes. So a group pipeline is cut before every keyed operator (`window`,
//! `group_by`, series, `stateful_map`) whose key is not the current partitioning: the part
//! before the cut writes its output to an internal topic keyed by the operator's key
//! (`<run name>-repartition-<k>`, created with the input's partition count), and the part after
//! the cut reads that topic with its own consumer group (`<group>-repartition-<k>`). Every stage
//! runs in every process; each is checkpointed under its own name (`staged.rs` runs them).
//!
//! The input topic counts as partitioned by its record `key` column, or by the columns its
//! source node names in `partitioned_by` (when the producers keyed the records by them).

use crate::error::{Result, StreamError};
use crate::plan::Node;

/// Columns a topic source adds to every record: an internal topic's records get their own.
pub const RECORD_COLUMNS: [&str; 3] = ["key", "partition", "offset"];

/// One cut of a group pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// Its plan; source 0 is what it reads. A stage that writes an internal topic ends in a
    /// `drop` of the [`RECORD_COLUMNS`] (those its input has are dropped: `Staged` resolves it).
    pub plan: Node,
    /// The internal topic it reads (`None`: the pipeline's own source) and with which group.
    pub reads: Option<String>,
    pub group: String,
    /// The internal topic it writes, keyed by this column (`None`: the pipeline's own sink).
    pub writes: Option<(String, String)>,
}

/// The key field of a keyed operator, if `node` is one.
fn keyed_by(node: &Node) -> Option<&[String]> {
    match node {
        Node::Window { by, .. }
        | Node::GroupBy { by, .. }
        | Node::Series { by, .. }
        | Node::StatefulMap { by, .. } => Some(by),
        _ => None,
    }
}

/// The key of keyed operator `node` (its own `by`, else the `key_by` columns in force); an
/// error without one: the processes of a group cannot aggregate over every partition.
fn key_of(node: &Node, own: &[String], declared: Option<&[String]>) -> Result<Vec<String>> {
    let by = if own.is_empty() {
        declared.unwrap_or_default().to_vec()
    } else {
        own.to_vec()
    };
    if by.is_empty() {
        return Err(StreamError::plan(
            node.op_name(),
            "without a key (by=) it aggregates over every partition, which the processes of a consumer group cannot do separately; give it a key",
        ));
    }
    Ok(by)
}

/// The nodes from the source up to `root` (a group pipeline reads one source).
fn chain(root: &Node) -> Result<Vec<&Node>> {
    let mut out = vec![root];
    loop {
        let last = *out.last().expect("not empty");
        match last.inputs().as_slice() {
            [] => break,
            [one] => out.push(one),
            _ => {
                return Err(StreamError::plan(
                    last.op_name(),
                    "a pipeline reading a topic with a consumer group reads only that topic (unions and joins of several sources are not supported there yet)",
                ))
            }
        }
    }
    out.reverse();
    Ok(out)
}

/// How many source nodes the plan `node` has.
fn sources(node: &Node) -> usize {
    match node {
        Node::Source { .. } => 1,
        n => n.inputs().into_iter().map(sources).sum(),
    }
}

/// What a plan node's output is known to be partitioned by, and the `key_by` columns in force.
type Keys = (Option<Vec<String>>, Option<Vec<String>>);

/// The partitioning of `node`'s output in a group run reading several topics together (their
/// partition p in one task), and the `key_by` columns in force; an error where a keyed
/// operator would need a repartition, which such a run cannot do yet. A join needs each side
/// partitioned by its own key columns (co-partitioned topics, as Kafka Streams requires).
fn together(node: &Node) -> Result<Keys> {
    if let Node::Source { partitioned_by, .. } = node {
        let by = partitioned_by
            .clone()
            .unwrap_or_else(|| vec!["key".to_string()]);
        return Ok((Some(by), None));
    }
    let inputs = node
        .inputs()
        .into_iter()
        .map(together)
        .collect::<Result<Vec<_>>>()?;
    let not_partitioned = |what: String| {
        StreamError::plan(
            node.op_name(),
            format!("{what}; a group run that reads several topics cannot repartition yet: declare partitioned_by= on each read when the producers keyed its records by these columns (co-partitioned topics of one partition count), or repartition each topic by them into a topic of its own first"),
        )
    };
    match node {
        Node::Union { .. } => {
            let same = |f: fn(&Keys) -> &Option<Vec<String>>| {
                let first = f(&inputs[0]);
                inputs
                    .iter()
                    .all(|i| f(i) == first)
                    .then(|| first.clone())
                    .flatten()
            };
            Ok((same(|i| &i.0), same(|i| &i.1)))
        }
        Node::Join {
            left_by, right_by, ..
        } => {
            if left_by.is_empty() {
                // join_asof's key is by= (on= is its time column); the other joins' is on=
                let arg = if node.op_name() == "join_asof" {
                    "by="
                } else {
                    "on="
                };
                return Err(StreamError::plan(
                    node.op_name(),
                    format!("without a key ({arg}) it joins records of every partition, which the processes of a consumer group cannot do separately; give it a key"),
                ));
            }
            for (side, (part, _), by) in [
                ("left", &inputs[0], left_by),
                ("right", &inputs[1], right_by),
            ] {
                if part.as_ref() != Some(by) {
                    return Err(not_partitioned(format!(
                        "its {side} side is keyed by {by:?} but partitioned by {}",
                        part.as_ref()
                            .map_or("nothing known".to_string(), |p| format!("{p:?}"))
                    )));
                }
            }
            Ok((Some(left_by.clone()), None))
        }
        _ => {
            let (part, declared) = inputs.into_iter().next().unwrap_or((None, None));
            if let Node::KeyBy { columns, .. } = node {
                return Ok((part, Some(columns.clone())));
            }
            if let Some(own) = keyed_by(node) {
                let by = key_of(node, own, declared.as_deref())?;
                if part.as_ref() != Some(&by) {
                    return Err(not_partitioned(format!(
                        "by={by:?} is not what its input is partitioned by ({})",
                        part.as_ref()
                            .map_or("nothing known".to_string(), |p| format!("{p:?}"))
                    )));
                }
                return Ok((Some(by), declared));
            }
            let part = part.filter(|p| !touches(node, p));
            Ok((part, declared))
        }
    }
}

/// Whether `node` may change or remove one of `cols` (so they no longer partition its output).
fn touches(node: &Node, cols: &[String]) -> bool {
    let has = |c: &String| cols.contains(c);
    match node {
        Node::WithColumns { columns, .. } => columns.iter().any(|(name, _)| has(name)),
        Node::Rename { mapping, .. } => mapping.iter().any(|(old, new)| has(old) || has(new)),
        Node::Select { columns, .. } => !cols.iter().all(|c| columns.contains(c)),
        Node::Drop { columns, .. } => columns.iter().any(has),
        // Python functions and keyed operators make new rows: nothing is known of their columns.
        Node::MapBatches { .. }
        | Node::Window { .. }
        | Node::GroupBy { .. }
        | Node::StatefulMap { .. } => true,
        _ => false,
    }
}

/// `node` with its one input replaced by `input`.
fn on(node: &Node, input: Node) -> Node {
    let mut n = node.clone();
    match &mut n {
        Node::Filter { input: i, .. }
        | Node::WithColumns { input: i, .. }
        | Node::Select { input: i, .. }
        | Node::Drop { input: i, .. }
        | Node::Rename { input: i, .. }
        | Node::MapBatches { input: i, .. }
        | Node::KeyBy { input: i, .. }
        | Node::Window { input: i, .. }
        | Node::GroupBy { input: i, .. }
        | Node::Series { input: i, .. }
        | Node::StatefulMap { input: i, .. }
        | Node::Named { input: i, .. } => **i = input,
        Node::Source { .. } | Node::Union { .. } | Node::Join { .. } => {
            unreachable!("a chain's nodes above its source have one input")
        }
    }
    n
}

/// The nodes `chain[start+1 ..= end]` stacked on `bottom` (which stands for `chain[start]`).
fn stack(chain: &[&Node], start: usize, end: usize, bottom: Node) -> Node {
    chain[start + 1..=end]
        .iter()
        .fold(bottom, |below, n| on(n, below))
}

/// Cut the plan `root` of a group run (named `name`, reading with consumer group `group`) into
/// stages, source first. One stage when no keyed operator needs another partitioning.
pub fn cut(root: &Node, group: &str, name: &str) -> Result<Vec<Stage>> {
    if sources(root) > 1 {
        together(root)?;
        return Ok(vec![Stage {
            plan: root.clone(),
            reads: None,
            group: group.to_string(),
            writes: None,
        }]);
    }
    let chain = chain(root)?;
    let Node::Source { partitioned_by, .. } = chain[0] else {
        unreachable!("a chain starts at its source")
    };
    let mut current: Option<Vec<String>> = Some(
        partitioned_by
            .clone()
            .unwrap_or_else(|| vec!["key".to_string()]),
    );
    // key_by's columns: the default key of later operators.
    let mut declared: Option<&[String]> = None;
    // (index in the chain of the keyed node, its key column, the key_by columns it takes as
    // its key when it names none: the stage after the cut declares them again)
    let mut cuts: Vec<(usize, String, Option<Vec<String>>)> = Vec::new();
    for (i, n) in chain.iter().enumerate().skip(1) {
        if let Node::KeyBy { columns, .. } = n {
            declared = Some(columns);
            continue;
        }
        if let Some(own) = keyed_by(n) {
            let by = key_of(n, own, declared)?;
            if current.as_ref() != Some(&by) {
                let [one] = by.as_slice() else {
                    return Err(StreamError::plan(
                        n.op_name(),
                        format!("by={by:?} needs a repartition by several columns, which is not supported yet; combine them into one column with with_columns and key by that"),
                    ));
                };
                let inherited = own.is_empty().then(|| by.clone());
                cuts.push((i, one.clone(), inherited));
                current = Some(by);
            }
            // Its output rows are keyed by `by` (windows and group-bys keep the key columns).
            continue;
        }
        if current.as_ref().is_some_and(|c| touches(n, c)) {
            current = None;
        }
    }
    let mut out = Vec::new();
    let mut below = chain[0].clone();
    let mut prev_cut = 0;
    let mut reads: Option<String> = None;
    let mut read_group = group.to_string();
    for (k, (i, key, inherited)) in cuts.into_iter().enumerate() {
        let k = k + 1;
        let internal = format!("{}-repartition-{k}", topic_safe(name));
        // The stage before the cut: what feeds the keyed node, minus the record columns.
        let feed = stack(&chain, prev_cut, i - 1, below);
        out.push(Stage {
            plan: Node::Drop {
                input: Box::new(feed),
                columns: RECORD_COLUMNS.iter().map(|c| c.to_string()).collect(),
            },
            reads: reads.take(),
            group: read_group,
            writes: Some((internal.clone(), key.clone())),
        });
        below = internal_source(chain[0], k, &key);
        if let Some(columns) = inherited {
            below = Node::KeyBy {
                input: Box::new(below),
                columns,
            };
        }
        prev_cut = i - 1;
        reads = Some(internal);
        read_group = format!("{group}-repartition-{k}");
    }
    out.push(Stage {
        plan: stack(&chain, prev_cut, chain.len() - 1, below),
        reads,
        group: read_group,
        writes: None,
    });
    Ok(out)
}

/// `name` as the start of a Kafka topic name: itself when every character is one Kafka allows
/// ([a-zA-Z0-9._-]) and it is short enough, else those characters with the others replaced by
/// '_', cut to length, and a hash of the whole name, so two names never share a topic.
pub fn topic_safe(name: &str) -> String {
    const MAX: usize = 200; // leaves room for "-repartition-<k>" within Kafka's 249
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.len() <= MAX && name.chars().all(allowed) {
        return name.to_string();
    }
    let mut s: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(MAX - 9)
        .collect();
    s.push_str(&format!("-{:08x}", crc32c::crc32c(name.as_bytes())));
    s
}

/// The source node of stage `k`'s internal topic, partitioned by `key`: the pipeline's source
/// settings (lateness, idle timeout) under its own name; its event-time column is set once the
/// stage before is known ([`with_event_time`]).
fn internal_source(source: &Node, k: usize, key: &str) -> Node {
    let mut n = source.clone();
    if let Node::Source {
        source,
        name,
        partitioned_by,
        ..
    } = &mut n
    {
        *source = 0;
        *name = Some(format!("repartition-{k}"));
        *partitioned_by = Some(vec![key.to_string()]);
    }
    n
}

/// A copy of a stage's plan whose source reads event time from column `ts` (the column the
/// stage before wrote it in).
pub fn with_event_time(node: &Node, ts: Option<&str>) -> Node {
    match node {
        Node::Source { .. } => {
            let mut n = node.clone();
            if let Node::Source { timestamp, .. } = &mut n {
                *timestamp = ts.map(str::to_string);
            }
            n
        }
        n => {
            let [input] = n.inputs()[..] else {
                unreachable!("a stage's nodes above its source have one input")
            };
            on(n, with_event_time(input, ts))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Emit, WindowSpec};

    fn source(partitioned_by: Option<Vec<&str>>) -> Node {
        Node::Source {
            source: 0,
            timestamp: Some("ts".into()),
            lateness_ms: 7,
            idle_timeout_ms: 5_000,
            name: None,
            partitioned_by: partitioned_by.map(|v| v.into_iter().map(String::from).collect()),
        }
    }

    fn window(input: Node, by: &[&str]) -> Node {
        Node::Window {
            input: Box::new(input),
            window: WindowSpec::Tumbling {
                size_ms: 1000,
                offset_ms: 0,
                grace_ms: 0,
            },
            by: by.iter().map(|s| s.to_string()).collect(),
            emit: Emit::Final,
            aggs: Vec::new(),
        }
    }

    fn filter(input: Node) -> Node {
        Node::Filter {
            input: Box::new(input),
            predicate: crate::expr::Expr::Lit(crate::expr::Literal::Bool(true)),
        }
    }

    #[test]
    fn an_operator_keyed_by_the_partitioning_needs_no_cut() {
        let plan = window(filter(source(Some(vec!["sym"]))), &["sym"]);
        let st = cut(&plan, "g", "run").unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].plan, plan);
        assert_eq!((st[0].reads.as_deref(), st[0].group.as_str()), (None, "g"));
        assert_eq!(st[0].writes, None);
    }

    #[test]
    fn another_key_cuts_before_the_keyed_operator() {
        let plan = window(filter(source(None)), &["sym"]);
        let st = cut(&plan, "g", "run").unwrap();
        assert_eq!(st.len(), 2);
        // The feed: the filter over the source, minus the record columns.
        let Node::Drop { input, columns } = &st[0].plan else {
            panic!("{:?}", st[0].plan)
        };
        assert_eq!(**input, filter(source(None)));
        assert_eq!(columns, &["key", "partition", "offset"]);
        assert_eq!(
            st[0].writes,
            Some(("run-repartition-1".into(), "sym".into()))
        );
        assert_eq!((st[0].reads.as_deref(), st[0].group.as_str()), (None, "g"));
        // The rest reads the internal topic with its own group and source name.
        let Node::Window { input, .. } = &st[1].plan else {
            panic!()
        };
        let Node::Source {
            name, lateness_ms, ..
        } = &**input
        else {
            panic!()
        };
        assert_eq!((name.as_deref(), *lateness_ms), (Some("repartition-1"), 7));
        assert_eq!(st[1].reads.as_deref(), Some("run-repartition-1"));
        assert_eq!(st[1].group, "g-repartition-1");
        assert_eq!(st[1].writes, None);
    }

    #[test]
    fn a_column_changed_after_a_keyed_operator_cuts_again() {
        // by sym (cut 1), then by sym again (same partitioning: no cut) ...
        let a = window(window(source(None), &["sym"]), &["sym"]);
        assert_eq!(cut(&a, "g", "r").unwrap().len(), 2);
        // ... but a changed sym is a new partitioning
        let changed = Node::WithColumns {
            input: Box::new(window(source(None), &["sym"])),
            columns: vec![(
                "sym".into(),
                crate::expr::Expr::Lit(crate::expr::Literal::Int(1)),
            )],
        };
        let st = cut(&window(changed, &["sym"]), "g", "r").unwrap();
        assert_eq!(st.len(), 3);
        assert_eq!(st[2].reads.as_deref(), Some("r-repartition-2"));
        assert_eq!(st[1].group, "g-repartition-1");
        assert_eq!(st[2].group, "g-repartition-2");
        // each stage, run as a group run of its own, is one stage (its input is partitioned
        // by the key it was written with)
        for s in &st {
            assert_eq!(
                cut(&s.plan, &s.group, "r").unwrap().len(),
                1,
                "{:?}",
                s.plan
            );
        }
    }

    #[test]
    fn key_by_gives_the_default_key() {
        let keyed = Node::KeyBy {
            input: Box::new(source(Some(vec!["acct"]))),
            columns: vec!["acct".into()],
        };
        assert_eq!(cut(&window(keyed, &[]), "g", "r").unwrap().len(), 1);
        // keyed by another column: the stage after the cut declares the key again, so its
        // window (naming no key) is keyed by it there too
        let keyed = Node::KeyBy {
            input: Box::new(source(None)),
            columns: vec!["b".into()],
        };
        let st = cut(&window(keyed, &[]), "g", "r").unwrap();
        assert_eq!(st.len(), 2);
        assert_eq!(st[0].writes, Some(("r-repartition-1".into(), "b".into())));
        let Node::Window { input, by, .. } = &st[1].plan else {
            panic!()
        };
        assert!(by.is_empty());
        assert!(matches!(&**input, Node::KeyBy { columns, .. } if columns == &["b"]));
        assert_eq!(cut(&st[1].plan, &st[1].group, "r").unwrap().len(), 1);
    }

    #[test]
    fn what_processes_cannot_split_is_refused() {
        let e = cut(&window(source(None), &[]), "g", "r").unwrap_err();
        assert!(e.to_string().contains("without a key"), "{e}");
        let e = cut(&window(source(None), &["a", "b"]), "g", "r").unwrap_err();
        assert!(e.to_string().contains("several columns"), "{e}");
    }

    #[test]
    fn topics_read_together_must_be_partitioned_by_the_key() {
        let union = |a, b| Node::Union { inputs: vec![a, b] };
        // Both partitioned by their record key: one stage, the plan as it is.
        let plan = window(union(source(None), source(None)), &["key"]);
        let st = cut(&plan, "g", "r").unwrap();
        assert_eq!(st.len(), 1);
        assert_eq!(st[0].plan, plan);
        let e = cut(
            &window(union(source(None), source(None)), &["sym"]),
            "g",
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("cannot repartition yet"), "{e}");
        // One side partitioned otherwise: its records of a key are in other tasks.
        let mixed = union(source(Some(vec!["sym"])), source(None));
        let e = cut(&window(mixed, &["sym"]), "g", "r").unwrap_err();
        assert!(e.to_string().contains("cannot repartition yet"), "{e}");
        let join = |l, r, by: &[&str]| Node::Join {
            left: Box::new(l),
            right: Box::new(r),
            kind: crate::join::JoinKind::Interval {
                lower_ms: 0,
                upper_ms: 0,
                how: Default::default(),
            },
            left_by: by.iter().map(|s| s.to_string()).collect(),
            right_by: by.iter().map(|s| s.to_string()).collect(),
            left_on: None,
            right_on: None,
            suffix: "_right".into(),
            right_columns: None,
        };
        let ok = join(
            source(Some(vec!["sym"])),
            source(Some(vec!["sym"])),
            &["sym"],
        );
        assert_eq!(
            cut(&window(ok.clone(), &["sym"]), "g", "r").unwrap().len(),
            1
        );
        let e = cut(
            &join(source(None), source(Some(vec!["sym"])), &["sym"]),
            "g",
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("left side is keyed by"), "{e}");
        let e = cut(&join(source(None), source(None), &[]), "g", "r").unwrap_err();
        assert!(e.to_string().contains("without a key"), "{e}");
        // A column the key is made from, changed after the join: no longer partitioned by it.
        let changed = Node::WithColumns {
            input: Box::new(ok),
            columns: vec![(
                "sym".into(),
                crate::expr::Expr::Lit(crate::expr::Literal::Bool(true)),
            )],
        };
        let e = cut(&window(changed, &["sym"]), "g", "r").unwrap_err();
        assert!(e.to_string().contains("nothing known"), "{e}");
    }

    #[test]
    fn the_event_time_column_is_set_on_the_source() {
        let plan = window(filter(source(None)), &["sym"]);
        let got = with_event_time(&plan, Some("window_end"));
        assert_eq!(
            got,
            window(
                filter(with_event_time(&source(None), Some("window_end"))),
                &["sym"]
            )
        );
        let Node::Source { timestamp, .. } = with_event_time(&source(None), None) else {
            panic!()
        };
        assert_eq!(timestamp, None);
    }

    #[test]
    fn internal_topic_names_are_valid_kafka_names() {
        assert_eq!(topic_safe("group-g_1.x"), "group-g_1.x");
        let a = topic_safe("group-my group");
        let b = topic_safe("group-my:group");
        assert!(a.starts_with("group-my_group-") && b.starts_with("group-my_group-"));
        assert_ne!(
            a, b,
            "names that differ only in replaced characters share a topic"
        );
        let long = topic_safe(&"ü".repeat(300));
        assert!(long.len() <= 200, "{}", long.len());
        for n in [a, b, long] {
            riverbed_log::topic::validate_topic_name(&format!("{n}-repartition-12")).unwrap();
        }
        let st = cut(&window(source(Some(vec!["sym"])), &["b"]), "g", "runs: 1/2").unwrap();
        let topic = st[0].writes.as_ref().unwrap().0.clone();
        riverbed_log::topic::validate_topic_name(&topic).unwrap();
    }
}
