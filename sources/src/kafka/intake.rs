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

/// The partitions at their next offsets (`None`: from the beginning), as
/// the consumer is assigned them.
fn assignment<'a>(
    partitions: impl Iterator<Item = (&'a str, i32, Option<i64>)>,
) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in partitions {
        tpl.add_partition_offset(topic, partition, next.map_or(Offset::Beginning, Offset::Offset))?;
    }
    Ok(tpl)
}

/// How far a partition is read: the later of the consumer's own
/// `position` (which librdkafka moves past transaction markers when it
/// reports a partition's end) and `next`, the offset after the last
/// message polled; `low` (the partition's start) when neither is known.
fn reached(position: &TopicPartitionList, tp: &(String, i32), next: Option<i64>, low: i64) -> i64 {
    let polled = position.find_partition(&tp.0, tp.1).and_then(|e| match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    });
    polled.into_iter().chain(next).max().unwrap_or(low)
}

/// What one [`Intake::read`] call saw.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Messages appended.
    pub messages: usize,
    /// Consumer errors seen (the client retries by itself).
    pub errors: usize,
    /// The errors themselves, from reads and from the client's error
    /// callback (at most [`KEPT_ERRORS`] per read), for the caller to
    /// classify: an outage is waited for, a refusal (credentials, ACLs, a
    /// deleted topic) ends the run.
    pub failures: Vec<KafkaError>,
}

/// How many errors one [`ReadReport`] carries at most.
pub const KEPT_ERRORS: usize = 8;

/// Client context that keeps end-of-partition notices out of the error log
/// (librdkafka reports them as "global errors"; they are routine here).
/// Also keeps the offsets librdkafka reports in its statistics (once a
/// second), so that the lag metric needs no broker round trip.
#[derive(Default)]
pub struct IntakeContext {
    /// `(low watermark, end)` per partition, where the end is the last
    /// stable offset (what a `read_committed` consumer can reach: an open
    /// transaction's messages are not readable yet).
    watermarks: std::sync::Mutex<HashMap<(String, i32), (i64, i64)>>,
    /// librdkafka's fetch state per partition (`active`, `offset-wait`,
    /// `validate-epoch-wait`, ...), for the stall warning.
    fetch_states: std::sync::Mutex<HashMap<(String, i32), String>>,
    /// Errors of the error callback since the last read (authentication
    /// failures arrive there, not through `poll`).
    errors: std::sync::Mutex<Vec<KafkaError>>,
    /// The last error logged and when: librdkafka repeats an error every
    /// second while it lasts; the same text is logged again after a minute.
    last_logged: std::sync::Mutex<Option<(String, Instant)>>,
}

/// How long the same client error stays quiet after it was logged.
const REPEAT_LOG_AFTER: Duration = Duration::from_secs(60);

impl ClientContext for IntakeContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Ok(mut w) = self.watermarks.lock() {
            for (topic, t) in statistics.topics {
                for (partition, p) in t.partitions {
                    let end = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
                    if partition >= 0 && end >= 0 {
                        w.insert((topic.clone(), partition), (p.lo_offset.max(0), end));
                    }
                    if partition >= 0
                        && let Ok(mut f) = self.fetch_states.lock()
                    {
                        f.insert((topic.clone(), partition), p.fetch_state);
                    }
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_))
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        if !eof {
            let text = format!("{error}: {reason}");
            let repeat = self.last_logged.lock().is_ok_and(|mut last| {
                let quiet =
                    last.as_ref().is_some_and(|(t, at)| *t == text && at.elapsed() < REPEAT_LOG_AFTER);
                if !quiet {
                    *last = Some((text, Instant::now()));
                }
                quiet
            });
            if repeat {
                tracing::debug!(error = %error, reason, "Kafka client error (again)");
            } else {
                tracing::warn!(error = %error, reason, "Kafka client error");
            }
            if let Ok(mut errors) = self.errors.lock()
                && errors.len() < KEPT_ERRORS
            {
                errors.push(error);
            }
        }
    }
}

impl ConsumerContext for IntakeContext {}

/// A worker's consumer.
pub struct Intake {
    consumer: BaseConsumer<IntakeContext>,
    kinds: HashMap<String, EventKind>,
    /// Next offset to read per partition, as far as this consumer knows
    /// (`None`: from the earliest, nothing read yet).
    next: HashMap<(String, i32), Option<i64>>,
    last_message: Instant,
    /// Since when reads fail (the broker is down or unreachable): logged
    /// once when it starts and once when reading works again.
    failing_since: Option<Instant>,
    /// Since when every read found nothing (`None`: the last one found
    /// messages, or reads paused, as backpressure does).
    empty_since: Option<Instant>,
    /// When [`Intake::read`] was last called.
    last_read: Instant,
    /// When the consumer was last assigned its partitions.
    assigned_at: Instant,
    /// [`STALL_AFTER`] (shorter in tests).
    stall_after: Duration,
}

