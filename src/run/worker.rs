//! A timely worker's loop: read its share of the input partitions, stamp
//! epochs, feed reference data, keep to the backpressure, exit when idle.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use dataflow::dedup::LookupError;
use dataflow::graph::{self, GraphConfig, GraphStats};
use dataflow::records::{EpochBatch, RawMessage, RefUpdate};
use sinks::postgres::{self, Reference};
use sources::kafka::{Intake, share};
use timely::dataflow::{InputHandle, ProbeHandle};
use tokio::runtime::Handle;

use super::{BlockingClient, MAX_EPOCHS_IN_FLIGHT, PgLookup, Shared, WorkerSetup, now_slot};
use crate::metrics::{WhatLabel, WorkerLabel};

/// How often an idle worker asks the broker whether it has read to the end
/// of its partitions (`--exit-when-idle`).
const END_CHECK: Duration = Duration::from_millis(250);

/// One worker: builds the graph, then turns the loop below until the input
/// is idle (`--exit-when-idle`), the process stops or something fails, and
/// drains the open epochs.
pub(super) fn run_worker(
    worker: &mut timely::worker::Worker,
    setup: WorkerSetup,
    shared: Arc<Shared>,
    handle: Handle,
    sender: Option<SyncSender<EpochBatch>>,
) -> Result<(), String> {
    let index = worker.index();
    let my_partitions = share(setup.partitions.clone(), index, worker.peers());
    let intake = Intake::new(&setup.kafka, &my_partitions).map_err(|e| format!("Kafka consumer: {e}"))?;
    let stats = Arc::new(GraphStats::default());
    let preload = setup.preload_shares.lock().ok().and_then(|mut s| s.remove(&index)).unwrap_or_default();
    let lookup = PgLookup {
        db: BlockingClient::new(handle.clone(), setup.database_url.clone(), shared.clone()),
        held_from: None,
    };
    let mut raw = Input::<RawMessage>::new();
    let mut refs = Input::<RefUpdate>::new();
    let probe = ProbeHandle::new();
    let committer_gone = Arc::new(AtomicBool::new(false));
    let sink_gone = committer_gone.clone();
    let config = GraphConfig {
        dedup_horizon: setup.args.dedup_horizon,
        dedup_max_ids: setup.args.dedup_max_ids,
        committed_epoch: shared.committed_epoch.clone(),
        lookup: Box::new(lookup),
        preload,
        preload_floor: setup.preload_floor,
    };
    let graph_stats = stats.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        graph::install(
            raw.to_stream(scope),
            refs.to_stream(scope),
            config,
            graph_stats,
            &probe,
            move |batch| {
                if let Some(tx) = &sender
                    && tx.send(batch).is_err()
                {
                    sink_gone.store(true, Ordering::SeqCst);
                }
            },
        );
    });
    raw.advance_to(setup.first_epoch);
    refs.advance_to(setup.first_epoch);
    if index == 0 {
        for u in RefUpdate::load(&setup.reference.products, &setup.reference.suppliers) {
            refs.send(u);
        }
    }
    tracing::debug!(worker = index, partitions = my_partitions.len(), "worker started");
    let now = Instant::now();
    let mut w = WorkerLoop {
        index,
        args: setup.args,
        metrics: shared.metrics.clone(),
        ref_client: BlockingClient::new(handle, setup.database_url.clone(), shared.clone()),
        reference: setup.reference.clone(),
        shared,
        stats,
        intake,
        raw,
        refs,
        probe,
        committer_gone,
        epoch: setup.first_epoch,
        read_in_epoch: 0,
        last_data_epoch: 0,
        buf: Vec::with_capacity(4096),
        idle_reads: 0,
        input_failing: false,
        last_ref_refresh: now,
        last_topic_check: now - TOPIC_CHECK_EVERY,
        topic_suspect_until: None,
        last_lag_check: now.checked_sub(Duration::from_secs(5)).unwrap_or(now),
        last_end_check: now,
    };
    loop {
        if w.shared.shutdown.load(Ordering::Relaxed) || w.committer_gone.load(Ordering::Relaxed) {
            break;
        }
        if let Some(failure) = w.stats.failure() {
            return validate_failed(failure);
        }
        w.advance_epoch();
        if w.last_ref_refresh.elapsed() >= w.args.reference_refresh {
            w.refresh();
        }
        let budget = w.args.max_epoch_messages.saturating_sub(w.read_in_epoch).min(4096);
        if w.backlogged() || budget == 0 {
            worker.step_or_park(Some(Duration::from_millis(5)));
            continue;
        }
        // `Worker::step` reports whether dataflows exist, not whether there
        // was work: park up to 1 ms when the last read found nothing, so an
        // idle processor sleeps instead of spinning.
        worker.step_or_park(Some(if w.idle_reads > 0 { Duration::from_millis(1) } else { Duration::ZERO }));
        w.read(budget)?;
        w.report();
        if w.input_ended() {
            tracing::info!(worker = index, "inputs idle: closing");
            break;
        }
    }
    w.drain(worker)
}

