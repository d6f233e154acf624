//! The events the bench publishes: `sh.keptn.event.deployment.triggered`, each with
//! its own id, spread round-robin over a number of releases (services).

use bytes::Bytes;
use serde_json::json;

/// Subject (and CloudEvent type) of the events under test.
pub const TRIGGERED: &str = "sh.keptn.event.deployment.triggered";
/// Subject of the `.started` replies.
pub const STARTED: &str = "sh.keptn.event.deployment.started";
/// Subject of the `.finished` replies.
pub const FINISHED: &str = "sh.keptn.event.deployment.finished";

/// One encoded triggered event.
pub struct Triggered {
    pub id: String,
    pub payload: Bytes,
}

/// `count` triggered events with fresh v4 ids; event `i` targets service
/// `svc-<(first + i) mod releases>` of project `bench`, stage `dev` (round-robin,
/// continuing from `first` so a later phase goes on where the previous one stopped).
pub fn batch(count: usize, releases: usize, first: usize) -> Vec<Triggered> {
    let releases = releases.max(1);
    (first..first + count)
        .map(|i| {
            let id = uuid::Uuid::new_v4().to_string();
            let payload = encode(&id, &format!("svc-{}", i % releases));
            Triggered { id, payload }
        })
        .collect()
}

/// A triggered event as Keptn's shipyard-controller sends it (same shape as the
/// system tests' builder): valid names, a direct deployment strategy, one value to
/// merge.
fn encode(id: &str, service: &str) -> Bytes {
    let event = json!({
        "specversion": "1.0",
        "id": id,
        "source": "shipyard-controller",
        "type": TRIGGERED,
        "datacontenttype": "application/json",
        "time": "2026-11-24T10:00:00Z",
        "shkeptncontext": uuid::Uuid::new_v4().to_string(),
        "data": {
            "project": "bench",
            "stage": "dev",
            "service": service,
            "labels": {"bench": "pipeline"},
            "configurationChange": {"values": {"image": "example/carts:0.1"}},
            "deployment": {"deploymentstrategy": "direct", "deploymentURIsLocal": []},
        },
    });
    Bytes::from(event.to_string())
}
