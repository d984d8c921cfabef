//! Shared helpers for the integration tests: a fresh database and a fresh
//! topic prefix per test, against the real PostgreSQL and Kafka-API broker
//! named by `DATABASE_URL` / `KAFKA_BROKERS` (loopback defaults), and a way to
//! run the real `stockflow` binary.
#![allow(dead_code, clippy::unwrap_used)]

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub mod reference;
pub mod tls;

pub const BIN: &str = env!("CARGO_BIN_EXE_stockflow");

pub fn base_database_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/stockflow".into())
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// Whether the fault tests run their long form (`STOCKFLOW_FAULTS=long`,
/// as `scripts/faults.sh long` sets it): more events, more kills, longer
/// outages. The default is the short form CI runs.
pub fn long_faults() -> bool {
    std::env::var("STOCKFLOW_FAULTS").is_ok_and(|v| v == "long")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test run: `<tag>_<pid>_<n>_<nanos>`.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{tag}_{}_{n}_{nanos}", std::process::id())
}

/// A fresh, empty database and a fresh topic prefix, dropped at the end.
pub struct TestEnv {
    pub database_url: String,
    /// The server's `postgres` database, where this env's database is
    /// created and dropped.
    admin_url: String,
    pub db_name: String,
    pub prefix: String,
    /// Bootstrap servers for this env's commands and reads (the shared
    /// broker unless a test points it at a private one).
    pub brokers: String,
}

fn url_with_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL has a database path");
    let query = url.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
    format!("{base}/{db}{query}")
}

impl TestEnv {
    pub async fn new(tag: &str) -> TestEnv {
        TestEnv::new_on(tag, &base_database_url()).await
    }

    /// A fresh database on the server of `server_url` (any database of it),
    /// e.g. a [`PrivatePostgres`].
    pub async fn new_on(tag: &str, server_url: &str) -> TestEnv {
        let db_name = unique(&format!("sf_{tag}"));
        let admin_url = url_with_db(server_url, "postgres");
        let (client, conn) =
            tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.unwrap_or_else(|e| {
                panic!("PostgreSQL at {admin_url} must be running (scripts/services.sh up): {e}")
            });
        tokio::spawn(conn);
        client.batch_execute(&format!("CREATE DATABASE {db_name}")).await.unwrap();
        TestEnv {
            database_url: url_with_db(server_url, &db_name),
            admin_url,
            db_name,
            prefix: format!("{}.", unique(tag)),
            brokers: brokers(),
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client
    }

    /// `stockflow ARGS` with this env's database, brokers and topic prefix.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("DATABASE_URL", &self.database_url)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("STOCKFLOW_TOPIC_PREFIX", &self.prefix)
            // STOCKFLOW_TEST_LOG turns the commands' logging up when a test
            // needs looking into (their stderr is in the failure message).
            .env("RUST_LOG", std::env::var("STOCKFLOW_TEST_LOG").unwrap_or_else(|_| "warn".into()));
        c
    }

    /// Starts `stockflow ARGS` in the background (stdout discarded, stderr kept).
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start stockflow")
    }

    /// Runs `stockflow ARGS` to completion, failing the test (with the
    /// command's stderr) if it has not ended within [`COMMAND_LIMIT`]: a
    /// run that never ends fails the suite instead of hanging it.
    pub fn stockflow(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run stockflow");
        output_within(child, COMMAND_LIMIT)
    }

    /// Like [`stockflow`], asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.stockflow(args);
        assert!(
            out.status.success(),
            "stockflow {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// Reads every partition of `topics` from the beginning (explicit
/// assignment, no consumer group) until `expected` records arrived or
/// `timeout` passed.
pub fn consume_all(topics: &[String], expected: usize, timeout: Duration) -> Vec<Record> {
    consume(&brokers(), topics, expected, timeout, None)
}

/// Reads every partition of `topics` from the beginning until nothing new
/// arrived for `quiet` (or `timeout` passed).
pub fn consume_until_quiet(topics: &[String], quiet: Duration, timeout: Duration) -> Vec<Record> {
    consume(&brokers(), topics, usize::MAX, timeout, Some(quiet))
}

/// Reads every partition of `topics` on `brokers` from the beginning, with
/// `read_committed` (librdkafka's default), until `expected` records
/// arrived, nothing new came for `quiet`, or `timeout` passed.
pub fn consume(
    brokers: &str,
    topics: &[String],
    expected: usize,
    timeout: Duration,
    quiet: Option<Duration>,
) -> Vec<Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("test"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for t in topics {
        let md = consumer.fetch_metadata(Some(t), Duration::from_secs(10)).unwrap();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(t, p.id(), Offset::Beginning).unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut last = Instant::now();
    while out.len() < expected && Instant::now() < deadline {
        if quiet.is_some_and(|q| last.elapsed() >= q) {
            break;
        }
        if let Some(r) = consumer.poll(Duration::from_millis(200)) {
            last = Instant::now();
            let m = r.unwrap();
            out.push(Record {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
            });
        }
    }
    out
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Best effort: keep a developer's server from filling up with test databases.
        let admin_url = self.admin_url.clone();
        let db = self.db_name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await.ok()?;
                tokio::spawn(conn);
                client.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await.ok()
            })
        })
        .join();
    }
}

