//! `.started` and `.finished` replies to a Keptn event.
//!
//! Delivery is at-least-once, so the worker may build the same reply more than once (after a
//! redelivery or a crash). Reply ids are therefore derived from the answered event's id and the
//! phase ([`reply_id`]): the same event always gets the same started and finished ids, the
//! stream's duplicate window (`Nats-Msg-Id`) drops a second publish, and two builds of one reply
//! differ only in `time`.
//!
//! Every reply carries what Keptn uses to correlate it: `triggeredid`, the same
//! `shkeptncontext`, `gitcommitid` when known, `shkeptnspecversion`
//! ([`KEPTN_SPEC_VERSION`]), the W3C trace context, and `project`/`stage`/`service`/`labels`
//! copied from the answered event's data.
//!
//! A `.finished` reply also carries the block the spec's JSON schema requires of its task
//! (`deployment`, `release`, `action`), whatever the outcome: an errored deployment still
//! says which strategy it was and which configuration commit it was about
//! ([`ReplyBuilder::finished`] completes what the handler's payload lacks).

use chrono::Utc;
use cloudevents::{EventBuilder, EventBuilderV10};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::data::{DeploymentStrategy, Status, TaskResult};
use crate::envelope::{
    KeptnEvent, EXT_GIT_COMMIT_ID, EXT_KEPTN_CONTEXT, EXT_KEPTN_SPEC_VERSION, EXT_TRACEPARENT,
    EXT_TRACESTATE, EXT_TRIGGERED_ID, JSON_CONTENT_TYPE, KEPTN_SPEC_VERSION,
};
use crate::event_type::{EventType, EventTypeError, Phase};

/// Namespace of the UUID v5 reply ids. Fixed forever: changing it would give a redelivered
/// event new reply ids and defeat duplicate suppression across an upgrade.
pub const REPLY_ID_NAMESPACE: Uuid = Uuid::from_u128(0x454f_b463_7037_4684_ab5b_e232_5a9b_6a6e);

/// Fields of the answered event's data that every reply copies.
const COPIED_FIELDS: [&str; 3] = ["project", "stage", "service"];

/// The id of the reply in `phase` to the event `triggered_id`: UUID v5 of
/// `"{triggered_id}/{phase}"` in [`REPLY_ID_NAMESPACE`].
pub fn reply_id(triggered_id: &str, phase: Phase) -> String {
    Uuid::new_v5(
        &REPLY_ID_NAMESPACE,
        format!("{triggered_id}/{phase}").as_bytes(),
    )
    .to_string()
}

/// The id of the progress report `key` (a `<task>.status.changed`) on the event
/// `triggered_id`: UUID v5 of `"{triggered_id}/status.changed/{key}"` in
/// [`REPLY_ID_NAMESPACE`]. A task sends several reports, so the phase alone does not name one;
/// the key is what the report says, so a redelivered event that reaches the same point again
/// sends the same id, and the stream's duplicate window drops it.
pub fn status_changed_id(triggered_id: &str, key: &str) -> String {
    Uuid::new_v5(
        &REPLY_ID_NAMESPACE,
        format!("{triggered_id}/{}/{key}", Phase::StatusChanged).as_bytes(),
    )
    .to_string()
}

/// Builds the replies to one incoming event.
///
/// For a `.triggered` event, [`started`](ReplyBuilder::started) and
/// [`finished`](ReplyBuilder::finished) give `<task>.started` and `<task>.finished`.
///
/// For an event that is itself `.finished` (helm-service reacts to
/// `sh.keptn.event.service.delete.finished`), `finished` yields the *same* type, a report by
/// this service about the same task, and its `triggeredid` is the incoming event's
/// `triggeredid` (the task's `.triggered` event) when it has one. The worker must not consume
/// its own reports (compare `source`). Such tasks have no `.started` reply in Keptn; `started`
/// still builds `<task>.started` if asked.
#[derive(Debug, Clone)]
pub struct ReplyBuilder {
    event_type: EventType,
    answered_id: String,
    triggered_id: String,
    source: String,
    keptn_context: Option<String>,
    git_commit_id: Option<String>,
    traceparent: Option<String>,
    tracestate: Option<String>,
    common: Map<String, Value>,
    /// `data.deployment` of the answered event, where a deployment reply's required fields
    /// come from when the handler did not report them.
    triggered_deployment: Map<String, Value>,
}

