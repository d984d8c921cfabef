//! The start-up check that the input topics are still the ones the stored
//! offsets came from.
//!
//! Offsets live in PostgreSQL, next to the effects. If a topic is deleted
//! and created again (or a broker loses its data), the stored offset points
//! into a different log: resuming there would skip the new topic's first
//! messages, or apply others than the ones the offsets stand for. So before
//! reading, the processor fetches, for each resumed partition, the last
//! message it logged (`events_log`) and compares the bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// A message the processor logged, as the broker should still hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedMessage {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its value (`None` for a tombstone).
    pub value: Option<Vec<u8>>,
}

/// What the broker holds where a logged message should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The same bytes at the same offset.
    Same,
    /// Other bytes at that offset: the topic was recreated or rewritten.
    Different,
    /// The partition ends before the offset: recreated or truncated.
    PastEnd {
        /// The partition's high watermark.
        high: i64,
    },
    /// The offset is no longer held (retention or compaction removed it):
    /// nothing to compare.
    Gone,
    /// No answer within the time allowed.
    Unknown,
}

/// Fetches each of `logged` from the broker and says what it found, in the
/// same order. One consumer for all, `timeout` in total.
pub fn check_logged(
    base: &ClientConfig,
    logged: &[LoggedMessage],
    timeout: Duration,
) -> Result<Vec<Finding>, KafkaError> {
    let mut findings = vec![Finding::Unknown; logged.len()];
    if logged.is_empty() {
        return Ok(findings);
    }
    let config = super::with_defaults(
        base,
        &[
            ("group.id", "stockflow-offset-check"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "error"),
        ],
    );
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    let mut index: HashMap<(&str, i32), usize> = HashMap::new();
    for (i, m) in logged.iter().enumerate() {
        tpl.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.offset))?;
        index.insert((m.topic.as_str(), m.partition), i);
    }
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + timeout;
    let mut open = logged.len();
    while open > 0 && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(100)) else { continue };
        // Errors (an offset out of range among them) name no partition
        // reliably: the watermarks below settle what stays unanswered.
        let Ok(m) = result else { continue };
        let Some(&i) = index.get(&(m.topic(), m.partition())) else { continue };
        if findings[i] != Finding::Unknown {
            continue;
        }
        findings[i] = if m.offset() == logged[i].offset {
            // A null value and an empty one are told apart by Kafka but not
            // always by clients: compare bytes, either counting as none.
            let held = m.payload().unwrap_or_default();
            if held == logged[i].value.as_deref().unwrap_or_default() {
                Finding::Same
            } else {
                Finding::Different
            }
        } else {
            Finding::Gone
        };
        open -= 1;
    }
    for (i, m) in logged.iter().enumerate() {
        if findings[i] != Finding::Unknown {
            continue;
        }
        let Ok((low, high)) = consumer.fetch_watermarks(&m.topic, m.partition, Duration::from_secs(2)) else {
            continue;
        };
        if high <= m.offset {
            findings[i] = Finding::PastEnd { high };
        } else if low > m.offset {
            findings[i] = Finding::Gone;
        }
    }
    Ok(findings)
}