/// The longest any one `stockflow` command of a test may take (the
/// largest runs take well under a minute on two cores).
pub const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// Asserts that a command failed with one line on stderr that says
/// `says` (the contract's rule for a wrong setting: no trace, no retry).
pub fn assert_one_line_failure(out: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line, got: {stderr}");
    assert!(stderr.contains(says), "{stderr}");
}

/// Waits for `child` (stdout and stderr piped) and fails the test if it
/// has not ended within `limit`: a wait that never ends (an endless retry,
/// a stalled end-of-input check) fails instead of hanging the suite. The
/// pipes are drained meanwhile, so a chatty child never blocks on them.
pub fn output_within(mut child: std::process::Child, limit: Duration) -> Output {
    fn drain(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            let err = stderr.join().unwrap();
            panic!("still running after {limit:?}: {}", String::from_utf8_lossy(&err));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// A loopback port free right now (the OS picks it; tests running in
/// parallel cannot collide as with ports computed from process ids).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// A message to send: topic (without prefix), key, value.
pub type Outgoing<'a> = (&'a str, Option<&'a [u8]>, Option<&'a [u8]>);

/// Counts the messages the broker refused.
#[derive(Default)]
struct Refused(std::sync::Mutex<Vec<String>>);

impl rdkafka::ClientContext for Refused {}

impl rdkafka::producer::ProducerContext for Refused {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

/// Sends `(topic, key, value)` messages (topic names without the env's
/// prefix) and waits until the broker has them all; fails the test if the
/// broker refused any.
pub fn send_raw(env: &TestEnv, messages: &[Outgoing<'_>]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer<Refused> = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("message.max.bytes", "4000000")
        .create_with_context(Refused::default())
        .unwrap();
    for (topic, key, value) in messages {
        let topic = env.topic(topic);
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topic);
        if let Some(k) = key {
            record = record.key(*k);
        }
        if let Some(v) = value {
            record = record.payload(*v);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let refused = producer.context().0.lock().unwrap().clone();
    assert!(refused.is_empty(), "the broker refused {} messages: {refused:?}", refused.len());
}

/// Lets `topic` (unprefixed) of `env` hold messages up to `bytes` (Kafka's
/// default is about 1 MB).
pub async fn allow_message_bytes(env: &TestEnv, topic: &str, bytes: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &env.brokers).create().unwrap();
    let name = env.topic(topic);
    let value = bytes.to_string();
    let change = AlterConfig::new(ResourceSpecifier::Topic(&name)).set("max.message.bytes", &value);
    for r in admin.alter_configs([&change], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
}

impl TestEnv {
    /// `migrate`, `seed`, `topics` with `partitions`.
    pub fn prepare(&self, products: u32, partitions: u32) {
        self.ok(&["migrate"]);
        self.ok(&["seed", "--products", &products.to_string(), "--suppliers", "10"]);
        self.ok(&["topics", "--partitions", &partitions.to_string()]);
    }

    /// `stockflow run --exit-when-idle 1` with fast epochs, plus `extra` args.
    pub fn run_to_idle(&self, extra: &[&str]) -> Output {
        let mut args =
            vec!["run", "--exit-when-idle", "1", "--epoch-ms", "50", "--reference-refresh-ms", "200"];
        args.extend_from_slice(extra);
        let out = self.stockflow(&args);
        assert!(
            out.status.success(),
            "stockflow run failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The rows of `query`, each as text joined by `|` (for comparisons).
    pub async fn rows(&self, query: &str) -> Vec<String> {
        let client = self.client().await;
        let wrapped = format!(
            "SELECT concat_ws('|', VARIADIC ARRAY(SELECT x::text FROM json_each_text(row_to_json(q)) AS j(k, x))) FROM ({query}) q"
        );
        client
            .query(&wrapped, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
            .collect()
    }

    /// `stockflow produce ARGS --quiet`; returns how many valid (new) events
    /// the producer says it sent.
    pub fn produce_valid(&self, args: &[&str]) -> i64 {
        let mut all = vec!["produce", "--quiet"];
        all.extend_from_slice(args);
        let out = self.stockflow(&all);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let summary = String::from_utf8_lossy(&out.stderr).to_string();
        // "produce: N messages (V valid, ...": V is the number after the parenthesis.
        summary.split(" (").nth(1).and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()).unwrap()
    }

    /// One integer.
    pub async fn count(&self, query: &str) -> i64 {
        let client = self.client().await;
        client.query_one(query, &[]).await.unwrap().get::<_, i64>(0)
    }

    /// The sum of the high watermarks of the input topics: where a
    /// processor that has read everything stands (`sum(next_offset)` of
    /// `source_offsets`). Transaction markers count as offsets.
    pub fn input_end(&self) -> i64 {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        let mut end = 0;
        for kind in dataflow::EventKind::ALL {
            let t = self.topic(kind.topic());
            let md = consumer.fetch_metadata(Some(&t), Duration::from_secs(10)).unwrap();
            for p in md.topics()[0].partitions() {
                end += consumer.fetch_watermarks(&t, p.id(), Duration::from_secs(10)).unwrap().1;
            }
        }
        end
    }

    /// Waits until the processor has stored progress up to [`Self::input_end`]
    /// (fails the test after `limit`).
    pub async fn wait_caught_up(&self, limit: Duration) {
        let end = self.input_end();
        let deadline = Instant::now() + limit;
        loop {
            let at = self.count("SELECT coalesce(sum(next_offset), 0)::bigint FROM source_offsets").await;
            if at >= end {
                return;
            }
            assert!(Instant::now() < deadline, "the processor stands at {at} of {end} after {limit:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every record of one of the env's topics (unprefixed name).
    pub fn read_topic(&self, topic: &str, expected: usize) -> Vec<Record> {
        consume(&self.brokers, &[self.topic(topic)], expected, Duration::from_secs(30), None)
    }

    /// Every record of the env's `topics` (unprefixed names) until nothing
    /// new came for `quiet`.
    pub fn read_until_quiet(&self, topics: &[&str], quiet: Duration) -> Vec<Record> {
        let topics: Vec<String> = topics.iter().map(|t| self.topic(t)).collect();
        consume(&self.brokers, &topics, usize::MAX, Duration::from_secs(120), Some(quiet))
    }
}

/// An Apache Kafka node of a test's own (`scripts/kafka.sh`, jars from the
/// machine's cache), on free loopback ports in a temporary directory, for
/// tests that kill, restart or reconfigure the broker without disturbing
/// the others. Removed on drop.
pub struct PrivateKafka {
    pub dir: std::path::PathBuf,
    pub port: u16,
    pub controller_port: u16,
}

fn kafka_script(args: &[&str]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    Command::new(script)
        .args(args)
        .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
        .output()
        .expect("run scripts/kafka.sh")
}

impl PrivateKafka {
    /// A new, formatted, running node with the default configuration.
    pub fn start() -> PrivateKafka {
        PrivateKafka::start_with(None, &[])
    }

    /// A new running node. `properties`, when given, is written as its
    /// `server.properties` with `@LOG_DIR@`, `@PORT@` and
    /// `@CONTROLLER_PORT@` replaced; `format_args` go to the one-time
    /// format (e.g. `--add-scram`).
    pub fn start_with(properties: Option<&str>, format_args: &[&str]) -> PrivateKafka {
        let dir = std::env::temp_dir().join(unique("sfkafka"));
        std::fs::create_dir_all(&dir).unwrap();
        let k = PrivateKafka { dir, port: free_port(), controller_port: free_port() };
        if let Some(p) = properties {
            let text = p
                .replace("@LOG_DIR@", k.dir.join("data").to_str().unwrap())
                .replace("@PORT@", &k.port.to_string())
                .replace("@CONTROLLER_PORT@", &k.controller_port.to_string());
            std::fs::write(k.dir.join("server.properties"), text).unwrap();
        }
        k.run_start(&format_args.join(" "));
        k
    }

    fn run_start(&self, format_args: &str) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
        let out = Command::new(script)
            .args([
                "start",
                self.dir.to_str().unwrap(),
                &self.port.to_string(),
                &self.controller_port.to_string(),
            ])
            .env("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
            .env("KAFKA_FORMAT_ARGS", format_args)
            .output()
            .expect("run scripts/kafka.sh");
        assert!(out.status.success(), "scripts/kafka.sh start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Its bootstrap address.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the broker dies mid-write, as in a power cut.
    pub fn kill(&self) {
        let out = kafka_script(&["kill", self.dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// SIGTERM and wait for the exit.
    pub fn stop(&self) {
        let out = kafka_script(&["stop", self.dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts it again on the same log directory; returns when it serves metadata.
    pub fn restart(&self) {
        self.run_start("");
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        let _ = kafka_script(&["kill", self.dir.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL server of a test's own (Debian's binaries; `initdb` in a
/// temporary directory, as the `postgres` user when the tests run as root),
/// on a free loopback port, for tests that stop or kill the database
/// without disturbing the others. Stopped and removed on drop.
pub struct PrivatePostgres {
    pub dir: std::path::PathBuf,
    pub port: u16,
    /// Server settings of every start (`-c name=value ...`).
    settings: String,
}

/// Debian's PostgreSQL programs (`/usr/lib/postgresql/<version>/bin`).
fn pg_bin(program: &str) -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/deps.sh)")
        .filter_map(|d| d.ok().map(|d| d.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb under /usr/lib/postgresql").join(program)
}

/// Runs a PostgreSQL program as the `postgres` user when we are root
/// (initdb and the server refuse root), else as ourselves.
fn as_postgres(program: &str, args: &[&str]) -> Output {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let bin = pg_bin(program);
    let mut c = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"))
}

impl PrivatePostgres {
    /// A new cluster (trust authentication on loopback), running.
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(None)
    }

    /// A new cluster that also speaks TLS with the certificate and key in
    /// `tls` (PEM files; copied into the data directory).
    pub fn start_with(tls: Option<(&std::path::Path, &std::path::Path)>) -> PrivatePostgres {
        let dir = std::env::temp_dir().join(unique("sfpg"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pg = PrivatePostgres { dir, port: free_port(), settings: String::new() };
        let data = pg.data();
        // The server's user must own its directory.
        let _ = Command::new("chown").args(["postgres:", pg.dir.to_str().unwrap()]).status();
        let out = as_postgres(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        if let Some((cert, key)) = tls {
            // The key must be the server user's and private to it.
            for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
                let to = std::path::Path::new(&data).join(to);
                std::fs::copy(from, &to).unwrap();
                let _ = Command::new("chown").args(["postgres:", to.to_str().unwrap()]).status();
                let _ = Command::new("chmod").args(["600", to.to_str().unwrap()]).status();
            }
            // Connections are logged with their TLS state ("SSL enabled").
            pg.settings =
                "-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c log_connections=on"
                    .into();
        }
        pg.restart();
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").to_str().unwrap().to_string()
    }

    /// A URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) on the same data directory; returns once it accepts connections.
    pub fn restart(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} {}",
            self.port,
            self.dir.display(),
            self.settings
        );
        let log = self.dir.join("server.log");
        let out = as_postgres(
            "pg_ctl",
            &["-D", &self.data(), "-l", log.to_str().unwrap(), "-w", "-t", "60", "-o", &options, "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// The PIDs of the server's processes (the postmaster and its children).
    pub fn pids(&self) -> Vec<String> {
        let pid_file = std::path::Path::new(&self.data()).join("postmaster.pid");
        let main = std::fs::read_to_string(pid_file).unwrap().lines().next().unwrap().trim().to_string();
        let children = Command::new("pgrep").args(["-P", &main]).output().unwrap();
        std::iter::once(main)
            .chain(String::from_utf8_lossy(&children.stdout).split_whitespace().map(String::from))
            .collect()
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to every process of the server.
    pub fn signal_all(&self, signal: &str) {
        let pids = self.pids();
        let status = Command::new("kill").arg(format!("-{signal}")).args(&pids).status().unwrap();
        assert!(status.success(), "kill -{signal} {pids:?}");
    }

    /// `pg_ctl stop -m immediate`: the server ends at once, as in a crash
    /// (recovery replays the WAL at the next start).
    pub fn stop_immediate(&self) {
        let out = as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = as_postgres("pg_ctl", &["-D", &self.data(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of `stockflow_waiting{what=WHAT}` on a processor's metrics
/// endpoint at `addr`, if it answers (None while it does not listen yet).
pub fn waiting_on(addr: &str, what: &str) -> Option<i64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let label = format!("what=\"{what}\"");
    body.lines()
        .find(|l| l.starts_with("stockflow_waiting{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `GET path` from the HTTP server at `addr` (HTTP/1.1, `Connection:
/// close`, 10 s read timeout): the status code and the body. A plain
/// socket, so that the test sees exactly what any client would.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap_or_else(|e| panic!("read GET {path}: {e}"));
    let out = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head: {out}"));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}
