//! A validated pipeline: a plan with its sources and UDFs, compiled once to check it, with
//! what the caller can ask of it before running (schema, keys, `explain`).

use crate::connector::SharedConnector;
use std::sync::Arc;

use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::errors::{ErrorHandler, ErrorPolicy};
use crate::graph::Graph;
use crate::operator::BatchUdf;
use crate::plan::Node;
use crate::source::SourceSpec;

/// A validated plan with its sources and UDFs.
pub struct Pipeline {
    pub(crate) plan: Node,
    pub(crate) sources: Vec<SourceSpec>,
    pub(crate) udfs: Vec<Arc<dyn BatchUdf>>,
    pub(crate) schema: Option<SchemaRef>,
    pub(crate) ts: Option<String>,
    pub(crate) key: Vec<String>,
    /// Where a consumer-group run keeps its internal (repartition) topics: the cluster of the
    /// topic it reads (`staged.rs`).
    pub(crate) connector: Option<SharedConnector>,
}

impl Pipeline {
    /// Validate the plan (building its operators once); plan errors name operator and field.
    pub fn new(
        plan: Node,
        sources: Vec<SourceSpec>,
        udfs: Vec<Arc<dyn BatchUdf>>,
    ) -> Result<Pipeline> {
        let g = Graph::compile(
            &plan,
            &sources,
            &udfs,
            ErrorHandler::new(ErrorPolicy::Raise),
        )?;
        Ok(Pipeline {
            schema: g.out_schema.clone(),
            ts: g.out_ts.clone(),
            key: g.out_key.clone(),
            plan,
            sources,
            udfs,
            connector: None,
        })
    }

    /// This pipeline with `connector` as the home of its internal topics.
    pub fn with_connector(mut self, connector: Option<SharedConnector>) -> Pipeline {
        self.connector = connector;
        self
    }

    /// The output schema; `None` downstream of a UDF (known only at run time).
    pub fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    /// The event-time column of the output, if it has one.
    pub fn event_time_column(&self) -> Option<&str> {
        self.ts.as_deref()
    }

    /// The output's key columns (from `key_by` or a window's `by`), if any.
    pub fn key_columns(&self) -> &[String] {
        &self.key
    }

    /// The directory of the log the first topic source lives in, if any.
    pub fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.sources.iter().find_map(|s| match s {
            SourceSpec::Log(l) => l.topic.dir.parent().map(|p| p.to_path_buf()),
            _ => None,
        })
    }

    pub fn plan(&self) -> &Node {
        &self.plan
    }

    pub fn explain(&self) -> String {
        crate::explain::explain(&self.plan, &self.sources, false)
    }

    /// Where each operator of `g` (this plan's graph, `plan_text` its text) finds its state in
    /// checkpoint `c` (see `Graph::fit`). A checkpoint of an older riverbed, which planned
    /// `count(x)` as a sum, is fitted by this plan written that way (`legacy_counts`): its graph
    /// and text then replace `g` and `plan_text`, so the run restores and goes on checkpointing
    /// that form (same results).
    pub(crate) fn fit(
        &self,
        g: &mut Graph,
        plan_text: &mut String,
        c: &crate::checkpoint::Checkpoint,
        what: &str,
        on_error: Arc<crate::errors::ErrorHandler>,
    ) -> Result<(Vec<Option<usize>>, Vec<String>)> {
        let refused = match g.fit(c, plan_text, what) {
            Ok(fit) => return Ok(fit),
            Err(e) => e,
        };
        let Some(old) = crate::legacy_counts::counts_as_sums(&self.plan) else {
            return Err(refused);
        };
        let old_text = crate::explain::explain(&old, &self.sources, false);
        let old_g = Graph::compile(&old, &self.sources, &self.udfs, on_error)?;
        match old_g.fit(c, &old_text, what) {
            Ok(fit) => {
                *g = old_g;
                *plan_text = old_text;
                Ok(fit)
            }
            Err(_) => Err(refused),
        }
    }
}
