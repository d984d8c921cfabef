//! stockflow's outputs: PostgreSQL (schema, reference data, epoch commits)
//! and the Kafka output topics (`inventory_updates`, `dlq`), plus topic
//! administration.
//!
//! Every error is classified once, in [`error`]: retriable (wait and try
//! again: the server is down, restarting, or the transaction lost a race) or
//! permanent (a bug or a broken schema: stop with a clear message).
#![forbid(missing_docs)]

pub mod error;
pub mod kafka;
pub mod postgres;

pub use error::{Failure, SinkError, Wait};