impl ReplyBuilder {
    /// Prepares replies to `incoming`, sent with `source` (e.g. `helm-service`).
    ///
    /// Fails only when `incoming` is not a Keptn task event, since the reply type is derived
    /// from it. The data is read leniently (a missing or malformed `data` still gets a reply, so
    /// bad input can be answered with an errored finished event).
    ///
    /// # Panics
    ///
    /// If `source` is empty: it is the caller's own constant, and CloudEvents requires it.
    pub fn new(incoming: &KeptnEvent, source: &str) -> Result<ReplyBuilder, EventTypeError> {
        assert!(!source.is_empty(), "reply source must not be empty");
        let event_type = incoming.event_type()?;
        let triggered_id = match event_type.phase {
            Phase::Triggered => incoming.id(),
            _ => incoming.triggered_id().unwrap_or(incoming.id()),
        };
        let mut common = Map::new();
        let mut triggered_deployment = Map::new();
        if let Some(Value::Object(data)) = incoming.data_json().as_deref() {
            if let Some(Value::Object(deployment)) = data.get("deployment") {
                triggered_deployment = deployment.clone();
            }
            for field in COPIED_FIELDS {
                if let Some(v @ Value::String(_)) = data.get(field) {
                    common.insert(field.to_owned(), v.clone());
                }
            }
            if let Some(Value::Object(labels)) = data.get("labels") {
                let labels: Map<String, Value> = labels
                    .iter()
                    .filter(|(_, v)| v.is_string())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                common.insert("labels".to_owned(), Value::Object(labels));
            }
        }
        let owned = |s: Option<&str>| s.map(str::to_owned);
        Ok(ReplyBuilder {
            event_type,
            answered_id: incoming.id().to_owned(),
            triggered_id: triggered_id.to_owned(),
            source: source.to_owned(),
            keptn_context: owned(incoming.keptn_context()),
            git_commit_id: owned(incoming.git_commit_id()),
            traceparent: owned(incoming.traceparent()),
            tracestate: owned(incoming.tracestate()),
            common,
            triggered_deployment,
        })
    }

    /// The same replies carrying `traceparent` (a W3C value the caller made, the task's own
    /// span) instead of the answered event's: with traces exported, whoever consumes a reply
    /// continues the span that produced it. `tracestate` stays the answered event's.
    pub fn with_traceparent(mut self, traceparent: String) -> ReplyBuilder {
        self.traceparent = Some(traceparent);
        self
    }

    /// The type of the `.finished` reply (see the type-level docs for `.finished` input).
    pub fn finished_type(&self) -> EventType {
        self.event_type.with_phase(Phase::Finished)
    }

    /// `<task>.started` with status `succeeded` and no result.
    pub fn started(&self) -> KeptnEvent {
        let mut data = self.common.clone();
        data.insert("status".to_owned(), Status::Succeeded.as_str().into());
        self.build(self.event_type.with_phase(Phase::Started), data)
    }

    /// `<task>.status.changed`: a progress report while the task runs, status `succeeded`
    /// (nothing went wrong so far), no result, `message` saying where the task is. Its id is
    /// [`status_changed_id`] of `message`.
    pub fn status_changed(&self, message: &str) -> KeptnEvent {
        let mut data = self.common.clone();
        data.insert("status".to_owned(), Status::Succeeded.as_str().into());
        data.insert("message".to_owned(), message.into());
        let id = status_changed_id(&self.answered_id, message);
        self.build_with_id(id, self.event_type.with_phase(Phase::StatusChanged), data)
    }

