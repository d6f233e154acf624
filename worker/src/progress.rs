//! Progress reports: `sh.keptn.event.<task>.status.changed` while a task runs.
//!
//! Whatever a task reaches that is worth telling (a step done, a rollout that moved, "2 of 3
//! updated replicas are available") is handed to [`report`] where it happens: the step
//! journal, the rollout watches. The processor runs a [`forward`]er beside the task that
//! publishes the newest report at most once per `--progress-interval`; reports made in
//! between are replaced by later ones (a slow watcher wants where the task is now, not every
//! step of the way), and one that repeats the last one sent is not sent again.
//!
//! [`report`] reaches the forwarder through a task-local, as a log line reaches its span:
//! the point that knows the progress (the rollout watch) is five calls below the processor,
//! through every handler, and none of them has anything else to do with it. Outside a task
//! with reports on, it does nothing.
//!
//! Report ids are derived from the event and the message (`contracts::reply::status_changed_id`),
//! so a redelivered event that reaches the same point again sends the same id and the
//! stream's duplicate window drops it. Publishing one is best effort: bounded by the interval
//! (at least [`MIN_PUBLISH_TIMEOUT`]), and a failure is logged and counted, never the task's.
//! Nothing is reported after the task ends: the forwarder stops before `.finished` is sent.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use contracts::reply::ReplyBuilder;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::parse_duration;
use crate::metrics::Metrics;
use crate::nats::publisher::{event_headers, Publisher};

/// How long a report's publish may take when the interval is shorter.
pub const MIN_PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of progress reports (flags of `run`).
#[derive(Debug, Clone, Args)]
pub struct ProgressConfig {
    /// Send `<task>.status.changed` events while a task runs (step done, rollout progress);
    /// `false` turns them off.
    #[arg(long = "progress-events", env = "PROGRESS_EVENTS", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Least time between two `status.changed` events of one task; what happens in between
    /// is told by the next one.
    #[arg(long = "progress-interval", env = "PROGRESS_INTERVAL", default_value = "5s",
          value_parser = parse_duration)]
    pub interval: Duration,
}

tokio::task_local! {
    /// The reporter of the task running on this tokio task, if reports are on.
    static REPORTER: watch::Sender<Option<String>>;
}

/// Tells the running task's watchers `message` (see the module docs); does nothing outside
/// a task with reports on.
pub fn report(message: impl Into<String>) {
    let _ = REPORTER.try_with(|reporter| {
        reporter.send_replace(Some(message.into()));
    });
}

/// Runs `work` (a task) with its reports going to `reporter`.
pub async fn reporting_to<F: Future>(
    reporter: watch::Sender<Option<String>>,
    work: F,
) -> F::Output {
    REPORTER.scope(reporter, work).await
}

/// A reporter and the receiving end its [`forward`]er reads.
pub fn channel() -> (
    watch::Sender<Option<String>>,
    watch::Receiver<Option<String>>,
) {
    watch::channel(None)
}

/// Publishes the reports arriving on `reports` as `.status.changed` replies (built by
/// `replies`), at most one per `interval`. Never ends: it is dropped with the task.
pub async fn forward(
    reports: watch::Receiver<Option<String>>,
    replies: &ReplyBuilder,
    publisher: &Publisher,
    metrics: &Metrics,
    interval: Duration,
) -> std::convert::Infallible {
    pace(reports, interval, |message| {
        let event = replies.status_changed(&message);
        async move {
            let publish = publisher.publish(
                event.ty(),
                event.id(),
                event_headers(&event),
                Bytes::from(event.encode()),
            );
            match tokio::time::timeout(interval.max(MIN_PUBLISH_TIMEOUT), publish).await {
                Ok(Ok(_)) => {
                    debug!(%message, "progress reported");
                    metrics.record_status_changed("sent");
                }
                Ok(Err(err)) => {
                    warn!(error = %err, "could not send a progress report (status.changed)");
                    metrics.record_status_changed("failed");
                }
                Err(_) => {
                    warn!("sending a progress report (status.changed) timed out");
                    metrics.record_status_changed("failed");
                }
            }
        }
    })
    .await
}

/// The pacing of progress reports, apart from how one is sent: a new report goes to `send`
/// unless it repeats the last one sent, and then nothing goes for `interval`; reports made
/// meanwhile are replaced by the newest (a watch channel keeps only that).
async fn pace<F, Fut>(
    mut reports: watch::Receiver<Option<String>>,
    interval: Duration,
    mut send: F,
) -> std::convert::Infallible
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut last_sent: Option<String> = None;
    loop {
        if reports.changed().await.is_err() {
            // The reporter is gone (cannot happen while the task runs): wait to be dropped.
            return std::future::pending().await;
        }
        let message = reports.borrow_and_update().clone();
        if let Some(message) = message.filter(|m| last_sent.as_ref() != Some(m)) {
            send(message.clone()).await;
            last_sent = Some(message);
            tokio::time::sleep(interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reports_are_paced_newest_wins_and_repeats_are_not_sent() {
        let interval = Duration::from_secs(5);
        let (reporter, reports) = channel();
        let started = tokio::time::Instant::now();
        let sent: Arc<Mutex<Vec<(Duration, String)>>> = Arc::default();
        let log = sent.clone();
        let pacer = tokio::spawn(pace(reports, interval, move |message| {
            log.lock().unwrap().push((started.elapsed(), message));
            async {}
        }));
        let at = |secs: u64| tokio::time::sleep_until(started + Duration::from_secs(secs));

        reporter.send_replace(Some("step a done".into()));
        at(1).await;
        // Within the interval: the first is replaced by the second, which waits its turn.
        reporter.send_replace(Some("rollout: 0 of 2 ready".into()));
        reporter.send_replace(Some("rollout: 1 of 2 ready".into()));
        at(7).await;
        // The same again: not sent. Then a new one, after the interval.
        reporter.send_replace(Some("rollout: 1 of 2 ready".into()));
        at(11).await;
        reporter.send_replace(Some("rollout: 2 of 2 ready".into()));
        at(30).await;
        pacer.abort();

        let sent = sent.lock().unwrap().clone();
        let secs: Vec<(u64, &str)> = sent
            .iter()
            .map(|(after, message)| (after.as_secs(), message.as_str()))
            .collect();
        assert_eq!(
            secs,
            vec![
                (0, "step a done"),
                (5, "rollout: 1 of 2 ready"),
                (11, "rollout: 2 of 2 ready"),
            ]
        );
    }

    #[tokio::test]
    async fn reports_reach_the_scoped_reporter_and_nothing_else() {
        report("outside any task: ignored");
        let (reporter, mut reports) = channel();
        reporting_to(reporter, async {
            report("first");
            report("second");
        })
        .await;
        assert_eq!(reports.borrow_and_update().as_deref(), Some("second"));
        let (reporter, reports) = channel();
        reporting_to(reporter, async {
            let spawned = tokio::spawn(async { report("on another tokio task") });
            spawned.await.unwrap();
        })
        .await;
        assert_eq!(*reports.borrow(), None);
    }
}
