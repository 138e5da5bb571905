//! The compiled graph of operators a driver pushes batches through: leaf-to-root, with the
//! watermark advanced children before parents after every step; its checkpoint state (snapshot,
//! fit to a changed plan, restore) and metrics.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::checkpoint::{Checkpoint, OperatorState};
use crate::error::{Result, StreamError};
use crate::exchange::Route;
use crate::keys::FastMap;
use crate::operator::{OpMetrics, Operator};
use crate::signature::{fits, source_change};
use crate::sink::Sink;

pub(crate) struct GNode {
    pub(crate) op: Box<dyn Operator>,
    /// Its name (given with `named`, else `<op>#<index>`; a source: its topic) and its
    /// signature (`signature.rs`): checkpoints keep both, so that a changed plan finds the state
    /// by name and knows whether it still fits. `legacy`: its signature in a version-2
    /// checkpoint (its line of `explain()` then).
    pub(crate) name: String,
    pub(crate) signature: String,
    pub(crate) legacy: String,
    pub(crate) parent: Option<usize>,
    pub(crate) children: Vec<usize>,
    /// Per input (as `children`): where its records go in a parallel run (`exchange.rs`).
    pub(crate) routes: Vec<Route>,
    pub(crate) out_wm: i64,
}

/// Per source (by index): its leaf node and event-time settings.
#[derive(Clone)]
pub(crate) struct SourceUse {
    pub(crate) leaf: usize,
    pub(crate) ts: Option<String>,
    pub(crate) lateness: i64,
    pub(crate) idle_timeout: i64,
}

pub(crate) struct Graph {
    pub(crate) nodes: Vec<GNode>,
    /// Post-order: children before parents.
    pub(crate) order: Vec<usize>,
    pub(crate) root: usize,
    pub(crate) sources: Vec<Option<SourceUse>>,
    pub(crate) out_schema: Option<SchemaRef>,
    pub(crate) out_ts: Option<String>,
    pub(crate) out_key: Vec<String>,
    /// The plan's `explain()` text as checkpoints before version 3 hold it.
    pub(crate) legacy_plan: String,
    /// A worker of a parallel run: what crosses to other workers. `None`: the graph runs whole.
    pub(crate) outbox: Option<Outbox>,
}

/// What a worker's graph hands to other workers (`workers.rs` sends it), and the watermarks of
/// its inputs fed by them.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) items: Vec<Outgoing>,
    /// (node, input side) fed through an exchange: that input's watermark (the minimum over the
    /// workers sending to it).
    pub(crate) remote_wm: FastMap<(usize, usize), i64>,
    /// Per node whose output crosses: the watermark last sent.
    pub(crate) sent_wm: FastMap<usize, i64>,
}

/// Records or a watermark for input `side` of operator `node`, on whichever worker owns them.
pub(crate) enum Outgoing {
    Data {
        node: usize,
        side: usize,
        batch: RecordBatch,
    },
    Watermark {
        node: usize,
        side: usize,
        wm: i64,
    },
}

impl Graph {
    pub(crate) fn push(
        &mut self,
        idx: usize,
        side: usize,
        batch: RecordBatch,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        let mut out = Vec::new();
        let op = &mut self.nodes[idx].op;
        if op.keeps_rows() {
            op.on_input(side, batch, &mut out)?;
        } else {
            let (batch, stream) = crate::watermark::split_stream_times(batch);
            let stream = stream.as_ref().map(|a| a.values().as_ref());
            op.on_input_timed(side, batch, stream, &mut out)?;
        }
        self.forward(idx, out, sink)
    }

