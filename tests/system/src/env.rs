//! One test's world: its own nats-server, a temp dir for logs, and a probe log.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::Value;
use test_harness::nats::NatsServer;

use crate::events::Replies;
use crate::probe::{read_log, ProbeRecord};
use crate::worker_process::WorkerSpec;

pub struct TestEnv {
    pub nats: NatsServer,
    pub js: jetstream::Context,
    pub dir: tempfile::TempDir,
    pub probe_log: PathBuf,
}

impl TestEnv {
    pub async fn start() -> anyhow::Result<TestEnv> {
        Self::with_server(NatsServer::start().await?).await
    }

    /// A world around `nats`, a server the test started (with credentials, TLS, ...).
    pub async fn with_server(nats: NatsServer) -> anyhow::Result<TestEnv> {
        let js = nats.jetstream().await?;
        let mut dir = tempfile::Builder::new()
            .prefix("helm-service-test-")
            .tempdir()?;
        if std::env::var_os("TEST_HARNESS_KEEP_DIRS").is_some() {
            // Keep worker logs and the probe log for a post-mortem.
            eprintln!("test dir kept: {}", dir.path().display());
            dir.disable_cleanup(true);
        }
        let probe_log = dir.path().join("probe.jsonl");
        Ok(TestEnv {
            nats,
            js,
            dir,
            probe_log,
        })
    }

    /// A worker spec for `binary` pointed at this world's server and probe log.
    pub fn worker(&self, binary: &str) -> WorkerSpec {
        let mut spec = WorkerSpec::new(binary, &self.nats.url());
        spec.probe_log = Some(self.probe_log.clone());
        spec
    }

    pub fn probe_records(&self) -> Vec<ProbeRecord> {
        read_log(&self.probe_log)
    }

    /// Everything helm-service has published to the Keptn stream so far.
    pub async fn replies(&self) -> anyhow::Result<Replies> {
        let bodies = test_harness::stream::stream_json(&self.js, "keptn", "").await?;
        Ok(Replies::from_stream_bodies(bodies))
    }

    /// Waits until `until` holds for the replies in the stream.
    pub async fn wait_replies(
        &self,
        deadline: Duration,
        until: impl FnMut(&Replies) -> bool,
    ) -> anyhow::Result<Replies> {
        let (replies, _) = crate::events::collect_replies(&self.js, deadline, until).await?;
        Ok(replies)
    }

    /// Every dead-letter record so far.
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<Value>> {
        test_harness::stream::stream_json(&self.js, "helm-service-dlq", "").await
    }
}
