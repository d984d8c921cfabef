//! Command-line interface. Every option can also come from the environment.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Real-time inventory pipeline: Kafka -> Timely/Differential Dataflow -> PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "stockflow", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// PostgreSQL connection URL (libpq syntax).
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@localhost:5432/stockflow",
        hide_env_values = true
    )]
    pub database_url: String,

    /// A file whose first line is the PostgreSQL connection URL, so that a
    /// password need not sit in the environment or on the command line
    /// (process titles are public); wins over --database-url/DATABASE_URL.
    #[arg(long, global = true, env = "DATABASE_URL_FILE")]
    pub database_url_file: Option<PathBuf>,

    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, global = true, env = "KAFKA_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,

    /// Extra librdkafka settings, KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL).
    #[arg(long = "kafka-option", global = true, env = "STOCKFLOW_KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value, hide_env_values = true)]
    pub kafka_options: Vec<(String, String)>,

    /// A file of librdkafka settings, KEY=VALUE per line (blank lines and
    /// `#` comments skipped), e.g. `sasl.password`; --kafka-option wins over it.
    #[arg(long, global = true, env = "STOCKFLOW_KAFKA_OPTIONS_FILE")]
    pub kafka_options_file: Option<PathBuf>,

    /// Prefix for every topic name (isolates test and benchmark runs; empty in production).
    #[arg(long, global = true, env = "STOCKFLOW_TOPIC_PREFIX", default_value = "")]
    pub topic_prefix: String,

    /// Log format on stderr.
    #[arg(long, global = true, env = "STOCKFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines look.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// How `stockflow run` writes the output topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputsMode {
    /// Each commit's messages in one Kafka transaction: a `read_committed`
    /// consumer sees every message exactly once, whatever crashes.
    ExactlyOnce,
    /// Sent after the commit and re-sent after a crash (for brokers without
    /// transactions): a consumer may see a message twice.
    AtLeastOnce,
}

/// One `KEY=VALUE` setting. The error never repeats the text: it may be a
/// password typed with the wrong separator.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        Some(_) => Err("expected KEY=VALUE, got an empty KEY".into()),
        None => Err(format!("expected KEY=VALUE, got {} characters without '='", s.chars().count())),
    }
}

impl GlobalArgs {
    /// Reads `--database-url-file` and `--kafka-options-file`, when given,
    /// into `database_url` and `kafka_options` (the file's settings first,
    /// so that `--kafka-option` wins). Errors name the file, never its
    /// content.
    pub fn read_secret_files(&mut self) -> Result<(), String> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
        };
        if let Some(path) = &self.database_url_file {
            let text = read(path, "--database-url-file")?;
            let url = text.lines().next().map(str::trim).unwrap_or_default();
            if url.is_empty() {
                return Err(format!("--database-url-file {} is empty", path.display()));
            }
            self.database_url = url.to_string();
        }
        if let Some(path) = &self.kafka_options_file {
            let text = read(path, "--kafka-options-file")?;
            let mut from_file = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let kv = parse_key_value(line)
                    .map_err(|e| format!("--kafka-options-file {} line {}: {e}", path.display(), n + 1))?;
                from_file.push(kv);
            }
            from_file.append(&mut self.kafka_options);
            self.kafka_options = from_file;
        }
        Ok(())
    }
}

/// `stockflow migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Also create the roles of least privilege (stockflow_processor,
    /// stockflow_reporting, stockflow_readonly) and grant them this
    /// database's tables (sinks/src/postgres/roles.sql); safe to run again.
    #[arg(long)]
    pub roles: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the database schema (safe to run again).
    Migrate(MigrateArgs),
    /// Load a deterministic catalog and opening stock (never overwrites).
    Seed(SeedArgs),
    /// Create the input and output topics if missing (safe to run again).
    Topics(TopicsArgs),
    /// Send simulated online orders, store sales and restocks.
    Produce(ProduceArgs),
    /// The long-running stream processor.
    Run(RunArgs),
    /// Check every derived table against the applied events: exit 0 when all
    /// hold, 3 with one line per difference.
    Reconcile,
    /// The stock of every product (or one) as of a past instant, as CSV.
    Stock(StockArgs),
    /// Dead-letter tools.
    Dlq(DlqArgs),
    /// Write the day partitions of old history to compressed files and drop
    /// them (or verify an archive's files).
    Archive(ArchiveArgs),
    /// The live web view (stock, alerts, sales by hour, rejections, health) and its JSON API.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on this HOST:PORT (a name such as localhost works too).
    #[arg(long, env = "STOCKFLOW_SERVE_ADDR", default_value = "127.0.0.1:8088")]
    pub addr: String,
}

/// An instant on the command line: RFC 3339 with any offset, kept in UTC.
fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{s:?} is not an RFC 3339 instant (e.g. 2026-11-20T10:00:00Z): {e}"))
}

fn parse_code(s: &str) -> Result<dataflow::ErrorCode, String> {
    dataflow::ErrorCode::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| {
        let all: Vec<&str> = dataflow::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        format!("unknown rejection code {s:?} (one of {})", all.join(", "))
    })
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("instant").required(true).args(["as_of", "processed_as_of"])))]
pub struct StockArgs {
    /// Event time: count the applied events with `occurred_at <= T`.
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub as_of: Option<DateTime<Utc>>,
    /// Processing time: count the events committed at or before T.
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub processed_as_of: Option<DateTime<Utc>>,
    /// Only this product.
    #[arg(long)]
    pub product: Option<String>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["before", "verify"])))]
