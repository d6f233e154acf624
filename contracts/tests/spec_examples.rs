//! Every example event of the Keptn CloudEvents spec (read from `../shared/reference/` at test
//! time by `test_harness::keptn_spec`, one per "Example Cloud Event") must survive
//! decode → encode → decode unchanged, and the payloads helm-service reads must survive a typed
//! round trip unchanged.
//!
//! The examples carry `datacontenttype` and no `time`, so none of the documented envelope
//! canonicalisations applies: the comparison is exact JSON equality.

use contracts::data::{
    ActionTriggeredData, DeploymentFinishedData, DeploymentStrategy, DeploymentTriggeredData,
    ReleaseTriggeredData, RollbackTriggeredData, ServiceDeleteData, Status, TaskResult,
};
use contracts::envelope::KeptnEvent;
use contracts::event_type::{EventType, EventTypeError, Phase};
use contracts::reply::ReplyBuilder;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use test_harness::keptn_spec::keptn_spec;

/// Number of "Example Cloud Event" blocks in keptn-spec-cloudevents.md.
const SPEC_EXAMPLE_COUNT: usize = 42;

struct Fixture {
    /// Where the example is, for messages: its type and its place among the spec's examples.
    name: String,
    bytes: Vec<u8>,
    json: Value,
}

fn fixtures() -> Vec<Fixture> {
    keptn_spec()
        .examples
        .iter()
        .enumerate()
        .map(|(index, example)| Fixture {
            name: format!("{} (example {} of the spec)", example.event_type, index + 1),
            bytes: example.bytes.clone(),
            json: example.json.clone(),
        })
        .collect()
}

fn decode(f: &Fixture) -> KeptnEvent {
    KeptnEvent::decode(&f.bytes).unwrap_or_else(|e| panic!("{}: {e}", f.name))
}

#[test]
fn every_spec_example_is_present() {
    let all = fixtures();
    assert!(
        all.len() >= SPEC_EXAMPLE_COUNT,
        "expected at least {SPEC_EXAMPLE_COUNT} fixtures, found {}",
        all.len()
    );
    assert_eq!(
        all.len(),
        SPEC_EXAMPLE_COUNT,
        "the spec's example count changed: check the new examples"
    );
}

#[test]
fn every_data_schema_of_the_spec_is_read() {
    let spec = keptn_spec();
    for example in &spec.examples {
        let schema = spec.data_schemas.get(&example.event_type);
        assert!(
            schema.is_some_and(|s| s.get("$schema").is_some()),
            "{} has an example but no data schema was read",
            example.event_type
        );
    }
}

#[test]
fn envelope_round_trip_is_exact() {
    for f in fixtures() {
        let ev = decode(&f);
        let by_the_sdk: cloudevents::Event = serde_json::from_value(f.json.clone()).unwrap();
        assert_eq!(
            ev.inner(),
            &by_the_sdk,
            "{}: decoded unlike the SDK",
            f.name
        );
        let encoded = ev.encode();
        let reencoded: Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(reencoded, f.json, "{}: re-encoded document differs", f.name);
        let again = KeptnEvent::decode(&encoded).unwrap();
        assert_eq!(again, ev, "{}: second decode differs", f.name);
        assert_eq!(
            again.encode(),
            encoded,
            "{}: encoding is not stable",
            f.name
        );

        assert_eq!(ev.id(), f.json["id"], "{}", f.name);
        assert_eq!(ev.ty(), f.json["type"], "{}", f.name);
        assert_eq!(ev.source(), f.json["source"], "{}", f.name);
        assert_eq!(
            ev.keptn_context(),
            f.json["shkeptncontext"].as_str(),
            "{}",
            f.name
        );
        assert_eq!(
            ev.git_commit_id(),
            f.json["gitcommitid"].as_str(),
            "{}",
            f.name
        );
        assert_eq!(
            ev.triggered_id(),
            f.json["triggeredid"].as_str(),
            "{}",
            f.name
        );
        assert_eq!(
            ev.data_json().as_deref(),
            Some(&f.json["data"]),
            "{}",
            f.name
        );
    }
}

/// Decodes `data` into `T`, re-serializes it, and requires the original `data` back.
fn typed_round_trip<T: DeserializeOwned + Serialize>(f: &Fixture) -> T {
    let typed: T = decode(f)
        .typed_data()
        .unwrap_or_else(|e| panic!("{}: {e}", f.name));
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        f.json["data"],
        "{}: typed round trip differs",
        f.name
    );
    typed
}