    /// `<task>.finished` (or the incoming type when it is already `.finished`).
    ///
    /// `task_payload` keys are merged into `data`, e.g. `{"deployment": {...}}`; the common
    /// fields (`project`, `stage`, `service`, `labels`, `status`, `result`, `message`) are set by
    /// the builder and win over payload keys of the same name. An empty `message` is omitted.
    /// The task block the spec requires is completed where the payload lacks it (see
    /// [`ReplyBuilder::complete_task_block`]).
    pub fn finished(
        &self,
        status: Status,
        result: Option<TaskResult>,
        message: impl Into<String>,
        task_payload: Map<String, Value>,
    ) -> KeptnEvent {
        let mut data = task_payload;
        for (k, v) in &self.common {
            data.insert(k.clone(), v.clone());
        }
        data.insert("status".to_owned(), status.as_str().into());
        match result {
            Some(result) => data.insert("result".to_owned(), result.as_str().into()),
            None => data.remove("result"),
        };
        let message = message.into();
        if message.is_empty() {
            data.remove("message");
        } else {
            data.insert("message".to_owned(), message.into());
        }
        self.complete_task_block(&mut data);
        self.build(self.finished_type(), data)
    }

    /// The configuration commit a reply reports as `gitCommit`: the answered event's
    /// `gitcommitid`, or `""` when it has none (the schema requires the field; a commit we do
    /// not know is not made up).
    fn git_commit(&self) -> String {
        self.git_commit_id.clone().unwrap_or_default()
    }

    /// Adds what the spec's schema of `<task>.finished` requires and the handler's payload
    /// did not give, so every finished reply validates, also an errored one or a refusal:
    /// - `deployment`: `deploymentstrategy` (the answered event's, canonical; `direct`, the
    ///   shipyard's default, when it named none we know), `deploymentURIsLocal` (the answered
    ///   event's, else none), `deploymentNames` (none), `gitCommit`;
    /// - `release`: `gitCommit`;
    /// - `action`: `gitCommit` when the answered event names one (optional there).
    ///
    /// Fields the payload has are kept; a payload value of the wrong JSON type for the block
    /// is replaced.
    fn complete_task_block(&self, data: &mut Map<String, Value>) {
        let block = |data: &mut Map<String, Value>, key: &str| -> Map<String, Value> {
            match data.remove(key) {
                Some(Value::Object(block)) => block,
                _ => Map::new(),
            }
        };
        match self.event_type.task.as_str() {
            "deployment" => {
                let mut deployment = block(data, "deployment");
                let triggered = &self.triggered_deployment;
                deployment.entry("deploymentstrategy").or_insert_with(|| {
                    let named = triggered
                        .get("deploymentstrategy")
                        .and_then(Value::as_str)
                        .and_then(|s| s.parse::<DeploymentStrategy>().ok());
                    named.unwrap_or(DeploymentStrategy::Direct).as_str().into()
                });
                deployment
                    .entry("deploymentURIsLocal")
                    .or_insert_with(|| string_array(triggered.get("deploymentURIsLocal")));
                deployment
                    .entry("deploymentNames")
                    .or_insert_with(|| Value::Array(Vec::new()));
                deployment
                    .entry("gitCommit")
                    .or_insert_with(|| self.git_commit().into());
                data.insert("deployment".to_owned(), Value::Object(deployment));
            }
            "release" => {
                let mut release = block(data, "release");
                release
                    .entry("gitCommit")
                    .or_insert_with(|| self.git_commit().into());
                data.insert("release".to_owned(), Value::Object(release));
            }
            "action" => {
                let mut action = block(data, "action");
                if let Some(commit) = &self.git_commit_id {
                    action
                        .entry("gitCommit")
                        .or_insert_with(|| commit.clone().into());
                }
                data.insert("action".to_owned(), Value::Object(action));
            }
            _ => {}
        }
    }

    fn build(&self, ty: EventType, data: Map<String, Value>) -> KeptnEvent {
        self.build_with_id(reply_id(&self.answered_id, ty.phase), ty, data)
    }

