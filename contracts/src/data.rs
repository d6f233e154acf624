//! The `data` payloads of the Keptn events helm-service reads and writes.
//!
//! Design choices, all made so the worker can answer bad input with a clear `.finished` event
//! instead of failing inside serde:
//!
//! - Task blocks (`deployment`, `action`, ...) are `Option` here; whether they are required is
//!   decided by [`crate::validate`].
//! - The deployment strategy stays the raw wire string; [`DeploymentStrategy::from_str`] turns it
//!   into the enum during validation, with a message that lists the accepted values.
//! - Keptn (Go, `omitempty`-less fields) sends `"status": ""`, `"result": ""`, `"labels": null`
//!   and `null` lists; these read as "absent".
//! - Every payload keeps the fields it does not know in `extra`, so data passes through a
//!   decode/encode round trip unchanged.
//!
//! Canonicalisations on re-encoding (the only ways a round trip can differ from its input):
//! `""`/`null` status and result, `null` labels, `null` values of optional fields, and `null`
//! lists are dropped or written as their empty form; `configurationChange.values` is always
//! written (as `{}` when absent or `null`); an empty `deploymentURIsPublic` is omitted.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Whether the integration could run the task (independent of the task's verdict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// The task ran without unexpected errors.
    Succeeded,
    /// The task could not be run; `message` says why.
    Errored,
    /// The outcome is not known.
    Unknown,
    /// The task was aborted.
    Aborted,
}

impl Status {
    /// The accepted wire values, for messages.
    pub const VALUES: &'static str = "succeeded, errored, unknown, aborted";

    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Errored => "errored",
            Status::Unknown => "unknown",
            Status::Aborted => "aborted",
        }
    }
}

/// The verdict of a task that ran (e.g. of an evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskResult {
    /// The task passed.
    Pass,
    /// The task passed with warnings.
    Warning,
    /// The task failed.
    Fail,
}

impl TaskResult {
    /// The accepted wire values, for messages.
    pub const VALUES: &'static str = "pass, warning, fail";

    /// The wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            TaskResult::Pass => "pass",
            TaskResult::Warning => "warning",
            TaskResult::Fail => "fail",
        }
    }
}

/// A `status` or `result` string that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} {}: expected one of {expected}", crate::quoted(value))]
pub struct UnknownValueError {
    /// `status` or `result`.
    pub field: &'static str,
    /// The rejected value.
    pub value: String,
    /// The accepted values.
    pub expected: &'static str,
}

impl FromStr for Status {
    type Err = UnknownValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "succeeded" => Ok(Status::Succeeded),
            "errored" => Ok(Status::Errored),
            "unknown" => Ok(Status::Unknown),
            "aborted" => Ok(Status::Aborted),
            _ => Err(UnknownValueError {
                field: "status",
                value: s.to_owned(),
                expected: Status::VALUES,
            }),
        }
    }
}

impl FromStr for TaskResult {
    type Err = UnknownValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pass" => Ok(TaskResult::Pass),
            "warning" => Ok(TaskResult::Warning),
            "fail" => Ok(TaskResult::Fail),
            _ => Err(UnknownValueError {
                field: "result",
                value: s.to_owned(),
                expected: TaskResult::VALUES,
            }),
        }
    }
}

/// Serde for the string enums of this module via `as_str` and `FromStr`.
macro_rules! string_enum_serde {
    ($ty:ty) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                raw.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum_serde!(Status);
string_enum_serde!(TaskResult);
string_enum_serde!(DeploymentStrategy);

/// How a service is deployed and released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeploymentStrategy {
    /// Upgrade the user chart in place; traffic goes straight to it.
    Direct,
    /// Blue/green with a generated primary and the user chart as canary
    /// (wire `blue_green_service`, alias `duplicate`).
    BlueGreenService,
    /// The user chart is the whole deployment; nothing is generated.
    UserManaged,
}

impl DeploymentStrategy {
    /// The accepted wire values, for messages.
    pub const VALUES: &'static str = "direct, blue_green_service (alias duplicate), user_managed";

    /// The canonical wire value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeploymentStrategy::Direct => "direct",
            DeploymentStrategy::BlueGreenService => "blue_green_service",
            DeploymentStrategy::UserManaged => "user_managed",
        }
    }
}

/// A deployment strategy string that is missing or not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    /// The strategy is empty.
    #[error(
        "deployment strategy is missing: expected one of {}",
        DeploymentStrategy::VALUES
    )]
    Missing,
    /// The strategy is not one of the accepted values.
    #[error(
        "unknown deployment strategy {}: expected one of {values}",
        crate::quoted(_0),
        values = DeploymentStrategy::VALUES
    )]
    Unknown(String),
}

