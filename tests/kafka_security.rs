//! Secure clients: a private Apache Kafka node with a SASL_SSL listener
//! (SCRAM-SHA-512, a certificate from a CA this test makes with openssl).
//! stockflow's commands connect through `STOCKFLOW_KAFKA_OPTIONS`; a wrong
//! password or a certificate signed by a CA the client does not trust gives
//! a one-line error and a non-zero exit, never an endless retry.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{PrivateKafka, TestEnv, free_port, tls};

const USER: &str = "stockflow";
const PASSWORD: &str = "s3cret-Pa55word";
/// A user the broker knows but whose ACLs allow nothing.
const INTRUDER: &str = "intruder";

/// The broker's key and certificate for 127.0.0.1, signed by CA `ca`, as
/// one PEM file (PKCS#8 key, then the certificate) for a PEM keystore.
fn make_broker_keystore(dir: &Path, ca: &str) -> std::path::PathBuf {
    let (pem, key) = tls::make_server_cert(dir, ca, "broker", "IP:127.0.0.1,DNS:localhost");
    let keystore = dir.join("broker-keystore.pem");
    let text = std::fs::read_to_string(key).unwrap() + &std::fs::read_to_string(pem).unwrap();
    std::fs::write(&keystore, text).unwrap();
    keystore
}

/// Runs `cmd`, failing the test if it has not ended within `limit`.
fn output_within(mut cmd: Command, limit: Duration) -> Output {
    common::output_within(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), limit)
}

/// `STOCKFLOW_KAFKA_OPTIONS` for SCRAM over TLS (KAFKA_BROKERS names the
/// SASL_SSL port).
fn options(password: &str, ca: &Path) -> String {
    format!(
        "security.protocol=SASL_SSL,sasl.mechanism=SCRAM-SHA-512,sasl.username={USER},sasl.password={password},ssl.ca.location={}",
        ca.display()
    )
}

/// Asserts a failed command said why in one line, without the password.
fn assert_one_line_failure(out: &Output, what: &str, expect: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: must fail: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("stockflow: error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line: {stderr}");
    assert!(expect.iter().any(|e| errors[0].contains(e)), "{what}: the error names the cause: {stderr}");
    eprintln!("{what}: {}", errors[0]);
    assert!(
        !stderr.contains(PASSWORD) && !stderr.contains("wrong-password"),
        "{what}: no password in the output: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
}

#[tokio::test]
async fn sasl_ssl_connects_and_refusals_end_in_one_line() {
    let dir = std::env::temp_dir().join(common::unique("sfsasl"));
    std::fs::create_dir_all(&dir).unwrap();
    tls::make_ca(&dir, "ours");
    tls::make_ca(&dir, "stranger");
    let keystore = make_broker_keystore(&dir, "ours");
    let sasl_port = free_port();
    let properties = format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:@CONTROLLER_PORT@
listeners=PLAINTEXT://127.0.0.1:@PORT@,CONTROLLER://127.0.0.1:@CONTROLLER_PORT@,SASL_SSL://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:@PORT@,SASL_SSL://127.0.0.1:{sasl_port}
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:{USER}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location={}
log.dirs=@LOG_DIR@
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        keystore.display()
    );
    let scram = format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]");
    let intruder = format!("SCRAM-SHA-512=[name={INTRUDER},password={PASSWORD}]");
    let kafka =
        PrivateKafka::start_with(Some(&properties), &["--add-scram", &scram, "--add-scram", &intruder]);

    let mut env = TestEnv::new("sasl").await;
    env.brokers = format!("127.0.0.1:{sasl_port}");
    let ours = dir.join("ours-ca.pem");
    let with = |opts: String, args: &[&str]| {
        let mut c = env.command(args);
        c.env("STOCKFLOW_KAFKA_OPTIONS", opts);
        c
    };

    // The right credentials and CA: the whole pipeline over SASL_SSL.
    env.ok(&["migrate"]);
    env.ok(&["seed", "--products", "30", "--suppliers", "5"]);
    let good = options(PASSWORD, &ours);
    let out = output_within(with(good.clone(), &["topics", "--partitions", "1"]), Duration::from_secs(60));
    assert!(out.status.success(), "topics over SASL_SSL: {}", String::from_utf8_lossy(&out.stderr));
    let out = output_within(
        with(good.clone(), &["produce", "--count", "300", "--seed", "3", "--quiet"]),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "produce over SASL_SSL: {}", String::from_utf8_lossy(&out.stderr));
    let out = output_within(
        with(good.clone(), &["run", "--exit-when-idle", "1", "--epoch-ms", "50"]),
        Duration::from_secs(90),
    );
    assert!(out.status.success(), "run over SASL_SSL: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(env.count("SELECT count(*) FROM events_log").await, 300);

    // A wrong password: every command ends within 30 s with one line.
    let bad = options("wrong-password", &ours);
    for args in [&["topics"][..], &["produce", "--count", "10", "--quiet"], &["run", "--exit-when-idle", "1"]]
    {
        let out = output_within(with(bad.clone(), args), Duration::from_secs(30));
        assert_one_line_failure(
            &out,
            &format!("{args:?} with a wrong password"),
            &["Authentication", "authentication"],
        );
    }

    // A broker certificate from a CA the client does not trust.
    let untrusted = options(PASSWORD, &dir.join("stranger-ca.pem"));
    for args in [&["topics"][..], &["run", "--exit-when-idle", "1"]] {
        let out = output_within(with(untrusted.clone(), args), Duration::from_secs(30));
        assert_one_line_failure(
            &out,
            &format!("{args:?} with an untrusted certificate"),
            &["certificate", "SSL"],
        );
    }
    // Authenticated, but the ACLs (StandardAuthorizer, no ACL for this
    // user) allow nothing: a refusal, not an outage, so one line at once.
    let denied = options(PASSWORD, &ours)
        .replace(&format!("sasl.username={USER}"), &format!("sasl.username={INTRUDER}"));
    for args in [&["topics"][..], &["produce", "--count", "10", "--quiet"], &["run", "--exit-when-idle", "1"]]
    {
        let out = output_within(with(denied.clone(), args), Duration::from_secs(30));
        assert_one_line_failure(&out, &format!("{args:?} without ACLs"), &["uthoriz", "may not see it"]);
    }
    drop(kafka);
    let _ = std::fs::remove_dir_all(&dir);
}
