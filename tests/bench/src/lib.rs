//! What the bench binaries share.

pub mod finished;
pub mod stats;