impl FromStr for DeploymentStrategy {
    type Err = StrategyError;

    /// Accepts the values Keptn's Go helm-service accepted, case-sensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "direct" => Ok(DeploymentStrategy::Direct),
            "blue_green_service" | "duplicate" => Ok(DeploymentStrategy::BlueGreenService),
            "user_managed" => Ok(DeploymentStrategy::UserManaged),
            "" => Err(StrategyError::Missing),
            other => Err(StrategyError::Unknown(other.to_owned())),
        }
    }
}

/// Reads an optional string enum where `null`, absence and `""` all mean "not set".
fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Reads a value where `null` means the type's default (Go marshals nil maps and slices as
/// `null`).
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// The fields every Keptn event's `data` carries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommonData {
    /// Keptn project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Stage of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Service of the project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Free-form labels, copied into every reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Whether the sender could run its task (`""` reads as absent).
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<Status>,
    /// The sender's verdict (`""` reads as absent).
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub result: Option<TaskResult>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `configurationChange` of a deployment.triggered event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigurationChange {
    /// Values to deep-merge into the chart's values before deploying (`null` reads as empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub values: Map<String, Value>,
}

/// The `deployment` block of a deployment.triggered event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentTriggeredDetails {
    /// Raw strategy; see [`DeploymentTriggeredDetails::strategy`].
    #[serde(rename = "deploymentstrategy", default)]
    pub deployment_strategy: String,
    /// Cluster-internal URIs of the service.
    #[serde(
        rename = "deploymentURIsLocal",
        default,
        deserialize_with = "null_as_default"
    )]
    pub deployment_uris_local: Vec<String>,
    /// Public URIs of the service.
    #[serde(
        rename = "deploymentURIsPublic",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deployment_uris_public: Vec<String>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DeploymentTriggeredDetails {
    /// The strategy as an enum; fails with a message listing the accepted values.
    pub fn strategy(&self) -> Result<DeploymentStrategy, StrategyError> {
        self.deployment_strategy.parse()
    }
}

/// The `deployment` block of a deployment.finished event, also carried by release.triggered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentFinishedDetails {
    /// Raw strategy; see [`DeploymentFinishedDetails::strategy`].
    #[serde(rename = "deploymentstrategy", default)]
    pub deployment_strategy: String,
    /// Cluster-internal URIs of the service.
    #[serde(
        rename = "deploymentURIsLocal",
        default,
        deserialize_with = "null_as_default"
    )]
    pub deployment_uris_local: Vec<String>,
    /// Public URIs of the service.
    #[serde(
        rename = "deploymentURIsPublic",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub deployment_uris_public: Vec<String>,
    /// Which deployments were made: `direct`, `canary` or `user_managed`.
    #[serde(
        rename = "deploymentNames",
        default,
        deserialize_with = "null_as_default"
    )]
    pub deployment_names: Vec<String>,
    /// The configuration commit that was deployed.
    #[serde(rename = "gitCommit", default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
}

impl DeploymentFinishedDetails {
    /// The strategy as an enum; fails with a message listing the accepted values.
    pub fn strategy(&self) -> Result<DeploymentStrategy, StrategyError> {
        self.deployment_strategy.parse()
    }
}

/// `data` of `sh.keptn.event.deployment.triggered`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentTriggeredData {
    /// Project, stage, service, labels, status, result, message.
    #[serde(flatten)]
    pub common: CommonData,
    /// Values to merge into the chart.
    #[serde(
        rename = "configurationChange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub configuration_change: Option<ConfigurationChange>,
    /// Strategy and URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentTriggeredDetails>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of `sh.keptn.event.deployment.finished`, and of the release.triggered that follows it
/// (see [`ReleaseTriggeredData`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeploymentFinishedData {
    /// Project, stage, service, labels, status, result, message (in a release.triggered, the
    /// result is the evaluation's).
    #[serde(flatten)]
    pub common: CommonData,
    /// What was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentFinishedDetails>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of `sh.keptn.event.release.triggered`: the Keptn spec gives it exactly the schema of
/// deployment.finished's data (a release carries the report of the deployment it releases), so
/// it is the same type; `common.result` carries the evaluation's verdict.
pub type ReleaseTriggeredData = DeploymentFinishedData;