/// A dataflow input of `D` records.
type Input<D> = InputHandle<u64, timely::container::CapacityContainerBuilder<Vec<D>>>;

/// A worker's loop state between turns: its inputs to the dataflow, its
/// consumer, and the clocks of the things it does now and then.
struct WorkerLoop {
    index: usize,
    args: super::WorkerArgs,
    shared: Arc<Shared>,
    metrics: Arc<crate::metrics::Metrics>,
    stats: Arc<GraphStats>,
    intake: Intake,
    raw: Input<RawMessage>,
    refs: Input<RefUpdate>,
    probe: ProbeHandle<u64>,
    /// The committer's channel is closed (it ended).
    committer_gone: Arc<AtomicBool>,
    /// The reference data last sent (worker 0 sends the changes).
    reference: Reference,
    ref_client: BlockingClient,
    /// The epoch messages are stamped with now.
    epoch: u64,
    read_in_epoch: usize,
    /// The last epoch that got a message.
    last_data_epoch: u64,
    buf: Vec<RawMessage>,
    /// Reads in a row that found nothing.
    idle_reads: u32,
    /// Whether the broker is away (the `waiting{what="kafka"}` gauge).
    input_failing: bool,
    last_ref_refresh: Instant,
    last_topic_check: Instant,
    /// Until when read errors make the worker ask whether a topic is gone.
    topic_suspect_until: Option<Instant>,
    last_lag_check: Instant,
    last_end_check: Instant,
}

impl WorkerLoop {
    /// Moves the inputs to the current wall-clock slot.
    fn advance_epoch(&mut self) {
        let slot = now_slot(self.args.epoch_ms);
        if slot > self.epoch {
            self.epoch = slot;
            self.raw.advance_to(slot);
            self.refs.advance_to(slot);
            self.read_in_epoch = 0;
        }
    }

    /// Every `--reference-refresh-ms`: worker 0 sends the reference data's
    /// changes; a process that does not commit learns commit progress.
    fn refresh(&mut self) {
        self.last_ref_refresh = Instant::now();
        if !self.args.commits_here {
            // Other processes learn commit progress from the database, so
            // that their dedup memory can let go of committed late ids.
            if let Ok(e) =
                self.ref_client.with("postgres", |h, c| h.block_on(postgres::last_committed_epoch(c)))
            {
                self.shared.committed_epoch.fetch_max(e, Ordering::AcqRel);
            }
        }
        if self.index == 0 {
            match self.ref_client.with("postgres", |h, c| h.block_on(postgres::load_reference(c))) {
                Ok(fresh) => {
                    for u in reference_changes(&self.reference, &fresh) {
                        self.refs.send(u);
                    }
                    self.reference = fresh;
                }
                Err(e) => tracing::error!(error = %e, "cannot refresh reference data"),
            }
        }
    }

