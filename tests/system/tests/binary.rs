//! The production `helm-service` binary: `send` publishes an event and prints the replies
//! of a running worker (what `ops/run-local.sh` relies on), and refuses files that are not
//! CloudEvents.

use std::path::PathBuf;
use std::time::Duration;

use system_tests::deploy_env::DeployEnv;
use system_tests::events::triggered;

/// `target/<profile>/helm-service`, built by cargo for the worker crate's own
/// integration tests (and by `ops/test.sh`).
fn helm_service_binary() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_probe-worker"));
    let binary = dir.with_file_name("helm-service");
    assert!(
        binary.exists(),
        "{} is missing: build it with `cargo build -p helm-service` (ops/test.sh does)",
        binary.display()
    );
    binary
}

#[tokio::test]
async fn send_prints_the_replies_of_the_production_worker() -> anyhow::Result<()> {
    let deploy_env = DeployEnv::start(kube_sim::Config::default()).await?;
    let env = &deploy_env.env;
    let binary = helm_service_binary();
    let _worker = deploy_env
        .start_worker(deploy_env.worker_spec(), "worker")
        .await?;

    let event_file = env.dir.path().join("event.json");
    let event = triggered(
        "release",
        "5f1c6a2e-0000-4000-8000-00000000b001",
        ("sockshop", "dev", "carts"),
        &[],
    );
    std::fs::write(&event_file, event.to_string())?;
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&binary)
            .args([
                "send",
                "--nats-url",
                &env.nats.url(),
                "--wait",
                "30s",
                "--file",
            ])
            .arg(&event_file)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "send failed: {stderr}");
    assert!(
        stderr.contains("published sh.keptn.event.release.triggered"),
        "{stderr}"
    );
    assert!(
        stdout.contains("\"type\": \"sh.keptn.event.release.finished\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"status\": \"errored\""), "{stdout}");
    // Nothing is deployed, so the promotion cannot happen; the reply says what to do.
    assert!(
        stdout
            .contains("cannot promote carts in stage dev of project sockshop: it is not deployed"),
        "{stdout}"
    );
    Ok(())
}

#[tokio::test]
async fn send_refuses_a_file_that_is_not_a_cloudevent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.json");
    std::fs::write(&file, r#"{"specversion": "0.3", "id": "x"}"#)?;
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(helm_service_binary())
            .args(["send", "--nats-url", "nats://127.0.0.1:1", "--file"])
            .arg(&file)
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a valid CloudEvent"), "{stderr}");
    Ok(())
}
