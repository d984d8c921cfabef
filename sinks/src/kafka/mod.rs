//! Kafka: topic administration (and, with the processor, the output topics).

mod admin;

pub use admin::{METADATA_TIMEOUT, TopicOutcome, ensure_topics, fetch_partition_counts};
