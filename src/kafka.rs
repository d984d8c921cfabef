//! Reaching the Kafka brokers before a command relies on them.
//!
//! librdkafka retries every connection by itself and forever, so a broker
//! that is down and a broker that refuses us (a wrong SASL password, a
//! certificate we do not trust, no permission) look alike from the calls
//! that time out. The client's error callback tells them apart: it hears
//! the authentication and TLS failures. [`reach`] asks for metadata until
//! the brokers answer, fails at once with one line when they refuse us,
//! and either waits for a broker that is down (`stockflow run`, with one
//! log line and the `waiting` metric) or gives up after a timeout (the
//! one-shot commands).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use sinks::Failure;

use crate::metrics::{Metrics, WhatLabel};

/// How long to wait for brokers that do not answer.
#[derive(Debug, Clone, Copy)]
pub enum Patience {
    /// Give up after this long.
    Fail(Duration),
    /// Wait as long as it takes (the process may still be stopped by a signal).
    Wait,
}

/// Whether an error code from librdkafka means "this will not work by
/// waiting" (the one classification: [`sinks::error::kafka_code_failure`]).
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    sinks::error::kafka_code_failure(code) == Failure::Permanent
}

/// Keeps the first permanent error the client reports in the background.
#[derive(Default)]
struct Refusal(Mutex<Option<String>>);

impl ClientContext for Refusal {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code().is_some_and(is_permanent) {
            if let Ok(mut r) = self.0.lock() {
                r.get_or_insert_with(|| reason.to_string());
            }
        } else {
            tracing::debug!(error = %error, reason, "Kafka client error");
        }
    }
}

impl ConsumerContext for Refusal {}

/// Asks `config`'s brokers for metadata until they answer. Fails with one
/// line when they refuse this client, or when `patience` runs out; gives
/// up with [`sinks::SinkError::Interrupted`] once `stop` is set.
pub fn reach(
    config: &ClientConfig,
    patience: Patience,
    metrics: Option<&Metrics>,
    stop: Option<&AtomicBool>,
) -> Result<()> {
    let brokers = config.get("bootstrap.servers").unwrap_or("?").to_string();
    let consumer: BaseConsumer<Refusal> = config
        .create_with_context(Refusal::default())
        .map_err(|e| anyhow::anyhow!("Kafka client configuration: {e}"))?;
    let started = Instant::now();
    let mut wait = Duration::from_millis(200);
    let mut waiting = false;
    let set_waiting = |on: bool| {
        if let Some(m) = metrics {
            m.waiting.get_or_create(&WhatLabel { what: "kafka" }).set(i64::from(on));
        }
    };
    loop {
        let result = consumer.fetch_metadata(None, Duration::from_secs(3));
        // Background errors reach a consumer through its queue: serve it, so
        // that the context hears them (and see them here too).
        if result.is_err()
            && let Some(Err(e)) = consumer.poll(Duration::from_millis(100))
            && e.rdkafka_error_code().is_some_and(is_permanent)
            && let Ok(mut r) = consumer.context().0.lock()
        {
            r.get_or_insert_with(|| e.to_string());
        }
        let refused = consumer.context().0.lock().ok().and_then(|r| r.clone());
        match (result, refused) {
            (_, Some(reason)) => {
                set_waiting(false);
                bail!("Kafka at {brokers} refuses this client: {reason}");
            }
            (Err(e), None) if e.rdkafka_error_code().is_some_and(is_permanent) => {
                set_waiting(false);
                bail!("Kafka at {brokers} refuses this client: {e}");
            }
            (Ok(_), None) => {
                if waiting {
                    set_waiting(false);
                    tracing::info!(brokers, waited_s = started.elapsed().as_secs(), "Kafka answers again");
                }
                return Ok(());
            }
            (Err(e), None) => {
                if let Patience::Fail(limit) = patience
                    && started.elapsed() >= limit
                {
                    bail!("cannot reach Kafka at {brokers} within {}s: {e}", limit.as_secs());
                }
                if !waiting && matches!(patience, Patience::Wait) {
                    waiting = true;
                    set_waiting(true);
                    tracing::warn!(brokers, error = %e, "waiting for Kafka: the brokers do not answer yet");
                }
                crate::commands::sleep_unless(wait, stop);
                if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    set_waiting(false);
                    return Err(sinks::SinkError::Interrupted("Kafka").into());
                }
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_certificates_are_permanent_outages_are_not() {
        assert!(is_permanent(RDKafkaErrorCode::Authentication));
        assert!(is_permanent(RDKafkaErrorCode::SSL));
        assert!(is_permanent(RDKafkaErrorCode::TopicAuthorizationFailed));
        assert!(!is_permanent(RDKafkaErrorCode::AllBrokersDown));
        assert!(!is_permanent(RDKafkaErrorCode::BrokerTransportFailure));
        assert!(!is_permanent(RDKafkaErrorCode::OperationTimedOut));
    }

    #[test]
    fn an_unreachable_broker_fails_within_the_patience() {
        let mut config = ClientConfig::new();
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        config.set("bootstrap.servers", format!("127.0.0.1:{}", port.unwrap_or(9)));
        let err = reach(&config, Patience::Fail(Duration::from_secs(2)), None, None).unwrap_err().to_string();
        assert!(err.starts_with("cannot reach Kafka at 127.0.0.1:"), "{err}");
    }
}
