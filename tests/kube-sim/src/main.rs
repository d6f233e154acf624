//! `kube-sim` binary: serves until SIGINT/SIGTERM, for manual use and for processes (helm,
//! the worker) that need a cluster outside a Rust test.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about = "Kubernetes API server emulator on loopback HTTP")]
struct Args {
    /// Address to listen on (port 0 picks a free port; see the kubeconfig for the result).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write the kubeconfig (JSON) pointing at this server.
    #[arg(long)]
    kubeconfig_out: PathBuf,
    /// Milliseconds every pod takes to become ready.
    #[arg(long, default_value_t = 200)]
    rollout_delay_ms: u64,
    /// Pods whose image contains this never become ready (repeatable).
    #[arg(long)]
    never_ready_image: Vec<String>,
    /// Milliseconds a run-to-completion pod (a Job's, a `helm test` pod) runs once ready.
    #[arg(long, default_value_t = 200)]
    job_duration_ms: u64,
    /// Run-to-completion pods whose image contains this exit 1, failing their Job (repeatable).
    #[arg(long)]
    failing_job_image: Vec<String>,
    /// PersistentVolumeClaims whose name contains this never bind (repeatable).
    #[arg(long)]
    never_bound_claim: Vec<String>,
    /// Milliseconds a `type: LoadBalancer` Service waits for its ingress address.
    #[arg(long, default_value_t = 200)]
    load_balancer_delay_ms: u64,
    /// LoadBalancer Services whose name contains this never get an address (repeatable).
    #[arg(long)]
    pending_load_balancer: Vec<String>,
    /// Simulated Node names, one DaemonSet pod each (repeatable; default one node).
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Start without the default StorageClass (claims without a class then stay Pending).
    #[arg(long)]
    no_default_storage_class: bool,
    /// Install the project's Gateway API CRDs (GatewayClass, Gateway, HTTPRoute) at start.
    #[arg(long)]
    gateway_api: bool,
    /// Install the CustomResourceDefinitions of this multi-document YAML file at start
    /// (repeatable).
    #[arg(long = "crds", value_name = "FILE")]
    crd_bundles: Vec<PathBuf>,
    /// Authorization mode: require bearer tokens and evaluate RBAC (the kubeconfig's own
    /// token is the admin's; see --rbac-user for others).
    #[arg(long)]
    rbac: bool,
    /// A user of the authorization mode, `TOKEN,NAME[,GROUP...]`, with a kubeconfig context
    /// of its name (repeatable; implies --rbac).
    #[arg(long, value_name = "TOKEN,NAME[,GROUP...]")]
    rbac_user: Vec<String>,
    /// Append every request as a JSON line to FILE (see `kube_sim::audit::read_log`).
    #[arg(long, value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// Milliseconds of latency added to each request (see --latency-path).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Only add latency to requests whose path contains this.
    #[arg(long)]
    latency_path: Option<String>,
    /// Fraction (0.0-1.0) of requests answered 500 or 503.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction (0.0-1.0) of requests answered 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// Only apply --error-rate and --throttle-rate to paths containing this.
    #[arg(long)]
    fault_path: Option<String>,
    /// Seed of the generator deciding which requests fail.
    #[arg(long, default_value_t = kube_sim::FaultConfig::default().seed)]
    fault_seed: u64,
    /// Answer 409 Conflict to the next writes on paths containing this (see --conflict-count).
    #[arg(long)]
    conflict_path: Option<String>,
    /// How many writes --conflict-path rejects.
    #[arg(long, default_value_t = 1)]
    conflict_count: u32,
}

/// Rates outside 0.0-1.0 are almost certainly typos; refuse them rather than clamp.
fn rate(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be within 0.0-1.0, got {v}"
    );
    Ok(v)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let faults = kube_sim::FaultConfig {
        latency: std::time::Duration::from_millis(args.latency_ms),
        latency_path: args.latency_path,
        error_rate: rate("error-rate", args.error_rate)?,
        throttle_rate: rate("throttle-rate", args.throttle_rate)?,
        error_path: args.fault_path,
        seed: args.fault_seed,
        conflicts: args
            .conflict_path
            .map(|path_contains| kube_sim::ConflictRule {
                path_contains,
                remaining: args.conflict_count,
            })
            .into_iter()
            .collect(),
    };
    let users = args
        .rbac_user
        .iter()
        .map(|u| kube_sim::authz::User::parse(u).map_err(|e| anyhow::anyhow!("--rbac-user: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let rbac = (args.rbac || !users.is_empty()).then_some(users);
    let sim = kube_sim::KubeSim::start(kube_sim::Config {
        listen: args.listen,
        kubeconfig_path: Some(args.kubeconfig_out),
        rollout_delay: std::time::Duration::from_millis(args.rollout_delay_ms),
        never_ready_images: args.never_ready_image,
        job_duration: std::time::Duration::from_millis(args.job_duration_ms),
        failing_job_images: args.failing_job_image,
        never_bound_claims: args.never_bound_claim,
        load_balancer_delay: std::time::Duration::from_millis(args.load_balancer_delay_ms),
        pending_load_balancers: args.pending_load_balancer,
        nodes: if args.nodes.is_empty() {
            kube_sim::Config::default().nodes
        } else {
            args.nodes
        },
        default_storage_class: (!args.no_default_storage_class)
            .then(|| kube_sim::bootstrap::DEFAULT_STORAGE_CLASS.to_string()),
        gateway_api: args.gateway_api,
        rbac,
        crd_bundles: args.crd_bundles,
        audit_log_path: args.audit_log,
        faults,
        ..kube_sim::Config::default()
    })
    .await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}
