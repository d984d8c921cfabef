//! Kafka: topic administration and the output topics.

mod admin;
mod outputs;

pub use admin::{METADATA_TIMEOUT, TopicOutcome, ensure_topics, fetch_partition_counts};
pub use outputs::{MAX_DLQ_PAYLOAD, OutputMessage, OutputProducer, epoch_messages, republish_messages};
