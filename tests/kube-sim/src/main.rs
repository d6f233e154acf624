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
    /// Milliseconds a Deployment's pods take to become ready.
    #[arg(long, default_value_t = 200)]
    rollout_delay_ms: u64,
    /// Pods whose image contains this never become ready (repeatable).
    #[arg(long)]
    never_ready_image: Vec<String>,
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
    let sim = kube_sim::KubeSim::start(kube_sim::Config {
        listen: args.listen,
        kubeconfig_path: Some(args.kubeconfig_out),
        rollout_delay: std::time::Duration::from_millis(args.rollout_delay_ms),
        never_ready_images: args.never_ready_image,
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
