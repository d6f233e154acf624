//! The `helm-service` binary.

fn main() -> std::process::ExitCode {
    worker::main_with(worker::app::Handlers::Production)
}
