//! docker-compose.yml rehearsed without a container daemon: each service's own command line
//! and environment, read from the file, run as local processes (kube-sim in process, from its
//! parsed flags), and the demo must deploy the example.
//!
//! What the containers provide is mapped, and only that: the compose network's names to the
//! loopback ports this test's servers listen on (`nats://nats:4222`, the kubeconfig's
//! `http://kube-sim:6443`), bind mounts to the repository files they mount, the HTTP port to a
//! free one, and what the image carries (`helm` on the PATH, helm's home under /tmp) to the
//! pinned helm and a temp dir. `ops_files.rs` checks the rest of the file (targets, health
//! checks, start order) statically.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use system_tests::compose::{self, mounted_source, strings};
use system_tests::deploy_env::{helm_bin, helm_service_bin, TOOL_TIMEOUT};
use system_tests::env::TestEnv;
use test_harness::process::{free_port, ChildProcess};
use test_harness::wait::wait_until;

const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);
/// How the compose network names the NATS server.
const COMPOSE_NATS: &str = "nats://nats:4222";

/// `args` of `service` with the compose network's NATS URL and the bind mounts mapped.
fn localized(service: &Value, args: Vec<String>, nats_url: &str) -> Vec<String> {
    args.into_iter()
        .map(|arg| {
            if arg == COMPOSE_NATS {
                return nats_url.to_owned();
            }
            match mounted_source(service, &arg) {
                Some(source) if arg.starts_with('/') => source.display().to_string(),
                _ => arg,
            }
        })
        .collect()
}

/// Runs a one-shot command to its end.
async fn run_once(args: &[String], name: &str) -> anyhow::Result<std::process::Output> {
    let run = tokio::process::Command::new(helm_service_bin())
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(TOOL_TIMEOUT, run)
        .await
        .with_context(|| format!("{name} took more than {TOOL_TIMEOUT:?}"))?
        .with_context(|| format!("running {name}"))
}

#[tokio::test]
async fn the_compose_services_as_processes_deploy_the_example() -> anyhow::Result<()> {
    let compose = compose::load();
    let services = &compose["services"];
    let env = TestEnv::start().await?;
    let nats_url = env.nats.url();

    // kube-sim, from its compose command line, on a loopback port.
    let sim_service = &services["kube-sim"];
    let mut sim_args = strings(&sim_service["command"], "kube-sim.command");
    let kubeconfig_out = env.dir.path().join("kube-sim-kubeconfig.json");
    for (flag, value) in [
        ("--listen", "127.0.0.1:0".to_owned()),
        ("--kubeconfig-out", kubeconfig_out.display().to_string()),
    ] {
        let at = sim_args.iter().position(|a| a == flag).context(flag)?;
        sim_args[at + 1] = value;
    }
    use clap::Parser as _;
    let sim_config = kube_sim::cli::Args::try_parse_from(
        std::iter::once("kube-sim".to_owned()).chain(sim_args),
    )?
    .config()?;
    let sim = kube_sim::KubeSim::start(sim_config).await?;

    // The worker: its command and environment, its kubeconfig pointed at that kube-sim.
    let worker = &services["helm-service"];
    let mut environment: BTreeMap<String, String> = worker["environment"]
        .as_object()
        .context("environment")?
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let mounted_kubeconfig = mounted_source(worker, &environment["KUBECONFIG"])
        .context("the worker's kubeconfig is mounted")?;
    let kubeconfig = env.dir.path().join("kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        std::fs::read_to_string(&mounted_kubeconfig)?.replace("http://kube-sim:6443", &sim.url()),
    )?;
    let http_port = free_port();
    let helm_home = env.dir.path().join("helm-home");
    environment.extend([
        ("NATS_URL".to_owned(), nats_url.clone()),
        ("KUBECONFIG".to_owned(), kubeconfig.display().to_string()),
        ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{http_port}")),
        // What the image carries.
        ("HELM_BIN".to_owned(), helm_bin().display().to_string()),
        ("HOME".to_owned(), helm_home.display().to_string()),
        (
            "HELM_CACHE_HOME".to_owned(),
            helm_home.join("cache").display().to_string(),
        ),
        (
            "HELM_CONFIG_HOME".to_owned(),
            helm_home.join("config").display().to_string(),
        ),
        (
            "HELM_DATA_HOME".to_owned(),
            helm_home.join("data").display().to_string(),
        ),
    ]);
    let command = localized(
        worker,
        strings(&worker["command"], "helm-service.command"),
        &nats_url,
    );
    let mut worker_process = ChildProcess::builder(helm_service_bin())
        .name("helm-service")
        .args(&command)
        .envs(environment.iter())
        .log_file(env.dir.path().join("helm-service.log"))
        .spawn()?;

    // Its health check, as compose runs it, until it passes.
    let health = strings(&worker["healthcheck"]["test"], "healthcheck.test");
    anyhow::ensure!(health[..2] == ["CMD", "helm-service"], "{health:?}");
    let health = localized(worker, health[2..].to_vec(), &nats_url);
    wait_until(
        "the worker's health check to pass",
        DEADLINE,
        POLL,
        || async {
            run_once(&health, "the health check")
                .await
                .ok()
                .filter(|out| out.status.success())
        },
    )
    .await
    .with_context(|| worker_process.log_tail(30))?;

    // The one-shot demo: chart, then event.
    for name in ["demo-chart", "demo-event"] {
        let service = &services[name];
        let args = localized(service, strings(&service["command"], name), &nats_url);
        let out = run_once(&args, name).await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(
            out.status.success(),
            "{name} failed: {stdout}{}\nworker:\n{}",
            String::from_utf8_lossy(&out.stderr),
            worker_process.log_tail(30)
        );
        if name == "demo-event" {
            // `send` prints each reply as a JSON document.
            let replies: Vec<Value> = serde_json::Deserializer::from_str(&stdout)
                .into_iter::<Value>()
                .collect::<Result<_, _>>()
                .with_context(|| format!("demo-event printed: {stdout}"))?;
            let finished = replies
                .iter()
                .find(|r| r["type"] == "sh.keptn.event.deployment.finished")
                .with_context(|| format!("no finished reply in {replies:#?}"))?;
            assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
            assert!(replies
                .iter()
                .any(|r| r["type"] == "sh.keptn.event.deployment.started"));
        }
    }
    assert!(worker_process.is_running());
    Ok(())
}
