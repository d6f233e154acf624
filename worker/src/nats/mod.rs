//! NATS plumbing: what the worker binds at start-up and how it publishes.

pub mod publisher;
pub mod topology;
