//! The `helm-service` binary.

fn main() -> std::process::ExitCode {
    // Task handlers are registered here as they are built; until then every handled
    // event type is answered errored "not implemented".
    worker::main_with(worker::handler::Registry::new())
}
