//! `stockflow produce`: simulated traffic into the input topics.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataflow::TopicNames;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

use crate::sim::{Expect, Simulation};

/// Where the messages go.
pub enum Target {
    /// The input topics of a Kafka cluster.
    Kafka(ClientConfig),
    /// Lines of `topic<TAB>key<TAB>value` (for inspection and tests).
    Lines(Box<dyn Write + Send>),
}

/// Pacing and limits of a run.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Messages per second; 0 = as fast as the target takes them.
    pub rate: f64,
    /// Stop after this long, even if the count is not reached.
    pub duration: Option<Duration>,
    /// Topic names.
    pub topics: TopicNames,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct ProduceSummary {
    /// Messages handed to the target.
    pub sent: u64,
    /// Messages the broker acknowledged (Kafka only).
    pub delivered: u64,
    /// Messages the broker refused after retries.
    pub failed: u64,
    /// Injected exact duplicates among `sent`.
    pub duplicates: u64,
    /// Injected invalid messages among `sent`.
    pub invalid: u64,
    /// Bytes of message values.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// The Kafka client could not be built or the broker not reached.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Messages were not delivered.
    #[error("{failed} of {sent} messages were not delivered (first error: {first})")]
    Undelivered {
        /// How many failed.
        failed: u64,
        /// How many were sent.
        sent: u64,
        /// The first delivery error.
        first: String,
    },
    /// Writing lines failed.
    #[error("write: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Default)]
struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct CountingContext(Arc<DeliveryCounter>);

impl ClientContext for CountingContext {}

impl ProducerContext for CountingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Sends the simulation's messages to `target`, paced by `options`.
pub fn produce(
    sim: Simulation,
    target: Target,
    options: &ProduceOptions,
    total: Option<u64>,
) -> Result<ProduceSummary, ProduceError> {
    let bar = if options.progress {
        ProgressBar::with_draw_target(total, indicatif::ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} events  {per_sec}  eta {eta}  {wide_bar}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let topic_names: Vec<String> =
        dataflow::EventKind::ALL.iter().map(|k| options.topics.input(*k)).collect();
    let start = Instant::now();
    let mut summary = ProduceSummary::default();
    let counter = Arc::new(DeliveryCounter::default());
    let (producer, mut lines) = match target {
        Target::Kafka(config) => {
            // Idempotence: a retry after a broker outage or a lost
            // acknowledgement never writes a message twice (upstream systems
            // would send duplicates of their own only on purpose).
            let config = super::with_defaults(&config, &[("enable.idempotence", "true")]);
            let p: BaseProducer<CountingContext> =
                config.create_with_context(CountingContext(counter.clone()))?;
            // Fail fast with a clear message when no broker answers.
            p.client().fetch_metadata(Some(&topic_names[0]), Duration::from_secs(10))?;
            (Some(p), None)
        }
        Target::Lines(w) => (None, Some(std::io::BufWriter::new(w))),
    };
    for msg in sim {
        if let Some(d) = options.duration
            && start.elapsed() >= d
        {
            break;
        }
        if options.rate > 0.0 {
            // Pace in steps of a few milliseconds, not per message: sleeping
            // for every message at 10 000/s costs a core of CPU.
            let due = start + Duration::from_secs_f64(summary.sent as f64 / options.rate);
            let now = Instant::now();
            if due > now + Duration::from_millis(2) {
                if let Some(p) = &producer {
                    p.poll(Duration::ZERO);
                }
                std::thread::sleep(due - now);
            }
        }
        let topic = &topic_names[msg.kind.index()];
        match (&producer, &mut lines) {
            (Some(p), _) => {
                let mut record = BaseRecord::to(topic).payload(&msg.value);
                if let Some(k) = &msg.key {
                    record = record.key(k.as_str());
                }
                loop {
                    match p.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            p.poll(Duration::from_millis(20));
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
                if summary.sent % 1024 == 0 {
                    p.poll(Duration::ZERO);
                }
            }
            (None, Some(w)) => {
                w.write_all(topic.as_bytes())?;
                w.write_all(b"\t")?;
                w.write_all(msg.key.as_deref().unwrap_or("").as_bytes())?;
                w.write_all(b"\t")?;
                w.write_all(&msg.value)?;
                w.write_all(b"\n")?;
            }
            (None, None) => unreachable!("one target is always set"),
        }
        summary.sent += 1;
        summary.bytes += msg.value.len() as u64;
        match msg.expect {
            Expect::Duplicate => summary.duplicates += 1,
            Expect::Rejected(_) => summary.invalid += 1,
            Expect::Applied => {}
        }
        if summary.sent % 4096 == 0 {
            bar.set_position(summary.sent);
        }
    }
    bar.set_position(summary.sent);
    if let Some(p) = &producer {
        p.flush(Duration::from_secs(60))?;
        summary.delivered = counter.delivered.load(Ordering::Relaxed);
        summary.failed = counter.failed.load(Ordering::Relaxed);
    }
    if let Some(w) = &mut lines {
        w.flush()?;
    }
    bar.finish_and_clear();
    summary.elapsed = start.elapsed();
    if summary.failed > 0 {
        let first = counter.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        return Err(ProduceError::Undelivered { failed: summary.failed, sent: summary.sent, first });
    }
    Ok(summary)
}
