//! One function per subcommand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDate, Utc};
use dataflow::TopicNames;
use rdkafka::ClientConfig;
use sinks::kafka::TopicOutcome;
use sources::kafka::{ProduceOptions, Target};
use sources::sim::{SimOptions, Simulation};

use crate::cli::{Cli, Command, DlqArgs, DlqCommand, GlobalArgs, ProduceArgs, SeedArgs, TopicsArgs};

/// Runs the command; `Ok` carries the exit status (`reconcile` exits 3 when
/// it finds a difference), `Err` one line for stderr.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match &cli.command {
        Command::Migrate(args) => done(migrate(g, args.roles).await),
        Command::Seed(args) => done(seed(g, args).await),
        Command::Topics(args) => done(topics(g, args).await),
        Command::Produce(args) => done(produce(g, args).await),
        Command::Run(args) => done(crate::run::run(g, args, kafka_config(g), topic_names(g)).await),
        Command::Reconcile => crate::operator::reconcile(g).await,
        Command::Stock(args) => crate::operator::stock(g, args).await,
        Command::Archive(args) => done(crate::operator::archive(g, args).await),
        Command::Dlq(DlqArgs { command: DlqCommand::Redrive(args) }) => {
            crate::operator::redrive(g, args).await
        }
        Command::Serve(args) => done(crate::serve::serve(g, args).await),
    }
}

/// The librdkafka configuration every client starts from: the brokers, then
/// the user's pass-through options (which win).
pub fn kafka_config(g: &GlobalArgs) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &g.brokers);
    c.set("client.id", "stockflow");
    for (k, v) in &g.kafka_options {
        c.set(k, v);
    }
    c
}

pub fn topic_names(g: &GlobalArgs) -> TopicNames {
    TopicNames::with_prefix(g.topic_prefix.clone())
}

async fn migrate(g: &GlobalArgs, roles: bool) -> Result<()> {
    let mut client = sinks::postgres::connect(&g.database_url).await?;
    let applied = sinks::postgres::migrate(&mut client).await?;
    sinks::postgres::ensure_partitions(&client).await?;
    if applied.is_empty() {
        println!("migrate: schema is up to date");
    } else {
        println!("migrate: applied {}", applied.join(", "));
    }
    if roles {
        sinks::postgres::grant_roles(&client).await?;
        println!("migrate: roles stockflow_processor, stockflow_reporting, stockflow_readonly granted");
    }
    Ok(())
}

async fn seed(g: &GlobalArgs, args: &SeedArgs) -> Result<()> {
    let mut client = sinks::postgres::connect(&g.database_url).await?;
    let catalog = sources::sim::catalog::generate(args.products as usize, args.suppliers as usize);
    let out = sinks::postgres::seed_catalog(&mut client, &catalog)
        .await
        .context("seed (has `stockflow migrate` run?)")?;
    println!(
        "seed: {} new products, {} new suppliers, {} new inventory rows ({} products, {} suppliers requested; existing rows untouched)",
        out.products, out.suppliers, out.inventory, args.products, args.suppliers
    );
    Ok(())
}

/// How long the one-shot commands wait for brokers that do not answer.
const KAFKA_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// Fails with one line unless `config`'s brokers answer within
/// [`KAFKA_PATIENCE`] and accept this client.
pub async fn reach_kafka(config: &ClientConfig) -> Result<()> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        crate::kafka::reach(&config, crate::kafka::Patience::Fail(KAFKA_PATIENCE), None, None)
    })
    .await
    .context("Kafka check")?
}

async fn topics(g: &GlobalArgs, args: &TopicsArgs) -> Result<()> {
    let names = topic_names(g).all();
    reach_kafka(&kafka_config(g)).await?;
    let outcome =
        sinks::kafka::ensure_topics(&kafka_config(g), &names, args.partitions, args.replication).await?;
    for (name, o) in outcome {
        match o {
            TopicOutcome::Created(p) => println!("topics: created {name} ({p} partitions)"),
            TopicOutcome::Existed(p) => println!("topics: {name} exists ({p} partitions)"),
        }
    }
    Ok(())
}

fn parse_start(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).context("midnight")?.and_utc());
    }
    bail!("--start {s:?} is neither RFC 3339 nor YYYY-MM-DD")
}

async fn produce(g: &GlobalArgs, args: &ProduceArgs) -> Result<()> {
    for (name, v) in [("--duplicate-ratio", args.duplicate_ratio), ("--invalid-ratio", args.invalid_ratio)] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{name} must be between 0 and 1, got {v}");
        }
    }
    if args.duplicate_ratio + args.invalid_ratio > 1.0 {
        bail!("--duplicate-ratio plus --invalid-ratio must not exceed 1");
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a non-negative number, got {}", args.rate);
    }
    if !(args.days > 0.0 && args.days.is_finite()) {
        bail!("--days must be positive, got {}", args.days);
    }
    let duration = match args.duration {
        Some(d) if d.is_finite() && d > 0.0 => Some(Duration::from_secs_f64(d)),
        Some(d) => bail!("--duration must be a positive number of seconds, got {d}"),
        None => None,
    };
    if args.count == 0 && duration.is_none() && args.output.is_some() {
        bail!("--count 0 with --output would never end: give --count or --duration");
    }
    let start = match &args.start {
        Some(s) => parse_start(s)?,
        None => Utc::now() - chrono::Duration::milliseconds((args.days * 86_400_000.0) as i64),
    };
    let seed = args.seed.unwrap_or_else(|| {
        let t = Utc::now();
        t.timestamp_nanos_opt().unwrap_or_default() as u64 ^ u64::from(std::process::id())
    });

    let client = sinks::postgres::connect(&g.database_url).await?;
    let catalog = sinks::postgres::load_catalog(&client)
        .await
        .context("load the catalog (has `stockflow migrate` run?)")?;
    drop(client);
    let count = (args.count > 0).then_some(args.count);
    let sim = Simulation::new(
        catalog,
        SimOptions {
            seed,
            count,
            start,
            days: args.days,
            duplicate_ratio: args.duplicate_ratio,
            invalid_ratio: args.invalid_ratio,
        },
    )?;
    let target = match &args.output {
        Some(p) if p.as_os_str() == "-" => Target::Lines(Box::new(std::io::stdout())),
        Some(p) => Target::Lines(Box::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => {
            reach_kafka(&kafka_config(g)).await?;
            Target::Kafka(kafka_config(g))
        }
    };
    let options = ProduceOptions {
        rate: args.rate,
        duration,
        topics: topic_names(g),
        progress: !args.quiet && args.output.as_ref().is_none_or(|p| p.as_os_str() != "-"),
    };
    let summary = tokio::task::spawn_blocking(move || sources::kafka::produce(sim, target, &options, count))
        .await
        .context("producer thread")??;
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    eprintln!(
        "produce: {} messages ({} valid, {} duplicates, {} invalid) in {:.2} s: {:.0} messages/s, {:.1} MB; seed {seed}",
        summary.sent,
        summary.sent - summary.duplicates - summary.invalid,
        summary.duplicates,
        summary.invalid,
        secs,
        summary.sent as f64 / secs,
        summary.bytes as f64 / 1e6,
    );
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C: the clean stop of the long-running
/// commands (`run`, `serve`).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Sleeps for `d`, or less once `stop` is set (checked every 50 ms): a
/// wait during an outage never holds up a requested stop.
pub fn sleep_unless(d: Duration, stop: Option<&std::sync::atomic::AtomicBool>) {
    let Some(stop) = stop else { return std::thread::sleep(d) };
    let until = std::time::Instant::now() + d;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