    fn forward(&mut self, idx: usize, out: Vec<RecordBatch>, sink: &mut dyn Sink) -> Result<()> {
        match self.nodes[idx].parent {
            Some(p) => {
                let side = self.nodes[p]
                    .children
                    .iter()
                    .position(|&c| c == idx)
                    .unwrap_or(0);
                if let Some(ob) = &mut self.outbox {
                    if self.nodes[p].routes[side] != Route::Local {
                        for batch in out.into_iter().filter(|b| b.num_rows() > 0) {
                            ob.items.push(Outgoing::Data {
                                node: p,
                                side,
                                batch,
                            });
                        }
                        return Ok(());
                    }
                }
                for b in out {
                    self.push(p, side, b, sink)?;
                }
            }
            None => {
                for b in out {
                    if b.num_rows() > 0 {
                        sink.write(crate::watermark::split_stream_times(b).0)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Advance every node's watermark: a leaf gets its source's (`leaf_wm`), any other node the
    /// minimum of its inputs' (each input's is handed to it first, for joins).
    pub(crate) fn advance(
        &mut self,
        leaf_wm: &FastMap<usize, i64>,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        for k in 0..self.order.len() {
            let idx = self.order[k];
            let input_wm = if self.nodes[idx].children.is_empty() {
                leaf_wm.get(&idx).copied().unwrap_or(i64::MAX)
            } else {
                let n = &self.nodes[idx];
                let wms: Vec<i64> = n
                    .children
                    .iter()
                    .zip(&n.routes)
                    .enumerate()
                    .map(|(side, (&c, r))| match &self.outbox {
                        Some(ob) if *r != Route::Local => {
                            ob.remote_wm.get(&(idx, side)).copied().unwrap_or(i64::MIN)
                        }
                        _ => self.nodes[c].out_wm,
                    })
                    .collect();
                self.nodes[idx].op.input_watermarks(&wms);
                wms.into_iter().min().unwrap_or(i64::MAX)
            };
            let mut out = Vec::new();
            self.nodes[idx].op.on_watermark(input_wm, &mut out)?;
            self.forward(idx, out, sink)?;
            // The end of every input is final: nothing can hold it back any more.
            self.nodes[idx].out_wm = if input_wm == i64::MAX {
                i64::MAX
            } else {
                self.nodes[idx].op.output_watermark(input_wm)
            };
            self.send_watermark(idx);
        }
        Ok(())
    }

    /// A worker: tell the workers owning node `idx`'s output that its watermark moved.
    fn send_watermark(&mut self, idx: usize) {
        let (Some(ob), Some(p)) = (&mut self.outbox, self.nodes[idx].parent) else {
            return;
        };
        let parent = &self.nodes[p];
        let side = parent.children.iter().position(|&c| c == idx).unwrap_or(0);
        let wm = self.nodes[idx].out_wm;
        if parent.routes[side] != Route::Local && ob.sent_wm.get(&idx) != Some(&wm) {
            ob.sent_wm.insert(idx, wm);
            ob.items.push(Outgoing::Watermark { node: p, side, wm });
        }
    }

    /// The inputs fed through an exchange in a parallel run: (node, side, the input's node), in
    /// graph order (an input's node before its consumer).
    pub(crate) fn cuts(&self) -> Vec<(usize, usize, usize)> {
        self.order
            .iter()
            .flat_map(|&i| {
                let n = &self.nodes[i];
                n.children
                    .iter()
                    .zip(&n.routes)
                    .enumerate()
                    .filter(|(_, (_, r))| **r != Route::Local)
                    .map(move |(side, (&c, _))| (i, side, c))
            })
            .collect()
    }

    /// The route of input `side` of node `idx`.
    pub(crate) fn route(&self, idx: usize, side: usize) -> &Route {
        &self.nodes[idx].routes[side]
    }

    /// The nodes feeding node `idx`, by input side.
    pub(crate) fn children(&self, idx: usize) -> &[usize] {
        &self.nodes[idx].children
    }

    pub(crate) fn root(&self) -> usize {
        self.root
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `idx`'s place in graph order (where `metrics()` reports it).
    pub(crate) fn position(&self, idx: usize) -> Option<usize> {
        self.order.iter().position(|&i| i == idx)
    }

    /// The watermark of the output (the root's), for a sink that passes it on.
    pub(crate) fn output_watermark(&self) -> i64 {
        self.nodes[self.root].out_wm
    }

    /// The output watermark the graph would have with its leaves at `leaf_wm`, given what its
    /// operators hold now (nothing is emitted): where a task whose input ended stood before its
    /// end-of-input flush, which the readers of a repartition topic are told instead of +inf.
    pub(crate) fn output_watermark_at(&self, leaf_wm: &FastMap<usize, i64>) -> i64 {
        let mut out = vec![i64::MIN; self.nodes.len()];
        for &idx in &self.order {
            let n = &self.nodes[idx];
            let input = if n.children.is_empty() {
                leaf_wm.get(&idx).copied().unwrap_or(i64::MAX)
            } else {
                n.children.iter().map(|&c| out[c]).min().unwrap_or(i64::MAX)
            };
            out[idx] = if input == i64::MAX {
                i64::MAX
            } else {
                n.op.output_watermark(input)
            };
        }
        out[self.root]
    }

    pub(crate) fn take_late(&mut self) -> Vec<RecordBatch> {
        self.nodes
            .iter_mut()
            .flat_map(|n| n.op.take_late())
            .collect()
    }

    /// Every operator's state, in graph order.
    pub(crate) fn snapshot(&self) -> Result<Vec<OperatorState>> {
        self.order
            .iter()
            .map(|&i| {
                let n = &self.nodes[i];
                Ok(OperatorState {
                    name: n.name.clone(),
                    signature: n.signature.clone(),
                    state: n.op.snapshot()?,
                })
            })
            .collect()
    }

    /// Where each operator (in graph order) finds its state in checkpoint `c`: an index into
    /// `c.operators`, or none (it starts empty); and notes for the caller. The same plan: place by
    /// place. A changed plan: by name (given with `named`, else derived from the place), as long
    /// as the sources are the same and every operator holding state in `c` is in this plan,
    /// unchanged; else a `PlanError` saying what no longer fits. `what`: the checkpoint, for
    /// messages ("checkpoint 7 in <dir>").
    pub(crate) fn fit(
        &self,
        c: &Checkpoint,
        plan_text: &str,
        what: &str,
    ) -> Result<(Vec<Option<usize>>, Vec<String>)> {
        let refuse = |why: String| {
            Err(StreamError::Checkpoint(format!(
                "{why}; pass reset=True to start over (the output topics keep what they hold)"
            )))
        };
        let mine: Vec<&GNode> = self.order.iter().map(|&i| &self.nodes[i]).collect();
        // A checkpoint before version 3 holds the text of that time: compare with that.
        let (plan_text, sig): (&str, fn(&GNode) -> &str) = if c.version >= 3 {
            (plan_text, |n| n.signature.as_str())
        } else {
            (self.legacy_plan.as_str(), |n| n.legacy.as_str())
        };
        let same_ops = c.operators.len() == mine.len()
            && c.operators.iter().zip(&mine).all(|(o, n)| {
                o.name == n.name && (o.signature.is_empty() || fits(&o.signature, sig(n)))
            });
        if c.plan == plan_text && same_ops {
            return Ok(((0..mine.len()).map(Some).collect(), Vec::new()));
        }
        let changed = format!("the plan changed since {what}");
        if c.operators.iter().any(|o| o.signature.is_empty()) {
            if c.plan == plan_text {
                return refuse(format!("{what} does not match its own plan"));
            }
            return refuse(format!(
                "{changed} (taken by an older riverbed, which kept no operator signatures); its state does not fit.
                 checkpointed plan:
{}
this plan:
{plan_text}",
                c.plan
            ));
        }
        let is_read = |sig: &str| sig.starts_with("read ");
        let old: Vec<(&str, &str)> = c
            .operators
            .iter()
            .filter(|o| is_read(&o.signature))
            .map(|o| (o.name.as_str(), o.signature.as_str()))
            .collect();
        let new: Vec<(&str, &str)> = mine
            .iter()
            .filter(|n| is_read(sig(n)))
            .map(|n| (n.name.as_str(), sig(n)))
            .collect();
        let same_reads = old.len() == new.len()
            && old
                .iter()
                .zip(&new)
                .all(|((on, os), (nn, ns))| on == nn && fits(os, ns));
        if !same_reads {
            // Said in words when the same sources changed in place (a column type, partitions).
            let words: Vec<String> = if old.len() == new.len() {
                old.iter()
                    .zip(&new)
                    .filter(|((on, os), (nn, ns))| on == nn && !fits(os, ns))
                    .filter_map(|((on, os), (_, ns))| {
                        source_change(os, ns).map(|w| format!("source '{on}': {w}"))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            if !words.is_empty() {
                return refuse(format!(
                    "{changed}: its sources changed ({}), so their positions and the state kept from them do not carry over",
                    words.join("; ")
                ));
            }
            return refuse(format!(
                "{changed}: its sources changed (were {old:?}, are {new:?}), so their positions do not carry over"
            ));
        }
        let place: FastMap<&str, usize> = mine
            .iter()
            .enumerate()
            .map(|(k, n)| (n.name.as_str(), k))
            .collect();
        let mut fit = vec![None; mine.len()];
        for (j, o) in c.operators.iter().enumerate() {
            if o.state.is_empty() && !is_read(&o.signature) {
                continue; // stateless
            }
            let Some(&k) = place.get(o.name.as_str()) else {
                let hint = if o.name.contains('#') {
                    " (an operator not given a name with .named(...) is known by its place in the plan, which moves when operators are added or removed before it)"
                } else {
                    ""
                };
                return refuse(format!(
                    "{changed}: operator '{}' (`{}`) holds state in it, and this plan has no operator of that name{hint}",
                    o.name, o.signature
                ));
            };
            if !fits(&o.signature, sig(mine[k])) {
                return refuse(format!(
                    "{changed}: operator '{}' changed (was `{}`, is `{}`), so its state does not fit",
                    o.name,
                    o.signature,
                    sig(mine[k])
                ));
            }
            fit[k] = Some(j);
        }
        let mut notes = vec![format!(
            "{changed}; the state of its operators carries over by name ({})",
            fit.iter()
                .flatten()
                .map(|&j| c.operators[j].name.as_str())
                .filter(|n| !c
                    .operators
                    .iter()
                    .any(|o| o.name == *n && is_read(&o.signature)))
                .collect::<Vec<_>>()
                .join(", ")
        )];
        for (k, n) in mine.iter().enumerate() {
            let keeps_state = n.op.snapshot().map_or(true, |s| !s.is_empty());
            if fit[k].is_none() && keeps_state {
                notes.push(format!(
                    "operator '{}' (`{}`) is new since {what}: it starts with empty state",
                    n.name, n.signature
                ));
            }
        }
        Ok((fit, notes))
    }

    /// Load the states `fit` found for each operator.
    pub(crate) fn restore(
        &mut self,
        states: &[OperatorState],
        fit: &[Option<usize>],
    ) -> Result<()> {
        for (k, &i) in self.order.iter().enumerate() {
            if let Some(&Some(j)) = fit.get(k) {
                self.nodes[i].op.restore(&states[j].state)?;
            }
        }
        Ok(())
    }

    /// The restored state's end-of-input flush reached the sink (`Operator::open_was_emitted`).
    pub(crate) fn open_was_emitted(&mut self) {
        for n in &mut self.nodes {
            n.op.open_was_emitted();
        }
    }

    pub(crate) fn metrics(&self) -> Vec<OpMetrics> {
        self.order
            .iter()
            .map(|&i| self.nodes[i].op.metrics())
            .collect()
    }
}
