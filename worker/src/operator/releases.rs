//! `helm-service releases show`: one service in one stage, as helm-service knows it: its
//! release record, its inventory entry (what the last deployment left) and the revisions Helm
//! keeps of its releases (read from Helm's storage Secrets, no helm process).

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use contracts::validate::Target;
use serde::Serialize;

use super::release_view::RecordView;
use super::status::read_record;
use super::{print_json, OperatorArgs, Output};
use crate::cluster::ClusterArgs;
use crate::deploy::inventory::{Inventory, InventoryEntry};
use crate::deploy::naming::ReleaseNames;
use crate::nats::topology::existing_bucket;

/// Settings of `helm-service releases`.
#[derive(Debug, Args)]
pub struct ReleasesArgs {
    #[command(flatten)]
    pub common: OperatorArgs,

    #[command(subcommand)]
    pub command: ReleasesCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReleasesCommand {
    /// One service in one stage: release record, inventory entry, Helm revisions.
    Show {
        /// Keptn project.
        #[arg(long)]
        project: String,
        /// Stage of the project.
        #[arg(long)]
        stage: String,
        /// The service.
        #[arg(long)]
        service: String,
        /// Where the cluster is (for the Helm revisions).
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// The revisions Helm keeps of one release.
#[derive(Debug, Serialize)]
pub struct HelmRelease {
    pub release: String,
    pub revisions: Vec<HelmRevision>,
}

#[derive(Debug, Serialize)]
pub struct HelmRevision {
    pub revision: u32,
    /// Helm's status: `deployed`, `superseded`, `failed`, `pending-upgrade`, ...
    pub status: String,
}

/// What `releases show` prints (`-o json`).
#[derive(Debug, Serialize)]
pub struct ReleaseReport {
    pub project: String,
    pub stage: String,
    pub service: String,
    pub namespace: String,
    /// The key of its release record.
    pub release_key: String,
    /// Its release record (absent: never worked on, or expired).
    pub record: Option<RecordView>,
    pub record_updated_at: Option<DateTime<Utc>>,
    pub record_unreadable: Option<String>,
    /// What its last successful deployment left (`deploy::inventory::InventoryEntry`).
    pub inventory: Option<InventoryEntry>,
    /// The user release and the generated one; a release Helm has no record of has no
    /// revisions.
    pub helm: Vec<HelmRelease>,
    /// Why the Helm revisions could not be read.
    pub helm_error: Option<String>,
}

pub async fn run(args: ReleasesArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let ReleasesCommand::Show {
        project,
        stage,
        service,
        cluster,
    } = args.command;
    // Checked before connecting anywhere.
    let names = ReleaseNames::new(&project, &stage, &service)?;
    let target = Target {
        project,
        stage,
        service,
    };
    let js = common.jetstream("releases").await?;
    let key = names.lease_key();
    let bucket = common.names().release_records_bucket();
    let record = match existing_bucket(&js, &bucket).await? {
        Some(store) => read_record(&store, &key)
            .await
            .map_err(|err| anyhow::anyhow!(err))
            .with_context(|| format!("reading {key} in the bucket {bucket}"))?,
        None => None,
    };
    let (record, record_updated_at, record_unreadable) = match record {
        Some((_, written, Ok(record))) => (Some(RecordView::of(&record)), Some(written), None),
        Some((_, written, Err(err))) => (None, Some(written), Some(err)),
        None => (None, None, None),
    };
    let inventory = match Inventory::existing(&js, &common.names().inventory_bucket()).await? {
        Some(inventory) => inventory.get(&target).await?,
        None => None,
    };
    // A service deployed in a namespace of its own (`keptn.namespace`) has its releases there.
    let names = match inventory.as_ref().and_then(|e| e.own_namespace(&names)) {
        Some(namespace) => names.in_namespace(namespace),
        None => names,
    };
    let (helm, helm_error) = match helm_releases(&cluster, &names).await {
        Ok(helm) => (helm, None),
        Err(err) => (Vec::new(), Some(format!("{err:#}"))),
    };
    let report = ReleaseReport {
        namespace: names.namespace.clone(),
        project: target.project,
        stage: target.stage,
        service: target.service,
        release_key: key,
        record,
        record_updated_at,
        record_unreadable,
        inventory,
        helm,
        helm_error,
    };
    match common.output {
        Output::Json => print_json(&report),
        Output::Table => {
            print!("{}", report_text(&report));
            Ok(())
        }
    }
}

async fn helm_releases(
    cluster: &ClusterArgs,
    names: &ReleaseNames,
) -> anyhow::Result<Vec<HelmRelease>> {
    let cluster = cluster.connect().await?;
    let mut releases = Vec::new();
    for release in [&names.user, &names.generated] {
        let revisions = cluster
            .release_revisions(&names.namespace, release)
            .await?
            .into_iter()
            .map(|r| HelmRevision {
                revision: r.revision,
                status: r.status,
            })
            .collect();
        releases.push(HelmRelease {
            release: release.clone(),
            revisions,
        });
    }
    Ok(releases)
}

fn report_text(report: &ReleaseReport) -> String {
    let mut text = format!(
        "service {} in stage {} of project {} (namespace {}, release key {})\n\nrecord:\n",
        report.service, report.stage, report.project, report.namespace, report.release_key
    );
    match (&report.record, &report.record_unreadable) {
        (_, Some(err)) => text.push_str(&format!("  unreadable: {err}\n")),
        (None, None) => text.push_str("  none (never worked on, or expired)\n"),
        (Some(record), None) => {
            match &record.holder {
                Some(holder) => text.push_str(&format!(
                    "  holder:     {} for event {} since {}{}\n",
                    holder.replica,
                    holder.event_id,
                    holder.since.to_rfc3339(),
                    if holder.parked { " (parked)" } else { "" }
                )),
                None if record.reserved_for_waiter => {
                    text.push_str("  holder:     none, reserved for a waiter\n")
                }
                None => text.push_str("  holder:     none\n"),
            }
            for (what, progress) in record
                .in_progress
                .iter()
                .map(|p| ("in progress", p))
                .chain(record.interrupted.iter().map(|p| ("interrupted", p)))
            {
                text.push_str(&format!(
                    "  {what}: {} {} (attempt {}, steps done: {})\n",
                    progress.event_type,
                    progress.event_id,
                    progress.attempts,
                    if progress.steps_done.is_empty() {
                        "none".to_owned()
                    } else {
                        progress.steps_done.join(", ")
                    }
                ));
            }
            text.push_str(&format!(
                "  completed events remembered: {}\n",
                record.completed_remembered
            ));
        }
    }
    text.push_str("\ninventory:\n");
    match &report.inventory {
        None => text.push_str("  none (not deployed by helm-service, or deleted)\n"),
        Some(entry) => text.push_str(&format!(
            "  strategy {}, release {} revision {}{}, chart {}\n  by event {} at {}\n",
            entry.strategy,
            entry.user_release,
            entry.user_revision,
            match (&entry.generated_release, entry.generated_revision) {
                (Some(release), Some(revision)) => format!(", {release} revision {revision}"),
                _ => String::new(),
            },
            entry.chart_digest,
            entry.event_id,
            entry.updated_at.to_rfc3339()
        )),
    }
    text.push_str("\nhelm:\n");
    if let Some(err) = &report.helm_error {
        text.push_str(&format!("  cannot read Helm's storage: {err}\n"));
    }
    for release in &report.helm {
        let revisions: Vec<String> = release
            .revisions
            .iter()
            .map(|r| format!("{} {}", r.revision, r.status))
            .collect();
        text.push_str(&format!(
            "  {}: {}\n",
            release.release,
            if revisions.is_empty() {
                "no revisions".to_owned()
            } else {
                revisions.join(", ")
            }
        ));
    }
    text
}
