//! `GET .../pods/{name}/log`: what a simulated container printed.
//!
//! kube-sim runs no processes, so a container's log is what its kubelet (`controller::kubelet`)
//! would have seen: the command it was started with, and how it ended. That is enough for
//! clients that fetch a failed pod's log to show it (`helm test --logs`, helm-service's test
//! gate). The answer is `text/plain`, with the real server's `container`, `tailLines` and
//! `limitBytes` parameters and its refusals (several containers and none named, a container
//! that has not started).

use serde_json::Value;

use crate::status::ApiError;

/// The parameters of a log request the simulation honours (`follow`, `timestamps`,
/// `previous` are accepted and ignored: logs are complete at once).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub container: Option<String>,
    pub tail_lines: Option<usize>,
    pub limit_bytes: Option<usize>,
}

impl LogQuery {
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let mut q = LogQuery::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let number = |what: &str| {
                v.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("{what}: Invalid value: {v:?}: must be a number"))
                })
            };
            match k.as_ref() {
                "container" => q.container = Some(v.to_string()),
                "tailLines" => q.tail_lines = Some(number("tailLines")?),
                "limitBytes" => q.limit_bytes = Some(number("limitBytes")?),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The log of `pod` as `query` asks for it.
pub fn log_of(pod: &Value, query: &LogQuery) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match (&query.container, names.as_slice()) {
        (Some(wanted), _) => containers
            .iter()
            .find(|c| c["name"] == wanted.as_str())
            .ok_or_else(|| {
                ApiError::bad_request(format!("container {wanted} is not valid for pod {name}"))
            })?,
        (None, [_]) => &containers[0],
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    };
    let container_name = container["name"].as_str().unwrap_or_default();
    let state = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|statuses| {
            statuses
                .iter()
                .find(|s| s["name"] == container_name)
                .map(|s| &s["state"])
        })
        .cloned()
        .unwrap_or(Value::Null);
    if state.get("running").is_none() && state.get("terminated").is_none() {
        let reason = state["waiting"]["reason"]
            .as_str()
            .unwrap_or("ContainerCreating");
        return Err(ApiError::bad_request(format!(
            "container \"{container_name}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let mut lines = vec![format!(
        "kube-sim: started {}{}",
        container["image"].as_str().unwrap_or_default(),
        argv(container)
    )];
    if let Some(terminated) = state.get("terminated") {
        lines.push(format!(
            "kube-sim: exited with code {} ({})",
            terminated["exitCode"].as_i64().unwrap_or_default(),
            terminated["reason"].as_str().unwrap_or_default()
        ));
    }
    if let Some(tail) = query.tail_lines {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    let mut text: String = lines.iter().map(|line| format!("{line}\n")).collect();
    if let Some(limit) = query.limit_bytes {
        let mut end = limit.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Ok(text)
}

/// ` <command...> <args...>` of a container, as one line.
fn argv(container: &Value) -> String {
    ["command", "args"]
        .iter()
        .flat_map(|key| container[*key].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part.as_str().map(|s| format!(" {s}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(state: Value) -> Value {
        json!({
            "metadata": {"name": "rel-test"},
            "spec": {"containers": [{"name": "check", "image": "curl", "args": ["-fsS", "http://rel/healthz"]}]},
            "status": {"containerStatuses": [{"name": "check", "state": state}]},
        })
    }

    #[test]
    fn a_finished_container_says_how_it_ended() {
        let failed = pod(json!({"terminated": {"exitCode": 1, "reason": "Error"}}));
        assert_eq!(
            log_of(&failed, &LogQuery::default()).unwrap(),
            "kube-sim: started curl -fsS http://rel/healthz\nkube-sim: exited with code 1 (Error)\n"
        );
        let tail = LogQuery {
            tail_lines: Some(1),
            ..LogQuery::default()
        };
        assert_eq!(
            log_of(&failed, &tail).unwrap(),
            "kube-sim: exited with code 1 (Error)\n"
        );
        let short = LogQuery {
            limit_bytes: Some(9),
            ..LogQuery::default()
        };
        assert_eq!(log_of(&failed, &short).unwrap(), "kube-sim:");
    }

    #[test]
    fn refusals_are_the_real_servers() {
        let waiting = pod(json!({"waiting": {"reason": "ContainerCreating"}}));
        let err = log_of(&waiting, &LogQuery::default()).unwrap_err();
        assert!(
            format!("{err:?}").contains("is waiting to start"),
            "{err:?}"
        );
        let other = LogQuery {
            container: Some("nope".into()),
            ..LogQuery::default()
        };
        assert!(log_of(&pod(json!({"running": {}})), &other).is_err());
        let mut two = pod(json!({"running": {}}));
        two["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "x"}));
        let err = log_of(&two, &LogQuery::default()).unwrap_err();
        assert!(
            format!("{err:?}").contains("choose one of: [check side]"),
            "{err:?}"
        );
        assert!(LogQuery::parse(Some("tailLines=x")).is_err());
        assert_eq!(
            LogQuery::parse(Some("container=check&tailLines=5&follow=true")).unwrap(),
            LogQuery {
                container: Some("check".into()),
                tail_lines: Some(5),
                limit_bytes: None
            }
        );
    }
}