/// How long reads may find nothing while the statistics say messages are
/// waiting before the partitions are assigned again (see
/// [`Intake::read`]).
pub const STALL_AFTER: Duration = Duration::from_secs(10);

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
                // Messages of aborted transactions are never delivered,
                // those of open ones only once committed (contract 5.1).
                ("isolation.level", "read_committed"),
                ("statistics.interval.ms", "1000"),
                // The worker reads in bounded slices; a smaller pre-fetch queue
                // keeps memory flat (librdkafka's default is 64 MB).
                ("queued.max.messages.kbytes", "16384"),
            ],
        );
        let consumer: BaseConsumer<IntakeContext> = config.create_with_context(IntakeContext::default())?;
        let tpl = assignment(partitions.iter().map(|p| (p.topic.as_str(), p.partition, p.next_offset)))?;
        if !partitions.is_empty() {
            consumer.assign(&tpl)?;
        }
        Ok(Intake {
            consumer,
            kinds: partitions.iter().map(|p| (p.topic.clone(), p.kind)).collect(),
            next: partitions.iter().map(|p| ((p.topic.clone(), p.partition), p.next_offset)).collect(),
            last_message: Instant::now(),
            failing_since: None,
            empty_since: None,
            last_read: Instant::now(),
            assigned_at: Instant::now(),
            stall_after: STALL_AFTER,
        })
    }

    /// Appends up to `budget` messages to `out` without blocking longer than `wait`.
    pub fn read(&mut self, budget: usize, wait: Duration, out: &mut Vec<RawMessage>) -> ReadReport {
        let mut report = ReadReport::default();
        if let Ok(mut errors) = self.consumer.context().errors.lock() {
            report.failures.append(&mut errors);
        }
        if self.next.is_empty() {
            std::thread::sleep(wait);
            return report;
        }
        let mut timeout = wait;
        while report.messages < budget {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    timeout = Duration::ZERO;
                    if let Some(since) = self.failing_since.take() {
                        tracing::info!(waited_s = since.elapsed().as_secs(), "Kafka answers again: reading");
                    }
                    let Some(kind) = self.kinds.get(m.topic()).copied() else { continue };
                    let tp = (m.topic().to_string(), m.partition());
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
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // librdkafka moved the position to the end (past markers).
                    timeout = Duration::ZERO;
                    if let Some(since) = self.failing_since.take() {
                        tracing::info!(waited_s = since.elapsed().as_secs(), "Kafka answers again: reading");
                    }
                }
                Some(Err(e)) => {
                    report.errors += 1;
                    if report.failures.len() < KEPT_ERRORS {
                        report.failures.push(e.clone());
                    }
                    if self.failing_since.is_none() {
                        self.failing_since = Some(Instant::now());
                        let outage = matches!(
                            e.rdkafka_error_code(),
                            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
                        );
                        if outage {
                            tracing::warn!(error = %e, "waiting for Kafka: the broker is unreachable; the client reconnects by itself");
                        } else {
                            tracing::warn!(error = %e, "consumer error; the client retries");
                        }
                    }
                    break;
                }
            }
        }
        // A pause between reads (backpressure) is not the fetcher's doing.
        let paused = self.last_read.elapsed() >= Duration::from_secs(1);
        self.last_read = Instant::now();
        if report.messages > 0 || paused {
            self.empty_since = None;
        } else if report.failures.is_empty() {
            let since = *self.empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.stall_after && self.assigned_at.elapsed() >= self.stall_after {
                self.unstick();
            }
        }
        report
    }

    /// The guard against a stalled fetcher: librdkafka 2.12 was seen (once
    /// in a few hundred runs, against a broker restarted earlier) to stop
    /// fetching one partition for good while the others went on, though
    /// the partition had readable messages, until the consumer was
    /// assigned again. When reads have found nothing for [`STALL_AFTER`]
    /// and the broker says some partition has messages before its last
    /// stable offset (one round trip per partition, at most once per
    /// [`STALL_AFTER`]), this logs the partitions and their fetch states
    /// and assigns every partition again at the next offset this consumer
    /// knows (what was read stays read; prefetched messages are fetched
    /// again). Reads that fail (an outage) never get here.
    fn unstick(&mut self) {
        let Ok(position) = self.consumer.position() else { return };
        // The ends come from the broker (as in `at_end`), not from the
        // statistics: a partition that never fetched has no end in them.
        let states = self.consumer.context().fetch_states.lock().map(|f| f.clone()).unwrap_or_default();
        let mut behind: Vec<String> = self
            .next
            .iter()
            .filter_map(|(tp, next)| {
                let (low, end) = self.consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2)).ok()?;
                let at = reached(&position, tp, *next, low);
                (end > at).then(|| {
                    let state = states.get(tp).map_or("?", String::as_str);
                    format!("{}/{} at {at} of {end} ({state})", tp.0, tp.1)
                })
            })
            .collect();
        behind.sort();
        self.assigned_at = Instant::now();
        if behind.is_empty() {
            return;
        }
        tracing::warn!(
            partitions = %behind.join(", "),
            quiet_s = self.stall_after.as_secs_f64(),
            "the consumer has fetched nothing while messages wait; assigning its partitions again"
        );
        let Ok(tpl) = assignment(self.next.iter().map(|((t, p), next)| (t.as_str(), *p, *next))) else {
            return;
        };
        if let Err(e) = self.consumer.assign(&tpl) {
            tracing::warn!(error = %e, "cannot assign the partitions again");
        }
        // Nothing here pauses partitions; should a pause be what holds
        // one, it ends too.
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(error = %e, "cannot resume the partitions");
        }
        self.empty_since = None;
    }

    /// Whether this consumer has read every assigned partition to its end.
    ///
    /// The end is what the broker reports for the consumer's isolation
    /// level: the last stable offset under `read_committed` (librdkafka's
    /// default and ours), the high watermark otherwise. The position is the
    /// consumer's own, which librdkafka also moves past transaction markers
    /// and aborted messages when it reports a partition's end, so a
    /// partition that ends in markers counts as read. One metadata round
    /// trip per partition: callers ask only once the input has been quiet.
    pub fn at_end(&self) -> bool {
        let Ok(position) = self.consumer.position() else { return false };
        self.next.iter().all(|(tp, next)| {
            let Ok((low, end)) = self.consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(2)) else {
                return false;
            };
            reached(&position, tp, *next, low) >= end
        })
    }

    /// The assigned topics the cluster no longer knows (deleted): one
    /// metadata round trip per topic. Callers ask when reads report an
    /// unknown topic or partition, which is also what a topic still being
    /// created says; a broker that does not answer counts as no answer.
    pub fn missing_topics(&self) -> Vec<String> {
        let mut topics: Vec<&String> = self.next.keys().map(|(t, _)| t).collect();
        topics.sort_unstable();
        topics.dedup();
        topics
            .into_iter()
            .filter(|t| match self.consumer.fetch_metadata(Some(t.as_str()), Duration::from_secs(5)) {
                Ok(md) => {
                    tracing::debug!(topic = %t, "metadata of an input topic");
                    md.topics().first().is_none_or(|mt| mt.error().is_some() || mt.partitions().is_empty())
                }
                // A broker that does not answer is no answer; one that
                // says the topic is unknown is.
                Err(e) => matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::UnknownPartition
                    )
                ),
            })
            .cloned()
            .collect()
    }

    /// Whether reads fail right now (since the last error, nothing was read
    /// and no partition end was reported).
    pub fn failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// Time since the last message.
    pub fn quiet_for(&self) -> Duration {
        self.last_message.elapsed()
    }

    /// Messages (and transaction markers) behind the partitions' ends (last
    /// stable offsets), summed over the assigned partitions, from
    /// librdkafka's statistics (at most a second old; no broker round trip).
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
        self.next.len()
    }
}