    /// Backpressure: pause reading while too many epochs wait for their commit.
    fn backlogged(&self) -> bool {
        let committed = self.shared.committed_epoch.load(Ordering::Acquire);
        if self.args.commits_here {
            self.last_data_epoch.saturating_sub(committed) > MAX_EPOCHS_IN_FLIGHT * 2 * self.args.epoch_ms
        } else {
            self.probe.less_than(&self.epoch.saturating_sub(MAX_EPOCHS_IN_FLIGHT * self.args.epoch_ms))
        }
    }

    /// Reads up to `budget` messages into the dataflow; ends the run when
    /// the broker refuses the consumer or an input topic is gone.
    fn read(&mut self, budget: usize) -> Result<(), String> {
        let report = self.intake.read(budget, Duration::ZERO, &mut self.buf);
        self.idle_reads = if self.buf.is_empty() { self.idle_reads + 1 } else { 0 };
        if report.errors > 0 {
            self.metrics.consumer_errors.inc_by(report.errors as u64);
        }
        // An outage is waited for (the client reconnects by itself); a
        // refusal (credentials, ACLs) would repeat forever.
        if let Some(e) =
            report.failures.iter().find(|e| sinks::error::kafka_failure(e) == sinks::Failure::Permanent)
        {
            return Err(format!("Kafka refused the processor's consumer: {e}"));
        }
        if report.failures.iter().any(is_unknown_topic) {
            self.topic_suspect_until = Some(Instant::now() + TOPIC_SUSPECT_FOR);
        }
        self.check_topics()?;
        // The broker is down or unreachable: say so in the metrics (the
        // intake logs the start and the end of the outage once).
        let failing = self.intake.failing();
        if failing != self.input_failing {
            self.input_failing = failing;
            self.metrics.waiting.get_or_create(&WhatLabel { what: "kafka" }).set(i64::from(failing));
        }
        if !self.buf.is_empty() {
            if let Some(ts) = self.buf.last().and_then(|m| m.timestamp_ms) {
                let delay = (chrono::Utc::now().timestamp_millis() - ts).max(0) as f64 / 1e3;
                self.metrics
                    .read_delay_seconds
                    .get_or_create(&WorkerLabel { worker: self.index as u32 })
                    .set(delay);
            }
            self.read_in_epoch += self.buf.len();
            self.last_data_epoch = self.epoch;
            for m in self.buf.drain(..) {
                self.raw.send(m);
            }
        }
        Ok(())
    }

    /// "Unknown topic or partition" is what a topic still being created
    /// says too: ask the cluster (at most every 2 s) whether an input topic
    /// is really gone. A deleted input topic ends the run: its offsets are
    /// stored and a new topic of the same name is refused at the next
    /// start, so waiting would wait forever. librdkafka reports the error a
    /// few times, then less often: keep asking for a while after the last
    /// one (the first answer may still show a topic whose deletion is under
    /// way).
    fn check_topics(&mut self) -> Result<(), String> {
        if self.topic_suspect_until.is_some_and(|until| Instant::now() < until)
            && self.last_topic_check.elapsed() >= TOPIC_CHECK_EVERY
        {
            self.last_topic_check = Instant::now();
            let missing = self.intake.missing_topics();
            tracing::debug!(?missing, "input topics the cluster does not know");
            if !missing.is_empty() {
                return Err(format!("input topic {} no longer exists (deleted?)", missing.join(", ")));
            }
        }
        Ok(())
    }

    /// The dedup and lag metrics; a warning for applied events that might
    /// repeat archived ones.
    fn report(&mut self) {
        let metrics = &self.metrics;
        metrics.dedup_ids.set(self.stats.dedup_ids.load(Ordering::Relaxed) as i64);
        let beyond = self.stats.dedup_beyond_history.load(Ordering::Relaxed);
        let counted = metrics.dedup_beyond_history.get();
        if beyond > counted {
            metrics.dedup_beyond_history.inc_by(beyond - counted);
            tracing::warn!(
                worker = self.index,
                events = beyond - counted,
                "applied events whose ids are not in the held history and which occurred before it: each \
                 might repeat an archived event (see ARCHITECTURE.md, History at scale)"
            );
        }
        if self.last_lag_check.elapsed() >= Duration::from_secs(1) {
            self.last_lag_check = Instant::now();
            metrics
                .consumer_lag_messages
                .get_or_create(&WorkerLabel { worker: self.index as u32 })
                .set(self.intake.lag());
        }
    }

