//! `stockflow run`: wires the Kafka intake, the dataflow and the committer.
//!
//! Start-up reads the state back from PostgreSQL (offsets, reference data,
//! the applied ids inside the dedup horizon), takes the next processor
//! generation (fencing an older `stockflow run`), opens the output producer
//! and re-publishes the output messages of commits that are not in Kafka
//! yet, then starts the timely workers and, in process 0, the committer
//! thread.
//!
//! Each worker reads its share of the input partitions in bounded slices and
//! stamps messages with the current epoch (the start, in Unix milliseconds,
//! of a wall-clock slot of
//! `--epoch-ms`). Worker 0 also feeds the reference data. The dataflow hands each complete epoch to the committer, which
//! writes it in one transaction with the offsets and only then sends the
//! output messages. A bounded channel between them is the backpressure.
//!
//! `worker.rs` holds the workers' loop, `committer.rs` the committer and
//! publisher threads; this file the start-up and the shared plumbing.

mod committer;
mod worker;

use committer::committer;
use worker::run_worker;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use dataflow::dedup::{AppliedLookup, LookupError};
use dataflow::records::EpochBatch;
use dataflow::{EventKind, TopicNames};
use rdkafka::ClientConfig;
use sinks::SinkError;
use sinks::postgres::{self, Reference};
use sources::kafka::PartitionStart;
use tokio::runtime::Handle;

use crate::cli::{GlobalArgs, OutputsMode, RunArgs};
use crate::metrics::{Metrics, WhatLabel, WorkerLabel};

/// Epochs a worker may have read ahead of the last commit before it pauses.
const MAX_EPOCHS_IN_FLIGHT: u64 = 4;

/// What all threads of the process share.
struct Shared {
    /// `--epoch-ms`, to tell how long after its end an epoch reached the committer.
    epoch_ms: u64,
    shutdown: AtomicBool,
    committed_epoch: Arc<AtomicU64>,
    committer_failed: AtomicBool,
    /// A worker ended with an error: the others stop too, without draining
    /// (the dead worker's epochs cannot complete).
    worker_failed: AtomicBool,
    /// Set once the process is stopping *and* waits for a dependency that
    /// is away (`stockflow_waiting` is 1): the waits for PostgreSQL and
    /// Kafka end then, and what was not committed or published is picked up
    /// by the next start. A stop while both answer finishes the open epochs
    /// and their outputs first.
    abandon_waits: AtomicBool,
    metrics: Arc<Metrics>,
}

/// Everything a worker needs, cloned into each.
#[derive(Clone)]
struct WorkerSetup {
    database_url: String,
    kafka: ClientConfig,
    partitions: Vec<PartitionStart>,
    reference: Reference,
    /// The preloaded applied ids, split by the global index of the worker
    /// that owns them (this process's workers only); each worker takes its
    /// share out, so the memory is freed once its dedup state holds them.
    preload_shares: Arc<std::sync::Mutex<HashMap<usize, Vec<dataflow::graph::Preloaded>>>>,
    preload_floor: Option<chrono::DateTime<chrono::Utc>>,
    first_epoch: u64,
    args: WorkerArgs,
}

#[derive(Clone, Copy)]
struct WorkerArgs {
    epoch_ms: u64,
    max_epoch_messages: usize,
    exit_when_idle: Option<Duration>,
    dedup_horizon: chrono::Duration,
    dedup_max_ids: usize,
    reference_refresh: Duration,
    commits_here: bool,
}

impl WorkerArgs {
    fn new(args: &RunArgs) -> Self {
        WorkerArgs {
            epoch_ms: args.epoch_ms,
            max_epoch_messages: args.max_epoch_messages as usize,
            exit_when_idle: args.exit_when_idle.map(Duration::from_secs_f64),
            dedup_horizon: chrono::Duration::hours(i64::from(args.dedup_horizon_hours)),
            dedup_max_ids: args.dedup_max_ids as usize,
            reference_refresh: Duration::from_millis(args.reference_refresh_ms),
            commits_here: args.process == 0,
        }
    }
}

