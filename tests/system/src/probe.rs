//! A test handler with recorded, optionally slow, steps.
//!
//! Driven by labels of the triggered event:
//! - `probe.steps`: number of steps (default 1);
//! - `probe.step-ms`: how long each step takes (default 0);
//! - `probe.decline`: any value makes the handler decline the task (no events);
//! - `probe.fail`: any value makes the task fail with that message;
//! - `probe.transient`: any value makes every attempt fail for a transient reason;
//! - `probe.panic`: any value makes every attempt panic (a bug in a handler).
//!
//! Every begin/end of a run and every step start/done is appended as one JSON line to
//! the file named by `PROBE_LOG` (O_APPEND, one write per line, so lines from several
//! processes never interleave). Tests read it to count effects and check overlaps.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use contracts::data::TaskResult;
use serde::{Deserialize, Serialize};
use worker::handler::{Decision, Outcome, Steps, TaskError, TaskHandler};
use worker::pipeline::intake::Task;

/// One line of the probe log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    /// `begin`, `end`, `step-start`, `step-done`.
    pub what: String,
    pub event_id: String,
    pub release: String,
    pub step: Option<u32>,
    pub pid: u32,
    /// Nanoseconds since the Unix epoch.
    pub at_ns: u64,
}

#[derive(Clone)]
pub struct Probe {
    log: Option<Arc<PathBuf>>,
}

impl Probe {
    pub fn from_env() -> Self {
        Probe {
            log: std::env::var_os("PROBE_LOG").map(|p| Arc::new(PathBuf::from(p))),
        }
    }

    fn record(&self, what: &str, task: &Task, step: Option<u32>) -> Result<(), TaskError> {
        let Some(path) = &self.log else { return Ok(()) };
        let record = ProbeRecord {
            what: what.to_owned(),
            event_id: task.event.id().to_owned(),
            release: task.release.lease_key().to_owned(),
            step,
            pid: std::process::id(),
            at_ns: now_ns(),
        };
        let mut line = serde_json::to_vec(&record).expect("records serialize");
        line.push(b'\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path.as_ref())
            .and_then(|mut file| file.write_all(&line))
            .map_err(|err| TaskError::Failed(format!("probe log: {err}")))
    }
}

fn label<'a>(task: &'a Task, key: &str) -> Option<&'a str> {
    task.payload
        .common()
        .labels
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

#[async_trait]
impl TaskHandler for Probe {
    fn decide(&self, task: &Task) -> Decision {
        if label(task, "probe.decline").is_some() {
            Decision::Decline {
                reason: "probe-declined",
            }
        } else {
            Decision::Accept
        }
    }

    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        let count: u32 = label(task, "probe.steps")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let step_ms: u64 = label(task, "probe.step-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.record("begin", task, None)?;
        if let Some(reason) = label(task, "probe.transient") {
            return Err(TaskError::Transient(reason.to_owned()));
        }
        if let Some(reason) = label(task, "probe.panic") {
            panic!("probe.panic: {reason}");
        }
        for index in 0..count {
            steps
                .step(&format!("probe-step-{index}"), || async {
                    self.record("step-start", task, Some(index))?;
                    if step_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(step_ms)).await;
                    }
                    self.record("step-done", task, Some(index))?;
                    Ok(index)
                })
                .await?;
        }
        self.record("end", task, None)?;
        if let Some(message) = label(task, "probe.fail") {
            return Err(TaskError::Failed(message.to_owned()));
        }
        // The count is in the message only: the spec's schemas allow no field of our own in
        // a reply's data.
        Ok(Outcome::succeeded(
            TaskResult::Pass,
            format!("probe ran {count} steps"),
        ))
    }
}

/// Reads every record of a probe log (missing file: none yet).
pub fn read_log(path: &std::path::Path) -> Vec<ProbeRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).expect("probe log lines are records"))
        .collect()
}

/// Pairs of runs on the same release whose [begin, end] intervals overlap.
pub fn overlaps(records: &[ProbeRecord]) -> Vec<(String, String, String)> {
    let mut runs: BTreeMap<&str, Vec<(u64, u64, &str)>> = BTreeMap::new();
    let mut begins: HashMap<(&str, u32), u64> = HashMap::new();
    for record in records {
        match record.what.as_str() {
            "begin" => {
                begins.insert((&record.event_id, record.pid), record.at_ns);
            }
            "end" => {
                let begin = begins[&(record.event_id.as_str(), record.pid)];
                runs.entry(&record.release).or_default().push((
                    begin,
                    record.at_ns,
                    &record.event_id,
                ));
            }
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (release, mut intervals) in runs {
        intervals.sort();
        for pair in intervals.windows(2) {
            if pair[1].0 < pair[0].1 {
                found.push((
                    release.to_owned(),
                    pair[0].2.to_owned(),
                    pair[1].2.to_owned(),
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overlap_check_can_fail() {
        let record = |what: &str, id: &str, at: u64| ProbeRecord {
            what: what.into(),
            event_id: id.into(),
            release: "p.s.svc".into(),
            step: None,
            pid: 1,
            at_ns: at,
        };
        let overlapping = [
            record("begin", "a", 0),
            record("begin", "b", 5),
            record("end", "a", 10),
            record("end", "b", 15),
        ];
        assert_eq!(overlaps(&overlapping).len(), 1);
        let sequential = [
            record("begin", "a", 0),
            record("end", "a", 10),
            record("begin", "b", 11),
            record("end", "b", 15),
        ];
        assert!(overlaps(&sequential).is_empty());
    }
}
