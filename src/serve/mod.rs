//! `stockflow serve` (contract 5.5): the live web view for the people who
//! run the shops, on axum.
//!
//! - `/` and `/assets/*`: the page, its script and style, compiled into the
//!   binary (no CDN: it works with no internet access).
//! - `/api/stock` (the contract's JSON array), `/api/alerts`,
//!   `/api/sales/hourly`, `/api/rejections`, `/api/health`: committed
//!   state, read by the queries of `sinks::postgres::view`.
//! - `/api/events`: server-sent events, one `commit` event per new row of
//!   `epochs` (one poller for all clients, every [`POLL`]); the page
//!   re-reads the API on each.
//! - `/healthz`: 200 while the server runs.
//!
//! It only reads: its sessions are `default_transaction_read_only`, and a
//! role with `SELECT` on the tables is enough (README, "Live view").

mod assets;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{NaiveDate, Utc};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sinks::postgres::view::{self, LastCommit};
use tokio::sync::{RwLock, watch};
use tokio_postgres::Client;

use crate::cli::{GlobalArgs, ServeArgs};

/// How often the commit poller reads the newest row of `epochs`.
const POLL: Duration = Duration::from_millis(250);
/// A heartbeat older than this means the processor is gone (it beats every
/// second, see `run::spawn_status_heartbeat`).
const HEARTBEAT_STALE_S: f64 = 15.0;

/// One read-only session, opened again when it closes.
struct Db {
    url: String,
    client: RwLock<Option<Arc<Client>>>,
}

impl Db {
    async fn open(url: &str) -> Result<Client, sinks::SinkError> {
        let client = sinks::postgres::connect(url).await?;
        client
            .batch_execute(
                "SET default_transaction_read_only = on; SET statement_timeout = '10s'; \
                 SET application_name = 'stockflow serve'",
            )
            .await
            .map_err(sinks::SinkError::pg("configure the read-only session"))?;
        Ok(client)
    }

    async fn client(&self) -> Result<Arc<Client>, sinks::SinkError> {
        if let Some(c) = self.client.read().await.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let mut slot = self.client.write().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let c = Arc::new(Self::open(&self.url).await?);
        *slot = Some(c.clone());
        Ok(c)
    }
}

struct App {
    db: Db,
    commits: watch::Receiver<Option<LastCommit>>,
    /// Turns true at shutdown: it ends the event streams, which would
    /// otherwise hold the graceful shutdown open for as long as a page is.
    stopping: watch::Receiver<bool>,
}

type Shared = Arc<App>;

/// An API failure: 503 with `{"error": ...}` (the database is the only
/// thing that fails here, and it may come back).
struct ApiError(sinks::SinkError);

