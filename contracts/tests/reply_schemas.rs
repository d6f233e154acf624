//! Every reply type helm-service sends validates against the JSON schemas of the Keptn spec,
//! read from the spec at test time (`test_harness::spec_schemas`, which says what is checked):
//! `.started` and `.finished` of deployment, release, rollback and action, whatever the
//! outcome and however incomplete the answered event, and the `service.delete.finished`
//! report, and the `.status.changed` progress reports of those four tasks.

use contracts::data::{Status, TaskResult};
use contracts::envelope::KeptnEvent;
use contracts::reply::ReplyBuilder;
use serde_json::{json, Map, Value};
use test_harness::keptn_spec::keptn_spec;
use test_harness::spec_schemas::spec_schemas;

/// The tasks helm-service answers with `.started` and `.finished`.
const TASKS: [&str; 4] = ["deployment", "release", "rollback", "action"];

fn spec_example(ty: &str) -> Value {
    keptn_spec().example(ty).json.clone()
}

fn decode(event: &Value) -> KeptnEvent {
    KeptnEvent::decode(&serde_json::to_vec(event).unwrap()).unwrap()
}

fn as_json(event: &KeptnEvent) -> Value {
    serde_json::from_slice(&event.encode()).unwrap()
}

/// The answered events of `task`: the spec's example, the example without `gitcommitid` and
/// without data, and one whose data is of the wrong shape.
fn answered(task: &str) -> Vec<KeptnEvent> {
    let example = spec_example(&format!("sh.keptn.event.{task}.triggered"));
    let mut without_commit = example.clone();
    without_commit
        .as_object_mut()
        .unwrap()
        .remove("gitcommitid");
    let mut without_data = without_commit.clone();
    without_data.as_object_mut().unwrap().remove("data");
    let mut odd = example.clone();
    odd["data"] = json!({"project": 5, "labels": {"a": 1},
                         "deployment": {"deploymentstrategy": "rolling"},
                         "action": "scale"});
    [example, without_commit, without_data, odd]
        .iter()
        .map(decode)
        .collect()
}

/// The payloads the handlers give (`handler/*.rs`), and none.
fn payloads(task: &str) -> Vec<Map<String, Value>> {
    let mut out = vec![Map::new()];
    if task == "deployment" {
        let mut deployed = Map::new();
        deployed.insert(
            "deployment".into(),
            json!({"deploymentstrategy": "blue_green_service",
                   "deploymentURIsLocal": ["http://carts.sockshop-dev:80"],
                   "deploymentURIsPublic": ["http://carts.sockshop-dev.example.com"],
                   "deploymentNames": ["canary"]}),
        );
        out.push(deployed);
    }
    out
}

fn all_replies() -> Vec<Value> {
    let mut replies = Vec::new();
    for task in TASKS {
        for event in answered(task) {
            let builder = ReplyBuilder::new(&event, "helm-service").unwrap();
            replies.push(as_json(&builder.started()));
            for message in [
                "step \"plan\" done",
                "rollout: Deployment hello: 2 of 3 updated replicas are available",
            ] {
                replies.push(as_json(&builder.status_changed(message)));
            }
            for payload in payloads(task) {
                for (status, result) in [
                    (Status::Succeeded, Some(TaskResult::Pass)),
                    (Status::Succeeded, Some(TaskResult::Fail)),
                    (Status::Errored, Some(TaskResult::Fail)),
                    (Status::Errored, None),
                ] {
                    replies.push(as_json(&builder.finished(
                        status,
                        result,
                        "a message",
                        payload.clone(),
                    )));
                }
            }
        }
    }
    let mut delete = spec_example("sh.keptn.event.service.create.finished");
    delete["type"] = json!("sh.keptn.event.service.delete.finished");
    for event in [delete.clone(), {
        delete.as_object_mut().unwrap().remove("data");
        delete
    }] {
        let builder = ReplyBuilder::new(&decode(&event), "helm-service").unwrap();
        for status in [Status::Succeeded, Status::Errored] {
            replies.push(as_json(&builder.finished(
                status,
                Some(TaskResult::Pass),
                "",
                Map::new(),
            )));
        }
    }
    replies
}

#[test]
fn every_reply_type_we_send_is_valid_by_the_spec() {
    let replies = all_replies();
    assert!(replies.len() > 50, "{} replies", replies.len());
    let schemas = spec_schemas();
    for reply in &replies {
        if let Err(violations) = schemas.check(reply) {
            panic!("{violations}\n{reply:#}");
        }
    }
}

#[test]
fn the_check_rejects_a_status_changed_report_with_a_task_block() {
    // The spec's status.changed schemas allow the common fields only: a report carrying,
    // say, a `deployment` block fails, so the check above can fail.
    let schemas = spec_schemas();
    for task in TASKS {
        let event = &answered(task)[0];
        let mut report = as_json(
            &ReplyBuilder::new(event, "helm-service")
                .unwrap()
                .status_changed("2 of 3 pods ready"),
        );
        assert_eq!(schemas.check(&report), Ok(()), "{report:#}");
        report["data"]["deployment"] = json!({});
        let violations = schemas.check(&report).unwrap_err();
        assert!(violations.contains("deployment"), "{task}: {violations}");
    }
}

#[test]
fn the_check_rejects_a_finished_reply_without_its_task_block() {
    // The check can fail: the replies of before this test (no `deployment` block when
    // errored, no `release`, no `action`) are rejected, naming what is missing.
    let schemas = spec_schemas();
    for task in ["deployment", "release", "action"] {
        let event = &answered(task)[0];
        let mut reply = as_json(&ReplyBuilder::new(event, "helm-service").unwrap().finished(
            Status::Errored,
            Some(TaskResult::Fail),
            "boom",
            Map::new(),
        ));
        reply["data"].as_object_mut().unwrap().remove(task);
        let violations = schemas.check(&reply).unwrap_err();
        assert!(violations.contains(task), "{task}: {violations}");
    }
    let mut deployed = as_json(
        &ReplyBuilder::new(&answered("deployment")[0], "helm-service")
            .unwrap()
            .finished(Status::Succeeded, Some(TaskResult::Pass), "", Map::new()),
    );
    deployed["data"]["deployment"]
        .as_object_mut()
        .unwrap()
        .remove("gitCommit");
    assert!(schemas.check(&deployed).unwrap_err().contains("gitCommit"));
    deployed["data"]["deployment"]["gitCommit"] = json!("abc");
    deployed["data"]["extra"] = json!(1);
    assert!(schemas.check(&deployed).unwrap_err().contains("extra"));
}

#[test]
fn the_spec_examples_of_our_reply_types_are_valid() {
    // The data schemas as read accept what the spec itself shows (its examples have no
    // `time`, which its envelope schema requires, so only their data is checked).
    let schemas = spec_schemas();
    for task in TASKS {
        for phase in ["started", "finished"] {
            let example = spec_example(&format!("sh.keptn.event.{task}.{phase}"));
            schemas
                .check_data(&example)
                .unwrap_or_else(|v| panic!("{task}.{phase}: {v}"));
        }
    }
}