/// The current epoch: the Unix time in milliseconds at the start of the
/// current `epoch_ms` slot. Epochs are numbered in milliseconds whatever the
/// slot length, so they keep increasing across restarts even when
/// `--epoch-ms` changes.
fn now_slot(epoch_ms: u64) -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    ms / epoch_ms * epoch_ms
}

/// Retries `f` while its error is transient ([`sinks::Failure`]), with
/// jittered exponential backoff (100 ms doubling to 10 s, each delay plus a
/// random part of itself, from `backon`), counting each wait; the first
/// failure of an outage is logged ("waiting for ..."), the later ones only
/// at debug level, and the end of the outage once. Permanent errors return
/// at once; once `stop` is set (a signal), a transient one returns as
/// [`SinkError::Interrupted`] within 50 ms of the signal or of the attempt
/// under way.
fn retry_blocking<T>(
    metrics: &Metrics,
    what: &'static str,
    stop: &AtomicBool,
    mut f: impl FnMut() -> Result<T, SinkError>,
) -> Result<T, SinkError> {
    use backon::BackoffBuilder;
    let mut delays = backoff().build();
    let mut since: Option<Instant> = None;
    let waiting = |on: bool| metrics.waiting.get_or_create(&WhatLabel { what }).set(i64::from(on));
    loop {
        match f() {
            Ok(v) => {
                waiting(false);
                if let Some(s) = since {
                    tracing::info!(
                        what,
                        waited_s = s.elapsed().as_secs(),
                        "{} answers again",
                        display_name(what)
                    );
                }
                return Ok(v);
            }
            Err(e) if e.is_retriable() => {
                if stop.load(Ordering::Relaxed) {
                    waiting(false);
                    return Err(SinkError::Interrupted(display_name(what)));
                }
                let wait = delays.next().unwrap_or(Duration::from_secs(10));
                metrics.retries.get_or_create(&WhatLabel { what }).inc();
                waiting(true);
                if since.is_none() {
                    since = Some(Instant::now());
                    tracing::warn!(error = %e, what, "waiting for {}: unavailable; retrying with backoff", display_name(what));
                } else {
                    tracing::debug!(error = %e, retry_in_ms = wait.as_millis() as u64, what, "still unavailable; retrying");
                }
                crate::commands::sleep_unless(wait, Some(stop));
            }
            Err(e) => {
                waiting(false);
                return Err(e);
            }
        }
    }
}

/// The backoff of every wait for a dependency: 100 ms doubling to 10 s,
/// each delay plus a random part of itself, without end (a stop or a
/// permanent error ends a wait, not a count).
fn backoff() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
}

