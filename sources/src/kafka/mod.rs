//! Kafka on the input side: writing simulated traffic to the input topics.

mod produce;

pub use produce::{ProduceError, ProduceOptions, ProduceSummary, Target, produce};
