//! Intake: decide what a raw JetStream message is, before anything is done with it.
//!
//! Pure logic (bytes in, verdict out) so every kind of bad input is unit-testable
//! without a server. The verdicts map one-to-one onto what the pipeline does:
//! dead-letter it, ignore it, answer it `errored`, or run it.

use contracts::data::{
    ActionTriggeredData, CommonData, DeploymentStrategy, DeploymentTriggeredData,
    ReleaseTriggeredData, RollbackTriggeredData, ServiceDeleteData,
};
use contracts::envelope::{
    KeptnEvent, EXT_GIT_COMMIT_ID, EXT_KEPTN_CONTEXT, EXT_TRACEPARENT, EXT_TRACESTATE,
    EXT_TRIGGERED_ID,
};
use contracts::trace_context::{is_valid_traceparent, is_valid_tracestate};
use contracts::validate::{DeploymentTask, ServiceRef, Target, ValidationError};
use serde::de::DeserializeOwned;

use crate::deploy::naming::ReleaseNames;

/// `source` of every event this service publishes; events from it are never consumed.
pub const OWN_SOURCE: &str = "helm-service";

/// Longest `id`, `shkeptncontext`, `triggeredid` or `gitcommitid` accepted. Keptn's are
/// UUIDs and commit hashes (36 and 40 characters); these values are kept in release records,
/// logs and replies, so one of any size up to the event cap would make every record of its
/// release that large.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// Longest reason or detail intake writes into a reply or a dead letter. The messages quote
/// what they refuse, and a hostile event can make that arbitrarily long (a 300 KB string
/// where a list belongs); longer ones keep their start and end (what was wrong, and what was
/// expected) around a marker.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// The one remediation action helm-service runs; every other action belongs to another
/// integration and gets no reply from us at all.
pub const SCALING_ACTION: &str = "scaling";

/// The Keptn tasks this service handles, one per consumed event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskKind {
    Deployment,
    Release,
    Rollback,
    Action,
    ServiceDelete,
}

impl TaskKind {
    pub const ALL: [TaskKind; 5] = [
        TaskKind::Deployment,
        TaskKind::Release,
        TaskKind::Rollback,
        TaskKind::Action,
        TaskKind::ServiceDelete,
    ];

    /// The event type consumed for this task; also its NATS subject.
    pub fn event_type(self) -> &'static str {
        match self {
            TaskKind::Deployment => "sh.keptn.event.deployment.triggered",
            TaskKind::Release => "sh.keptn.event.release.triggered",
            TaskKind::Rollback => "sh.keptn.event.rollback.triggered",
            TaskKind::Action => "sh.keptn.event.action.triggered",
            TaskKind::ServiceDelete => "sh.keptn.event.service.delete.finished",
        }
    }

    pub fn from_event_type(event_type: &str) -> Option<TaskKind> {
        TaskKind::ALL
            .into_iter()
            .find(|kind| kind.event_type() == event_type)
    }

    /// Whether the task is answered with a `.started` event. `service.delete.finished`
    /// is itself a report of a finished sequence step, so it gets no `started`.
    pub fn sends_started(self) -> bool {
        !matches!(self, TaskKind::ServiceDelete)
    }
}

/// The typed, validated payload of a task: the event's data, and what validation checked
/// in it (the target's names, the strategy), which handlers use instead of the raw fields.
#[derive(Debug, Clone)]
pub enum TaskPayload {
    Deployment {
        data: DeploymentTriggeredData,
        target: Target,
        strategy: DeploymentStrategy,
    },
    Release {
        data: ReleaseTriggeredData,
        target: Target,
        strategy: DeploymentStrategy,
    },
    Rollback {
        data: RollbackTriggeredData,
        target: Target,
    },
    Action {
        data: ActionTriggeredData,
        target: Target,
    },
    ServiceDelete {
        data: ServiceDeleteData,
        /// The service, and the stage when the event names one.
        service: ServiceRef,
    },
}

