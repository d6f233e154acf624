//! Keptn task event types: `sh.keptn.event.<task>.<phase>`.
//!
//! The type is also the NATS subject, and the worker decides from it what to do with a message
//! and which type its replies carry. Parsing it once into an [`EventType`] keeps string surgery
//! (a task may itself contain dots, e.g. `service.delete`) out of the worker.

use std::fmt;
use std::str::FromStr;

/// Every Keptn task event type starts with this prefix.
pub const KEPTN_EVENT_PREFIX: &str = "sh.keptn.event.";

/// Where an event stands in the life cycle of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Asks an integration to run the task.
    Triggered,
    /// An integration accepted the task.
    Started,
    /// Optional progress report (`status.changed`).
    StatusChanged,
    /// The task ended, with a status and a result.
    Finished,
}

impl Phase {
    /// The suffix of the event type for this phase (`status.changed` contains a dot).
    pub const fn as_str(self) -> &'static str {
        match self {
            Phase::Triggered => "triggered",
            Phase::Started => "started",
            Phase::StatusChanged => "status.changed",
            Phase::Finished => "finished",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a Keptn task event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventTypeError {
    /// The type does not start with [`KEPTN_EVENT_PREFIX`] (e.g. `sh.keptn.events.problem`,
    /// `sh.keptn.log.error`): it is a Keptn event, but not a task event.
    #[error(
        "event type {} is not a Keptn task event: expected \
         \"sh.keptn.event.<task>.<triggered|started|status.changed|finished>\"",
        crate::quoted(_0)
    )]
    NotATaskEvent(String),
    /// The type does not end with a known phase (e.g. `sh.keptn.event.monitoring.configure`).
    #[error(
        "event type {} has no task phase: it must end with .triggered, .started, \
         .status.changed or .finished",
        crate::quoted(_0)
    )]
    UnknownPhase(String),
    /// The task part is empty or contains characters outside `[a-z0-9-]` and dots.
    #[error(
        "task name {} is invalid: it must be one or more dot-separated segments of \
         lower-case letters, digits and '-'",
        crate::quoted(task)
    )]
    InvalidTask {
        /// The offending task name.
        task: String,
    },
}

/// A parsed `sh.keptn.event.<task>.<phase>` type.
///
/// The fields are public for pattern matching; [`EventType::parse`] is the way to get a
/// validated value from the wire, while [`EventType::new`] trusts its caller (use
/// [`validate_task_name`] first when the task comes from outside).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType {
    /// The task, e.g. `deployment` or `service.delete`.
    pub task: String,
    /// The life-cycle phase.
    pub phase: Phase,
}

impl EventType {
    /// Builds a type from its parts without validating the task name.
    pub fn new(task: impl Into<String>, phase: Phase) -> EventType {
        EventType {
            task: task.into(),
            phase,
        }
    }

    /// Parses `sh.keptn.event.<task>.<phase>`.
    ///
    /// The phase is matched from the end, longest first, so `deployment.status.changed` is task
    /// `deployment` in phase [`Phase::StatusChanged`] and `service.delete.finished` is task
    /// `service.delete` in phase [`Phase::Finished`].
    pub fn parse(ty: &str) -> Result<EventType, EventTypeError> {
        let rest = ty
            .strip_prefix(KEPTN_EVENT_PREFIX)
            .ok_or_else(|| EventTypeError::NotATaskEvent(ty.to_owned()))?;
        // StatusChanged first: its suffix is the longest and would otherwise never match.
        let (task, phase) = [
            Phase::StatusChanged,
            Phase::Triggered,
            Phase::Started,
            Phase::Finished,
        ]
        .into_iter()
        .find_map(|phase| {
            rest.strip_suffix(phase.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .map(|task| (task, phase))
        })
        .ok_or_else(|| EventTypeError::UnknownPhase(ty.to_owned()))?;
        validate_task_name(task)?;
        Ok(EventType::new(task, phase))
    }

    /// The same task in another phase, e.g. the `.finished` type answering a `.triggered` one.
    pub fn with_phase(&self, phase: Phase) -> EventType {
        EventType::new(self.task.clone(), phase)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEPTN_EVENT_PREFIX}{}.{}", self.task, self.phase)
    }
}

impl FromStr for EventType {
    type Err = EventTypeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventType::parse(s)
    }
}

