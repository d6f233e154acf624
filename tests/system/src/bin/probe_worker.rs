//! The real worker (same flags, same pipeline) with the probe handler registered for
//! deployment, release and action tasks. Rollback and service deletion are left
//! without a handler on purpose, to exercise the "not implemented" answer.

use system_tests::probe::Probe;
use worker::pipeline::intake::TaskKind;

fn main() -> std::process::ExitCode {
    let probe = Probe::from_env();
    let registry = worker::handler::Registry::new()
        .with(TaskKind::Deployment, probe.clone())
        .with(TaskKind::Release, probe.clone())
        .with(TaskKind::Action, probe);
    worker::main_with(registry)
}