impl From<sinks::SinkError> for ApiError {
    fn from(e: sinks::SinkError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let msg = self.0.to_string();
        tracing::warn!(error = %msg, "live view: a read failed");
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": msg }))).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

pub async fn serve(g: &GlobalArgs, args: &ServeArgs) -> Result<()> {
    let first = Db::open(&g.database_url).await?;
    // Fails here, in one line, when the schema is missing or too old.
    first
        .query_one("SELECT count(*) FROM processor_status", &[])
        .await
        .context("the database has no live-view tables (has `stockflow migrate` run?)")?;
    let db = Db { url: g.database_url.clone(), client: RwLock::new(Some(Arc::new(first))) };
    let initial = view::last_commit(&*db.client().await?).await?;
    let (tx, commits) = watch::channel(initial);
    let (stop, stopping) = watch::channel(false);
    let app = Arc::new(App { db, commits, stopping });
    tokio::spawn(poll_commits(app.clone(), tx));

    let listener = tokio::net::TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let local = listener.local_addr().context("listening address")?;
    tracing::info!(addr = %local, "live view at http://{local}/");
    eprintln!("serve: live view at http://{local}/ (Ctrl-C stops)");
    let shutdown = async move {
        crate::commands::shutdown_signal().await;
        tracing::info!("live view: shutting down");
        let _ = stop.send(true);
    };
    axum::serve(listener, router(app)).with_graceful_shutdown(shutdown).await.context("serve")?;
    Ok(())
}

fn router(app: Shared) -> Router {
    Router::new()
        .route("/", get(|| async { asset(assets::INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/assets/app.js", get(|| async { asset(assets::APP_JS, "text/javascript; charset=utf-8") }))
        .route("/assets/app.css", get(|| async { asset(assets::APP_CSS, "text/css; charset=utf-8") }))
        .route("/assets/favicon.svg", get(|| async { asset(assets::FAVICON_SVG, "image/svg+xml") }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/stock", get(api_stock))
        .route("/api/alerts", get(api_alerts))
        .route("/api/sales/hourly", get(api_sales_hourly))
        .route("/api/rejections", get(api_rejections))
        .route("/api/health", get(api_health))
        .route("/api/events", get(api_events))
        .with_state(app)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Publishes each new newest row of `epochs` to the SSE clients. A failed
/// read is logged once per outage; the clients keep their last state.
async fn poll_commits(app: Shared, tx: watch::Sender<Option<LastCommit>>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let read = match app.db.client().await {
            Ok(c) => view::last_commit(&c).await,
            Err(e) => Err(e),
        };
        match read {
            Ok(last) => {
                if failing {
                    tracing::info!("live view: PostgreSQL answers again");
                    failing = false;
                }
                tx.send_if_modified(|cur| {
                    let changed = *cur != last;
                    *cur = last;
                    changed
                });
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "live view: cannot read the last commit; retrying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn api_stock(State(app): State<Shared>) -> ApiResult<Vec<view::StockRow>> {
    Ok(Json(view::stock(&*app.db.client().await?).await?))
}

#[derive(Deserialize)]
struct AlertsQuery {
    limit: Option<i64>,
}

async fn api_alerts(
    State(app): State<Shared>,
    Query(q): Query<AlertsQuery>,
) -> ApiResult<Vec<view::AlertRow>> {
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    Ok(Json(view::alerts(&*app.db.client().await?, limit).await?))
}

#[derive(Deserialize)]
struct DayQuery {
    day: Option<NaiveDate>,
}

#[derive(Serialize)]
struct DaySales {
    day: NaiveDate,
    hours: Vec<view::HourlySales>,
}

async fn api_sales_hourly(State(app): State<Shared>, Query(q): Query<DayQuery>) -> ApiResult<DaySales> {
    let day = q.day.unwrap_or_else(|| Utc::now().date_naive());
    Ok(Json(DaySales { day, hours: view::sales_hourly(&*app.db.client().await?, day).await? }))
}

async fn api_rejections(State(app): State<Shared>) -> ApiResult<Vec<view::RejectionCount>> {
    Ok(Json(view::rejections_24h(&*app.db.client().await?).await?))
}

/// `/api/health`: the database's view plus one word for the page.
#[derive(Serialize)]
struct HealthBody {
    /// `ok`, `waiting_kafka`, `waiting_postgres`, `no_heartbeat` (no
    /// processor has beaten within 15 s) or `never_run`.
    status: &'static str,
    #[serde(flatten)]
    health: view::Health,
}

fn status_of(h: &view::Health) -> &'static str {
    let live: Vec<_> = h.processors.iter().filter(|p| p.heartbeat_age_seconds < HEARTBEAT_STALE_S).collect();
    if h.processors.is_empty() && h.last_commit.is_none() {
        "never_run"
    } else if live.is_empty() {
        "no_heartbeat"
    } else if live.iter().any(|p| p.waiting_postgres) {
        "waiting_postgres"
    } else if live.iter().any(|p| p.waiting_kafka) {
        "waiting_kafka"
    } else {
        "ok"
    }
}

async fn api_health(State(app): State<Shared>) -> ApiResult<HealthBody> {
    let health = view::health(&*app.db.client().await?).await?;
    Ok(Json(HealthBody { status: status_of(&health), health }))
}

/// One `commit` event now (the current newest commit, or `null`), then one
/// per new commit.
async fn api_events(State(app): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = app.commits.clone();
    let mut stopping = app.stopping.clone();
    let stream = futures_util::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let last = *rx.borrow_and_update();
        let event = Event::default().event("commit").json_data(last).unwrap_or_default();
        Some((Ok(event), (rx, false)))
    })
    .take_until(async move {
        let _ = stopping.wait_for(|s| *s).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(age: f64, waiting_kafka: bool, waiting_postgres: bool) -> view::ProcessorHeartbeat {
        view::ProcessorHeartbeat {
            process: 0,
            started_at: Utc::now(),
            heartbeat_age_seconds: age,
            workers: 1,
            waiting_kafka,
            waiting_postgres,
            consumer_lag_messages: 0,
            lag_seconds: 0.0,
        }
    }

    fn health(processors: Vec<view::ProcessorHeartbeat>, committed: bool) -> view::Health {
        view::Health {
            last_commit: committed.then(|| LastCommit { epoch: 1, committed_at: Utc::now() }),
            seconds_since_commit: committed.then_some(1.0),
            commits_last_minute: 0,
            messages_last_minute: 0,
            processors,
        }
    }

    #[test]
    fn status_words() {
        assert_eq!(status_of(&health(vec![], false)), "never_run");
        assert_eq!(status_of(&health(vec![], true)), "no_heartbeat");
        assert_eq!(status_of(&health(vec![beat(20.0, false, false)], true)), "no_heartbeat");
        assert_eq!(status_of(&health(vec![beat(0.5, false, false)], false)), "ok");
        assert_eq!(status_of(&health(vec![beat(0.5, true, false)], true)), "waiting_kafka");
        assert_eq!(status_of(&health(vec![beat(0.5, true, true)], true)), "waiting_postgres");
        // A stale process's old flags do not count.
        assert_eq!(status_of(&health(vec![beat(0.5, false, false), beat(30.0, true, false)], true)), "ok");
    }
}
