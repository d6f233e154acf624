//! Shared helpers for the system tests and benchmarks.
//!
//! Everything here runs *real* processes on loopback: a `nats-server` with JetStream
//! ([`nats::NatsServer`]), the worker and other binaries ([`process::ChildProcess`]), and a
//! proxy a test can partition to cut one process off from a server ([`proxy::TcpProxy`]). The
//! external tools come from `<repo>/.tools/bin`, installed by `ops/setup.sh` ([`tools`]).
//!
//! Synchronisation is always by observing state (a port accepts, JetStream answers, a message
//! is in a stream) inside a bounded deadline ([`wait`]), never by sleeping a guessed time.

pub mod cluster;
pub mod keptn_spec;
pub mod nats;
pub mod operator;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod proxy;
pub mod spec_schemas;
pub mod stream;
pub mod tools;
pub mod wait;

pub use cluster::NatsCluster;
pub use nats::{ClientOptions, NatsServer, ServerConfig};
pub use process::{free_port, ChildProcess, ProcessBuilder, ProcessInfo};
pub use proxy::TcpProxy;
pub use stream::{body_json, collect_stream_json, stream_json, stream_messages, StoredMessage};
pub use tools::{path_with_tools, repo_root, tool_path, tools_bin_dir};
pub use wait::{wait_until, wait_until_ok};
