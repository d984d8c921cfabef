//! Reading the input topics: one consumer per worker, explicit partition
//! assignment (no consumer-group rebalancing), resuming from offsets the
//! caller stored elsewhere (PostgreSQL), read in bounded slices.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dataflow::EventKind;
use dataflow::records::RawMessage;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

/// One input partition and where to start reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStart {
    /// What the topic carries.
    pub kind: EventKind,
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Next offset to read; `None` = from the earliest offset.
    pub next_offset: Option<i64>,
}

/// The share of `all` partitions that worker `index` of `peers` reads:
/// every `peers`-th partition of the sorted list, so every worker of every
/// process gets some when there are enough.
pub fn share(mut all: Vec<PartitionStart>, index: usize, peers: usize) -> Vec<PartitionStart> {
    all.sort_by_key(|p| (p.kind, p.partition));
    all.into_iter().enumerate().filter(|(i, _)| i % peers.max(1) == index).map(|(_, p)| p).collect()
}

/// What one [`Intake::read`] call saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadReport {
    /// Messages appended.
    pub messages: usize,
    /// Consumer errors seen (the client retries by itself).
    pub errors: usize,
}

/// Client context that keeps end-of-partition notices out of the error log
/// (librdkafka reports them as "global errors"; they are routine here).
/// Also keeps the watermarks librdkafka reports in its statistics (once a
/// second), so that lag and end-of-input checks need no broker round trip.
#[derive(Default)]
pub struct IntakeContext {
    watermarks: std::sync::Mutex<HashMap<(String, i32), (i64, i64)>>,
}

impl ClientContext for IntakeContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Ok(mut w) = self.watermarks.lock() {
            for (topic, t) in statistics.topics {
                for (partition, p) in t.partitions {
                    if partition >= 0 && p.hi_offset >= 0 {
                        w.insert((topic.clone(), partition), (p.lo_offset.max(0), p.hi_offset));
                    }
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            tracing::warn!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for IntakeContext {}

/// A worker's consumer.
pub struct Intake {
    consumer: BaseConsumer<IntakeContext>,
    kinds: HashMap<String, EventKind>,
    at_eof: HashMap<(String, i32), bool>,
    /// Next offset to read per partition, as far as this consumer knows
    /// (`None`: from the earliest, nothing read yet).
    next: HashMap<(String, i32), Option<i64>>,
    last_message: Instant,
    last_error_log: Option<Instant>,
}

impl Intake {
    /// A consumer assigned to `partitions`.
    pub fn new(base: &ClientConfig, partitions: &[PartitionStart]) -> Result<Self, KafkaError> {
        let config = super::with_defaults(
            base,
            &[
                ("group.id", "stockflow-processor"),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "true"),
                ("auto.offset.reset", "earliest"),
                ("statistics.interval.ms", "1000"),
                // The worker reads in bounded slices; a smaller pre-fetch queue
                // keeps memory flat (librdkafka's default is 64 MB).
                ("queued.max.messages.kbytes", "16384"),
            ],
        );
        let consumer: BaseConsumer<IntakeContext> = config.create_with_context(IntakeContext::default())?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let offset = p.next_offset.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&p.topic, p.partition, offset)?;
        }
        if !partitions.is_empty() {
            consumer.assign(&tpl)?;
        }
        Ok(Intake {
            consumer,
            kinds: partitions.iter().map(|p| (p.topic.clone(), p.kind)).collect(),
            at_eof: partitions.iter().map(|p| ((p.topic.clone(), p.partition), false)).collect(),
            next: partitions.iter().map(|p| ((p.topic.clone(), p.partition), p.next_offset)).collect(),
            last_message: Instant::now(),
            last_error_log: None,
        })
    }

    /// Appends up to `budget` messages to `out` without blocking longer than `wait`.
    pub fn read(&mut self, budget: usize, wait: Duration, out: &mut Vec<RawMessage>) -> ReadReport {
        let mut report = ReadReport::default();
        if self.at_eof.is_empty() {
            std::thread::sleep(wait);
            return report;
        }
        let mut timeout = wait;
        while report.messages < budget {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    timeout = Duration::ZERO;
                    let Some(kind) = self.kinds.get(m.topic()).copied() else { continue };
                    let tp = (m.topic().to_string(), m.partition());
                    if let Some(eof) = self.at_eof.get_mut(&tp) {
                        *eof = false;
                    }
                    self.next.insert(tp, Some(m.offset() + 1));
                    self.last_message = Instant::now();
                    out.push(RawMessage {
                        kind,
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().filter(|k| !k.is_empty()).map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                    });
                    report.messages += 1;
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    timeout = Duration::ZERO;
                    // The error carries only the partition: mark it on every topic.
                    for ((_, part), eof) in self.at_eof.iter_mut() {
                        if *part == p {
                            *eof = true;
                        }
                    }
                }
                Some(Err(e)) => {
                    report.errors += 1;
                    let quiet = self.last_error_log.is_some_and(|t| t.elapsed() < Duration::from_secs(10));
                    if !quiet {
                        let transient = matches!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
                        );
                        tracing::warn!(error = %e, transient, "consumer error; the client retries");
                        self.last_error_log = Some(Instant::now());
                    }
                    break;
                }
            }
        }
        report
    }

    /// Whether every assigned partition reported its end since its last
    /// message, confirmed against each partition's high watermark from
    /// librdkafka's statistics (at most a second old). End-of-partition notices name only the
    /// partition number, so they alone cannot tell topics apart; and some
    /// brokers under-report the high watermark, so callers also wait for
    /// quiet time.
    pub fn at_end(&self) -> bool {
        if !self.at_eof.values().all(|e| *e) {
            return false;
        }
        self.next.iter().all(|((topic, partition), next)| {
            let Ok((low, high)) = self.consumer.fetch_watermarks(topic, *partition, Duration::from_secs(2))
            else {
                return false;
            };
            next.unwrap_or(low) >= high
        })
    }

    /// Time since the last message.
    pub fn quiet_for(&self) -> Duration {
        self.last_message.elapsed()
    }

    /// Messages behind the high watermarks, summed over the assigned
    /// partitions, from the watermarks in librdkafka's statistics (at most a
    /// second old; no broker round trip). Brokers that under-report the high watermark make
    /// this an under-estimate.
    pub fn lag(&self) -> i64 {
        let Ok(w) = self.consumer.context().watermarks.lock() else { return 0 };
        self.next
            .iter()
            .filter_map(|(tp, next)| {
                let (low, high) = w.get(tp)?;
                Some((high - next.unwrap_or(*low)).max(0))
            })
            .sum()
    }

    /// Number of assigned partitions.
    pub fn partitions(&self) -> usize {
        self.at_eof.len()
    }
}