/// Checks a task name: one or more dot-separated, non-empty segments of `[a-z0-9-]`.
///
/// Task names become NATS subject tokens, so anything else (upper case, spaces, `*`, `>`)
/// would make a subject that cannot be subscribed to reliably.
pub fn validate_task_name(task: &str) -> Result<(), EventTypeError> {
    let valid = !task.is_empty()
        && task.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(EventTypeError::InvalidTask {
            task: task.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(ty: &str) -> (String, Phase) {
        let et = EventType::parse(ty).unwrap_or_else(|e| panic!("{ty}: {e}"));
        (et.task, et.phase)
    }

    #[test]
    fn parses_simple_task_types() {
        assert_eq!(
            parsed("sh.keptn.event.deployment.triggered"),
            ("deployment".into(), Phase::Triggered)
        );
        assert_eq!(
            parsed("sh.keptn.event.release.started"),
            ("release".into(), Phase::Started)
        );
        assert_eq!(
            parsed("sh.keptn.event.get-action.finished"),
            ("get-action".into(), Phase::Finished)
        );
    }

    #[test]
    fn task_may_contain_dots() {
        assert_eq!(
            parsed("sh.keptn.event.service.delete.finished"),
            ("service.delete".into(), Phase::Finished)
        );
        assert_eq!(
            parsed("sh.keptn.event.dev.delivery.triggered"),
            ("dev.delivery".into(), Phase::Triggered)
        );
    }

    #[test]
    fn status_changed_is_one_phase() {
        assert_eq!(
            parsed("sh.keptn.event.deployment.status.changed"),
            ("deployment".into(), Phase::StatusChanged)
        );
        assert_eq!(
            parsed("sh.keptn.event.service.create.status.changed"),
            ("service.create".into(), Phase::StatusChanged)
        );
    }

    #[test]
    fn display_round_trips() {
        for ty in [
            "sh.keptn.event.deployment.triggered",
            "sh.keptn.event.deployment.status.changed",
            "sh.keptn.event.service.delete.finished",
        ] {
            assert_eq!(EventType::parse(ty).unwrap().to_string(), ty);
        }
        assert_eq!(Phase::StatusChanged.to_string(), "status.changed");
        assert_eq!(
            EventType::new("action", Phase::Started).to_string(),
            "sh.keptn.event.action.started"
        );
    }

    #[test]
    fn with_phase_keeps_task() {
        let et = EventType::parse("sh.keptn.event.service.delete.triggered").unwrap();
        assert_eq!(
            et.with_phase(Phase::Finished).to_string(),
            "sh.keptn.event.service.delete.finished"
        );
        assert_eq!(et.task, "service.delete");
        assert_eq!(et.phase, Phase::Triggered);
    }

    #[test]
    fn non_task_types_are_rejected() {
        for ty in [
            "sh.keptn.events.problem",
            "sh.keptn.log.error",
            "com.example.x",
        ] {
            assert!(
                matches!(EventType::parse(ty), Err(EventTypeError::NotATaskEvent(_))),
                "{ty}"
            );
        }
        for ty in [
            "sh.keptn.event.monitoring.configure",
            "sh.keptn.event.evaluation.invalidated",
            "sh.keptn.event.triggered",
            "sh.keptn.event.status.changed",
            "sh.keptn.event.deploymenttriggered",
            "sh.keptn.event.",
        ] {
            assert!(
                matches!(EventType::parse(ty), Err(EventTypeError::UnknownPhase(_))),
                "{ty}: {:?}",
                EventType::parse(ty)
            );
        }
        for ty in [
            "sh.keptn.event..triggered",
            "sh.keptn.event.Deployment.triggered",
            "sh.keptn.event.a..b.triggered",
            "sh.keptn.event.my task.triggered",
            "sh.keptn.event.*.triggered",
        ] {
            assert!(
                matches!(
                    EventType::parse(ty),
                    Err(EventTypeError::InvalidTask { .. })
                ),
                "{ty}: {:?}",
                EventType::parse(ty)
            );
        }
    }

    #[test]
    fn error_messages_say_what_is_expected() {
        let msg = EventType::parse("sh.keptn.events.problem")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("sh.keptn.events.problem"), "{msg}");
        assert!(msg.contains("sh.keptn.event.<task>."), "{msg}");
    }

    #[test]
    fn task_name_check() {
        assert!(validate_task_name("deployment").is_ok());
        assert!(validate_task_name("my-custom-task").is_ok());
        assert!(validate_task_name("service.delete").is_ok());
        assert!(validate_task_name("").is_err());
        assert!(validate_task_name(".x").is_err());
        assert!(validate_task_name("x.").is_err());
        assert!(validate_task_name("Deploy").is_err());
        assert!(validate_task_name("a_b").is_err());
    }
}