#[test]
fn typed_payloads_round_trip_exactly() {
    let mut checked = Vec::new();
    for f in fixtures() {
        let ty = f.json["type"].as_str().unwrap().to_owned();
        match ty.as_str() {
            "sh.keptn.event.deployment.triggered" => {
                let d: DeploymentTriggeredData = typed_round_trip(&f);
                let task = d.validate().unwrap();
                assert_eq!(task.strategy, DeploymentStrategy::Direct);
                assert_eq!(task.target.namespace(), "sockshop-dev");
                assert_eq!(
                    d.configuration_change.unwrap().values["key"],
                    Value::from("value")
                );
            }
            "sh.keptn.event.deployment.finished" => {
                let d: DeploymentFinishedData = typed_round_trip(&f);
                let deployment = d.deployment.unwrap();
                assert_eq!(deployment.deployment_names, ["deployment-1"]);
                assert!(deployment.git_commit.is_some());
            }
            "sh.keptn.event.release.triggered" => {
                let d: ReleaseTriggeredData = typed_round_trip(&f);
                // The spec's example uses the alias; the wire struct keeps it verbatim.
                assert_eq!(
                    d.deployment.as_ref().unwrap().deployment_strategy,
                    "duplicate"
                );
                assert_eq!(
                    d.validate().unwrap().strategy,
                    DeploymentStrategy::BlueGreenService
                );
                assert_eq!(d.common.result, Some(TaskResult::Pass));
            }
            "sh.keptn.event.rollback.triggered" => {
                let d: RollbackTriggeredData = typed_round_trip(&f);
                assert_eq!(d.validate().unwrap().service, "carts");
            }
            "sh.keptn.event.action.triggered" => {
                let d: ActionTriggeredData = typed_round_trip(&f);
                let task = d.validate().unwrap();
                assert_eq!(task.action.action, "toggle-feature");
                assert_eq!(d.problem.unwrap().problem_title, "cpu_usage_sockshop_carts");
            }
            t if t.starts_with("sh.keptn.event.service.") => {
                let d: ServiceDeleteData = typed_round_trip(&f);
                assert_eq!(d.common.status, Some(Status::Succeeded));
                assert_eq!(d.validate().unwrap().service, "carts");
            }
            _ => continue,
        }
        checked.push(ty);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "sh.keptn.event.action.triggered",
            "sh.keptn.event.deployment.finished",
            "sh.keptn.event.deployment.triggered",
            "sh.keptn.event.release.triggered",
            "sh.keptn.event.rollback.triggered",
            "sh.keptn.event.service.create.finished",
            "sh.keptn.event.service.create.started",
            "sh.keptn.event.service.create.status.changed",
        ]
    );
}

#[test]
fn event_types_of_the_spec_parse() {
    for f in fixtures() {
        let ty = f.json["type"].as_str().unwrap();
        let parsed = EventType::parse(ty);
        match ty {
            "sh.keptn.events.problem" | "sh.keptn.log.error" => {
                assert!(
                    matches!(parsed, Err(EventTypeError::NotATaskEvent(_))),
                    "{ty}"
                );
            }
            // Keptn events outside the task life cycle.
            "sh.keptn.event.monitoring.configure" | "sh.keptn.event.evaluation.invalidated" => {
                assert!(
                    matches!(parsed, Err(EventTypeError::UnknownPhase(_))),
                    "{ty}"
                );
            }
            _ => {
                let et = parsed.unwrap_or_else(|e| panic!("{ty}: {e}"));
                assert_eq!(et.to_string(), ty);
            }
        }
    }
}

#[test]
fn replies_to_spec_triggered_events() {
    let mut answered = 0;
    for f in fixtures() {
        let ev = decode(&f);
        let Ok(et) = ev.event_type() else { continue };
        if et.phase != Phase::Triggered {
            continue;
        }
        let builder = ReplyBuilder::new(&ev, "helm-service").unwrap();
        let started = builder.started();
        let finished = builder.finished(
            Status::Succeeded,
            Some(TaskResult::Pass),
            "done",
            Map::new(),
        );
        for (reply, phase) in [(&started, Phase::Started), (&finished, Phase::Finished)] {
            assert_eq!(reply.ty(), et.with_phase(phase).to_string(), "{}", f.name);
            assert_eq!(reply.triggered_id(), Some(ev.id()), "{}", f.name);
            assert_eq!(reply.keptn_context(), ev.keptn_context(), "{}", f.name);
            assert_eq!(reply.git_commit_id(), ev.git_commit_id(), "{}", f.name);
            let data = reply.data_json().unwrap();
            for key in ["project", "stage", "service", "labels"] {
                assert_eq!(data.get(key), f.json["data"].get(key), "{}: {key}", f.name);
            }
            // A reply is itself a valid event of the contract.
            assert_eq!(
                &KeptnEvent::decode(&reply.encode()).unwrap(),
                reply,
                "{}",
                f.name
            );
        }
        assert_ne!(started.id(), finished.id());
        answered += 1;
    }
    // project.create, approval, deployment, rollback, test (twice), evaluation, release,
    // get-action, action, get-sli.
    assert_eq!(answered, 11);
}
