//! Chart store settings, shared by `helm-service run` and `helm-service charts`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::archive::ArchiveLimits;
use super::local_dir::LocalDirCharts;
use super::object_store::ObjectStoreCharts;
use super::resource_service::{ResourceServiceAccess, ResourceServiceCharts};
use super::{ChartStore, ChartStoreError};
use crate::secret::{read_file, read_secret_file, SecretFileError};

/// Which backend keeps the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChartStoreKind {
    /// A JetStream Object Store bucket on the same NATS (no other service needed).
    Nats,
    /// Keptn's resource-service HTTP API (the configuration store of a Keptn control plane).
    ResourceService,
    /// Files below a local directory.
    LocalDir,
}

/// Where the worker reads users' Helm charts (`helm/<service>.tgz` of each service and stage).
///
/// The flags are global so that `helm-service charts push --chart-store local-dir …` works
/// with them after the subcommand too.
#[derive(Debug, Clone, Args)]
pub struct ChartStoreConfig {
    /// Where charts are kept: `nats` (a JetStream Object Store bucket, see --chart-bucket),
    /// `resource-service` (Keptn's resource-service, see --resource-service-url) or
    /// `local-dir` (files `<project>/<stage>/<service>/helm/<service>.tgz` below
    /// --charts-dir).
    #[arg(long, env = "CHART_STORE", value_enum, default_value_t = ChartStoreKind::Nats, global = true)]
    pub chart_store: ChartStoreKind,

    /// JetStream Object Store bucket holding the charts (with --chart-store nats); created
    /// when absent. Objects are named `<project>/<stage>/<service>/helm/<service>.tgz`.
    #[arg(
        long,
        env = "CHART_BUCKET",
        default_value = "helm-service-charts",
        global = true
    )]
    pub chart_bucket: String,

    /// Base URL of Keptn's resource-service (with --chart-store resource-service). Shown
    /// without user info; a token is better given with --resource-service-token-file.
    #[arg(
        long,
        env = "RESOURCE_SERVICE_URL",
        default_value = "http://resource-service:8080",
        hide_env_values = true,
        global = true
    )]
    pub resource_service_url: String,

    /// A file holding the token sent to the resource-service as `x-token` (Keptn's API
    /// gateway checks it).
    #[arg(
        long,
        env = "RESOURCE_SERVICE_TOKEN_FILE",
        value_name = "FILE",
        hide_env_values = true,
        global = true
    )]
    pub resource_service_token_file: Option<PathBuf>,

    /// PEM file of the CA(s) of an https resource-service (a private CA): then the only ones
    /// trusted.
    #[arg(
        long,
        env = "RESOURCE_SERVICE_CA",
        value_name = "FILE",
        hide_env_values = true,
        global = true
    )]
    pub resource_service_ca: Option<PathBuf>,

    /// Directory holding `<project>/<stage>/<service>/helm/<service>.tgz` (required with
    /// --chart-store local-dir). Symbolic links inside it are never followed.
    #[arg(long, env = "CHARTS_DIR", global = true)]
    pub charts_dir: Option<PathBuf>,

    /// Read each chart at the configuration-store commit named by the event's
    /// `gitcommitid`, so a redelivered or delayed event deploys exactly what was meant
    /// (resource-service only; the other stores keep one version).
    #[arg(long, env = "USE_COMMITID", global = true)]
    pub use_commit_id: bool,

    /// Largest chart archive (compressed .tgz) accepted, in bytes; larger ones are refused
    /// before they are read.
    #[arg(long, env = "MAX_CHART_BYTES", default_value_t = ArchiveLimits::default().max_compressed, global = true)]
    pub max_chart_bytes: u64,

    /// Largest unpacked size of a chart, in bytes, counted while unpacking; protects against
    /// archives that inflate enormously (gzip bombs).
    #[arg(
        long,
        env = "MAX_CHART_UNPACKED_BYTES",
        default_value_t = ArchiveLimits::default().max_uncompressed,
        global = true
    )]
    pub max_chart_unpacked_bytes: u64,
}

impl ChartStoreConfig {
    /// The caps applied to every chart read.
    pub fn limits(&self) -> ArchiveLimits {
        ArchiveLimits {
            max_compressed: self.max_chart_bytes,
            max_uncompressed: self.max_chart_unpacked_bytes,
            ..ArchiveLimits::default()
        }
    }

