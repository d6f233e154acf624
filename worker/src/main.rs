//! The `helm-service` binary.

worker::use_mimalloc!();

fn main() -> std::process::ExitCode {
    worker::main_with(worker::app::Handlers::Production)
}
