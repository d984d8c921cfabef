//! Exactly-once output topics (contract 5.2): the output messages of each
//! PostgreSQL commit are written in one Kafka transaction, and the same
//! transaction records how far the outputs have got, as the offsets of a
//! consumer group (the input partitions' next offsets, with the commit's
//! epoch in each offset's metadata). Kafka commits both or neither, so after
//! any crash the group's committed offsets say exactly which commits' messages
//! a `read_committed` consumer has seen; the next start re-sends the rest
//! from the database, once.
//!
//! The producer's `transactional.id` is fixed per pipeline: a processor
//! that starts fences the one before it (its open transaction is aborted;
//! its next transactional call fails fatally), so a zombie can never add a
//! message after its successor took over. The design and its failure cases
//! are in ARCHITECTURE.md ("Exactly-once outputs").

use std::time::{Duration, Instant};

use dataflow::TopicNames;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::OutputMessage;
use crate::SinkError;
use crate::error::{Failure, Wait, kafka_code_failure};

/// How long one transactional call may block before it is tried again
/// (librdkafka allows calling it again after a timeout). Short, so that a
/// process asked to stop during a broker outage stops within seconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// How long calls may keep timing out before it counts as waiting for
/// Kafka (log line, `waiting` metric): a big transaction on a busy machine
/// may take a few call timeouts to commit without any outage.
const QUIET_WAIT: Duration = Duration::from_secs(4);

/// The prefix of the metadata of every offset the outputs commit.
const EPOCH_TAG: &str = "stockflow epoch ";

/// The `transactional.id` (and consumer group) of a pipeline's outputs:
/// one per set of output topics.
pub fn transactional_id(topics: &TopicNames) -> String {
    format!("stockflow-outputs.{}", topics.inventory_updates())
}

/// What a transactional call's error asks for.
enum Next {
    /// Call it again (the broker did not answer in time).
    Retry(KafkaError),
    /// Abort the transaction and write it again from the start.
    Abort(KafkaError),
    /// The producer is unusable: fenced by a newer processor, or refused.
    Stop(SinkError),
}

fn classify(context: &str, e: KafkaError) -> Next {
    let rd: Option<&RDKafkaError> = match &e {
        KafkaError::Transaction(rd) => Some(rd),
        _ => None,
    };
    // A refusal (ACLs, credentials, a missing topic) stays one whatever the
    // transaction state says: abortable or not, writing again cannot help.
    if e.rdkafka_error_code().is_some_and(|c| kafka_code_failure(c) == Failure::Permanent) {
        return Next::Stop(SinkError::Kafka { context: context.to_string(), cause: e });
    }
    match rd {
        Some(rd) if rd.is_fatal() => {
            if matches!(rd.code(), RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
            {
                Next::Stop(SinkError::Fenced(format!(
                    "another `stockflow run` took over the output topics (Kafka fenced this one's transactional \
                     producer: {rd}); this one stops, the newer one carries on"
                )))
            } else {
                Next::Stop(SinkError::Kafka { context: context.to_string(), cause: e })
            }
        }
        Some(rd) if rd.txn_requires_abort() => Next::Abort(e),
        Some(rd) if rd.is_retriable() => Next::Retry(e),
        Some(_) => Next::Stop(SinkError::Kafka { context: context.to_string(), cause: e }),
        None => Next::Retry(e),
    }
}

/// The transactional producer of the output topics.
pub struct TransactionalOutputs {
    producer: ThreadedProducer<DefaultProducerContext>,
    /// A consumer of the group that holds the progress; it never joins the
    /// group (no rebalancing), it only names it and reads its offsets.
    group: BaseConsumer,
    metadata: ConsumerGroupMetadata,
}

/// Reports an outage once (after [`QUIET_WAIT`]) and its end; ends the
/// wait when the process is stopping.
struct Waits<'a> {
    since: Option<Instant>,
    announced: bool,
    wait: Wait<'a>,
}

impl<'a> Waits<'a> {
    fn new(wait: Wait<'a>) -> Self {
        Waits { since: None, announced: false, wait }
    }

    fn wait(&mut self, what: &str, e: &KafkaError) -> Result<(), SinkError> {
        if self.wait.stopping() {
            self.done();
            return Err(SinkError::Interrupted("Kafka"));
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        if !self.announced && since.elapsed() >= QUIET_WAIT {
            self.announced = true;
            (self.wait.waiting)(true);
            tracing::warn!(error = %e, "waiting for Kafka: {what}; retrying");
        } else {
            tracing::debug!(error = %e, "still waiting for Kafka: {what}");
        }
        Ok(())
    }

    fn done(&mut self) {
        if let Some(s) = self.since.take()
            && std::mem::take(&mut self.announced)
        {
            (self.wait.waiting)(false);
            tracing::info!(waited_s = s.elapsed().as_secs(), "Kafka answers the output producer again");
        }
    }
}

impl TransactionalOutputs {
    /// A transactional producer with `transactional.id = id` (and a
    /// consumer group of the same name for the progress), from the shared
    /// client configuration. Fences any earlier producer with the same id,
    /// aborting its open transaction; waits while the broker does not
    /// answer (`waiting(true)`, one log line) unless the process stops.
    pub fn new(base: &ClientConfig, id: &str, wait: Wait<'_>) -> Result<Self, SinkError> {
        // A clone, never a copy of `config_map()` (which hides passwords).
        let mut config = base.clone();
        config.set("transactional.id", id);
        for (k, v) in [
            ("transaction.timeout.ms", "60000"),
            ("message.timeout.ms", "60000"),
            ("linger.ms", "2"),
            ("compression.type", "none"),
        ] {
            if base.get(k).is_none() {
                config.set(k, v);
            }
        }
        let producer: ThreadedProducer<DefaultProducerContext> = config.create().map_err(|cause| {
            SinkError::Kafka { context: "create the transactional producer".into(), cause }
        })?;
        let mut waits = Waits::new(wait);
        loop {
            match producer.init_transactions(CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) => match classify("init transactions", e) {
                    Next::Retry(e) | Next::Abort(e) => {
                        waits.wait("the transaction coordinator does not answer", &e)?
                    }
                    Next::Stop(e) => return Err(e),
                },
            }
        }
        waits.done();
        let mut group_config = base.clone();
        group_config
            .set("group.id", id)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        let group: BaseConsumer = group_config
            .create()
            .map_err(|cause| SinkError::Kafka { context: "create the progress consumer".into(), cause })?;
        let metadata = group
            .group_metadata()
            .ok_or_else(|| SinkError::Inconsistent("the progress consumer has no group metadata".into()))?;
        Ok(TransactionalOutputs { producer, group, metadata })
    }