impl TaskPayload {
    /// The common data fields (project, stage, service, labels, ...).
    pub fn common(&self) -> &CommonData {
        match self {
            TaskPayload::Deployment { data, .. } => &data.common,
            TaskPayload::Release { data, .. } => &data.common,
            TaskPayload::Rollback { data, .. } => &data.common,
            TaskPayload::Action { data, .. } => &data.common,
            TaskPayload::ServiceDelete { data, .. } => &data.common,
        }
    }

    /// The checked service and stage the task works on; `None` for service deletion, which
    /// spans stages.
    pub fn target(&self) -> Option<&Target> {
        match self {
            TaskPayload::Deployment { target, .. }
            | TaskPayload::Release { target, .. }
            | TaskPayload::Rollback { target, .. }
            | TaskPayload::Action { target, .. } => Some(target),
            TaskPayload::ServiceDelete { .. } => None,
        }
    }
}

/// What a task works on, as intake checked it: at most one task per key runs at a time,
/// cluster-wide. The key is what the task changes — a namespace and Helm release — rather
/// than the Keptn names, because two services' names can map to one release (see
/// [`crate::deploy::ownership`]); such tasks must serialise so the second can be refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReleaseKey(String);

impl ReleaseKey {
    /// The releases of one service in one stage: `<namespace>.<user release>` (see
    /// [`ReleaseNames::lease_key`]).
    pub fn of(names: &ReleaseNames) -> Self {
        ReleaseKey(names.lease_key())
    }

    /// A service in every stage (service deletion without a stage): `<project>._.<service>`,
    /// which no release key equals (those have one `.`). Each stage is then changed under
    /// its own release key as well.
    pub fn all_stages(project: &str, service: &str) -> Self {
        ReleaseKey(format!("{project}._.{service}"))
    }

    /// The key of the release lease.
    pub fn lease_key(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated task, ready to run.
#[derive(Debug, Clone)]
pub struct Task {
    pub kind: TaskKind,
    pub event: KeptnEvent,
    pub payload: TaskPayload,
    pub release: ReleaseKey,
}

/// Why a message went to the dead-letter stream; also the last subject token there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Larger than `--max-event-bytes`.
    TooLarge,
    /// Not a CloudEvent we can read (not JSON, wrong specversion, missing attributes).
    Malformed,
    /// A CloudEvent that cannot be answered (no Keptn context, type not the subject).
    Unaddressable,
    /// A CloudEvent of a type this service does not handle.
    UnhandledType,
    /// A task whose payload is invalid and which gets no reply to carry the error.
    InvalidData,
    /// Gave up after too many deliveries failing for transient reasons.
    Exhausted,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::TooLarge => "too-large",
            DeadLetterReason::Malformed => "malformed",
            DeadLetterReason::Unaddressable => "unaddressable",
            DeadLetterReason::UnhandledType => "unhandled-type",
            DeadLetterReason::InvalidData => "invalid-data",
            DeadLetterReason::Exhausted => "exhausted",
        }
    }
}

/// The verdict on one message.
#[derive(Debug)]
pub enum Intake {
    /// Valid: run it.
    Accept(Box<Task>),
    /// Addressable but invalid: answer `finished` errored/fail with `reason`.
    Reject {
        kind: TaskKind,
        event: Box<KeptnEvent>,
        reason: String,
    },
    /// Acknowledge and do nothing (our own events).
    Ignore { reason: &'static str },
    /// Not processable: record it in the dead-letter stream.
    DeadLetter {
        reason: DeadLetterReason,
        detail: String,
    },
}

/// Classifies one message taken from `subject`.
///
/// Every `Reject` reason and `DeadLetter` detail is at most [`MAX_MESSAGE_BYTES`] and free of
/// control characters (see [`for_humans`]), whatever the event held.
pub fn classify(subject: &str, payload: &[u8], max_event_bytes: usize) -> Intake {
    match classify_raw(subject, payload, max_event_bytes) {
        Intake::Reject {
            kind,
            event,
            reason,
        } => Intake::Reject {
            kind,
            event,
            reason: for_humans(reason),
        },
        Intake::DeadLetter { reason, detail } => Intake::DeadLetter {
            reason,
            detail: for_humans(detail),
        },
        verdict => verdict,
    }
}

/// A message for a reply, a dead letter or a log line: control characters escaped (a line
/// break from an event must not forge a log line), and at most [`MAX_MESSAGE_BYTES`], keeping
/// its start and its end.
pub fn for_humans(message: String) -> String {
    let message = if message.chars().any(char::is_control) {
        message
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_debug().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    } else {
        message
    };
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    const MARKER: &str = " [...] ";
    let keep = (MAX_MESSAGE_BYTES - MARKER.len()) / 2;
    let mut head = keep;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - keep;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}{MARKER}{}", &message[..head], &message[tail..])
}

