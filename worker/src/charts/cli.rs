//! `helm-service charts`: put charts into the chart store and see what is there.
//!
//! With the embedded default store (a JetStream bucket) there is no Keptn configuration service
//! to upload charts to; this is how operators and CI fill the store. A pushed chart goes through
//! the same untrusted-archive checks as a fetched one, so a chart the worker would refuse is
//! refused here, at upload time, with the same message.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::archive::{ArchiveLimits, Chart};
use super::config::{ChartStoreConfig, ChartStoreKind};
use super::{ChartLocation, ChartStore, ProjectName, SizeCap};
use crate::nats::connect::NatsArgs;

/// Settings of `helm-service charts`.
#[derive(Debug, Args)]
pub struct ChartsArgs {
    /// How to reach NATS (used with --chart-store nats).
    #[command(flatten)]
    pub nats: NatsArgs,

    #[command(flatten)]
    pub store: ChartStoreConfig,

    #[command(subcommand)]
    pub command: ChartsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChartsCommand {
    /// Store a chart as `helm/<service>.tgz` of a service in a stage. The chart is checked
    /// like any chart the worker reads and stored as a canonical archive; prints the location,
    /// digest and size.
    Push {
        /// Keptn project.
        #[arg(long)]
        project: String,
        /// Stage of the project.
        #[arg(long)]
        stage: String,
        /// Service the chart deploys.
        #[arg(long)]
        service: String,
        /// A chart directory (containing Chart.yaml) or a packaged chart (.tgz).
        path: PathBuf,
    },
    /// List the charts in the store: location, size, digest, last change.
    List {
        /// Only the charts of this project.
        #[arg(long)]
        project: Option<String>,
    },
}

/// Runs `helm-service charts …`.
pub async fn run(args: ChartsArgs) -> anyhow::Result<()> {
    match args.command {
        ChartsCommand::Push {
            ref project,
            ref stage,
            ref service,
            ref path,
        } => {
            // Names and chart are checked before connecting anywhere.
            let location = ChartLocation::new(project, stage, service)?;
            let limits = args.store.limits();
            let chart = read_chart(path, &limits)?;
            let archive = chart.to_archive();
            // The store's own cap, applied before connecting.
            SizeCap::new(limits.max_compressed).check(&location, archive.len() as u64)?;
            let store = open(&args).await?;
            store
                .store(&location, &archive)
                .await
                .with_context(|| format!("storing the chart in the {}", store.describe()))?;
            println!("pushed {location}");
            println!("  store:   {}", store.describe());
            println!("  chart:   {} {}", chart.name(), chart.version());
            println!("  digest:  {}", chart.digest());
            println!("  size:    {} bytes", archive.len());
            Ok(())
        }
        ChartsCommand::List { ref project } => {
            let project = project.as_deref().map(ProjectName::new).transpose()?;
            let store = open(&args).await?;
            let listings = store
                .list(project.as_ref())
                .await
                .with_context(|| format!("listing the charts in the {}", store.describe()))?;
            let rows: Vec<[String; 4]> = listings
                .iter()
                .map(|listing| {
                    [
                        listing.location.to_string(),
                        listing.size.to_string(),
                        listing.digest.clone().unwrap_or_else(|| "-".into()),
                        listing
                            .modified
                            .map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(["LOCATION", "SIZE", "DIGEST", "MODIFIED"], &rows)
            );
            if rows.is_empty() {
                eprintln!("no charts in the {}", store.describe());
            }
            Ok(())
        }
    }
}

async fn open(args: &ChartsArgs) -> anyhow::Result<Arc<dyn ChartStore>> {
    if args.store.chart_store != ChartStoreKind::Nats {
        return Ok(args.store.open_without_nats()?);
    }
    let client = args.nats.resolve()?.connect("helm-service charts").await?;
    let js = async_nats::jetstream::new(client);
    Ok(args.store.open(&js).await?)
}

/// Reads a chart directory or a packaged chart with the worker's checks.
pub fn read_chart(path: &Path, limits: &ArchiveLimits) -> anyhow::Result<Chart> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        return Chart::from_dir(path, limits)
            .with_context(|| format!("{} is not an acceptable chart", path.display()));
    }
    if meta.len() > limits.max_compressed {
        anyhow::bail!(
            "{} is {} bytes, more than the limit of {} bytes (--max-chart-bytes)",
            path.display(),
            meta.len(),
            limits.max_compressed
        );
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(limits.max_compressed + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read {}", path.display()))?;
    Chart::from_archive(&bytes, limits)
        .with_context(|| format!("{} is not an acceptable chart", path.display()))
}

/// Left-aligned columns separated by two spaces.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        charts: ChartsArgs,
    }

    #[test]
    fn push_parses() {
        let probe = Probe::try_parse_from([
            "charts",
            "--chart-store",
            "local-dir",
            "push",
            "--charts-dir",
            "/tmp/charts",
            "--project",
            "sockshop",
            "--stage",
            "dev",
            "--service",
            "carts",
            "./carts",
        ])
        .unwrap();
        match probe.charts.command {
            ChartsCommand::Push { service, path, .. } => {
                assert_eq!(service, "carts");
                assert_eq!(path, PathBuf::from("./carts"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(probe.charts.store.chart_store, ChartStoreKind::LocalDir);
        assert_eq!(
            probe.charts.store.charts_dir,
            Some(PathBuf::from("/tmp/charts"))
        );
    }

    #[test]
    fn table_aligns_columns() {
        let rows = [["a/long/location".to_string(), "10".to_string()]];
        assert_eq!(
            table(["LOCATION", "SIZE"], &rows),
            "LOCATION         SIZE\na/long/location  10\n"
        );
    }

    #[tokio::test]
    async fn push_and_list_on_a_local_dir() {
        let charts = tempfile::tempdir().unwrap();
        let source = tempfile::tempdir().unwrap();
        std::fs::write(
            source.path().join("Chart.yaml"),
            "apiVersion: v2\nname: carts\nversion: 0.1.0\n",
        )
        .unwrap();
        let args = |command| ChartsArgs {
            nats: NatsArgs::with_url("nats://127.0.0.1:1"),
            store: ChartStoreConfig {
                chart_store: ChartStoreKind::LocalDir,
                chart_bucket: "unused".into(),
                resource_service_url: "http://unused".into(),
                resource_service_token_file: None,
                resource_service_ca: None,
                charts_dir: Some(charts.path().to_path_buf()),
                use_commit_id: false,
                max_chart_bytes: 1 << 20,
                max_chart_unpacked_bytes: 1 << 20,
            },
            command,
        };
        run(args(ChartsCommand::Push {
            project: "sockshop".into(),
            stage: "dev".into(),
            service: "carts".into(),
            path: source.path().to_path_buf(),
        }))
        .await
        .unwrap();
        assert!(charts
            .path()
            .join("sockshop/dev/carts/helm/carts.tgz")
            .is_file());
        run(args(ChartsCommand::List { project: None }))
            .await
            .unwrap();
        let err = run(args(ChartsCommand::Push {
            project: "sockshop".into(),
            stage: "Dev".into(),
            service: "carts".into(),
            path: source.path().to_path_buf(),
        }))
        .await
        .unwrap_err();
        assert!(err.to_string().contains("stage name \"Dev\""), "{err:#}");

        // Over the store's cap: refused before any store is opened.
        let mut small = args(ChartsCommand::Push {
            project: "sockshop".into(),
            stage: "dev".into(),
            service: "carts".into(),
            path: source.path().to_path_buf(),
        });
        small.store.max_chart_bytes = 20;
        small.store.charts_dir = None;
        let err = run(small).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("sockshop/dev/carts/helm/carts.tgz is ")
                && err
                    .to_string()
                    .contains("more than the limit of 20 bytes (--max-chart-bytes)"),
            "{err:#}"
        );
    }
}
