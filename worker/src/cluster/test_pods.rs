//! The failed pods of a release's `helm test` and the ends of their logs, so a failed test
//! gate says what the test printed rather than only that it failed.
//!
//! The tests are the release's hooks with the `test` event (`TestHook`, read from Helm's
//! storage): a Pod hook is its own pod, a Job hook's pods carry its `job-name` label. A log
//! that cannot be read (the pod is gone, the API refuses) leaves the pod named without it:
//! the gate's verdict does not depend on the excerpt.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams};

use super::{Cluster, ClusterError, TestHook};

/// Log lines kept of each failed pod.
const TAIL_LINES: i64 = 20;
/// Bytes of log read at most per pod.
const LIMIT_BYTES: i64 = 2048;
/// Failed pods named in one message at most.
const MAX_PODS: usize = 3;

/// A test pod that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedTestPod {
    pub name: String,
    /// The container whose log was read (the first that exited non-zero).
    pub container: Option<String>,
    /// The end of its log; `None` when it could not be read.
    pub log: Option<String>,
}

impl Cluster {
    /// The failed pods of the test `hooks` in `namespace`, each with the end of its log.
    pub async fn failed_test_pods(
        &self,
        namespace: &str,
        hooks: &[TestHook],
    ) -> Result<Vec<FailedTestPod>, ClusterError> {
        let api: Api<Pod> = Api::namespaced(self.client(), namespace);
        let mut pods = Vec::new();
        for hook in hooks {
            match hook.kind.as_str() {
                "Pod" => {
                    let pod = self
                        .call(
                            || format!("get test pod {} in {namespace}", hook.name),
                            api.get_opt(&hook.name),
                        )
                        .await?;
                    pods.extend(pod);
                }
                "Job" => {
                    let params = ListParams::default().labels(&format!("job-name={}", hook.name));
                    let list = self
                        .call(
                            || format!("list the pods of test Job {} in {namespace}", hook.name),
                            api.list(&params),
                        )
                        .await?;
                    pods.extend(list.items);
                }
                _ => {}
            }
        }
        let mut failed = Vec::new();
        for pod in pods.iter().filter(|pod| is_failed(pod)).take(MAX_PODS) {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let container = failed_container(pod);
            let params = LogParams {
                container: container.clone(),
                tail_lines: Some(TAIL_LINES),
                limit_bytes: Some(LIMIT_BYTES),
                ..LogParams::default()
            };
            // Best effort: a log that cannot be read leaves the pod named without it.
            let log = self
                .call(
                    || format!("read the log of test pod {name} in {namespace}"),
                    api.logs(&name, &params),
                )
                .await
                .ok();
            failed.push(FailedTestPod {
                name,
                container,
                log,
            });
        }
        Ok(failed)
    }
}

fn is_failed(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
}

/// The first container that exited with a non-zero code, else the first container.
fn failed_container(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref();
    statuses
        .into_iter()
        .flatten()
        .find(|status| {
            status
                .state
                .as_ref()
                .and_then(|state| state.terminated.as_ref())
                .is_some_and(|terminated| terminated.exit_code != 0)
        })
        .map(|status| status.name.clone())
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|spec| spec.containers.first())
                .map(|container| container.name.clone())
        })
}

/// What a failed test gate adds to its message: each failed pod and the end of its log,
/// control characters escaped (it ends up in a reply and in logs).
pub fn describe(pods: &[FailedTestPod]) -> String {
    if pods.is_empty() {
        return "; no failed test pod was left to read a log from".into();
    }
    pods.iter()
        .map(|pod| {
            let container = pod
                .container
                .as_deref()
                .map(|c| format!(" (container {c})"))
                .unwrap_or_default();
            match pod.log.as_deref().map(str::trim_end) {
                Some("") => format!(
                    "; test pod {}{container} failed with an empty log",
                    pod.name
                ),
                Some(log) => format!(
                    "; test pod {}{container} failed, its log ends:\n{}",
                    pod.name,
                    clean(log)
                ),
                None => format!(
                    "; test pod {}{container} failed (its log could not be read)",
                    pod.name
                ),
            }
        })
        .collect()
}

/// `text` with control characters other than line breaks escaped.
fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '\n' => vec!['\n'],
            c if c.is_control() => c.escape_default().collect(),
            c => vec![c],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, log: Option<&str>) -> FailedTestPod {
        FailedTestPod {
            name: name.into(),
            container: Some("check".into()),
            log: log.map(str::to_owned),
        }
    }

    #[test]
    fn the_message_names_each_pod_and_the_end_of_its_log() {
        let text = describe(&[
            pod("hello-test", Some("GET /healthz\nexpected 200, got 503\n")),
            pod("hello-test-2", None),
        ]);
        assert_eq!(
            text,
            "; test pod hello-test (container check) failed, its log ends:\nGET /healthz\nexpected 200, got 503\
             ; test pod hello-test-2 (container check) failed (its log could not be read)"
        );
        assert!(describe(&[]).contains("no failed test pod"));
        assert!(describe(&[pod("p", Some("\n"))]).contains("empty log"));
    }

    #[test]
    fn control_characters_are_escaped() {
        let text = describe(&[pod("p", Some("a\u{1b}[31mred\r\nb"))]);
        assert!(text.ends_with("a\\u{1b}[31mred\\r\nb"), "{text:?}");
    }
}
