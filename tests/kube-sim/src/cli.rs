//! The `kube-sim` binary's flags, in the library so tests can parse the command lines that
//! start it (docker-compose.yml) with the same parser.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(version, about = "Kubernetes API server emulator on loopback HTTP")]
pub struct Args {
    /// Address to listen on (port 0 picks a free port; see the kubeconfig for the result).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Where to write the kubeconfig (JSON) pointing at this server.
    #[arg(long)]
    pub kubeconfig_out: PathBuf,
    /// Milliseconds every pod takes to become ready.
    #[arg(long, default_value_t = 200)]
    pub rollout_delay_ms: u64,
    /// Pods whose image contains this never become ready (repeatable).
    #[arg(long)]
    pub never_ready_image: Vec<String>,
    /// Milliseconds a run-to-completion pod (a Job's, a `helm test` pod) runs once ready.
    #[arg(long, default_value_t = 200)]
    pub job_duration_ms: u64,
    /// Run-to-completion pods whose image contains this exit 1, failing their Job (repeatable).
    #[arg(long)]
    pub failing_job_image: Vec<String>,
    /// PersistentVolumeClaims whose name contains this never bind (repeatable).
    #[arg(long)]
    pub never_bound_claim: Vec<String>,
    /// Milliseconds a `type: LoadBalancer` Service waits for its ingress address.
    #[arg(long, default_value_t = 200)]
    pub load_balancer_delay_ms: u64,
    /// LoadBalancer Services whose name contains this never get an address (repeatable).
    #[arg(long)]
    pub pending_load_balancer: Vec<String>,
    /// Simulated Node names, one DaemonSet pod each (repeatable; default one node).
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// Start without the default StorageClass (claims without a class then stay Pending).
    #[arg(long)]
    pub no_default_storage_class: bool,
    /// Install the project's Gateway API CRDs (GatewayClass, Gateway, HTTPRoute) at start.
    #[arg(long)]
    pub gateway_api: bool,
    /// Install the CustomResourceDefinitions of this multi-document YAML file at start
    /// (repeatable).
    #[arg(long = "crds", value_name = "FILE")]
    pub crd_bundles: Vec<PathBuf>,
    /// Authorization mode: require bearer tokens and evaluate RBAC (the kubeconfig's own
    /// token is the admin's; see --rbac-user for others).
    #[arg(long)]
    pub rbac: bool,
    /// A user of the authorization mode, `TOKEN,NAME[,GROUP...]`, with a kubeconfig context
    /// of its name (repeatable; implies --rbac).
    #[arg(long, value_name = "TOKEN,NAME[,GROUP...]")]
    pub rbac_user: Vec<String>,
    /// Append every request as a JSON line to FILE (see `kube_sim::audit::read_log`).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Milliseconds of latency added to each request (see --latency-path).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Only add latency to requests whose path contains this.
    #[arg(long)]
    pub latency_path: Option<String>,
    /// Fraction (0.0-1.0) of requests answered 500 or 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction (0.0-1.0) of requests answered 429 with Retry-After: 1.
    #[arg(long, default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Only apply --error-rate and --throttle-rate to paths containing this.
    #[arg(long)]
    pub fault_path: Option<String>,
    /// Seed of the generator deciding which requests fail.
    #[arg(long, default_value_t = crate::FaultConfig::default().seed)]
    pub fault_seed: u64,
    /// Answer 409 Conflict to the next writes on paths containing this (see --conflict-count).
    #[arg(long)]
    pub conflict_path: Option<String>,
    /// How many writes --conflict-path rejects.
    #[arg(long, default_value_t = 1)]
    pub conflict_count: u32,
}

/// Rates outside 0.0-1.0 are almost certainly typos; refuse them rather than clamp.
fn rate(name: &str, v: f64) -> anyhow::Result<f64> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&v),
        "--{name} must be within 0.0-1.0, got {v}"
    );
    Ok(v)
}

impl Args {
    /// The server these flags describe.
    pub fn config(self) -> anyhow::Result<crate::Config> {
        let faults = crate::FaultConfig {
            latency: std::time::Duration::from_millis(self.latency_ms),
            latency_path: self.latency_path,
            error_rate: rate("error-rate", self.error_rate)?,
            throttle_rate: rate("throttle-rate", self.throttle_rate)?,
            error_path: self.fault_path,
            seed: self.fault_seed,
            conflicts: self
                .conflict_path
                .map(|path_contains| crate::ConflictRule {
                    path_contains,
                    remaining: self.conflict_count,
                })
                .into_iter()
                .collect(),
        };
        let users = self
            .rbac_user
            .iter()
            .map(|u| crate::authz::User::parse(u).map_err(|e| anyhow::anyhow!("--rbac-user: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let rbac = (self.rbac || !users.is_empty()).then_some(users);
        Ok(crate::Config {
            listen: self.listen,
            kubeconfig_path: Some(self.kubeconfig_out),
            rollout_delay: std::time::Duration::from_millis(self.rollout_delay_ms),
            never_ready_images: self.never_ready_image,
            job_duration: std::time::Duration::from_millis(self.job_duration_ms),
            failing_job_images: self.failing_job_image,
            never_bound_claims: self.never_bound_claim,
            load_balancer_delay: std::time::Duration::from_millis(self.load_balancer_delay_ms),
            pending_load_balancers: self.pending_load_balancer,
            nodes: if self.nodes.is_empty() {
                crate::Config::default().nodes
            } else {
                self.nodes
            },
            default_storage_class: (!self.no_default_storage_class)
                .then(|| crate::bootstrap::DEFAULT_STORAGE_CLASS.to_string()),
            gateway_api: self.gateway_api,
            rbac,
            crd_bundles: self.crd_bundles,
            audit_log_path: self.audit_log,
            faults,
            ..crate::Config::default()
        })
    }
}
