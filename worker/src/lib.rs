//! helm-service: Keptn's helm-service as a NATS JetStream worker.
//!
//! The layout mirrors docs/architecture.md (its §2 maps every module): `nats` binds
//! JetStream and publishes, `pipeline` takes a message from intake to ack (leases on
//! release records, parking, scheduler, dead letters), `handler` holds the task handlers
//! and the step journal they record progress in, `deploy` is the pure deployment domain,
//! `charts`, `helm` and `cluster` reach chart stores, the helm CLI and the Kubernetes API,
//! `memory` sizes the helm processes to the pod's memory, and `app` wires it all together.

pub mod allocator;
pub mod app;
pub mod charts;
pub mod cluster;
pub mod config;
pub mod deploy;
pub mod handler;
pub mod helm;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod nats;
pub mod operator;
pub mod pem;
pub mod pipeline;
pub mod progress;
pub mod secret;
pub mod send;
pub mod shutdown;
pub mod telemetry;

use clap::Parser;

/// The whole program behind a binary: parse flags, set up logs, run until signalled.
/// `handlers` names the task handlers of the build.
pub fn main_with(handlers: impl Into<app::Handlers>) -> std::process::ExitCode {
    let handlers = handlers.into();
    let cli = config::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        config::Command::Run(run_config) => match telemetry::init(run_config.log_format) {
            // Kept to the end: dropping it sends the spans still queued.
            Ok(_telemetry) => runtime.block_on(async {
                let shutdown = shutdown::on_signal()?;
                app::run(*run_config, handlers, shutdown).await
            }),
            Err(err) => Err(anyhow::anyhow!("telemetry: {err}")),
        },
        config::Command::Send(send_config) => runtime.block_on(send::send(send_config)),
        config::Command::Charts(args) => runtime.block_on(charts::cli::run(args)),
        config::Command::Status(args) => runtime.block_on(operator::status::run(args)),
        config::Command::Releases(args) => runtime.block_on(operator::releases::run(args)),
        config::Command::DeadLetters(args) => runtime.block_on(operator::dead_letters::run(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "helm-service stopped with an error"
            );
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