/// Sets [`Shared::abandon_waits`] once the process is stopping while it
/// waits for PostgreSQL or Kafka (checked every 50 ms).
fn spawn_abandon_watch(shared: Arc<Shared>) {
    let spawned = std::thread::Builder::new().name("abandon-watch".into()).spawn(move || {
        loop {
            let away = ["kafka", "postgres"]
                .iter()
                .any(|what| shared.metrics.waiting.get_or_create(&WhatLabel { what }).get() != 0);
            if shared.shutdown.load(Ordering::Relaxed) && away {
                shared.abandon_waits.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the stop watcher: a stop during an outage waits for it");
    }
}

/// How a dependency is named in log lines.
fn display_name(what: &'static str) -> &'static str {
    match what {
        "kafka" => "Kafka",
        "postgres" => "PostgreSQL",
        other => other,
    }
}

/// The `waiting` callback of the Kafka output calls ([`sinks::Wait`]):
/// sets `stockflow_waiting{what="kafka"}`.
fn kafka_waiting(metrics: &Metrics) -> impl Fn(bool) + '_ {
    move |on| {
        metrics.waiting.get_or_create(&WhatLabel { what: "kafka" }).set(i64::from(on));
    }
}

/// A PostgreSQL client used from a timely worker thread (blocking on the runtime).
struct BlockingClient {
    handle: Handle,
    url: String,
    client: Option<tokio_postgres::Client>,
    shared: Arc<Shared>,
}

impl BlockingClient {
    fn new(handle: Handle, url: String, shared: Arc<Shared>) -> Self {
        BlockingClient { handle, url, client: None, shared }
    }

    /// Runs `f` with a live connection, reconnecting and retrying while the
    /// error is transient and the process is not stopping.
    fn with<T>(
        &mut self,
        what: &'static str,
        mut f: impl FnMut(&Handle, &mut tokio_postgres::Client) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let shared = self.shared.clone();
        let handle = self.handle.clone();
        let url = self.url.clone();
        let slot = &mut self.client;
        retry_blocking(&shared.metrics, what, &shared.abandon_waits, || {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                *slot = Some(handle.block_on(postgres::connect(&url))?);
            }
            let client = slot.as_mut().ok_or_else(|| SinkError::Inconsistent("no client".into()))?;
            let r = f(&handle, client);
            if r.as_ref().is_err_and(SinkError::is_retriable) {
                *slot = None;
            }
            r
        })
    }
}

/// Looks up applied ids older than the dedup horizon in `events_log`. An
/// error (a broken schema, or a stop during an outage) goes back to the
/// dataflow, which holds the epoch back and reports it to the worker loop.
/// Each look-up also reads how far back the log is held
/// (`history_held_from()`), for the rule on ids beyond it (`dataflow::dedup`).
struct PgLookup {
    db: BlockingClient,
    held_from: Option<DateTime<Utc>>,
}

impl AppliedLookup for PgLookup {
    fn applied(
        &mut self,
        ids: &[String],
        occurred_since: DateTime<Utc>,
    ) -> Result<HashMap<String, u128>, LookupError> {
        let (found, held_from) = self
            .db
            .with("postgres", |h, c| h.block_on(postgres::applied_hashes(c, ids, occurred_since)))
            .map_err(|e| match e {
                SinkError::Interrupted(_) => LookupError::Interrupted,
                e => LookupError::Failed(format!("cannot look up applied event ids: {e}")),
            })?;
        self.held_from = held_from;
        Ok(found)
    }

    fn held_from(&self) -> Option<DateTime<Utc>> {
        self.held_from
    }
}

/// `stockflow run`. A stop requested while PostgreSQL or Kafka is away
/// ends it cleanly ([`SinkError::Interrupted`]): what was not committed is
/// read again on the next start.
pub async fn run(g: &GlobalArgs, args: &RunArgs, kafka: ClientConfig, topics: TopicNames) -> Result<()> {
    match run_until_stopped(g, args, kafka, topics).await {
        Err(e) if matches!(e.downcast_ref::<SinkError>(), Some(SinkError::Interrupted(_))) => {
            tracing::warn!(
                "{e}: stopped; the next start reads again what was not committed and re-sends what was not published"
            );
            Ok(())
        }
        other => other,
    }
}

/// The run, in steps: check the options, start the signal and metrics
/// plumbing, read the start state (waiting while a dependency is away),
/// start the committer thread (process 0), run the timely workers until
/// they end, then wait for the committer.
async fn run_until_stopped(
    g: &GlobalArgs,
    args: &RunArgs,
    kafka: ClientConfig,
    topics: TopicNames,
) -> Result<()> {
    check_run_args(args)?;
    let metrics = Metrics::new();
    // The stop flag exists from the start: a signal while the brokers are
    // waited for ends the wait.
    let shared = Arc::new(Shared {
        epoch_ms: args.epoch_ms,
        shutdown: AtomicBool::new(false),
        committed_epoch: Arc::new(AtomicU64::new(0)),
        committer_failed: AtomicBool::new(false),
        worker_failed: AtomicBool::new(false),
        abandon_waits: AtomicBool::new(false),
        metrics: metrics.clone(),
    });
    spawn_signal_handler(shared.clone());
    spawn_abandon_watch(shared.clone());
    if let Some(addr) = args.metrics_addr {
        crate::metrics::serve(addr, metrics.clone())
            .await
            .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }

    let start = open_start_waiting(g, args, &kafka, &topics, &shared).await?;
    shared.committed_epoch.store(start.published, Ordering::SeqCst);
    spawn_status_heartbeat(g.database_url.clone(), args, shared.clone());

    let (tx, rx) = sync_channel::<EpochBatch>(2);
    let published = start.published;
    let committer = match start.committer_setup {
        Some((outputs, generation)) => {
            let (shared, url, topics, handle) =
                (shared.clone(), g.database_url.clone(), topics.clone(), Handle::current());
            let thread = std::thread::Builder::new()
                .name("committer".into())
                .spawn(move || committer(rx, url, outputs, topics, shared, handle, published, generation))
                .map_err(|e| anyhow::anyhow!("cannot start the committer thread: {e}"))?;
            Some(thread)
        }
        None => None,
    };
    let setup = WorkerSetup {
        database_url: g.database_url.clone(),
        kafka,
        partitions: start.partitions,
        reference: start.reference,
        preload_shares: Arc::new(std::sync::Mutex::new(preload_shares(
            start.recent_applied,
            args.workers.into(),
            args.processes.into(),
            args.process.into(),
        ))),
        preload_floor: start.preload_floor,
        first_epoch: now_slot(args.epoch_ms).max(published + 1),
        args: WorkerArgs::new(args),
    };
    let result = run_workers(timely_config(args), setup, shared.clone(), tx).await;
    if let Some(c) = committer {
        let committed = tokio::task::spawn_blocking(move || c.join()).await.context("committer thread")?;
        match committed {
            Ok(r) => r?,
            Err(_) => bail!("committer thread panicked"),
        }
    }
    result?;
    tracing::info!(last_committed_epoch = shared.committed_epoch.load(Ordering::Relaxed), "stopped");
    Ok(())
}

/// The option combinations clap cannot check.
fn check_run_args(args: &RunArgs) -> Result<()> {
    if args.processes > 1 && args.hosts.len() != usize::from(args.processes) {
        bail!(
            "--hosts must name {} host:port pairs (one per process), got {}",
            args.processes,
            args.hosts.len()
        );
    }
    if args.process >= args.processes {
        bail!("--process must be below --processes ({}), got {}", args.processes, args.process);
    }
    if let Some(s) = args.exit_when_idle
        && !(s >= 0.0 && s.is_finite())
    {
        bail!("--exit-when-idle must be a non-negative number of seconds, got {s}");
    }
    Ok(())
}

/// Runs this process's timely workers to their end (on blocking threads);
/// global worker 0 gets the committer's sender. A worker that fails stops
/// the others; the first failure is the result.
async fn run_workers(
    config: timely::Config,
    setup: WorkerSetup,
    shared: Arc<Shared>,
    tx: SyncSender<EpochBatch>,
) -> Result<()> {
    let handle = Handle::current();
    let tx = std::sync::Mutex::new(Some(tx));
    tokio::task::spawn_blocking(move || {
        let guards = timely::execute(config, move |worker| {
            // Only global worker 0 commits; it takes the one sender.
            let sender = if worker.index() == 0 { tx.lock().ok().and_then(|mut t| t.take()) } else { None };
            let result = run_worker(worker, setup.clone(), shared.clone(), handle.clone(), sender);
            if result.is_err() {
                shared.worker_failed.store(true, Ordering::SeqCst);
                shared.shutdown.store(true, Ordering::SeqCst);
            }
            result
        })
        .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
        let mut first_error = None;
        for r in guards.join() {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(format!("worker panicked: {e}"));
                }
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(anyhow::anyhow!(e)),
        }
    })
    .await
    .context("worker threads")?
}

/// The preloaded ids of process `process`'s `workers` workers (of
/// `processes` processes), by global worker index (`route_event_id %
/// peers`, as `Validate`'s exchange routes them); ids another process owns
/// are dropped.
fn preload_shares(
    ids: Vec<postgres::PreloadedId>,
    workers: usize,
    processes: usize,
    process: usize,
) -> HashMap<usize, Vec<dataflow::graph::Preloaded>> {
    let peers = (workers * processes).max(1) as u64;
    let mine = process * workers..(process + 1) * workers;
    let mut shares: HashMap<usize, Vec<dataflow::graph::Preloaded>> =
        mine.clone().map(|i| (i, Vec::new())).collect();
    for p in ids {
        let owner = (p.route % peers) as usize;
        if let Some(share) = shares.get_mut(&owner) {
            share.push((p.key, p.hash, p.at));
        }
    }
    shares
}

/// What `stockflow run` reads and opens before its workers start.
struct Start {
    /// The last epoch whose outputs Kafka holds.
    published: u64,
    reference: Reference,
    recent_applied: Vec<postgres::PreloadedId>,
    preload_floor: Option<chrono::DateTime<chrono::Utc>>,
    partitions: Vec<PartitionStart>,
    /// Process 0's output producer and generation.
    committer_setup: Option<(sinks::kafka::Outputs, i64)>,
}

/// Reads the start state, waiting while PostgreSQL or Kafka is away: a
/// transient failure anywhere in [`open_start`] (PostgreSQL restarting
/// during the start, say) redoes the whole start with jittered backoff; it
/// writes nothing that a second attempt would not write again (the
/// generation is taken anew, re-sent outputs are the same). A permanent one
/// ends the run; a stop during the wait ends it as interrupted.
///
/// The very first connection to PostgreSQL is not waited for: at start, an
/// unreachable database or a refused login is most likely a wrong setting,
/// which waiting would only hide, so it ends the run with one line and a
/// non-zero exit. Once the database has answered, a failure is an outage.
async fn open_start_waiting(
    g: &GlobalArgs,
    args: &RunArgs,
    kafka: &ClientConfig,
    topics: &TopicNames,
    shared: &Shared,
) -> Result<Start> {
    use backon::BackoffBuilder;
    drop(postgres::connect(&g.database_url).await?);
    let mut delays = backoff().build();
    let mut since: Option<Instant> = None;
    loop {
        match open_start(g, args, kafka, topics, shared).await {
            Ok(start) => {
                if let Some(s) = since {
                    tracing::info!(waited_ms = s.elapsed().as_millis() as u64, "started after waiting");
                }
                return Ok(start);
            }
            Err(e) if e.downcast_ref::<SinkError>().is_some_and(SinkError::is_retriable) => {
                if shared.shutdown.load(Ordering::Relaxed) {
                    return Err(SinkError::Interrupted("the start state").into());
                }
                if since.is_none() {
                    since = Some(Instant::now());
                    tracing::warn!(error = %e, "waiting to start: unavailable; retrying with backoff");
                }
                let wait = delays.next().unwrap_or(Duration::from_secs(10));
                tokio::task::block_in_place(|| crate::commands::sleep_unless(wait, Some(&shared.shutdown)));
            }
            Err(e) => return Err(e),
        }
    }
}

/// One attempt at the start: the state in PostgreSQL, the input
/// partitions, and (process 0) the output producer.
async fn open_start(
    g: &GlobalArgs,
    args: &RunArgs,
    kafka: &ClientConfig,
    topics: &TopicNames,
    shared: &Shared,
) -> Result<Start> {
    let metrics = &shared.metrics;
    // State from PostgreSQL. Process 0 first takes the next generation: an
    // older `stockflow run` on this database cannot commit after that, so
    // the state read below is final (its commits wait for the row lock, then
    // fail as fenced).
    let client = postgres::connect(&g.database_url).await?;
    // The database must know this binary's kinds of event (the SQL tells
    // sales by `event_kinds`), before this run fences an older one.
    postgres::check_event_kinds(&client).await?;
    let generation = if args.process == 0 { Some(postgres::take_generation(&client).await?) } else { None };
    let published = postgres::published_epoch(&client).await?;
    let input_topics: Vec<String> = EventKind::ALL.iter().map(|k| topics.input(*k)).collect();
    let offsets = postgres::load_offsets(&client, &input_topics).await?;
    let reference = postgres::load_reference(&client).await?;
    let horizon = chrono::Duration::hours(i64::from(args.dedup_horizon_hours));
    let preload_limit =
        args.dedup_max_ids.saturating_mul(u64::from(args.workers) * u64::from(args.processes));
    let recent_applied = postgres::load_recent_applied(&client, horizon, preload_limit as i64).await?;
    // A load cut short by the limit leaves older ids to the database.
    let preload_floor = (recent_applied.len() as u64 >= preload_limit)
        .then(|| recent_applied.iter().map(|p| p.at).min())
        .flatten();

    // Partitions of the input topics, once the brokers answer: a broker
    // that is down is waited for (one log line, the `waiting` metric), one
    // that refuses us (credentials, certificates) ends the start.
    tokio::task::block_in_place(|| {
        crate::kafka::reach(kafka, crate::kafka::Patience::Wait, Some(metrics), Some(&shared.shutdown))
    })?;
    let output_topics = [topics.inventory_updates(), topics.stock_alerts(), topics.dlq()];
    let all_topics: Vec<String> = input_topics.iter().cloned().chain(output_topics.iter().cloned()).collect();
    let counts = sinks::kafka::fetch_partition_counts(kafka, &all_topics).await?;
    if let Some(missing) = output_topics.iter().find(|t| !counts.contains_key(*t)) {
        bail!(
            "output topic {missing} does not exist or this client may not see it (run `stockflow topics`; check the ACLs)"
        );
    }
    let mut partitions = Vec::new();
    for kind in EventKind::ALL {
        let topic = topics.input(kind);
        let Some(n) = counts.get(&topic) else {
            bail!(
                "input topic {topic} does not exist or this client may not see it (run `stockflow topics`; check the ACLs)"
            );
        };
        for partition in 0..*n {
            let next_offset = offsets.get(&(topic.clone(), partition)).copied();
            partitions.push(PartitionStart { kind, topic: topic.clone(), partition, next_offset });
        }
    }
    if args.process == 0 {
        verify_resume_points(&client, kafka, &offsets).await?;
    }
    tracing::info!(
        partitions = partitions.len(),
        resumed = offsets.len(),
        products = reference.products.len(),
        suppliers = reference.suppliers.len(),
        dedup_preload = recent_applied.len(),
        published_epoch = published,
        workers = args.workers,
        process = args.process,
        processes = args.processes,
        "starting"
    );

    let mut committer_setup = None;
    let mut published = published;
    if let Some(generation) = generation {
        let inputs: Vec<(String, i32)> = partitions.iter().map(|p| (p.topic.clone(), p.partition)).collect();
        let (outputs, through) =
            open_outputs(&client, kafka, topics, published, args.outputs, &inputs, shared)?;
        published = through;
        committer_setup = Some((outputs, generation));
    }
    Ok(Start { published, reference, recent_applied, preload_floor, partitions, committer_setup })
}

/// Refuses to resume from stored offsets into a topic that is not the one
/// they came from: for each resumed partition, the last message logged in
/// `events_log` must still be at its offset, byte for byte. A recreated,
/// truncated or rewritten topic would otherwise make the processor skip the
/// new topic's first messages or mis-apply others.
async fn verify_resume_points(
    client: &tokio_postgres::Client,
    kafka: &ClientConfig,
    offsets: &HashMap<(String, i32), i64>,
) -> Result<()> {
    let stored: Vec<(String, i32, i64)> = offsets.iter().map(|((t, p), n)| (t.clone(), *p, *n)).collect();
    let logged: Vec<sources::kafka::LoggedMessage> = postgres::last_logged(client, &stored)
        .await?
        .into_iter()
        .map(|(topic, partition, offset, value)| sources::kafka::LoggedMessage {
            topic,
            partition,
            offset,
            value,
        })
        .collect();
    // Blocking librdkafka calls, like `republish`: no copies for another thread.
    let findings =
        tokio::task::block_in_place(|| sources::kafka::check_logged(kafka, &logged, Duration::from_secs(10)))
            .context("cannot check the stored offsets against the broker")?;
    let advice = "events_log is keyed by topic, partition and offset, so the new topic's messages cannot go \
                  into this database: point stockflow at a new database for it (this one keeps the old history).";
    for (m, finding) in logged.iter().zip(findings) {
        let next = offsets.get(&(m.topic.clone(), m.partition)).copied().unwrap_or_default();
        match finding {
            sources::kafka::Finding::Same => {}
            sources::kafka::Finding::Different => bail!(
                "input topic {} partition {} holds another message at offset {} than the one applied from it: \
                 the topic was recreated or rewritten since offset {next} was stored, and resuming there would \
                 skip or mis-apply messages. {advice}",
                m.topic,
                m.partition,
                m.offset
            ),
            sources::kafka::Finding::PastEnd { high } => bail!(
                "input topic {} partition {} ends at offset {high}, before the stored offset {next}: the topic \
                 was recreated or truncated, and resuming there would skip its first messages. {advice}",
                m.topic,
                m.partition
            ),
            sources::kafka::Finding::Gone => tracing::warn!(
                topic = %m.topic,
                partition = m.partition,
                offset = m.offset,
                "the last logged message is no longer on the broker (retention?): resume point not verified"
            ),
            sources::kafka::Finding::Unknown => tracing::warn!(
                topic = %m.topic,
                partition = m.partition,
                offset = m.offset,
                "the broker did not return the last logged message in time: resume point not verified"
            ),
        }
    }
    Ok(())
}

fn timely_config(args: &RunArgs) -> timely::Config {
    let threads = usize::from(args.workers);
    let communication = if args.processes > 1 {
        timely::CommunicationConfig::Cluster {
            threads,
            process: usize::from(args.process),
            addresses: args.hosts.clone(),
            report: false,
            zerocopy: false,
        }
    } else if threads > 1 {
        timely::CommunicationConfig::Process(threads)
    } else {
        timely::CommunicationConfig::Thread
    };
    timely::Config { communication, worker: timely::WorkerConfig::default() }
}

/// How often each process writes its row of `processor_status`.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Writes this process's `processor_status` row every [`HEARTBEAT`] from
/// its metrics (the waiting flags, the consumer lag, the commit lag), on a
/// connection of its own. A write that fails is dropped with its
/// connection and tried again at the next beat: the live view reads a row
/// that stops moving as "no heartbeat".
fn spawn_status_heartbeat(url: String, args: &RunArgs, shared: Arc<Shared>) {
    let started_at = chrono::Utc::now();
    let (process, workers) = (i32::from(args.process), i32::from(args.workers));
    tokio::spawn(async move {
        let mut client: Option<tokio_postgres::Client> = None;
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            beat.tick().await;
            if shared.shutdown.load(Ordering::Relaxed) {
                return;
            }
            let m = &shared.metrics;
            let waiting = |what| m.waiting.get_or_create(&WhatLabel { what }).get() > 0;
            let status = postgres::ProcessorStatus {
                process,
                started_at,
                workers,
                waiting_kafka: waiting("kafka"),
                waiting_postgres: waiting("postgres"),
                consumer_lag_messages: (0..workers as u32)
                    .map(|worker| m.consumer_lag_messages.get_or_create(&WorkerLabel { worker }).get())
                    .sum(),
                lag_seconds: m.lag_seconds.get(),
                last_committed_epoch: shared.committed_epoch.load(Ordering::Relaxed) as i64,
            };
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                client = postgres::connect(&url).await.ok();
            }
            if let Some(c) = &client
                && let Err(e) = postgres::write_processor_status(c, &status).await
            {
                tracing::debug!(error = %e, "cannot write the processor status");
                client = None;
            }
        }
    });
}

