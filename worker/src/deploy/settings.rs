//! Operator settings of the deployment tasks: where Helm and the cluster are, how long
//! Helm calls and rollouts may take (per stage: dev fast, production slow), and how the
//! reported URIs and the generated routing are shaped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::uris::Ingress;
use crate::config::parse_duration;

#[derive(Debug, Clone, Args)]
pub struct DeployConfig {
    /// The helm binary (Helm 4, or Helm 3.14 and newer).
    #[arg(long, env = "HELM_BIN", default_value = "helm")]
    pub helm_bin: PathBuf,

    /// Kubeconfig file for helm and the worker's own API calls; in-cluster credentials
    /// (or ~/.kube/config) when unset.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "KUBE_CONTEXT")]
    pub kube_context: Option<String>,

    /// Longest one helm call (upgrade, rollback, uninstall, ...) may take before it is
    /// killed; waiting for pods is not part of it (see --rollout-timeout).
    #[arg(long, env = "HELM_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub helm_timeout: Duration,

    /// Longest a deployment's pods may take to become ready before the deployment is
    /// failed and the release rolled back to its last good revision.
    #[arg(long, env = "ROLLOUT_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub rollout_timeout: Duration,

    /// Per-stage --helm-timeout, as STAGE=DURATION (repeat the flag, or comma-separate
    /// in the environment), e.g. `production=15m`.
    #[arg(long, env = "STAGE_HELM_TIMEOUTS", value_delimiter = ',', value_parser = parse_stage_duration)]
    pub stage_helm_timeout: Vec<(String, Duration)>,

    /// Per-stage --rollout-timeout, as STAGE=DURATION, e.g. `dev=1m,production=30m`.
    #[arg(long, env = "STAGE_ROLLOUT_TIMEOUTS", value_delimiter = ',', value_parser = parse_stage_duration)]
    pub stage_rollout_timeout: Vec<(String, Duration)>,

    /// Template of the public URI reported for a deployment. Variables:
    /// ${INGRESS_PROTOCOL}, ${SERVICE}, ${PROJECT}, ${STAGE}, ${INGRESS_HOSTNAME_SUFFIX},
    /// ${INGRESS_PORT}.
    #[arg(long, env = "HOSTNAME_TEMPLATE", default_value = Ingress::DEFAULT_TEMPLATE)]
    pub hostname_template: String,

    /// Protocol of public URIs.
    #[arg(long, env = "INGRESS_PROTOCOL", default_value = "http")]
    pub ingress_protocol: String,

    /// Domain suffix of public host names.
    #[arg(
        long,
        env = "INGRESS_HOSTNAME_SUFFIX",
        default_value = "svc.cluster.local"
    )]
    pub ingress_hostname_suffix: String,

    /// Port of public URIs.
    #[arg(long, env = "INGRESS_PORT", default_value_t = 80)]
    pub ingress_port: u16,

    /// Istio gateway the generated VirtualServices bind to (besides `mesh`).
    #[arg(
        long,
        env = "ISTIO_GATEWAY",
        default_value = "public-gateway.istio-system"
    )]
    pub istio_gateway: String,

    /// Most replicas the scaling remediation action may set; without it, ten times the
    /// current count caps a runaway value.
    #[arg(long, env = "SCALING_MAX_REPLICAS")]
    pub scaling_max_replicas: Option<u32>,
}

fn parse_stage_duration(text: &str) -> Result<(String, Duration), String> {
    let (stage, duration) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected STAGE=DURATION, e.g. production=15m"))?;
    let stage = stage.trim();
    contracts::names::validate_keptn_name(contracts::names::NameKind::Stage, stage)
        .map_err(|err| format!("{text:?}: stage {stage:?}: {err}"))?;
    Ok((stage.to_owned(), parse_duration(duration)?))
}

/// Deadlines of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub helm: Duration,
    pub rollout: Duration,
}

/// The resolved settings the handlers read.
#[derive(Debug, Clone)]
pub struct DeploySettings {
    pub ingress: Ingress,
    helm_timeout: Duration,
    rollout_timeout: Duration,
    stage_helm: BTreeMap<String, Duration>,
    stage_rollout: BTreeMap<String, Duration>,
    /// Cap of the scaling action (`None`: ten times the current count).
    pub scaling_max_replicas: Option<u32>,
}

impl DeploySettings {
    pub fn from_config(config: &DeployConfig) -> Self {
        DeploySettings {
            ingress: Ingress {
                hostname_template: config.hostname_template.clone(),
                protocol: config.ingress_protocol.clone(),
                hostname_suffix: config.ingress_hostname_suffix.clone(),
                port: config.ingress_port,
                gateway: config.istio_gateway.clone(),
            },
            helm_timeout: config.helm_timeout,
            rollout_timeout: config.rollout_timeout,
            stage_helm: config.stage_helm_timeout.iter().cloned().collect(),
            stage_rollout: config.stage_rollout_timeout.iter().cloned().collect(),
            scaling_max_replicas: config.scaling_max_replicas,
        }
    }

    /// The deadlines for `stage`: its override, else the default.
    pub fn deadlines(&self, stage: &str) -> Deadlines {
        Deadlines {
            helm: self
                .stage_helm
                .get(stage)
                .copied()
                .unwrap_or(self.helm_timeout),
            rollout: self
                .stage_rollout
                .get(stage)
                .copied()
                .unwrap_or(self.rollout_timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        deploy: DeployConfig,
    }

    #[test]
    fn stage_overrides_win_over_defaults() {
        let cli = Cli::try_parse_from([
            "x",
            "--rollout-timeout",
            "2m",
            "--stage-rollout-timeout",
            "dev=30s,production=30m",
            "--stage-helm-timeout",
            "production=10m",
        ])
        .unwrap();
        let settings = DeploySettings::from_config(&cli.deploy);
        assert_eq!(
            settings.deadlines("dev"),
            Deadlines {
                helm: Duration::from_secs(300),
                rollout: Duration::from_secs(30)
            }
        );
        assert_eq!(
            settings.deadlines("production"),
            Deadlines {
                helm: Duration::from_secs(600),
                rollout: Duration::from_secs(1800)
            }
        );
        assert_eq!(
            settings.deadlines("staging").rollout,
            Duration::from_secs(120)
        );
    }

    #[test]
    fn bad_stage_overrides_are_refused() {
        assert!(Cli::try_parse_from(["x", "--stage-rollout-timeout", "dev"]).is_err());
        assert!(Cli::try_parse_from(["x", "--stage-rollout-timeout", "Dev=1m"]).is_err());
        assert!(Cli::try_parse_from(["x", "--stage-rollout-timeout", "dev=soon"]).is_err());
    }
}
