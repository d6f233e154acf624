//! The step journal: run each named step of a task at most once per event.

use std::future::Future;

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};

use super::TaskError;
use crate::metrics::Metrics;
use crate::pipeline::lease::{HeldLease, LeaseError, ReleaseLeases};
use crate::pipeline::pool::Place;
use crate::pipeline::release_record::StepRecord;

/// Handed to a handler's `run`; records each completed step in the release record.
pub struct Steps<'a> {
    /// The task's own release, whose record holds the journal.
    lease: &'a HeldLease,
    event_id: &'a str,
    event_type: &'a str,
    metrics: &'a Metrics,
    /// For tasks that span releases: [`Steps::leases`] hands it out to take the others.
    others: OtherLeases<'a>,
    /// Test hook (`--test-crash-after-step`): the process kills itself right after this
    /// step is recorded, to prove a redelivery resumes at the next one.
    crash_after: Option<&'a str>,
    /// Whether the record has been written since the task began: the `.started` flag
    /// is written before the first step runs, so a long first step cannot outlive it
    /// unwritten.
    written: bool,
}

impl<'a> Steps<'a> {
    pub(crate) fn new(
        lease: &'a HeldLease,
        event_id: &'a str,
        event_type: &'a str,
        metrics: &'a Metrics,
        others: OtherLeases<'a>,
        crash_after: Option<&'a str>,
    ) -> Self {
        Steps {
            lease,
            event_id,
            event_type,
            metrics,
            others,
            crash_after,
            written: false,
        }
    }

    /// A handle to take other releases while a step runs (the journal itself stays
    /// borrowed by [`Steps::step`]).
    pub fn leases(&self) -> OtherLeases<'a> {
        self.others
    }

    /// The output recorded for a step, if it completed in this or an earlier attempt.
    async fn recorded(&self, name: &str) -> Option<serde_json::Value> {
        self.lease
            .read(|record| {
                record
                    .progress
                    .get(self.event_id)
                    .and_then(|progress| progress.steps.get(name))
                    .map(|step| step.output.clone())
            })
            .await
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
            self.metrics.record_step_skipped(name);
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
        // A span per step run (not per skip), the record writes included.
        let span = info_span!("step", otel.name = %format!("step {name}"), step = name);
        let (output, elapsed) = async {
            if !self.written {
                self.write(name, |_| {}).await?;
            }
            let started = std::time::Instant::now();
            let output = work().await?;
            let elapsed = started.elapsed();
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
            Ok::<_, TaskError>((output, elapsed))
        }
        .instrument(span)
        .await?;
        self.metrics.record_step(name, elapsed);
        info!(
            step = name,
            elapsed_ms = elapsed.as_millis() as u64,
            "step done"
        );
        crate::progress::report(format!("step {name} done"));
        if self.crash_after == Some(name) {
            crash_for_test(name);
        }
        Ok(output)
    }

    async fn write(
        &mut self,
        step: &str,
        change: impl FnOnce(&mut crate::pipeline::release_record::ReleaseRecord),
    ) -> Result<(), TaskError> {
        self.lease
            .save(change)
            .await
            .map_err(|err| TaskError::Transient(format!("recording step {step:?}: {err}")))?;
        self.written = true;
        Ok(())
    }
}

/// The crash test hook: SIGKILL to ourselves, the same death as an OOM kill or a node loss.
fn crash_for_test(step: &str) {
    warn!(
        step,
        "--test-crash-after-step: killing this process after the step was recorded"
    );
    let _ = nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL);
    std::process::abort();
}

/// Takes further releases for a task that spans several (service deletion: one per stage).
#[derive(Clone, Copy)]
pub struct OtherLeases<'a> {
    leases: &'a ReleaseLeases,
    event_id: &'a str,
    /// The task's place in the pool: its slot is lent out while it waits for a release.
    place: &'a Place,
    stop: &'a CancellationToken,
    metrics: &'a Metrics,
}

impl<'a> OtherLeases<'a> {
    pub(crate) fn new(
        leases: &'a ReleaseLeases,
        event_id: &'a str,
        place: &'a Place,
        stop: &'a CancellationToken,
        metrics: &'a Metrics,
    ) -> Self {
        OtherLeases {
            leases,
            event_id,
            place,
            stop,
            metrics,
        }
    }

    /// Runs `work` while also holding release `key`, so no task on that release overlaps it
    /// on any replica. The release is handed back unchanged afterwards; progress stays in
    /// the task's own record. Never call it for the task's own release (it would wait on
    /// itself), and one at a time.
    ///
    /// While it waits for the release the task lends its slot out, like a task waiting for
    /// its own release: the holder may be a task of this replica that waits for a slot, and
    /// with every slot held by tasks waiting on releases none would ever run again.
    pub async fn exclusive<T, Fut>(&self, key: &str, work: Fut) -> Result<T, TaskError>
    where
        Fut: Future<Output = Result<T, TaskError>>,
    {
        let transient = |err: LeaseError| TaskError::Transient(err.to_string());
        let lend_slot = || self.place.lend_slot();
        let acquired = self
            .leases
            .acquire_or_wait(key, self.event_id, self.stop, &lend_slot)
            .await
            .map_err(transient)?;
        self.metrics
            .record_lease_wait(acquired.contended, acquired.waited);
        let held = acquired.lease;
        let result = held
            .hold_while(async {
                self.place
                    .take_slot(self.stop)
                    .await
                    .map_err(|stopped| TaskError::Transient(stopped.to_string()))?;
                work.await
            })
            .await;
        held.hand_back_unchanged().await;
        result.map_err(transient)?
    }
}
