//! Secrets stay secret: no password in an error message, a log line or
//! `--help`, whichever form the connection string takes, and passwords can
//! come from files instead of the environment.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::{BIN, TestEnv};

const SECRET: &str = "Sup3rS3cret";

/// `stockflow ARGS` with `envs`, logging at debug level so that every line
/// a password could reach is printed.
fn stockflow(args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(BIN).args(args).envs(envs.iter().copied()).env("RUST_LOG", "debug").output().unwrap()
}

fn everything(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn no_form_of_connection_string_shows_its_password() {
    // Nothing listens on port 1: each command fails and says where it tried.
    let dsns = [
        format!("postgres://postgres:{SECRET}@127.0.0.1:1/stockflow"),
        format!("postgres://postgres@127.0.0.1:1/stockflow?password={SECRET}"),
        format!("host=127.0.0.1 port=1 user=postgres password={SECRET} dbname=stockflow"),
        format!("host=127.0.0.1 port=1 user=postgres password='{SECRET} x' dbname=stockflow"),
    ];
    for dsn in &dsns {
        for args in [&["migrate"][..], &["run", "--exit-when-idle", "1"], &["reconcile"], &["serve"]] {
            let out = stockflow(args, &[("DATABASE_URL", dsn)]);
            let text = everything(&out);
            assert!(!out.status.success(), "{args:?} with {dsn:?} must fail: {text}");
            assert!(text.contains("cannot connect"), "{args:?}: {text}");
            assert!(!text.contains(SECRET), "{args:?} printed the password of {dsn:?}: {text}");
        }
    }
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let out = stockflow(
        &["run", "--help"],
        &[
            ("DATABASE_URL", &format!("postgres://u:{SECRET}@db/x")),
            ("STOCKFLOW_KAFKA_OPTIONS", &format!("sasl.password={SECRET}")),
        ],
    );
    let text = everything(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("--database-url-file") && text.contains("--kafka-options-file"), "{text}");
    assert!(!text.contains(SECRET), "--help printed a secret: {text}");

    // A setting typed with the wrong separator is not echoed either.
    let out = stockflow(&["topics", "--kafka-option", &format!("sasl.password:{SECRET}")], &[]);
    let text = everything(&out);
    assert!(!out.status.success());
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn connection_settings_can_come_from_files() {
    let env = TestEnv::new("secretfiles").await;
    let dir = std::env::temp_dir().join(common::unique("sfsecrets"));
    std::fs::create_dir_all(&dir).unwrap();

    // DATABASE_URL_FILE wins over DATABASE_URL (here a wrong one).
    let url_file = dir.join("database_url");
    std::fs::write(&url_file, format!("{}\n", env.database_url)).unwrap();
    let out = Command::new(BIN)
        .args(["migrate"])
        .env("DATABASE_URL", format!("postgres://postgres:{SECRET}@127.0.0.1:1/x"))
        .env("DATABASE_URL_FILE", &url_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", everything(&out));

    // A Kafka options file: its settings apply (a bootstrap address nobody
    // serves makes the command fail), and --kafka-option wins over it.
    let options = dir.join("kafka.properties");
    std::fs::write(&options, "# test settings\n\nbootstrap.servers=127.0.0.1:1\nclient.id = from-file\n")
        .unwrap();
    let topics = |extra: &[&str]| {
        let mut c = env.command(&["topics"]);
        c.env("STOCKFLOW_KAFKA_OPTIONS_FILE", &options).args(extra);
        c.output().unwrap()
    };
    let out = topics(&[]);
    assert!(!out.status.success());
    assert!(everything(&out).contains("127.0.0.1:1"), "{}", everything(&out));
    let out = topics(&["--kafka-option", &format!("bootstrap.servers={}", env.brokers)]);
    assert!(out.status.success(), "{}", everything(&out));

    // Unreadable or malformed files: one line naming the file, never its content.
    std::fs::write(&options, format!("sasl.password {SECRET}\n")).unwrap();
    let out = topics(&[]);
    let text = everything(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("kafka.properties line 1"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    let out =
        Command::new(BIN).args(["migrate"]).env("DATABASE_URL_FILE", dir.join("missing")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1, "{}", everything(&out));
    let _ = std::fs::remove_dir_all(&dir);
}
