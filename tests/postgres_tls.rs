//! PostgreSQL over TLS, as libpq's `sslmode` says: a private server with a
//! certificate for 127.0.0.1 signed by a CA this test makes. `verify-full`
//! with that CA connects (and the session is encrypted); a CA the client
//! does not trust, or a host name the certificate does not name, ends the
//! command in one line and a non-zero exit, at once (never retried).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{PrivatePostgres, TestEnv, tls};

fn failure_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("stockflow: error:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    errors[0].to_string()
}

#[tokio::test]
async fn verify_full_connects_to_a_trusted_server_and_refuses_the_others() {
    let dir = std::env::temp_dir().join(common::unique("sfpgtls"));
    std::fs::create_dir_all(&dir).unwrap();
    let ours = tls::make_ca(&dir, "ours");
    let stranger = tls::make_ca(&dir, "stranger");
    let (cert, key) = tls::make_server_cert(&dir, "ours", "postgres", "IP:127.0.0.1");
    let pg = PrivatePostgres::start_with(Some((&cert, &key)));
    let env = TestEnv::new_on("pgtls", &pg.url()).await;
    let with = |params: &str| format!("{}?{params}", env.database_url);

    // Trusted: migrate and seed over a verified connection, which the
    // server sees as encrypted.
    let verified =
        with(&format!("sslmode=verify-full&sslrootcert={}&application_name=sftls", ours.display()));
    for args in [&["migrate"][..], &["seed", "--products", "10", "--suppliers", "2"]] {
        let out = env.command(args).env("DATABASE_URL", &verified).output().unwrap();
        assert!(out.status.success(), "{args:?} over verify-full: {}", String::from_utf8_lossy(&out.stderr));
    }
    let kv = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} sslmode=verify-full sslrootcert='{}'",
        pg.port,
        env.db_name,
        ours.display()
    );
    let out = env.command(&["reconcile"]).env("DATABASE_URL", &kv).output().unwrap();
    assert!(out.status.success(), "key=value form: {}", String::from_utf8_lossy(&out.stderr));
    // `require` encrypts without verifying, as libpq's does.
    let out = env.command(&["reconcile"]).env("DATABASE_URL", with("sslmode=require")).output().unwrap();
    assert!(out.status.success(), "require: {}", String::from_utf8_lossy(&out.stderr));
    // The server's own view: the sessions of the verified runs were
    // encrypted (log_connections notes "SSL enabled" per connection).
    let log = std::fs::read_to_string(pg.dir.join("server.log")).unwrap();
    let ours_logged: Vec<&str> =
        log.lines().filter(|l| l.contains("connection authorized") && l.contains("sftls")).collect();
    assert!(!ours_logged.is_empty(), "no connection of application sftls in the server log");
    assert!(ours_logged.iter().all(|l| l.contains("SSL enabled")), "{ours_logged:?}");

    // Refused: a CA we do not trust; a host name the certificate does not
    // name (it names 127.0.0.1 only); a server file that is not there.
    let untrusted = with(&format!("sslmode=verify-full&sslrootcert={}", stranger.display()));
    let wrong_host = with(&format!("sslmode=verify-full&sslrootcert={}", ours.display()))
        .replace("127.0.0.1", "localhost");
    let missing = with("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem");
    for (what, url, needle) in [
        ("untrusted CA", &untrusted, "TLS"),
        ("wrong host name", &wrong_host, "TLS"),
        ("missing root certificate", &missing, "sslrootcert"),
    ] {
        for args in [&["migrate"][..], &["run", "--exit-when-idle", "1"]] {
            let started = Instant::now();
            let out = common::output_within(
                env.command(args)
                    .env("DATABASE_URL", url)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap(),
                Duration::from_secs(60),
            );
            let line = failure_line(&out);
            assert!(line.contains(needle), "{what}, {args:?}: {line}");
            eprintln!("{what}, {args:?}: {line} ({:?})", started.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
