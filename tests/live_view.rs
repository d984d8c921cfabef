//! The live view (contract 5.5) in a real browser: Debian's headless
//! Chromium, driven by playwright-core (`tests/browser/drive.mjs`), against
//! a real `stockflow serve` on a read-only role over a real database that a
//! real processor is feeding from Apache Kafka.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestEnv, free_port, http_get, send_raw};
use serde_json::{Value, json};

/// The browser driver: one JSON command per line in, one answer per line out.
struct Browser {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Browser {
    fn start() -> Browser {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules is missing: run scripts/deps.sh (npm ci in tests/browser)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("drive.mjs"))
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node (scripts/deps.sh installs it)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Browser { child, stdin, stdout }
    }

    /// Sends `cmd` and returns the page's state; fails the test on an error,
    /// on any request to another host, and on any console error.
    fn send(&mut self, cmd: Value) -> Value {
        writeln!(self.stdin, "{cmd}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let answer: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("driver said {line:?}: {e}"));
        assert_eq!(answer["ok"], true, "{cmd}: {}", answer["error"]);
        assert_eq!(answer["offHost"], json!([]), "the page fetched from another host");
        assert_eq!(answer["consoleErrors"], json!([]), "the page logged errors");
        answer["state"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"cmd": "quit"}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a background child when the test ends, however it ends.
struct Reaper(Option<Child>);

impl Reaper {
    fn terminate(&mut self) -> std::process::Output {
        let child = self.0.take().unwrap();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        common::output_within(child, Duration::from_secs(30))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sale(kind: &str, id: &str, product: &str, qty: u32, at: &str) -> String {
    let (event_type, extra) = match kind {
        "store" => ("store_sale", r#""store_id":"ST-1""#),
        _ => ("online_order", r#""customer_id":"C-1""#),
    };
    format!(
        r#"{{"event_id":"{id}","event_type":"{event_type}","occurred_at":"{at}","product_id":"{product}","quantity":{qty},"order_id":"O-{id}",{extra},"unit_price":2.50}}"#
    )
}

/// `url` with its user replaced by `user` (no password: loopback trust, as
/// the test cluster is set up).
fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}@{host}")
}

fn artefact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[tokio::test]
async fn live_view_shows_committed_state_and_follows_commits() {
    let env = TestEnv::new("liveview").await;
    env.prepare(24, 2);
    let client = env.client().await;
    let products: Vec<String> =
        env.rows("SELECT product_id FROM products ORDER BY product_id COLLATE \"C\"").await;
    // A known start: everything at 100 with reorder level 10, p0 at 4 (low).
    client
        .batch_execute(&format!(
            "UPDATE inventory SET quantity_on_hand = 100, opening_quantity = 100; \
             UPDATE products SET reorder_level = 10; \
             UPDATE inventory SET quantity_on_hand = 4, opening_quantity = 4 WHERE product_id = '{}'",
            products[0]
        ))
        .await
        .unwrap();
    let (p0, p1, p2, p3) = (&products[0], &products[1], &products[2], &products[3]);
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let first = [
        ("online_orders", p1.clone(), sale("online", "w1", p1, 3, &now)),
        ("store_sales", p2.clone(), sale("store", "w2", p2, 5, &now)),
        ("online_orders", p1.clone(), "{not json".to_string()),
    ];
    let msgs: Vec<common::Outgoing<'_>> =
        first.iter().map(|(t, k, v)| (*t, Some(k.as_bytes()), Some(v.as_bytes()))).collect();
    send_raw(&env, &msgs);
    env.run_to_idle(&["--workers", "1"]);

    // A role that can only read.
    let viewer = format!("{}_viewer", env.db_name);
    client
        .batch_execute(&format!(
            "CREATE ROLE {viewer} LOGIN; GRANT CONNECT ON DATABASE {db} TO {viewer}; \
             GRANT USAGE ON SCHEMA public TO {viewer}; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {viewer}",
            db = env.db_name
        ))
        .await
        .unwrap();

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut serve = Reaper(Some(
        env.command(&["serve", "--addr", &addr])
            .env("DATABASE_URL", with_user(&env.database_url, &viewer))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let started = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "serve did not listen within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get(&addr, "/healthz").0, 200);

    // GET /api/stock, as the contract says, equals the database.
    let (status, body) = http_get(&addr, "/api/stock");
    assert_eq!(status, 200, "{body}");
    let stock: Vec<Value> = serde_json::from_str(&body).unwrap();
    let expected = env
        .rows(
            "SELECT p.product_id, p.name, COALESCE(i.quantity_on_hand, 0), p.reorder_level, \
               COALESCE(i.quantity_on_hand, 0) <= p.reorder_level \
             FROM products p LEFT JOIN inventory i USING (product_id) ORDER BY p.product_id COLLATE \"C\"",
        )
        .await;
    let actual: Vec<String> = stock
        .iter()
        .map(|o| {
            let mut keys: Vec<&String> = o.as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(keys, ["low", "name", "product_id", "quantity_on_hand", "reorder_level"], "{o}");
            format!(
                "{}|{}|{}|{}|{}",
                o["product_id"].as_str().unwrap(),
                o["name"].as_str().unwrap(),
                o["quantity_on_hand"].as_i64().unwrap(),
                o["reorder_level"].as_i64().unwrap(),
                o["low"].as_bool().unwrap()
            )
        })
        .collect();
    assert_eq!(actual, expected);
    let (status, body) = http_get(&addr, "/api/nothing-here");
    assert_eq!(status, 404, "{body}");

    // The page shows what the database holds.
    let mut browser = Browser::start();
    let url = format!("http://{addr}/");
    let page = browser.send(json!({"cmd": "open", "url": url}));
    let rows = page["rows"].as_array().unwrap();
    assert_eq!(rows.len(), products.len());
    for (row, api) in rows.iter().zip(&stock) {
        assert_eq!(row["product_id"], api["product_id"]);
        assert_eq!(row["quantity_on_hand"], api["quantity_on_hand"]);
        assert_eq!(row["reorder_level"], api["reorder_level"]);
        assert_eq!(row["low"], api["low"]);
        assert_eq!(row["marked"], api["low"], "low rows, and only they, are marked: {row}");
    }
    let low = stock.iter().filter(|o| o["low"] == true).count();
    assert_eq!(low, 1);
    assert_eq!(page["cards"]["products"], products.len().to_string());
    assert_eq!(page["cards"]["low"], low.to_string());
    assert_eq!(page["cards"]["lowAlarm"], true);
    assert_eq!(page["cards"]["revenue"], "20.00", "3 + 5 units at 2.50 today");
    assert_eq!(page["rejections"], json!([{"code": "malformed_json", "count": 1}]));
    let hour = chrono::Utc::now().format("%H").to_string().parse::<i64>().unwrap();
    let bars: Vec<(i64, String)> = page["bars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["hour"].as_i64().unwrap(), b["source"].as_str().unwrap().to_string()))
        .collect();
    // (The sales were stamped with the hour `now` had; the clock may have
    // turned since: then the chart is of that hour still, or of yesterday.)
    if now[11..13].parse::<i64>().unwrap() == hour {
        assert_eq!(bars, [(hour, "online".to_string()), (hour, "store".to_string())]);
    }
    let alerts: Vec<(String, String)> = page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["product_id"].as_str().unwrap().to_string(), a["kind"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(alerts, [(p0.clone(), "low".to_string())], "p0 was low when first seen");
    let time_origin = page["timeOrigin"].clone();
    let events_before = page["commitEvents"].as_i64().unwrap();

    // New events while the page is open: it follows without a reload.
    let mut processor = Reaper(Some(env.spawn(&[
        "run",
        "--workers",
        "1",
        "--epoch-ms",
        "200",
        "--reference-refresh-ms",
        "200",
    ])));
    let second = [("online_orders", p3.clone(), sale("online", "w3", p3, 95, &now))];
    let msgs: Vec<common::Outgoing<'_>> =
        second.iter().map(|(t, k, v)| (*t, Some(k.as_bytes()), Some(v.as_bytes()))).collect();
    send_raw(&env, &msgs);
    let waiting = format!(
        "document.querySelector('#stock-body tr[data-product=\"{p3}\"]')?.dataset.quantity === '5' && \
         document.querySelector('#alert-feed li[data-product=\"{p3}\"][data-kind=\"low\"]') !== null"
    );
    let page = browser.send(json!({"cmd": "wait", "js": waiting, "timeout_ms": 30000}));
    let shown = chrono::Utc::now();
    let committed: String = env
        .rows("SELECT to_char(processed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM events_log WHERE event_id = 'w3'")
        .await
        .remove(0);
    let committed = chrono::DateTime::parse_from_rfc3339(&committed).unwrap();
    eprintln!(
        "live view: the page showed w3 {} ms after its commit",
        (shown - committed.with_timezone(&chrono::Utc)).num_milliseconds()
    );
    assert_eq!(page["timeOrigin"], time_origin, "the page updated itself, without a reload");
    assert_eq!(page["navigations"], 1);
    assert!(page["commitEvents"].as_i64().unwrap() > events_before, "a commit event arrived");
    assert_eq!(page["cards"]["low"], "2");
    assert_eq!(page["alerts"][0]["product_id"], p3.as_str(), "the newest alert comes first");
    let page = browser.send(json!({"cmd": "wait", "js": "document.getElementById('health-pill').dataset.status === 'ok'", "timeout_ms": 15000}));
    assert_eq!(page["health"], "ok", "a running processor beats");

    browser.send(json!({"cmd": "screenshot", "path": artefact("live-view.png")}));
    eprintln!("live view: screenshot at {}", artefact("live-view.png").display());

    // Search narrows the table to matching products.
    let page = browser.send(json!({"cmd": "type", "selector": "#search", "text": p3}));
    let rows = page["rows"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r["product_id"].as_str().unwrap().contains(p3.as_str())));

    drop(browser);
    let stopped = processor.terminate();
    assert!(stopped.status.success(), "{}", String::from_utf8_lossy(&stopped.stderr));
    let stopped = serve.terminate();
    assert!(
        stopped.status.success(),
        "serve stops cleanly on SIGTERM: {}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    client.batch_execute(&format!("DROP OWNED BY {viewer}; DROP ROLE {viewer}")).await.unwrap();
}

#[test]
fn serve_reports_an_unreachable_database_in_one_line() {
    let out = Command::new(common::BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    common::assert_one_line_failure(&out, "cannot connect to PostgreSQL");
}
