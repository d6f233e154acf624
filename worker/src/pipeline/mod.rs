//! The event pipeline: intake → release record (lease, progress, memory) → handler →
//! replies → ack.

pub mod dead_letter;
pub mod intake;
pub mod lease;
mod parking;
pub mod pool;
pub mod processor;
pub mod release_record;
pub mod scheduler;
