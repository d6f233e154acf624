//! What must hold for any input to the event decoder, whatever the bytes.
//!
//! One definition, run twice: by the property tests (`contracts/tests/properties.rs`, part of
//! `cargo test`) and by the cargo-fuzz targets (`fuzz/fuzz_targets/`, which include this file
//! by path). Every check panics on a violation, so a fuzzer reports it as a crash.

#![allow(dead_code)]

use std::fmt::Debug;

use contracts::data::{
    self, ActionTriggeredData, DeploymentFinishedData, DeploymentTriggeredData,
    ReleaseTriggeredData, RollbackTriggeredData, ServiceDeleteData,
};
use contracts::envelope::KeptnEvent;
use contracts::names::MAX_NAME_LEN;
use contracts::validate::{ServiceRef, Target};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Decodes `bytes` and checks every invariant of the outcome; the event when accepted.
pub fn check_decode(bytes: &[u8]) -> Option<KeptnEvent> {
    match KeptnEvent::decode(bytes) {
        Err(err) => {
            check_message(&err.to_string());
            None
        }
        Ok(event) => {
            check_event(&event);
            Some(event)
        }
    }
}

/// An accepted event: clean attributes, a faithful round trip, payloads that behave.
pub fn check_event(event: &KeptnEvent) {
    check_attributes(event);
    let bytes = event.encode();
    let again = KeptnEvent::decode(&bytes).unwrap_or_else(|err| {
        panic!(
            "an accepted event must re-encode to a decodable document: {err}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    });
    assert_eq!(again.inner(), event.inner(), "round trip changed the event");
    assert_eq!(again.encode(), bytes, "encoding is not canonical");
    check_payloads(event);
}

/// `id`, `source` and `type` set; no control character in any string attribute.
pub fn check_attributes(event: &KeptnEvent) {
    use cloudevents::AttributesReader;
    for (name, value) in [
        ("id", event.id()),
        ("source", event.source()),
        ("type", event.ty()),
    ] {
        assert!(!value.trim().is_empty(), "{name} must not be empty");
        assert_clean(name, value);
    }
    let inner = event.inner();
    for (name, value) in [
        (
            "datacontenttype",
            inner.datacontenttype().map(str::to_owned),
        ),
        ("subject", inner.subject().map(str::to_owned)),
        ("dataschema", inner.dataschema().map(|u| u.to_string())),
    ] {
        if let Some(value) = value {
            assert_clean(name, &value);
        }
    }
    for (name, value) in inner.iter_extensions() {
        if let cloudevents::event::ExtensionValue::String(value) = value {
            assert_clean(name, value);
        }
    }
}

/// Every payload type reads the data without panicking; what reads round-trips, what
/// validates has checked names, and every error message is clean.
pub fn check_payloads(event: &KeptnEvent) {
    if let Some(data) = check_typed::<DeploymentTriggeredData>(event) {
        check_validated(data.validate().map(|task| task.target));
    }
    if let Some(data) = check_typed::<ReleaseTriggeredData>(event) {
        check_validated(data.validate().map(|task| task.target));
    }
    if let Some(data) = check_typed::<DeploymentFinishedData>(event) {
        check_validated(data.common.target());
    }
    if let Some(data) = check_typed::<RollbackTriggeredData>(event) {
        check_validated(data.validate());
    }
    if let Some(data) = check_typed::<ActionTriggeredData>(event) {
        match data.validate() {
            Ok(task) => {
                check_target(&task.target);
                assert!(
                    !task.action.action.is_empty(),
                    "a validated action names one"
                );
            }
            Err(err) => check_message(&err.to_string()),
        }
    }
    if let Some(data) = check_typed::<ServiceDeleteData>(event) {
        match data.validate() {
            Ok(ServiceRef {
                project,
                stage,
                service,
            }) => {
                check_name(&project);
                check_name(&service);
                if let Some(stage) = stage {
                    check_name(&stage);
                }
            }
            Err(err) => check_message(&err.to_string()),
        }
    }
}

/// Reads `T`; when it reads, re-encoding it and reading that again gives the same value.
fn check_typed<T: DeserializeOwned + Serialize + PartialEq + Debug>(
    event: &KeptnEvent,
) -> Option<T> {
    match event.typed_data::<T>() {
        Err(err) => {
            check_message(&err.to_string());
            None
        }
        Ok(payload) => {
            let value = serde_json::to_value(&payload).expect("payloads serialize");
            let again: T = data::from_value(&value).unwrap_or_else(|err| {
                panic!("a payload that read must read again after encoding: {err}\n{value}")
            });
            assert_eq!(again, payload, "payload round trip changed it");
            Some(payload)
        }
    }
}

fn check_validated<E: std::fmt::Display>(validated: Result<Target, E>) {
    match validated {
        Ok(target) => check_target(&target),
        Err(err) => check_message(&err.to_string()),
    }
}

/// Names that passed validation are Kubernetes-safe and their namespace fits.
pub fn check_target(target: &Target) {
    check_name(&target.project);
    check_name(&target.stage);
    check_name(&target.service);
    assert!(
        target.namespace().len() <= MAX_NAME_LEN,
        "namespace {:?} too long",
        target.namespace()
    );
}

/// `^[a-z][a-z0-9-]*[a-z0-9]$` or one letter, at most 63 bytes.
pub fn check_name(name: &str) {
    let bytes = name.as_bytes();
    assert!(
        !bytes.is_empty() && bytes.len() <= MAX_NAME_LEN,
        "name length {name:?}"
    );
    assert!(
        bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-'),
        "a checked name holds only [a-z0-9-]: {name:?}"
    );
    assert!(bytes[0].is_ascii_lowercase(), "{name:?}");
    assert!(bytes[bytes.len() - 1] != b'-', "{name:?}");
}

/// An error message that may reach a reply, a log line or a dead letter: no control
/// characters (a line break would forge log lines), and not empty.
pub fn check_message(message: &str) {
    assert!(!message.is_empty(), "empty error message");
    assert_clean("error message", message);
}

fn assert_clean(what: &str, value: &str) {
    assert!(
        !value.chars().any(char::is_control),
        "{what} holds a control character: {value:?}"
    );
}