fn classify_raw(subject: &str, payload: &[u8], max_event_bytes: usize) -> Intake {
    if payload.len() > max_event_bytes {
        return Intake::DeadLetter {
            reason: DeadLetterReason::TooLarge,
            detail: format!(
                "event of {} bytes exceeds the limit of {max_event_bytes} bytes (--max-event-bytes)",
                payload.len()
            ),
        };
    }
    let mut event = match KeptnEvent::decode(payload) {
        Ok(event) => event,
        Err(err) => {
            return Intake::DeadLetter {
                reason: DeadLetterReason::Malformed,
                detail: err.to_string(),
            }
        }
    };
    if let Some(detail) = oversized_attribute(&event) {
        return Intake::DeadLetter {
            reason: DeadLetterReason::Malformed,
            detail,
        };
    }
    for dropped in drop_invalid_trace_context(&mut event) {
        tracing::warn!(
            id = event.id(),
            attribute = dropped,
            "dropped an invalid W3C trace context attribute: replies will not carry it"
        );
    }
    if event.source() == OWN_SOURCE {
        return Intake::Ignore {
            reason: "own-source",
        };
    }
    if event.ty() != subject {
        return Intake::DeadLetter {
            reason: DeadLetterReason::Unaddressable,
            detail: format!(
                "event type {:?} does not match the subject {subject:?} it was published on",
                event.ty()
            ),
        };
    }
    let Some(kind) = TaskKind::from_event_type(event.ty()) else {
        return Intake::DeadLetter {
            reason: DeadLetterReason::UnhandledType,
            detail: format!(
                "helm-service does not handle events of type {:?}",
                event.ty()
            ),
        };
    };
    if event.keptn_context().is_none_or(str::is_empty) {
        return Intake::DeadLetter {
            reason: DeadLetterReason::Unaddressable,
            detail:
                "the shkeptncontext extension is missing: a reply could not be tied to its sequence"
                    .into(),
        };
    }
    if kind == TaskKind::Action
        && event
            .typed_data::<ActionTriggeredData>()
            .is_ok_and(|data| is_foreign_action(&data))
    {
        return Intake::Ignore {
            reason: "foreign-action",
        };
    }
    match validate(kind, &event) {
        Ok((payload, release)) => Intake::Accept(Box::new(Task {
            kind,
            event,
            payload,
            release,
        })),
        Err(reason) if kind.sends_started() => Intake::Reject {
            kind,
            event: Box::new(event),
            reason,
        },
        // A report event gets no answer, so its problem is recorded as a dead letter.
        Err(reason) => Intake::DeadLetter {
            reason: DeadLetterReason::InvalidData,
            detail: reason,
        },
    }
}

/// Why the event's identifying attributes are unacceptable: one longer than
/// [`MAX_ATTRIBUTE_BYTES`] (`None` when all are within it).
fn oversized_attribute(event: &KeptnEvent) -> Option<String> {
    let attributes = [
        ("id", Some(event.id())),
        (EXT_KEPTN_CONTEXT, event.keptn_context()),
        (EXT_TRIGGERED_ID, event.triggered_id()),
        (EXT_GIT_COMMIT_ID, event.git_commit_id()),
    ];
    attributes.into_iter().find_map(|(name, value)| {
        let len = value?.len();
        (len > MAX_ATTRIBUTE_BYTES).then(|| {
            format!(
                "attribute {name} is {len} bytes long; helm-service accepts at most {MAX_ATTRIBUTE_BYTES} (Keptn's ids are UUIDs, commit ids hashes)"
            )
        })
    })
}

