//! The step journal: run each named step of a task at most once per event.

use std::future::Future;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::info;

use super::TaskError;
use crate::metrics::Metrics;
use crate::pipeline::release_record::StepRecord;
use crate::pipeline::releases::HeldRelease;

/// Handed to a handler's `run`; records each completed step in the release record.
pub struct Steps<'a> {
    release: &'a HeldRelease,
    event_id: &'a str,
    event_type: &'a str,
    metrics: &'a Metrics,
    /// Whether the record has been written since the task began: the `.started` flag
    /// is written before the first step runs, so a long first step cannot outlive it
    /// unwritten.
    written: bool,
}

impl<'a> Steps<'a> {
    pub(crate) fn new(
        release: &'a HeldRelease,
        event_id: &'a str,
        event_type: &'a str,
        metrics: &'a Metrics,
    ) -> Self {
        Steps {
            release,
            event_id,
            event_type,
            metrics,
            written: false,
        }
    }

    /// The output recorded for a step, if it completed in this or an earlier attempt.
    async fn recorded(&self, name: &str) -> Option<serde_json::Value> {
        self.release
            .read(|record| {
                record
                    .progress
                    .get(self.event_id)
                    .and_then(|progress| progress.steps.get(name))
                    .map(|step| step.output.clone())
            })
            .await
    }

    /// Whether a step completed in this or an earlier attempt.
    pub async fn is_done(&self, name: &str) -> bool {
        self.recorded(name).await.is_some()
    }

    /// Runs `work` unless the record shows the step done, in which case the output
    /// recorded then is returned. The output is recorded before this returns, so a
    /// crash after a step never repeats it; a crash during a step repeats it, which
    /// is why steps must be safe to run again when they did not complete.
    pub async fn step<T, F, Fut>(&mut self, name: &str, work: F) -> Result<T, TaskError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, TaskError>>,
    {
        if let Some(output) = self.recorded(name).await {
            self.metrics.steps_skipped.with_label_values(&[name]).inc();
            info!(
                step = name,
                "step already done in an earlier attempt, skipping"
            );
            return serde_json::from_value(output).map_err(|err| {
                TaskError::Failed(format!(
                    "the recorded output of step {name:?} cannot be read by this version: {err}"
                ))
            });
        }
        if !self.written {
            self.write(name, |_| {}).await?;
        }
        let output = work().await?;
        let recorded = serde_json::to_value(&output)
            .map_err(|err| TaskError::Failed(format!("step {name:?} output: {err}")))?;
        let (event_id, event_type) = (self.event_id, self.event_type);
        self.write(name, |record| {
            record.progress_mut(event_id, event_type).steps.insert(
                name.to_owned(),
                StepRecord {
                    output: recorded,
                    completed_at: Utc::now(),
                },
            );
        })
        .await?;
        self.metrics
            .steps_completed
            .with_label_values(&[name])
            .inc();
        info!(step = name, "step done");
        Ok(output)
    }

    async fn write(
        &mut self,
        step: &str,
        change: impl FnOnce(&mut crate::pipeline::release_record::ReleaseRecord),
    ) -> Result<(), TaskError> {
        self.release
            .save(change)
            .await
            .map_err(|err| TaskError::Transient(format!("recording step {step:?}: {err}")))?;
        self.written = true;
        Ok(())
    }
}
