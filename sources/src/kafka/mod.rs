//! Kafka on the input side: writing simulated traffic to the input topics,
//! and reading them for the processor.

mod intake;
mod produce;
mod verify;

pub use intake::{Intake, PartitionStart, ReadReport, share};
pub use produce::{ProduceError, ProduceOptions, ProduceSummary, Target, produce};
pub use verify::{Finding, LoggedMessage, check_logged};
