//! Deployments side by side: different services run concurrently, one service's
//! deployments never overlap (both read from kube-sim's audit log), the worker's own
//! memory stays small while helm runs, and a release left pending by a killed helm is
//! recovered by the next deployment.

use std::time::{Duration, SystemTime};

use kube_sim::{AuditEntry, Config as SimConfig};
use serde_json::json;
use system_tests::deploy_env::{deployment_event, example_chart, image_of, DeployEnv};
use system_tests::events::publish;

const WAIT: Duration = Duration::from_secs(120);
const NS: &str = "shop-dev";

/// First start and last end of the write requests on objects whose name starts with one
/// of `prefixes`.
fn write_span(audit: &[AuditEntry], prefixes: &[String]) -> (SystemTime, SystemTime) {
    let writes: Vec<&AuditEntry> = audit
        .iter()
        .filter(|e| e.is_write() && prefixes.iter().any(|p| e.name.starts_with(p.as_str())))
        .collect();
    assert!(!writes.is_empty(), "no writes for {prefixes:?}");
    let start = writes.iter().map(|e| e.at_start).min().unwrap();
    let end = writes.iter().map(|e| e.at_end).max().unwrap();
    (start, end)
}

fn objects_of(service: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("sh.helm.release.v1.shop-dev-{service}."),
        format!("sh.helm.release.v1.shop-dev-{service}-generated."),
    ]
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn services_deploy_concurrently_one_service_serialises_and_memory_stays_small(
) -> anyhow::Result<()> {
    let env = DeployEnv::start(SimConfig {
        rollout_delay: Duration::from_millis(500),
        ..SimConfig::default()
    })
    .await?;
    let services = ["alpha", "beta", "delta", "gamma"];
    for service in services {
        env.push_chart(("shop", "dev", service), &example_chart())?;
    }
    let worker = env.start_worker(env.worker_spec(), "worker").await?;
    env.sim.clear_audit();

    let mut ids = Vec::new();
    for service in services {
        let id = format!("par-{service}");
        publish(
            &env.env.js,
            &deployment_event(&id, service, "direct", json!({})),
        )
        .await?;
        ids.push(id);
    }
    // A second deployment of gamma right behind the first: it must wait for it.
    publish(
        &env.env.js,
        &deployment_event(
            "par-gamma-2",
            "gamma",
            "direct",
            json!({"image": "ghcr.io/example/hello:2.0"}),
        ),
    )
    .await?;
    ids.push("par-gamma-2".into());
    env.all_succeeded(&ids, WAIT).await?;

    let audit = env.sim.audit();
    let alpha = write_span(&audit, &objects_of("alpha"));
    let beta = write_span(&audit, &objects_of("beta"));
    assert!(
        alpha.0 < beta.1 && beta.0 < alpha.1,
        "alpha {alpha:?} and beta {beta:?} should overlap in time"
    );
    // gamma: helm applies objects with server-side apply (PATCH by name) and marks a
    // revision deployed with an UPDATE of its storage Secret (creates are POSTs to the
    // collection and carry no name in the path). The first task's last write is the
    // update of the generated release's revision 1 Secret; the second task's first named
    // write is its apply of the gamma Service. The first must end before the second.
    let named = |name: &str, resource: &str| {
        let mut writes: Vec<&AuditEntry> = audit
            .iter()
            .filter(|e| e.is_write() && e.name == name && e.resource == resource)
            .collect();
        writes.sort_by_key(|e| e.at_start);
        writes
    };
    let generated_v1 = named("sh.helm.release.v1.shop-dev-gamma-generated.v1", "secrets");
    let service_applies = named("gamma", "services");
    assert_eq!(
        service_applies.len(),
        2,
        "one apply per deployment: {service_applies:#?}"
    );
    let first_done = generated_v1[0].at_end;
    let second_began = service_applies[1].at_start;
    assert!(
        first_done <= second_began,
        "the two gamma deployments overlapped: first ended {first_done:?}, second began {second_began:?}"
    );
    let gamma = env.deployment(NS, "gamma").await?.expect("gamma");
    assert_eq!(image_of(&gamma), "ghcr.io/example/hello:2.0");

    let peak = peak_rss_kib(worker.process.pid());
    eprintln!(
        "worker peak RSS while deploying 4 services: {:.1} MiB",
        peak as f64 / 1024.0
    );
    assert!(peak > 0, "VmHWM readable");
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB over 64 MiB");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_stuck_pending_upgrade_is_recovered_by_the_next_deployment() -> anyhow::Result<()>
{
    let env = DeployEnv::start(SimConfig::default()).await?;
    env.push_chart(("shop", "dev", "hello"), &example_chart())?;
    let worker = env.start_worker(env.worker_spec(), "worker").await?;
    let finished = env
        .deploy(&deployment_event("p-1", "hello", "direct", json!({})), WAIT)
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");

    // A helm upgrade killed once revision 2 is pending.
    let pending = env
        .leave_pending_upgrade("shop-dev-hello", "image=ghcr.io/example/hello:crashed")
        .await?;
    assert_eq!(pending, 2);
    let history = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        history.last(),
        Some(&(2, "pending-upgrade".to_owned())),
        "{history:?}"
    );

    let finished = env
        .deploy(
            &deployment_event(
                "p-2",
                "hello",
                "direct",
                json!({"image": "ghcr.io/example/hello:3.0"}),
            ),
            WAIT,
        )
        .await?;
    assert_eq!(finished["data"]["status"], "succeeded", "{finished:#}");
    let user = env.deployment(NS, "hello").await?.expect("hello");
    assert_eq!(image_of(&user), "ghcr.io/example/hello:3.0");
    let history = env.helm_history("shop-dev-hello", NS).await?;
    assert_eq!(
        history.last().map(|h| h.1.as_str()),
        Some("deployed"),
        "{history:?}"
    );
    assert_eq!(
        worker
            .metric("helm_service_pending_recoveries_total")
            .await?,
        1.0
    );
    Ok(())
}