#[cfg(test)]
mod tests {
    use dataflow::EventKind;

    use super::{PartitionStart, share};

    fn all() -> Vec<PartitionStart> {
        let mut v = Vec::new();
        // Out of order on purpose: the share does not depend on it.
        for kind in [EventKind::SupplierRestock, EventKind::OnlineOrder, EventKind::StoreSale] {
            for partition in (0..3).rev() {
                v.push(PartitionStart { kind, topic: kind.topic().into(), partition, next_offset: None });
            }
        }
        v
    }

    fn names(v: &[PartitionStart]) -> Vec<String> {
        v.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect()
    }

    /// The stall guard, on librdkafka's mock cluster: a partition that
    /// stops fetching (here: paused behind the intake's back, after its
    /// first messages) is assigned again once reads have found nothing for
    /// `stall_after` while the statistics show messages waiting, and
    /// reading goes on from the next offset, nothing lost or repeated.
    #[test]
    fn a_partition_that_stops_fetching_is_assigned_again() {
        use std::time::{Duration, Instant};

        use rdkafka::ClientConfig;
        use rdkafka::consumer::Consumer;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("producer");
        for i in 0..20 {
            let value = format!("m{i}");
            producer.send(BaseRecord::<(), _>::to("t").payload(&value)).expect("queued");
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");

        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &brokers).set("isolation.level", "read_uncommitted");
        let start = PartitionStart {
            kind: EventKind::OnlineOrder,
            topic: "t".into(),
            partition: 0,
            next_offset: None,
        };
        let mut intake = super::Intake::new(&base, &[start]).expect("intake");
        intake.stall_after = Duration::from_millis(1500);
        let mut out = Vec::new();
        let began = Instant::now();
        while out.len() < 5 && began.elapsed() < Duration::from_secs(20) {
            intake.read(5 - out.len(), Duration::from_millis(100), &mut out);
        }
        assert_eq!(out.len(), 5, "the first messages are read");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition("t", 0);
        intake.consumer.pause(&tpl).expect("paused");
        let stalled = Instant::now();
        while out.len() < 20 && stalled.elapsed() < Duration::from_secs(30) {
            intake.read(100, Duration::from_millis(100), &mut out);
        }
        let offsets: Vec<i64> = out.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, (0..20).collect::<Vec<i64>>(), "every message once, in order");
        assert!(stalled.elapsed() >= Duration::from_millis(1500), "the guard waited for the stall to last");
    }

    /// The same, for a partition that stalls before its first message:
    /// the statistics know no end for it then, the broker does.
    #[test]
    fn a_partition_that_never_fetched_is_assigned_again() {
        use std::time::{Duration, Instant};

        use rdkafka::ClientConfig;
        use rdkafka::consumer::Consumer;
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let brokers = cluster.bootstrap_servers();
        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", &brokers).create().expect("producer");
        for i in 0..3 {
            let value = format!("m{i}");
            producer.send(BaseRecord::<(), _>::to("t").payload(&value)).expect("queued");
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");

        let mut base = ClientConfig::new();
        base.set("bootstrap.servers", &brokers).set("isolation.level", "read_uncommitted");
        let start = PartitionStart {
            kind: EventKind::OnlineOrder,
            topic: "t".into(),
            partition: 0,
            next_offset: None,
        };
        let mut intake = super::Intake::new(&base, &[start]).expect("intake");
        intake.stall_after = Duration::from_millis(1500);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition("t", 0);
        intake.consumer.pause(&tpl).expect("paused");
        let mut out = Vec::new();
        let stalled = Instant::now();
        while out.len() < 3 && stalled.elapsed() < Duration::from_secs(30) {
            intake.read(100, Duration::from_millis(100), &mut out);
        }
        assert_eq!(
            out.iter().map(|m| m.offset).collect::<Vec<i64>>(),
            [0, 1, 2],
            "every message once, in order"
        );
        assert!(stalled.elapsed() >= Duration::from_millis(1500), "the guard waited for the stall to last");
    }

    #[test]
    fn shares_cover_every_partition_once_and_differ_by_at_most_one() {
        for peers in 1..=10 {
            let shares: Vec<Vec<PartitionStart>> = (0..peers).map(|i| share(all(), i, peers)).collect();
            let mut seen: Vec<String> = shares.iter().flat_map(|s| names(s)).collect();
            seen.sort();
            let mut expected = names(&all());
            expected.sort();
            assert_eq!(seen, expected, "{peers} peers");
            let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
            let (min, max) = (sizes.iter().min().copied(), sizes.iter().max().copied());
            assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "{peers} peers: {sizes:?}");
        }
    }

    #[test]
    fn a_share_is_every_peers_th_partition_in_topic_order() {
        assert_eq!(
            names(&share(all(), 1, 4)),
            ["online_orders/1", "store_sales/2"],
            "the 2nd and 6th of the 9, kinds in topic order, partitions ascending"
        );
        let mut reversed = all();
        reversed.reverse();
        assert_eq!(names(&share(reversed, 1, 4)), names(&share(all(), 1, 4)), "input order does not matter");
        assert_eq!(share(all(), 0, 0).len(), 9, "0 peers counts as 1");
        assert!(share(all(), 4, 4).is_empty(), "an index beyond the peers gets nothing");
    }
}
