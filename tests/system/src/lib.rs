//! Shared pieces of the system tests: the probe handler, worker processes, and
//! helpers to publish Keptn events and read the replies back from the stream.

pub mod chart;
pub mod compose;
pub mod deploy_env;
pub mod env;
pub mod events;
pub mod probe;
pub mod process_tree;
pub mod worker_process;