/// `data` of `sh.keptn.event.rollback.triggered`: the spec defines only the common fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RollbackTriggeredData {
    /// Project, stage, service, labels, status, result, message.
    #[serde(flatten)]
    pub common: CommonData,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The `action` block of an action.triggered event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionInfo {
    /// Display name, e.g. `Scale up`.
    #[serde(default)]
    pub name: String,
    /// What to do, e.g. `scaling`; other actions belong to other integrations.
    #[serde(default)]
    pub action: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Action argument; for `scaling` a signed integer string such as `"+1"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

/// The `problem` block of an action.triggered event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProblemDetails {
    /// Title of the problem being remediated.
    #[serde(
        rename = "problemTitle",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub problem_title: String,
    /// Root cause, when known.
    #[serde(
        rename = "rootCause",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub root_cause: String,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of `sh.keptn.event.action.triggered`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionTriggeredData {
    /// Project, stage, service, labels, status, result, message.
    #[serde(flatten)]
    pub common: CommonData,
    /// The remediation action to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionInfo>,
    /// The problem being remediated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<ProblemDetails>,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of `sh.keptn.event.service.delete.*` (and the other service events): project and
/// service, with an optional stage; nothing task-specific.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceDeleteData {
    /// Project, stage, service, labels, status, result, message.
    #[serde(flatten)]
    pub common: CommonData,
    /// Fields this crate does not know, kept for the round trip.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why an event's `data` could not be read as the expected payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// The event carries no `data` (or `data` is `null`).
    #[error("event has no data: a Keptn event must carry a JSON object in \"data\"")]
    Missing,
    /// The event's data is neither JSON nor a string holding JSON.
    #[error("event data is not JSON: {0}")]
    NotJson(String),
    /// The data is JSON but does not fit the payload; `path` names the field (`.` for the
    /// whole object).
    #[error("{}: {message}", data_path(path))]
    Invalid {
        /// Path of the offending field inside `data`, e.g. `deployment.deploymentURIsLocal`.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

fn data_path(path: &str) -> String {
    if path.is_empty() || path == "." {
        "data".to_owned()
    } else {
        format!("data.{path}")
    }
}

/// Decodes a JSON value into `T`, naming the path of the first bad field (relative to `data`).
///
/// Used by [`crate::envelope::KeptnEvent::typed_data`]; public so a payload held outside an
/// envelope (e.g. in the ledger) decodes with the same messages.
///
/// Serde loses the path inside `#[serde(flatten)]` fields, so an error in a [`CommonData`]
/// field (e.g. `"project": 5`) would be reported at the root. When that happens the object is
/// checked once more as plain [`CommonData`] to find the field.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, DataError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        if err.path().to_string() == "." && value.is_object() {
            if let Err(common) = serde_path_to_error::deserialize::<_, CommonData>(value) {
                if common.path().to_string() != "." {
                    return invalid(common, value);
                }
            }
        }
        invalid(err, value)
    })
}

/// Where `data` carries the user's Helm values (`configurationChange`), which may hold
/// secrets: an error there never quotes the value, since the message goes into the errored
/// `finished` event on the Keptn bus and into the logs.
const UNQUOTED: &str = "configurationChange";

fn invalid(err: serde_path_to_error::Error<serde_json::Error>, data: &Value) -> DataError {
    let path = err.path().to_string();
    let message = err.into_inner().to_string();
    let message = if path == UNQUOTED || path.starts_with(&format!("{UNQUOTED}.")) {
        unquoted(&message, value_at(data, &path))
    } else {
        message
    };
    DataError::Invalid {
        path: shown_path(&path),
        message,
    }
}

/// serde's message without the offending value: its JSON type and what was expected.
fn unquoted(message: &str, found: Option<&Value>) -> String {
    let kind = match found {
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "boolean",
        Some(Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Array(_)) => "sequence",
        Some(Value::Object(_)) => "map",
        None => "value",
    };
    // serde's wording ends with `, expected <what>`, after the value it quotes.
    let expected = message
        .rsplit_once(", expected ")
        .map(|(_, expected)| format!(", expected {expected}"))
        .unwrap_or_default();
    format!("invalid {kind}{expected} (the value is not shown: Helm values may hold secrets)")
}

/// The member of `data` at a serde path of member names (`configurationChange.values`).
fn value_at<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(data, |value, key| value.get(key))
}