/// Removes `traceparent` and `tracestate` when they fail the W3C grammar (a line break in one
/// would otherwise reach NATS headers); the names of those removed. A `tracestate` without a
/// valid `traceparent` means nothing and goes with it.
fn drop_invalid_trace_context(event: &mut KeptnEvent) -> Vec<&'static str> {
    let mut dropped = Vec::new();
    if event
        .traceparent()
        .is_some_and(|parent| !is_valid_traceparent(parent))
    {
        event.remove_extension(EXT_TRACEPARENT);
        dropped.push(EXT_TRACEPARENT);
    }
    let has_parent = event.traceparent().is_some();
    if event
        .tracestate()
        .is_some_and(|state| !has_parent || !is_valid_tracestate(state))
    {
        event.remove_extension(EXT_TRACESTATE);
        dropped.push(EXT_TRACESTATE);
    }
    dropped
}

/// Whether an action.triggered asks for an action another integration runs: it names one,
/// and it is not [`SCALING_ACTION`]. The one rule of which actions are ours, asked twice on
/// purpose: here, before validation, so another integration's action gets no reply at all
/// even when its data would not pass our checks; and by the action handler's `decide`, so
/// the handler stays correct on its own whatever intake lets through. An action block that
/// is missing or names no action is not foreign: it might be a scaling action, and
/// validation answers it with what is missing. Data that cannot be read at all is not
/// judged here (intake treats it as ours, for the same reason).
pub fn is_foreign_action(data: &ActionTriggeredData) -> bool {
    data.action
        .as_ref()
        .is_some_and(|action| !action.action.is_empty() && action.action != SCALING_ACTION)
}

type Validated = (TaskPayload, ReleaseKey);

/// Checks the data of a task and turns it into typed form; the error is the message
/// of the `errored` finished event, so it names the field and what to do.
fn validate(kind: TaskKind, event: &KeptnEvent) -> Result<Validated, String> {
    let invalid = |err: ValidationError| err.to_string();
    let (payload, release) = match kind {
        TaskKind::Deployment => {
            let data: DeploymentTriggeredData = typed(event)?;
            let DeploymentTask { target, strategy } = data.validate().map_err(invalid)?;
            let release = release_of(&target)?;
            let payload = TaskPayload::Deployment {
                data,
                target,
                strategy,
            };
            (payload, release)
        }
        TaskKind::Release => {
            let data: ReleaseTriggeredData = typed(event)?;
            let DeploymentTask { target, strategy } = data.validate().map_err(invalid)?;
            let release = release_of(&target)?;
            let payload = TaskPayload::Release {
                data,
                target,
                strategy,
            };
            (payload, release)
        }
        TaskKind::Rollback => {
            let data: RollbackTriggeredData = typed(event)?;
            let target = data.validate().map_err(invalid)?;
            let release = release_of(&target)?;
            (TaskPayload::Rollback { data, target }, release)
        }
        TaskKind::Action => {
            let data: ActionTriggeredData = typed(event)?;
            let target = data.validate().map_err(invalid)?.target;
            let release = release_of(&target)?;
            (TaskPayload::Action { data, target }, release)
        }
        TaskKind::ServiceDelete => {
            let data: ServiceDeleteData = typed(event)?;
            let service = data.validate().map_err(invalid)?;
            let release = match &service.stage {
                // The stage's own release key, so the deletion never overlaps a task there.
                Some(stage) => release_of(&Target {
                    project: service.project.clone(),
                    stage: stage.clone(),
                    service: service.service.clone(),
                })?,
                None => ReleaseKey::all_stages(&service.project, &service.service),
            };
            (TaskPayload::ServiceDelete { data, service }, release)
        }
    };
    Ok((payload, release))
}

/// The lease key of a service in a stage, refused when its release name is reserved (see
/// [`ReleaseNames::new`]) or the namespace would be too long.
fn release_of(target: &Target) -> Result<ReleaseKey, String> {
    ReleaseNames::new(&target.project, &target.stage, &target.service)
        .map(|names| ReleaseKey::of(&names))
        .map_err(|err| err.to_string())
}