    /// The last epoch whose output transaction Kafka committed, read from
    /// the group's offsets on `partitions` (the input partitions); `None`
    /// when the group has none (nothing published yet, or the offsets
    /// expired: `offsets.retention.minutes`). Call after [`Self::new`], so
    /// no transaction of an earlier producer is pending.
    pub fn committed_epoch(
        &self,
        partitions: &[(String, i32)],
        wait: Wait<'_>,
    ) -> Result<Option<u64>, SinkError> {
        let mut waits = Waits::new(wait);
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let committed = loop {
            match self.group.committed_offsets(tpl.clone(), CALL_TIMEOUT) {
                Ok(c) => break c,
                Err(e) if crate::error::kafka_failure(&e) == Failure::Transient => {
                    waits.wait("cannot read the output progress", &e)?;
                }
                Err(cause) => {
                    return Err(SinkError::Kafka { context: "read the output progress".into(), cause });
                }
            }
        };
        waits.done();
        Ok(committed
            .elements()
            .iter()
            .filter_map(|e| e.metadata().strip_prefix(EPOCH_TAG).and_then(|n| n.parse::<u64>().ok()))
            .max())
    }

    /// Writes `messages` in one transaction together with the progress:
    /// `offsets` (input partition, next offset) tagged with `epoch`.
    /// Blocks until Kafka committed it. While the broker does not answer,
    /// logs one "waiting for Kafka" line and calls `waiting(true)`; a
    /// transaction that fails is aborted and written again from the start,
    /// so a `read_committed` consumer sees each message once. A process
    /// that stops meanwhile leaves the transaction open (the next start's
    /// producer aborts it) and gets [`SinkError::Interrupted`].
    pub fn publish(
        &self,
        messages: &[OutputMessage],
        offsets: &[(String, i32, i64)],
        epoch: u64,
        wait: Wait<'_>,
    ) -> Result<(), SinkError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, next) in offsets {
            let mut e = tpl.add_partition(t, *p);
            e.set_offset(Offset::Offset(*next))
                .map_err(|cause| SinkError::Kafka { context: "progress offsets".into(), cause })?;
            e.set_metadata(format!("{EPOCH_TAG}{epoch}"));
        }
        let mut waits = Waits::new(wait);
        loop {
            match self.attempt(messages, &tpl, &mut waits) {
                Ok(()) => {
                    waits.done();
                    return Ok(());
                }
                Err(Next::Stop(e)) => return Err(e),
                Err(Next::Abort(e) | Next::Retry(e)) => {
                    waits.wait("the output transaction failed; aborting it and writing it again", &e)?;
                    self.abort(&mut waits)?;
                }
            }
        }
    }

    fn attempt(
        &self,
        messages: &[OutputMessage],
        tpl: &TopicPartitionList,
        waits: &mut Waits,
    ) -> Result<(), Next> {
        self.producer.begin_transaction().map_err(|e| classify("begin transaction", e))?;
        super::outputs::send_all(&self.producer, messages, || waits.wait.stopping()).map_err(Next::Stop)?;
        if tpl.count() > 0 {
            loop {
                match self.producer.send_offsets_to_transaction(tpl, &self.metadata, CALL_TIMEOUT) {
                    Ok(()) => break,
                    Err(e) => match classify("send the progress offsets", e) {
                        Next::Retry(e) => {
                            waits.wait("the group coordinator does not answer", &e).map_err(Next::Stop)?
                        }
                        other => return Err(other),
                    },
                }
            }
        }
        loop {
            match self.producer.commit_transaction(CALL_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e) => match classify("commit the output transaction", e) {
                    Next::Retry(e) => {
                        waits.wait("the output transaction is not committed yet", &e).map_err(Next::Stop)?
                    }
                    other => return Err(other),
                },
            }
        }
    }

    fn abort(&self, waits: &mut Waits) -> Result<(), SinkError> {
        loop {
            match self.producer.abort_transaction(CALL_TIMEOUT) {
                Ok(()) => return Ok(()),
                Err(e) => match classify("abort the output transaction", e) {
                    Next::Stop(e) => return Err(e),
                    Next::Retry(e) | Next::Abort(e) => {
                        waits.wait("cannot abort the output transaction yet", &e)?
                    }
                },
            }
        }
    }
}