/// A path as messages show it: the member names in it come from the event, so control
/// characters are escaped (`labels.a\nb`) and a path longer than 200 characters is cut.
pub(crate) fn shown_path(path: &str) -> String {
    const SHOWN_CHARS: usize = 200;
    let mut shown = String::with_capacity(path.len().min(SHOWN_CHARS));
    for (index, c) in path.chars().enumerate() {
        if index == SHOWN_CHARS {
            shown.push_str("...");
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_debug());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_in_the_helm_values_never_quote_them() {
        let secret = "password: hunter2";
        for (change, path, kind) in [
            (
                json!({"values": secret}),
                "configurationChange.values",
                "string",
            ),
            (json!(secret), "configurationChange", "string"),
            (json!({"values": 7}), "configurationChange.values", "number"),
        ] {
            let data = json!({"project": "p", "stage": "s", "service": "c",
                              "configurationChange": change});
            let err = from_value::<DeploymentTriggeredData>(&data).unwrap_err();
            let text = err.to_string();
            assert!(!text.contains("hunter2") && !text.contains('7'), "{text}");
            assert!(
                text.starts_with(&format!("data.{path}: invalid {kind}, expected ")),
                "{text}"
            );
            assert!(text.ends_with("Helm values may hold secrets)"), "{text}");
        }
        // Elsewhere the value is named, which helps find it.
        let err = from_value::<DeploymentTriggeredData>(&json!({"project": 5})).unwrap_err();
        assert!(err.to_string().contains("integer `5`"), "{err}");
    }

    #[test]
    fn status_and_result_accept_empty_as_absent() {
        let data: CommonData =
            serde_json::from_value(json!({"status": "", "result": "", "project": "p"})).unwrap();
        assert_eq!(data.status, None);
        assert_eq!(data.result, None);
        let data: CommonData =
            serde_json::from_value(json!({"status": null, "result": null})).unwrap();
        assert_eq!((data.status, data.result), (None, None));
        let data: CommonData = serde_json::from_value(json!({})).unwrap();
        assert_eq!(data, CommonData::default());
        let data: CommonData =
            serde_json::from_value(json!({"status": "aborted", "result": "warning"})).unwrap();
        assert_eq!(data.status, Some(Status::Aborted));
        assert_eq!(data.result, Some(TaskResult::Warning));
    }

    #[test]
    fn status_and_result_reject_unknown_values_with_the_list() {
        let err = serde_json::from_value::<CommonData>(json!({"status": "done"})).unwrap_err();
        assert!(
            err.to_string().contains(
                "invalid status \"done\": expected one of succeeded, errored, unknown, aborted"
            ),
            "{err}"
        );
        let err = serde_json::from_value::<CommonData>(json!({"result": "ok"})).unwrap_err();
        assert!(
            err.to_string()
                .contains("invalid result \"ok\": expected one of pass, warning, fail"),
            "{err}"
        );
        // Case matters: Keptn always sends lower case.
        assert!("Pass".parse::<TaskResult>().is_err());
        // Standalone (not Option) values do not accept "".
        assert!(serde_json::from_value::<Status>(json!("")).is_err());
    }

    #[test]
    fn status_and_result_serialize_lower_case() {
        assert_eq!(
            serde_json::to_value(Status::Succeeded).unwrap(),
            json!("succeeded")
        );
        assert_eq!(
            serde_json::to_value(Status::Errored).unwrap(),
            json!("errored")
        );
        assert_eq!(
            serde_json::to_value(TaskResult::Fail).unwrap(),
            json!("fail")
        );
        assert_eq!(Status::Unknown.to_string(), "unknown");
        let data = CommonData {
            status: Some(Status::Errored),
            result: Some(TaskResult::Fail),
            ..CommonData::default()
        };
        assert_eq!(
            serde_json::to_value(&data).unwrap(),
            json!({"status": "errored", "result": "fail"})
        );
    }

    #[test]
    fn strategy_aliases_and_errors() {
        assert_eq!("direct".parse(), Ok(DeploymentStrategy::Direct));
        assert_eq!(
            "blue_green_service".parse(),
            Ok(DeploymentStrategy::BlueGreenService)
        );
        assert_eq!(
            "duplicate".parse(),
            Ok(DeploymentStrategy::BlueGreenService)
        );
        assert_eq!("user_managed".parse(), Ok(DeploymentStrategy::UserManaged));
        assert_eq!(
            DeploymentStrategy::BlueGreenService.as_str(),
            "blue_green_service"
        );
        assert_eq!(
            serde_json::to_value(DeploymentStrategy::BlueGreenService).unwrap(),
            json!("blue_green_service")
        );
        assert_eq!(
            serde_json::from_value::<DeploymentStrategy>(json!("duplicate")).unwrap(),
            DeploymentStrategy::BlueGreenService
        );
        assert_eq!(
            "canary"
                .parse::<DeploymentStrategy>()
                .unwrap_err()
                .to_string(),
            "unknown deployment strategy \"canary\": expected one of direct, blue_green_service \
             (alias duplicate), user_managed"
        );
        assert_eq!(
            "Direct".parse::<DeploymentStrategy>(),
            Err(StrategyError::Unknown("Direct".into()))
        );
        assert_eq!(
            "".parse::<DeploymentStrategy>(),
            Err(StrategyError::Missing)
        );
    }

    #[test]
    fn raw_strategy_survives_round_trip() {
        let raw = json!({
            "deploymentstrategy": "duplicate",
            "deploymentURIsLocal": ["http://a"],
            "deploymentNames": ["canary"],
            "gitCommit": "abc"
        });
        let details: DeploymentFinishedDetails = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(details.deployment_strategy, "duplicate");
        assert_eq!(details.strategy(), Ok(DeploymentStrategy::BlueGreenService));
        assert_eq!(serde_json::to_value(&details).unwrap(), raw);

        let details: DeploymentTriggeredDetails =
            serde_json::from_value(json!({"deploymentstrategy": "canary"})).unwrap();
        assert_eq!(
            details.strategy(),
            Err(StrategyError::Unknown("canary".into()))
        );
    }

    #[test]
    fn paths_in_messages_escape_control_characters_and_are_bounded() {
        let err = from_value::<CommonData>(&json!({"labels": {"a\nb": 1}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data.labels.a\\nb: invalid type: integer `1`, expected a string"
        );
        let long_key = "k".repeat(5000);
        let err = from_value::<CommonData>(&json!({"labels": {long_key: 1}})).unwrap_err();
        let DataError::Invalid { path, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path.len(), 203, "{path}");
        assert!(path.ends_with("kkk..."), "{path}");
    }

    #[test]
    fn values_in_messages_are_quoted_escaped_and_bounded() {
        let err = "a\u{0}b".parse::<Status>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid status \"a\\0b\": expected one of succeeded, errored, unknown, aborted"
        );
        let err = "x"
            .repeat(100_000)
            .parse::<DeploymentStrategy>()
            .unwrap_err();
        let shown = err.to_string();
        assert!(shown.len() < 300, "{shown}");
        assert!(
            shown.starts_with(&format!(
                "unknown deployment strategy \"{}\"... (100000 bytes)",
                "x".repeat(64)
            )),
            "{shown}"
        );
    }

    #[test]
    fn go_nulls_read_as_empty() {
        let data: DeploymentTriggeredData = serde_json::from_value(json!({
            "project": "p",
            "labels": null,
            "configurationChange": {"values": null},
            "deployment": {
                "deploymentstrategy": "direct",
                "deploymentURIsLocal": null,
                "deploymentURIsPublic": null
            }
        }))
        .unwrap();
        assert_eq!(data.common.labels, None);
        assert!(data.configuration_change.unwrap().values.is_empty());
        let deployment = data.deployment.unwrap();
        assert!(deployment.deployment_uris_local.is_empty());
        assert!(deployment.deployment_uris_public.is_empty());
    }

    #[test]
    fn unknown_fields_survive_round_trip() {
        let raw = json!({
            "project": "sockshop",
            "stage": "dev",
            "service": "carts",
            "labels": {"k": "v"},
            "temporaryData": {"x": 1},
            "configurationChange": {"values": {"image": "carts:1"}},
            "deployment": {
                "deploymentstrategy": "user_managed",
                "deploymentURIsLocal": [],
                "deploymentURIsPublic": ["http://p"],
                "future": true
            }
        });
        let data: DeploymentTriggeredData = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(data.extra.get("temporaryData"), Some(&json!({"x": 1})));
        assert_eq!(
            data.deployment.as_ref().unwrap().extra.get("future"),
            Some(&json!(true))
        );
        assert_eq!(serde_json::to_value(&data).unwrap(), raw);

        let raw = json!({
            "project": "p",
            "action": {"name": "Scale", "action": "scaling", "value": "+1"},
            "problem": {"problemTitle": "t", "rootCause": "r", "ProblemID": "42"}
        });
        let data: ActionTriggeredData = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!(
            data.problem.as_ref().unwrap().extra["ProblemID"],
            json!("42")
        );
        assert_eq!(serde_json::to_value(&data).unwrap(), raw);
    }
}