    /// Opens the configured store; for `nats`, the bucket is created when absent.
    pub async fn open(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<Arc<dyn ChartStore>, ChartStoreError> {
        match self.chart_store {
            ChartStoreKind::Nats => Ok(Arc::new(
                ObjectStoreCharts::open(js, &self.chart_bucket, self.max_chart_bytes).await?,
            )),
            _ => self.open_without_nats(),
        }
    }

    /// The token and CA files of the resource-service, read now (a start-up error when they
    /// cannot be).
    fn resource_service_access(&self) -> Result<ResourceServiceAccess, ChartStoreError> {
        let config = |err: SecretFileError| ChartStoreError::Config {
            reason: err.to_string(),
        };
        let token = self
            .resource_service_token_file
            .as_deref()
            .map(|path| read_secret_file("--resource-service-token-file", path))
            .transpose()
            .map_err(config)?;
        let ca_pem = self
            .resource_service_ca
            .as_deref()
            .map(|path| read_file("--resource-service-ca", path).map(String::into_bytes))
            .transpose()
            .map_err(config)?;
        Ok(ResourceServiceAccess { token, ca_pem })
    }

    /// Opens a store that needs no NATS connection (`resource-service`, `local-dir`); for
    /// `nats` it says to use [`open`](Self::open). Lets `helm-service charts` work without NATS.
    pub fn open_without_nats(&self) -> Result<Arc<dyn ChartStore>, ChartStoreError> {
        match self.chart_store {
            ChartStoreKind::Nats => Err(ChartStoreError::Config {
                reason: "the nats chart store needs a NATS connection".into(),
            }),
            ChartStoreKind::ResourceService => Ok(Arc::new(ResourceServiceCharts::with_access(
                &self.resource_service_url,
                self.max_chart_bytes,
                &self.resource_service_access()?,
            )?)),
            ChartStoreKind::LocalDir => {
                let Some(dir) = &self.charts_dir else {
                    return Err(ChartStoreError::Config {
                        reason: "--chart-store local-dir needs --charts-dir (CHARTS_DIR)".into(),
                    });
                };
                Ok(Arc::new(LocalDirCharts::new(dir, self.max_chart_bytes)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        store: ChartStoreConfig,
    }

    #[test]
    fn defaults() {
        let probe = Probe::try_parse_from(["probe"]).unwrap();
        let store = probe.store;
        // The environment may set these in a developer shell; only check when it does not.
        if std::env::var_os("CHART_STORE").is_none() {
            assert_eq!(store.chart_store, ChartStoreKind::Nats);
        }
        if std::env::var_os("CHART_BUCKET").is_none() {
            assert_eq!(store.chart_bucket, "helm-service-charts");
        }
        if std::env::var_os("USE_COMMITID").is_none() {
            assert!(!store.use_commit_id);
        }
        if std::env::var_os("MAX_CHART_BYTES").is_none()
            && std::env::var_os("MAX_CHART_UNPACKED_BYTES").is_none()
        {
            assert_eq!(store.limits(), ArchiveLimits::default());
        }
    }

    #[test]
    fn flags() {
        let probe = Probe::try_parse_from([
            "probe",
            "--chart-store",
            "local-dir",
            "--charts-dir",
            "/charts",
            "--use-commit-id",
            "--max-chart-bytes",
            "1000",
            "--max-chart-unpacked-bytes",
            "2000",
        ])
        .unwrap();
        let store = probe.store;
        assert_eq!(store.chart_store, ChartStoreKind::LocalDir);
        assert_eq!(store.charts_dir, Some(PathBuf::from("/charts")));
        assert!(store.use_commit_id);
        assert_eq!(store.limits().max_compressed, 1000);
        assert_eq!(store.limits().max_uncompressed, 2000);
        assert!(Probe::try_parse_from(["probe", "--chart-store", "s3"]).is_err());
        let rs = Probe::try_parse_from(["probe", "--chart-store", "resource-service"]).unwrap();
        assert_eq!(rs.store.chart_store, ChartStoreKind::ResourceService);
    }

    #[test]
    fn local_dir_needs_a_directory() {
        let probe = Probe::try_parse_from(["probe", "--chart-store", "local-dir"]).unwrap();
        let mut store = probe.store;
        store.charts_dir = None;
        let err = store.open_without_nats().err().unwrap();
        assert!(err.to_string().contains("--charts-dir"), "{err}");
    }
}