    /// `--exit-when-idle`: whether the input has been quiet long enough,
    /// everything read is committed and the consumer is at every
    /// partition's end. The end-of-input check asks the broker for every
    /// partition's end (one round trip each): at most every [`END_CHECK`],
    /// not on every turn of a quiet loop.
    fn input_ended(&mut self) -> bool {
        let Some(idle) = self.args.exit_when_idle else { return false };
        let ready = self.intake.quiet_for() >= idle
            && (!self.args.commits_here
                || self.shared.committed_epoch.load(Ordering::Acquire) >= self.last_data_epoch)
            && !self.probe.less_than(&self.epoch)
            && self.last_end_check.elapsed() >= END_CHECK;
        if !ready {
            return false;
        }
        self.last_end_check = Instant::now();
        self.intake.at_end()
    }

    /// Closes the inputs and steps the dataflow until the open epochs are
    /// committed, unless they cannot be: the committer ended, another
    /// worker failed, or `Validate` holds an epoch back (its lookup failed
    /// or was stopped during an outage); those epochs are read again on the
    /// next start.
    fn drain(self, worker: &mut timely::worker::Worker) -> Result<(), String> {
        let WorkerLoop { raw, refs, probe, shared, stats, committer_gone, .. } = self;
        drop(raw);
        drop(refs);
        while !probe.with_frontier(|f| f.is_empty()) {
            if committer_gone.load(Ordering::Relaxed)
                || shared.committer_failed.load(Ordering::Relaxed)
                || shared.worker_failed.load(Ordering::Relaxed)
            {
                break;
            }
            if let Some(failure) = stats.failure() {
                return validate_failed(failure);
            }
            worker.step_or_park(Some(Duration::from_millis(10)));
        }
        if committer_gone.load(Ordering::Relaxed) || shared.committer_failed.load(Ordering::Relaxed) {
            return Err("the committer stopped".into());
        }
        Ok(())
    }
}

/// How often, at most, the worker asks whether an input topic is gone.
const TOPIC_CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long after the last "unknown topic or partition" it keeps asking.
const TOPIC_SUSPECT_FOR: Duration = Duration::from_secs(60);

/// Whether a read error says a topic or partition is unknown (deleted, or
/// not created yet).
fn is_unknown_topic(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(e.rdkafka_error_code(), Some(C::UnknownTopicOrPartition | C::UnknownPartition | C::UnknownTopic))
}

/// The worker's answer when `Validate` holds an epoch back: a lookup stopped
/// by a signal during an outage ends the worker quietly (the process is
/// stopping); any other failure ends the run with its message.
fn validate_failed(failure: LookupError) -> Result<(), String> {
    match failure {
        LookupError::Interrupted => Ok(()),
        LookupError::Failed(e) => Err(e),
    }
}

/// Updates that turn reference data `old` into `new`.
fn reference_changes(old: &Reference, new: &Reference) -> Vec<RefUpdate> {
    let mut v = Vec::new();
    for (p, level) in &old.products {
        if new.products.get(p) != Some(level) {
            v.push(RefUpdate::ProductRemoved { product_id: p.clone(), reorder_level: *level });
        }
    }
    for (p, level) in &new.products {
        if old.products.get(p) != Some(level) {
            v.push(RefUpdate::ProductUpsert { product_id: p.clone(), reorder_level: *level });
        }
    }
    let old_s: &HashSet<String> = &old.suppliers;
    v.extend(old_s.difference(&new.suppliers).map(|s| RefUpdate::SupplierRemoved(s.clone())));
    v.extend(new.suppliers.difference(old_s).map(|s| RefUpdate::SupplierAdded(s.clone())));
    v
}
