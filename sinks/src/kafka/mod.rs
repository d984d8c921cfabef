//! Kafka: topic administration and the output topics.

mod admin;
mod outputs;
mod transactional;

pub use admin::{METADATA_TIMEOUT, TopicOutcome, ensure_topics, fetch_partition_counts};
pub use outputs::{
    MAX_DLQ_PAYLOAD, OutputMessage, OutputProducer, alert_messages, epoch_messages, republish_messages,
    unpublished_messages,
};
pub use transactional::{TransactionalOutputs, transactional_id};

use crate::{SinkError, Wait};

/// The producer of the output topics, as `--outputs` chose.
pub enum Outputs {
    /// Sent after the commit, acknowledged, re-sent after a crash: a
    /// consumer may see a message twice (contract section 1).
    AtLeastOnce(OutputProducer),
    /// Each commit's messages in one Kafka transaction with the progress
    /// (contract 5.2).
    ExactlyOnce(TransactionalOutputs),
}

impl Outputs {
    /// Writes the messages of the commits up to `epoch`, whose next input
    /// offsets are `offsets`; returns once the broker has them.
    pub fn publish(
        &self,
        messages: &[OutputMessage],
        offsets: &[(String, i32, i64)],
        epoch: u64,
        wait: Wait<'_>,
    ) -> Result<(), SinkError> {
        match self {
            Outputs::AtLeastOnce(p) => p.publish(messages, wait),
            Outputs::ExactlyOnce(t) => t.publish(messages, offsets, epoch, wait),
        }
    }
}
