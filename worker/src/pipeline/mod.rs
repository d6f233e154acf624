//! The event pipeline: intake → ledger → lease → handler → replies → ack.

pub mod dead_letter;
pub mod intake;
pub mod lease;
pub mod ledger;
pub mod processor;
pub mod scheduler;