fn spawn_signal_handler(shared: Arc<Shared>) {
    tokio::spawn(async move {
        crate::commands::shutdown_signal().await;
        tracing::info!("shutdown requested: finishing the open epochs");
        shared.shutdown.store(true, Ordering::SeqCst);
    });
}

/// Opens the output producer `--outputs` asks for and re-sends the output
/// messages of the commits that are not in Kafka yet; returns it and the
/// last epoch whose messages Kafka now holds.
///
/// Exactly once: opening the transactional producer fences any earlier one
/// (its open transaction is aborted), so the progress the group's offsets
/// show is final; the commits after it are re-sent in one transaction with
/// the progress. At least once: the commits after `published`, the last
/// epoch recorded as acknowledged.
fn open_outputs(
    client: &tokio_postgres::Client,
    kafka: &ClientConfig,
    topics: &TopicNames,
    published: u64,
    mode: OutputsMode,
    inputs: &[(String, i32)],
    shared: &Shared,
) -> Result<(sinks::kafka::Outputs, u64)> {
    let handle = Handle::current();
    let metrics = &shared.metrics;
    let waiting = kafka_waiting(metrics);
    let wait = sinks::Wait { waiting: &waiting, stop: &shared.shutdown };
    let (outputs, from) = tokio::task::block_in_place(|| -> Result<_, SinkError> {
        Ok(match mode {
            OutputsMode::ExactlyOnce => {
                let id = sinks::kafka::transactional_id(topics);
                let t = sinks::kafka::TransactionalOutputs::new(kafka, &id, wait)?;
                let in_kafka = t.committed_epoch(inputs, wait)?;
                tracing::info!(transactional_id = %id, in_kafka, recorded = published, "exactly-once outputs");
                (sinks::kafka::Outputs::ExactlyOnce(t), in_kafka.unwrap_or(0).max(published))
            }
            OutputsMode::AtLeastOnce => {
                (sinks::kafka::Outputs::AtLeastOnce(sinks::kafka::OutputProducer::new(kafka)?), published)
            }
        })
    })?;
    let ((messages, last), offsets) = tokio::task::block_in_place(|| {
        handle.block_on(async {
            let unpublished = sinks::kafka::unpublished_messages(client, topics, from, u64::MAX).await?;
            let topics: Vec<String> = inputs.iter().map(|(t, _)| t.clone()).collect();
            let offsets = postgres::load_offsets(client, &topics).await?;
            Ok::<_, SinkError>((unpublished, offsets))
        })
    })?;
    let Some(last) = last else { return Ok((outputs, from)) };
    let offsets: Vec<(String, i32, i64)> = offsets.into_iter().map(|((t, p), n)| (t, p, n)).collect();
    tracing::info!(
        messages = messages.len(),
        from_epoch = from + 1,
        to_epoch = last,
        "re-publishing the outputs of commits not in Kafka yet"
    );
    tokio::task::block_in_place(|| {
        retry_blocking(metrics, "kafka", &shared.shutdown, || {
            outputs.publish(&messages, &offsets, last, wait)
        })
    })?;
    tokio::task::block_in_place(|| handle.block_on(postgres::set_published_epoch(client, last)))?;
    Ok((outputs, last))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use sinks::postgres::PreloadedId;

    use super::preload_shares;

    fn id(route: u64) -> PreloadedId {
        PreloadedId { route, key: u128::from(route), hash: 7, at: DateTime::<Utc>::UNIX_EPOCH }
    }

    #[test]
    fn preloaded_ids_go_to_the_worker_that_owns_their_route() {
        let ids: Vec<PreloadedId> = (0..20).map(id).collect();
        // 2 processes of 3 workers: process 1 holds global workers 3, 4, 5.
        let shares = preload_shares(ids, 3, 2, 1);
        let mut keys: Vec<usize> = shares.keys().copied().collect();
        keys.sort_unstable();
        assert_eq!(keys, [3, 4, 5]);
        let routes = |w: usize| shares[&w].iter().map(|(key, _, _)| *key as u64).collect::<Vec<_>>();
        assert_eq!(routes(3), [3, 9, 15], "in the order read");
        assert_eq!(routes(4), [4, 10, 16]);
        assert_eq!(routes(5), [5, 11, 17]);
    }

    #[test]
    fn every_worker_of_the_process_has_a_share_even_an_empty_one() {
        let shares = preload_shares(vec![id(0)], 4, 1, 0);
        assert_eq!(shares.len(), 4);
        assert_eq!(shares[&0].len(), 1);
        assert!(shares[&1].is_empty() && shares[&2].is_empty() && shares[&3].is_empty());
    }
}