pub struct ArchiveArgs {
    /// Archive every day (UTC, of commit time) before this date, YYYY-MM-DD;
    /// at most today.
    #[arg(long, value_name = "DATE", requires = "to")]
    pub before: Option<chrono::NaiveDate>,
    /// The directory the files and manifest.json go to (made if missing).
    #[arg(long, value_name = "DIR")]
    pub to: Option<std::path::PathBuf>,
    /// Only check the archive in DIR: every file of its manifest.json
    /// against its SHA-256 and number of rows.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["before", "to"])]
    pub verify: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Re-send rejected messages, unchanged, to the input topic they came from.
    Redrive(RedriveArgs),
}

#[derive(Debug, Args)]
pub struct RedriveArgs {
    /// The rejection code whose messages are re-sent (e.g. unknown_product).
    #[arg(long, value_parser = parse_code)]
    pub code: dataflow::ErrorCode,
    /// Only messages rejected (processed) at or after this instant.
    #[arg(long, value_name = "T", value_parser = parse_instant)]
    pub since: Option<DateTime<Utc>>,
    /// Count what would be re-sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Worker threads in this process.
    #[arg(long, env = "STOCKFLOW_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Exit 0 once everything up to the end of every input partition is
    /// committed and nothing new arrived for this many seconds.
    #[arg(long, env = "STOCKFLOW_EXIT_WHEN_IDLE")]
    pub exit_when_idle: Option<f64>,
    /// Length of an epoch (the unit of commit) in milliseconds.
    #[arg(long, env = "STOCKFLOW_EPOCH_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub epoch_ms: u64,
    /// Most messages one worker reads into one epoch.
    #[arg(long, env = "STOCKFLOW_MAX_EPOCH_MESSAGES", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_epoch_messages: u64,
    /// How far back in event time (hours) the in-memory dedup reaches; older
    /// ids are looked up in PostgreSQL.
    #[arg(long, env = "STOCKFLOW_DEDUP_HORIZON_HOURS", default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=8760))]
    pub dedup_horizon_hours: u32,
    /// At most this many event ids in each worker's dedup memory (about
    /// 300 bytes each); beyond it the oldest are looked up in PostgreSQL.
    #[arg(long, env = "STOCKFLOW_DEDUP_MAX_IDS", default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub dedup_max_ids: u64,
    /// How often (ms) to re-read products and suppliers.
    #[arg(long, env = "STOCKFLOW_REFERENCE_REFRESH_MS", default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub reference_refresh_ms: u64,
    /// How the output topics are written.
    #[arg(long, env = "STOCKFLOW_OUTPUTS", value_enum, default_value_t = OutputsMode::ExactlyOnce)]
    pub outputs: OutputsMode,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[arg(long, env = "STOCKFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Timely multi-process: number of processes.
    #[arg(long, env = "STOCKFLOW_PROCESSES", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub processes: u16,
    /// Timely multi-process: this process's index (0-based; process 0 commits).
    #[arg(long, env = "STOCKFLOW_PROCESS", default_value_t = 0)]
    pub process: u16,
    /// Timely multi-process: host:port of every process, comma-separated, in index order.
    #[arg(long, env = "STOCKFLOW_HOSTS", value_delimiter = ',')]
    pub hosts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    /// Number of products.
    #[arg(long, env = "STOCKFLOW_SEED_PRODUCTS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub products: u32,
    /// Number of suppliers.
    #[arg(long, env = "STOCKFLOW_SEED_SUPPLIERS", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub suppliers: u32,
}

#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// Partitions for each new topic.
    #[arg(long, env = "STOCKFLOW_PARTITIONS", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: i32,
    /// Replication factor for each new topic.
    #[arg(long, env = "STOCKFLOW_REPLICATION", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub replication: i32,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Number of messages (0 = until --duration ends or forever).
    #[arg(long, env = "STOCKFLOW_PRODUCE_COUNT", default_value_t = 10_000)]
    pub count: u64,
    /// Messages per second (0 = as fast as possible).
    #[arg(long, env = "STOCKFLOW_PRODUCE_RATE", default_value_t = 0.0)]
    pub rate: f64,
    /// Stop after this many seconds.
    #[arg(long, env = "STOCKFLOW_PRODUCE_DURATION")]
    pub duration: Option<f64>,
    /// RNG seed: the same seed and options give a byte-identical stream (default: random, printed).
    #[arg(long, env = "STOCKFLOW_PRODUCE_SEED")]
    pub seed: Option<u64>,
    /// Spread event time (`occurred_at`) over this many days, with a day/night rhythm.
    #[arg(long, env = "STOCKFLOW_PRODUCE_DAYS", default_value_t = 1.0)]
    pub days: f64,
    /// Start of the event-time window: RFC 3339 or YYYY-MM-DD (UTC). Default: now minus --days.
    #[arg(long, env = "STOCKFLOW_PRODUCE_START")]
    pub start: Option<String>,
    /// Share of messages that are exact re-sends of an earlier one.
    #[arg(long, env = "STOCKFLOW_DUPLICATE_RATIO", default_value_t = 0.0)]
    pub duplicate_ratio: f64,
    /// Share of messages that break a contract rule (every rejection code in turn).
    #[arg(long, env = "STOCKFLOW_INVALID_RATIO", default_value_t = 0.0)]
    pub invalid_ratio: f64,
    /// Write `topic<TAB>key<TAB>value` lines to this file ('-' = stdout) instead of Kafka.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Sets up `tracing` on stderr; `RUST_LOG` filters (default `info`).
pub fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn,tokio_postgres=warn,librdkafka=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
