//! The step journal: run each named step of a task at most once per event.

use std::future::Future;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use super::TaskError;
use crate::metrics::Metrics;
use crate::pipeline::ledger::{Ledger, LedgerRecord, StepRecord};

/// Handed to a handler's `run`; records each completed step in the ledger.
pub struct Steps<'a> {
    ledger: &'a Ledger,
    record: &'a mut LedgerRecord,
    metrics: &'a Metrics,
    /// The record holds changes not saved yet (the `.started` flag); they are saved
    /// before the first step runs, so a long first step cannot outlive them unsaved.
    unsaved: bool,
}

impl<'a> Steps<'a> {
    pub(crate) fn new(
        ledger: &'a Ledger,
        record: &'a mut LedgerRecord,
        metrics: &'a Metrics,
        unsaved: bool,
    ) -> Self {
        Steps {
            ledger,
            record,
            metrics,
            unsaved,
        }
    }

    /// Whether a step completed in this or an earlier attempt.
    pub fn is_done(&self, name: &str) -> bool {
        self.record.entry.steps.contains_key(name)
    }

    /// Runs `work` unless the ledger shows the step done, in which case the output
    /// recorded then is returned. The output is recorded before this returns, so a
    /// crash after a step never repeats it; a crash during a step repeats it, which
    /// is why steps must be safe to run again when they did not complete.
    pub async fn step<T, F, Fut>(&mut self, name: &str, work: F) -> Result<T, TaskError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, TaskError>>,
    {
        if let Some(done) = self.record.entry.steps.get(name) {
            self.metrics.steps_skipped.with_label_values(&[name]).inc();
            info!(
                step = name,
                "step already done in an earlier attempt, skipping"
            );
            return serde_json::from_value(done.output.clone()).map_err(|err| {
                TaskError::Failed(format!(
                    "the recorded output of step {name:?} cannot be read by this version: {err}"
                ))
            });
        }
        if self.unsaved {
            self.save(name).await?;
            self.unsaved = false;
        }
        let output = work().await?;
        let recorded = serde_json::to_value(&output)
            .map_err(|err| TaskError::Failed(format!("step {name:?} output: {err}")))?;
        self.record.entry.steps.insert(
            name.to_owned(),
            StepRecord {
                output: recorded,
                completed_at: Utc::now(),
            },
        );
        self.save(name).await?;
        self.metrics
            .steps_completed
            .with_label_values(&[name])
            .inc();
        info!(step = name, "step done");
        Ok(output)
    }

    async fn save(&mut self, step: &str) -> Result<(), TaskError> {
        self.ledger
            .save(self.record)
            .await
            .map_err(|err| TaskError::Transient(format!("recording step {step:?}: {err}")))
    }
}
