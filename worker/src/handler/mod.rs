//! The task handler interface: what the deployment, release, rollback, action and
//! delete handlers implement, and the step journal they record their progress in.
//!
//! A handler never publishes events or acks messages itself: it decides and acts,
//! and returns an [`Outcome`]. The pipeline turns that into the `.finished` event,
//! exactly once. Multi-step work goes through [`Steps::step`], so a redelivered event
//! skips the steps a crashed attempt already completed.

pub mod action;
pub mod delete;
mod deployed_service;
pub mod deployment;
pub mod platform;
pub mod release;
mod steps;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use contracts::data::{Status, TaskResult};
use serde_json::{Map, Value};

pub use steps::{OtherLeases, Steps};

use crate::pipeline::intake::{Task, TaskKind};

/// Whether a handler takes a task, decided before anything is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send `.started`, run the handler, send `.finished`.
    Accept,
    /// Not ours (e.g. an action other than scaling): acknowledge, publish nothing.
    Decline { reason: &'static str },
    /// Ours, but it cannot be done: answer `.finished` errored/fail with this message,
    /// without a `.started`.
    Refuse { message: String },
}

/// The result of a task, turned into its `.finished` event by the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: Status,
    pub result: Option<TaskResult>,
    pub message: String,
    /// Task-specific data merged into the finished event's `data`, e.g.
    /// `{"deployment": {...}}`.
    pub payload: Map<String, Value>,
}

impl Outcome {
    pub fn succeeded(result: TaskResult, message: impl Into<String>) -> Self {
        Outcome {
            status: Status::Succeeded,
            result: Some(result),
            message: message.into(),
            payload: Map::new(),
        }
    }

    /// An error a person has to act on: status errored, result fail.
    pub fn errored(message: impl Into<String>) -> Self {
        Outcome {
            status: Status::Errored,
            result: Some(TaskResult::Fail),
            message: message.into(),
            payload: Map::new(),
        }
    }

    pub fn with_payload(mut self, key: &str, value: Value) -> Self {
        self.payload.insert(key.to_owned(), value);
        self
    }
}

/// Why a handler stopped without an outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskError {
    /// The task cannot succeed as asked; answered errored/fail with this message.
    #[error("{0}")]
    Failed(String),
    /// Infrastructure trouble that a later attempt may not have (NATS down, lease
    /// lost): the message is handed back for redelivery and resumes from the release record.
    #[error("transient failure: {0}")]
    Transient(String),
}

impl TaskError {
    /// A task handed to a handler of another kind: a wiring bug in the registry, answered
    /// as a failed task rather than a panic.
    pub fn misrouted(handler: &str, task: &Task) -> Self {
        TaskError::Failed(format!(
            "internal error: {handler} got a {} task",
            task.kind.event_type()
        ))
    }
}

/// One kind of Keptn task.
#[async_trait]
pub trait TaskHandler: Send + Sync + 'static {
    /// Decides, without side effects, whether the task is taken.
    fn decide(&self, _task: &Task) -> Decision {
        Decision::Accept
    }

    /// Does the work. Runs while the release lease is held; may run again after a
    /// crash, with the steps recorded so far skipped.
    async fn run(&self, task: &Task, steps: &mut Steps<'_>) -> Result<Outcome, TaskError>;
}

/// The handlers of this build, by task kind.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<TaskKind, Arc<dyn TaskHandler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, kind: TaskKind, handler: impl TaskHandler) -> Self {
        self.handlers.insert(kind, Arc::new(handler));
        self
    }

    /// The handler for `kind`; a task without one is refused as not implemented,
    /// never answered with a fake success.
    pub fn get(&self, kind: TaskKind) -> Arc<dyn TaskHandler> {
        self.handlers
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| Arc::new(NotImplemented))
    }
}

/// Stands in for a task kind this build has no handler for.
struct NotImplemented;

#[async_trait]
impl TaskHandler for NotImplemented {
    fn decide(&self, task: &Task) -> Decision {
        Decision::Refuse {
            message: format!(
                "not implemented: this build of helm-service has no handler for {} events",
                task.kind.event_type()
            ),
        }
    }

    async fn run(&self, task: &Task, _steps: &mut Steps<'_>) -> Result<Outcome, TaskError> {
        Err(TaskError::Failed(format!(
            "not implemented: no handler for {}",
            task.kind.event_type()
        )))
    }
}
