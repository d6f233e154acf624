//! NATS plumbing: how the worker reaches NATS (seed list, credentials, TLS), what it binds at
//! start-up and how it publishes.

pub mod connect;
mod credentials;
pub mod publisher;
pub mod seeds;
pub mod topology;