    fn build_with_id(&self, id: String, ty: EventType, data: Map<String, Value>) -> KeptnEvent {
        let mut builder = EventBuilderV10::new()
            .id(id)
            .ty(ty.to_string())
            .source(self.source.clone())
            .time(Utc::now())
            .data(JSON_CONTENT_TYPE, Value::Object(data))
            .extension(EXT_TRIGGERED_ID, self.triggered_id.clone())
            .extension(EXT_KEPTN_SPEC_VERSION, KEPTN_SPEC_VERSION);
        for (name, value) in [
            (EXT_KEPTN_CONTEXT, &self.keptn_context),
            (EXT_GIT_COMMIT_ID, &self.git_commit_id),
            (EXT_TRACEPARENT, &self.traceparent),
            (EXT_TRACESTATE, &self.tracestate),
        ] {
            if let Some(value) = value {
                builder = builder.extension(name, value.clone());
            }
        }
        // The SDK builder fails only on an empty source (excluded by `new`) or a missing
        // id/type/source, all of which are set above.
        let event = builder
            .build()
            .expect("reply events always have id, type and a non-empty source");
        KeptnEvent::from_valid(event)
    }
}

/// The strings of a JSON array (other items left out); an empty array for anything else.
fn string_array(value: Option<&Value>) -> Value {
    let strings = value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter(|v| v.is_string()).cloned().collect())
        .unwrap_or_default();
    Value::Array(strings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn triggered(ty: &str, extra: Value) -> KeptnEvent {
        let mut ev = json!({
            "specversion": "1.0",
            "id": "7b4a1f0e-1111-4c1a-9d55-2f7d6a1c0001",
            "source": "shipyard-controller",
            "type": ty,
            "datacontenttype": "application/json",
            "data": {
                "project": "sockshop", "stage": "dev", "service": "carts",
                "labels": {"owner": "team-a"},
                "status": "succeeded", "result": "pass", "message": "go",
                "deployment": {"deploymentstrategy": "direct", "deploymentURIsLocal": []}
            },
            "shkeptncontext": "a3e5f16d-8888-4720-82c7-6995062905c1",
            "gitcommitid": "521747298a3790fde1710f3aa2d03b55020575aa",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "congo=t61rcWkgMzE"
        });
        for (k, v) in extra.as_object().unwrap() {
            ev.as_object_mut().unwrap().insert(k.clone(), v.clone());
        }
        KeptnEvent::decode(&serde_json::to_vec(&ev).unwrap()).unwrap()
    }

    fn data(ev: &KeptnEvent) -> Value {
        ev.data_json().unwrap().into_owned()
    }

    #[test]
    fn reply_ids_are_deterministic_and_distinct_per_phase() {
        let a = reply_id("abc", Phase::Started);
        assert_eq!(a, reply_id("abc", Phase::Started));
        assert_ne!(a, reply_id("abc", Phase::Finished));
        assert_ne!(a, reply_id("abd", Phase::Started));
        let uuid = Uuid::parse_str(&a).unwrap();
        assert_eq!(uuid.get_version_num(), 5);
        assert_eq!(
            a,
            Uuid::new_v5(&REPLY_ID_NAMESPACE, b"abc/started").to_string()
        );
    }

    #[test]
    fn status_changed_ids_are_deterministic_per_message_and_apart_from_the_phases() {
        let t = triggered("sh.keptn.event.deployment.triggered", json!({}));
        let builder = ReplyBuilder::new(&t, "helm-service").unwrap();
        let report = builder.status_changed("step \"plan\" done");
        assert_eq!(report.ty(), "sh.keptn.event.deployment.status.changed");
        assert_eq!(
            report.id(),
            builder.status_changed("step \"plan\" done").id()
        );
        assert_eq!(report.id(), status_changed_id(t.id(), "step \"plan\" done"));
        assert_ne!(report.id(), builder.status_changed("other").id());
        assert_ne!(report.id(), reply_id(t.id(), Phase::StatusChanged));
        assert_eq!(report.triggered_id(), Some(t.id()));
        assert_eq!(report.traceparent(), t.traceparent());
        assert_eq!(
            data(&report),
            json!({"project": "sockshop", "stage": "dev", "service": "carts",
                   "labels": {"owner": "team-a"}, "status": "succeeded",
                   "message": "step \"plan\" done"})
        );
    }

    #[test]
    fn started_copies_context_and_common_fields() {
        let t = triggered("sh.keptn.event.deployment.triggered", json!({}));
        let started = ReplyBuilder::new(&t, "helm-service").unwrap().started();
        assert_eq!(started.ty(), "sh.keptn.event.deployment.started");
        assert_eq!(started.id(), reply_id(t.id(), Phase::Started));
        assert_eq!(started.source(), "helm-service");
        assert_eq!(started.triggered_id(), Some(t.id()));
        assert_eq!(started.keptn_context(), t.keptn_context());
        assert_eq!(started.git_commit_id(), t.git_commit_id());
        assert_eq!(started.keptn_spec_version(), Some(KEPTN_SPEC_VERSION));
        assert_eq!(started.traceparent(), t.traceparent());
        assert_eq!(started.tracestate(), t.tracestate());
        assert_eq!(started.datacontenttype(), Some("application/json"));
        assert!(started.time().is_some());
        assert_eq!(
            data(&started),
            json!({
                "project": "sockshop", "stage": "dev", "service": "carts",
                "labels": {"owner": "team-a"}, "status": "succeeded"
            })
        );
    }

    #[test]
    fn finished_merges_payload() {
        let t = triggered("sh.keptn.event.deployment.triggered", json!({}));
        let mut payload = Map::new();
        payload.insert(
            "deployment".into(),
            json!({"deploymentstrategy": "direct", "deploymentNames": ["direct"]}),
        );
        payload.insert("status".into(), json!("bogus"));
        let finished = ReplyBuilder::new(&t, "helm-service").unwrap().finished(
            Status::Succeeded,
            Some(TaskResult::Pass),
            "Finished Helm upgrade",
            payload,
        );
        assert_eq!(finished.ty(), "sh.keptn.event.deployment.finished");
        assert_eq!(finished.id(), reply_id(t.id(), Phase::Finished));
        assert_eq!(finished.triggered_id(), Some(t.id()));
        assert_eq!(
            data(&finished),
            json!({
                "project": "sockshop", "stage": "dev", "service": "carts",
                "labels": {"owner": "team-a"},
                "status": "succeeded", "result": "pass", "message": "Finished Helm upgrade",
                // Completed from the triggered event: its local URIs and its commit.
                "deployment": {"deploymentstrategy": "direct", "deploymentNames": ["direct"],
                               "deploymentURIsLocal": [],
                               "gitCommit": "521747298a3790fde1710f3aa2d03b55020575aa"}
            })
        );
        let typed: crate::data::DeploymentFinishedData = finished.typed_data().unwrap();
        assert_eq!(typed.common.status, Some(Status::Succeeded));
    }

    #[test]
    fn finished_without_result_or_message() {
        let t = triggered("sh.keptn.event.rollback.triggered", json!({}));
        let finished = ReplyBuilder::new(&t, "helm-service").unwrap().finished(
            Status::Errored,
            None,
            "",
            Map::new(),
        );
        let d = data(&finished);
        assert_eq!(d["status"], "errored");
        assert!(d.get("result").is_none());
        assert!(d.get("message").is_none());
    }

    #[test]
    fn optional_extensions_are_omitted_when_absent() {
        let t = KeptnEvent::decode(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"sh.keptn.event.action.triggered"}"#,
        )
        .unwrap();
        let started = ReplyBuilder::new(&t, "helm-service").unwrap().started();
        assert_eq!(started.keptn_context(), None);
        assert_eq!(started.git_commit_id(), None);
        assert_eq!(started.traceparent(), None);
        assert_eq!(started.triggered_id(), Some("1"));
        assert_eq!(data(&started), json!({"status": "succeeded"}));
    }

    #[test]
    fn rebuilt_replies_differ_only_in_time() {
        let t = triggered("sh.keptn.event.release.triggered", json!({}));
        let builder = ReplyBuilder::new(&t, "helm-service").unwrap();
        let build = || {
            let mut v: Value = serde_json::from_slice(
                &builder
                    .finished(Status::Succeeded, Some(TaskResult::Pass), "ok", Map::new())
                    .encode(),
            )
            .unwrap();
            assert!(v.as_object_mut().unwrap().remove("time").is_some());
            v
        };
        assert_eq!(build(), build());
    }

    #[test]
    fn report_on_a_finished_event_keeps_its_type() {
        let t = triggered(
            "sh.keptn.event.service.delete.finished",
            json!({"triggeredid": "orig-trigger"}),
        );
        let builder = ReplyBuilder::new(&t, "helm-service").unwrap();
        let report = builder.finished(Status::Succeeded, Some(TaskResult::Pass), "", Map::new());
        assert_eq!(report.ty(), "sh.keptn.event.service.delete.finished");
        assert_eq!(report.triggered_id(), Some("orig-trigger"));
        assert_eq!(report.id(), reply_id(t.id(), Phase::Finished));
        assert_ne!(report.id(), t.id());
    }

    #[test]
    fn non_task_events_get_no_builder() {
        let ev = KeptnEvent::decode(
            br#"{"specversion":"1.0","id":"1","source":"s","type":"sh.keptn.log.error"}"#,
        )
        .unwrap();
        assert!(ReplyBuilder::new(&ev, "helm-service").is_err());
    }

    #[test]
    fn malformed_data_still_gets_a_reply() {
        let t = triggered(
            "sh.keptn.event.deployment.triggered",
            json!({"data": {"project": 5, "stage": "dev", "labels": "x"}}),
        );
        let finished = ReplyBuilder::new(&t, "helm-service").unwrap().finished(
            Status::Errored,
            Some(TaskResult::Fail),
            "data.project: invalid type",
            Map::new(),
        );
        assert_eq!(
            data(&finished),
            json!({"stage": "dev", "status": "errored", "result": "fail",
                   "message": "data.project: invalid type",
                   "deployment": {"deploymentstrategy": "direct", "deploymentURIsLocal": [],
                                  "deploymentNames": [],
                                  "gitCommit": "521747298a3790fde1710f3aa2d03b55020575aa"}})
        );
    }

    #[test]
    fn errored_replies_carry_the_block_their_task_requires() {
        let finished = |ty: &str, extra: Value| {
            let t = triggered(ty, extra);
            data(&ReplyBuilder::new(&t, "helm-service").unwrap().finished(
                Status::Errored,
                Some(TaskResult::Fail),
                "boom",
                Map::new(),
            ))
        };
        let commit = "521747298a3790fde1710f3aa2d03b55020575aa";
        // The strategy of the event (canonical), its local URIs, the commit.
        let d = finished(
            "sh.keptn.event.deployment.triggered",
            json!({"data": {"deployment": {"deploymentstrategy": "duplicate",
                                           "deploymentURIsLocal": ["http://a", 5]}}}),
        );
        assert_eq!(
            d["deployment"],
            json!({"deploymentstrategy": "blue_green_service",
                   "deploymentURIsLocal": ["http://a"], "deploymentNames": [],
                   "gitCommit": commit})
        );
        // An unknown strategy is not echoed: the shipyard's default is reported.
        let d = finished(
            "sh.keptn.event.deployment.triggered",
            json!({"data": {"deployment": {"deploymentstrategy": "canary-ish"}},
                   "gitcommitid": null}),
        );
        assert_eq!(
            d["deployment"],
            json!({"deploymentstrategy": "direct", "deploymentURIsLocal": [],
                   "deploymentNames": [], "gitCommit": ""})
        );
        let d = finished("sh.keptn.event.release.triggered", json!({}));
        assert_eq!(d["release"], json!({"gitCommit": commit}));
        let d = finished("sh.keptn.event.action.triggered", json!({}));
        assert_eq!(d["action"], json!({"gitCommit": commit}));
        let d = finished(
            "sh.keptn.event.action.triggered",
            json!({"gitcommitid": null}),
        );
        assert_eq!(d["action"], json!({}));
        let d = finished("sh.keptn.event.rollback.triggered", json!({}));
        assert!(d.get("deployment").is_none() && d.get("release").is_none());
    }
}
