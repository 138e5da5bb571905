//! What the run loop (`runtime.rs`) drives: the operator graph, run whole on the loop's own
//! thread (`Local`), or split between worker threads (`workers::Pool`). The loop reads the
//! sources, stamps records with their stream time and computes the watermarks; an engine
//! processes the records and watermarks it is handed and writes its output to the sink.

use arrow_array::RecordBatch;

use crate::checkpoint::OperatorState;
use crate::error::Result;
use crate::graph::Graph;
use crate::keys::FastMap;
use crate::operator::OpMetrics;
use crate::sink::Sink;

pub(crate) trait Engine {
    /// Records of partition `partition` of the source whose leaf is node `leaf`.
    fn push(
        &mut self,
        leaf: usize,
        partition: usize,
        batch: RecordBatch,
        sink: &mut dyn Sink,
    ) -> Result<()>;
    /// The sources' watermarks moved (by leaf node).
    fn advance(&mut self, leaf_wm: &FastMap<usize, i64>, sink: &mut dyn Sink) -> Result<()>;
    /// Late records set aside since the last call (and, for workers, their output so far).
    fn take_late(&mut self, sink: &mut dyn Sink) -> Result<Vec<RecordBatch>>;
    /// Per operator, in graph order.
    fn metrics(&self) -> Vec<OpMetrics>;
    /// Node `idx`'s place in graph order.
    fn position(&self, idx: usize) -> Option<usize>;
    /// Every operator's state, for a checkpoint.
    fn snapshot(&self) -> Result<Vec<OperatorState>>;
    /// The input ended or the run stops: process everything handed over so far.
    fn finish(&mut self, sink: &mut dyn Sink) -> Result<Vec<RecordBatch>>;
}

/// The whole graph on the run loop's thread.
pub(crate) struct Local(pub(crate) Graph);

impl Engine for Local {
    fn push(
        &mut self,
        leaf: usize,
        _partition: usize,
        batch: RecordBatch,
        sink: &mut dyn Sink,
    ) -> Result<()> {
        self.0.push(leaf, 0, batch, sink)
    }

    fn advance(&mut self, leaf_wm: &FastMap<usize, i64>, sink: &mut dyn Sink) -> Result<()> {
        self.0.advance(leaf_wm, sink)
    }

    fn take_late(&mut self, _sink: &mut dyn Sink) -> Result<Vec<RecordBatch>> {
        Ok(self.0.take_late())
    }

    fn metrics(&self) -> Vec<OpMetrics> {
        self.0.metrics()
    }

    fn position(&self, idx: usize) -> Option<usize> {
        self.0.position(idx)
    }

    fn snapshot(&self) -> Result<Vec<OperatorState>> {
        self.0.snapshot()
    }

    fn finish(&mut self, _sink: &mut dyn Sink) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
}