fn typed<T: DeserializeOwned>(event: &KeptnEvent) -> Result<T, String> {
    event
        .typed_data::<T>()
        .map_err(|err| format!("invalid event data: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const LIMIT: usize = 64 * 1024;

    fn event(task: &str) -> Value {
        json!({
            "specversion": "1.0",
            "id": "id-1",
            "source": "shipyard-controller",
            "type": format!("sh.keptn.event.{task}.triggered"),
            "shkeptncontext": "ctx-1",
            "data": {
                "project": "sockshop", "stage": "dev", "service": "carts",
                "deployment": {"deploymentstrategy": "duplicate", "deploymentURIsLocal": []},
                "action": {"name": "scale", "action": "scaling", "value": "+1"}
            }
        })
    }

    fn classify_value(value: &Value) -> Intake {
        classify(
            value["type"].as_str().unwrap(),
            value.to_string().as_bytes(),
            LIMIT,
        )
    }

    #[test]
    fn a_valid_deployment_is_accepted_with_its_release_and_strategy() {
        let Intake::Accept(task) = classify_value(&event("deployment")) else {
            panic!("expected accept")
        };
        assert_eq!(task.kind, TaskKind::Deployment);
        assert_eq!(task.release.lease_key(), "sockshop-dev.sockshop-dev-carts");
        assert!(matches!(
            task.payload,
            TaskPayload::Deployment {
                strategy: DeploymentStrategy::BlueGreenService,
                ..
            }
        ));
        let target = task
            .payload
            .target()
            .expect("a deployment names its target");
        assert_eq!(
            (
                target.project.as_str(),
                target.stage.as_str(),
                target.service.as_str()
            ),
            ("sockshop", "dev", "carts")
        );
    }

    #[test]
    fn every_handled_kind_is_accepted() {
        for (task, kind) in [
            ("deployment", TaskKind::Deployment),
            ("release", TaskKind::Release),
            ("rollback", TaskKind::Rollback),
            ("action", TaskKind::Action),
        ] {
            match classify_value(&event(task)) {
                Intake::Accept(accepted) => assert_eq!(accepted.kind, kind),
                other => panic!("{task}: {other:?}"),
            }
        }
        let mut delete = event("x");
        delete["type"] = json!("sh.keptn.event.service.delete.finished");
        delete["data"].as_object_mut().unwrap().remove("stage");
        let Intake::Accept(task) = classify_value(&delete) else {
            panic!()
        };
        assert_eq!(task.release.lease_key(), "sockshop._.carts");
        assert!(!task.kind.sends_started());
    }

    #[test]
    fn services_whose_names_meet_in_one_release_share_its_lease() {
        let key = |project: &str, stage: &str, service: &str| {
            let mut value = event("deployment");
            value["data"]["project"] = json!(project);
            value["data"]["stage"] = json!(stage);
            value["data"]["service"] = json!(service);
            match classify_value(&value) {
                Intake::Accept(task) => task.release.lease_key().to_owned(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            key("shop", "prod-eu", "carts"),
            key("shop-prod", "eu", "carts")
        );
        assert_eq!(
            key("shop", "prod-eu", "carts"),
            "shop-prod-eu.shop-prod-eu-carts"
        );
        assert_ne!(key("shop", "dev", "carts"), key("shop", "dev", "orders"));
        let mut named_stage = event("x");
        named_stage["type"] = json!("sh.keptn.event.service.delete.finished");
        let Intake::Accept(delete) = classify_value(&named_stage) else {
            panic!()
        };
        assert_eq!(delete.release, key_of_carts_in_dev());
    }

    fn key_of_carts_in_dev() -> ReleaseKey {
        ReleaseKey::of(&ReleaseNames::new("sockshop", "dev", "carts").unwrap())
    }

    #[test]
    fn a_service_named_like_a_generated_release_is_refused() {
        let mut value = event("deployment");
        value["data"]["service"] = json!("carts-generated");
        let Intake::Reject { reason, .. } = classify_value(&value) else {
            panic!("expected reject")
        };
        assert!(
            reason.contains("\"sockshop-dev-carts-generated\"")
                && reason.contains("rename the service"),
            "{reason}"
        );
    }

    #[test]
    fn envelope_problems_are_dead_letters() {
        let reason = |intake: Intake| match intake {
            Intake::DeadLetter { reason, .. } => reason,
            other => panic!("expected dead letter, got {other:?}"),
        };
        let subject = "sh.keptn.event.deployment.triggered";
        assert_eq!(
            reason(classify(subject, b"{not json", LIMIT)),
            DeadLetterReason::Malformed
        );
        assert_eq!(
            reason(classify(subject, &vec![b' '; LIMIT + 1], LIMIT)),
            DeadLetterReason::TooLarge
        );
        let mut no_context = event("deployment");
        no_context.as_object_mut().unwrap().remove("shkeptncontext");
        assert_eq!(
            reason(classify_value(&no_context)),
            DeadLetterReason::Unaddressable
        );
        let other = event("deployment");
        assert_eq!(
            reason(classify(
                "sh.keptn.event.release.triggered",
                other.to_string().as_bytes(),
                LIMIT
            )),
            DeadLetterReason::Unaddressable
        );
        let mut unhandled = event("test");
        unhandled["type"] = json!("sh.keptn.event.test.triggered");
        assert_eq!(
            reason(classify_value(&unhandled)),
            DeadLetterReason::UnhandledType
        );
    }

    #[test]
    fn invalid_data_of_a_triggered_task_is_rejected_with_a_message() {
        let message = |value: &Value| match classify_value(value) {
            Intake::Reject { reason, .. } => reason,
            other => panic!("expected reject, got {other:?}"),
        };
        let mut bad_strategy = event("deployment");
        bad_strategy["data"]["deployment"]["deploymentstrategy"] = json!("canary");
        assert!(message(&bad_strategy).contains("unknown deployment strategy \"canary\""));
        let mut bad_name = event("release");
        bad_name["data"]["project"] = json!("Sock_Shop");
        assert!(message(&bad_name).contains("project name \"Sock_Shop\" is invalid"));
        let mut no_action = event("action");
        no_action["data"].as_object_mut().unwrap().remove("action");
        assert!(message(&no_action).contains("action"));
    }

    #[test]
    fn only_actions_naming_another_action_than_scaling_are_foreign() {
        let data = |action: Value| -> ActionTriggeredData {
            serde_json::from_value(
                json!({"project": "p", "stage": "s", "service": "svc", "action": action}),
            )
            .unwrap()
        };
        assert!(!is_foreign_action(&data(
            json!({"action": "scaling", "value": "+1"})
        )));
        assert!(is_foreign_action(&data(json!({"action": "restart"}))));
        assert!(!is_foreign_action(&data(json!({"action": ""}))));
        assert!(!is_foreign_action(&data(Value::Null)));

        let mut foreign = event("action");
        foreign["data"]["action"]["action"] = json!("restart");
        assert!(matches!(
            classify_value(&foreign),
            Intake::Ignore {
                reason: "foreign-action"
            }
        ));
    }

    #[test]
    fn oversized_identifying_attributes_are_dead_letters() {
        for attribute in ["id", "shkeptncontext", "triggeredid", "gitcommitid"] {
            let mut fine = event("deployment");
            fine[attribute] = json!("x".repeat(MAX_ATTRIBUTE_BYTES));
            assert!(
                matches!(classify_value(&fine), Intake::Accept(_)),
                "{attribute} at the limit"
            );
            let mut long = event("deployment");
            long[attribute] = json!("x".repeat(MAX_ATTRIBUTE_BYTES + 1));
            match classify_value(&long) {
                Intake::DeadLetter {
                    reason: DeadLetterReason::Malformed,
                    detail,
                } => assert!(detail.contains(attribute), "{detail}"),
                other => panic!("{attribute}: expected a dead letter, got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_trace_context_is_dropped_and_valid_trace_context_kept() {
        const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let accepted = |traceparent: Option<&str>, tracestate: Option<&str>| {
            let mut value = event("deployment");
            if let Some(parent) = traceparent {
                value["traceparent"] = json!(parent);
            }
            if let Some(state) = tracestate {
                value["tracestate"] = json!(state);
            }
            let Intake::Accept(task) = classify_value(&value) else {
                panic!("expected accept for {traceparent:?} {tracestate:?}")
            };
            (
                task.event.traceparent().map(str::to_owned),
                task.event.tracestate().map(str::to_owned),
            )
        };
        assert_eq!(
            accepted(Some(PARENT), Some("congo=t61rcWkgMzE")),
            (Some(PARENT.into()), Some("congo=t61rcWkgMzE".into()))
        );
        assert_eq!(accepted(Some("not a trace"), Some("congo=1")), (None, None));
        let uppercase = PARENT.to_uppercase();
        assert_eq!(accepted(Some(&uppercase), None), (None, None));
        assert_eq!(
            accepted(Some(PARENT), Some("congo=a=b")),
            (Some(PARENT.into()), None)
        );
        assert_eq!(accepted(None, Some("congo=1")), (None, None));
        assert_eq!(accepted(None, None), (None, None));
    }

    #[test]
    fn control_characters_in_any_attribute_make_a_dead_letter() {
        // A line break in an attribute copied into replies or NATS headers is refused by the
        // envelope (CloudEvents strings hold no control characters): the event is not
        // answered, since the answer would have to carry it.
        const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        for (attribute, value) in [
            ("id", "id-1\n".to_owned()),
            ("shkeptncontext", "ctx-1\r\nX-Injected: 1".to_owned()),
            ("triggeredid", "t\n".to_owned()),
            ("gitcommitid", "abc\u{0}".to_owned()),
            ("traceparent", format!("{PARENT}\r\nX-Injected: 1")),
            ("tracestate", "congo=1\n".to_owned()),
            ("source", "shipyard\ncontroller".to_owned()),
        ] {
            let mut value_json = event("deployment");
            value_json[attribute] = json!(value);
            match classify_value(&value_json) {
                Intake::DeadLetter {
                    reason: DeadLetterReason::Malformed,
                    detail,
                } => {
                    assert!(
                        detail.contains(&format!(
                            "attribute \"{attribute}\" contains the control character"
                        )),
                        "{detail}"
                    );
                }
                other => panic!("{attribute}: expected a dead letter, got {other:?}"),
            }
        }
    }

    #[test]
    fn messages_are_bounded_and_escaped() {
        let mut long = event("deployment");
        long["data"]["deployment"]["deploymentURIsLocal"] = json!("x".repeat(30_000));
        let Intake::Reject { reason, .. } = classify_value(&long) else {
            panic!("expected reject")
        };
        assert!(reason.len() <= MAX_MESSAGE_BYTES, "{}", reason.len());
        assert!(
            reason.starts_with("invalid event data: data.deployment.deploymentURIsLocal: invalid type: string \"xxx"),
            "{reason}"
        );
        assert!(reason.ends_with("xxx\", expected a sequence"), "{reason}");
        assert!(reason.contains(" [...] "), "{reason}");

        assert_eq!(for_humans("a\nb\u{0}".into()), "a\\nb\\0");
        let multibyte = "é".repeat(2000);
        let shown = for_humans(multibyte);
        assert!(shown.len() <= MAX_MESSAGE_BYTES);
        assert!(shown.starts_with('é') && shown.ends_with('é'));
        assert_eq!(for_humans("short".into()), "short");
    }

    #[test]
    fn our_own_events_are_ignored() {
        let mut own = event("deployment");
        own["source"] = json!(OWN_SOURCE);
        assert!(matches!(
            classify_value(&own),
            Intake::Ignore {
                reason: "own-source"
            }
        ));
    }

    #[test]
    fn invalid_report_events_are_dead_lettered_because_nobody_awaits_an_answer() {
        let mut delete = event("x");
        delete["type"] = json!("sh.keptn.event.service.delete.finished");
        delete["data"]["service"] = json!("");
        assert!(matches!(
            classify_value(&delete),
            Intake::DeadLetter {
                reason: DeadLetterReason::InvalidData,
                ..
            }
        ));
    }
}
