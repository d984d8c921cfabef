//! Sink errors, classified once as retriable or permanent.

use std::time::Duration;

/// What went wrong in a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// PostgreSQL could not be reached at all.
    #[error("cannot connect to PostgreSQL at {url}: {}", chain(cause))]
    Connect {
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
    /// Connecting took longer than the timeout.
    #[error("cannot connect to PostgreSQL at {url}: no answer within {timeout:?}")]
    ConnectTimeout {
        /// The URL, without its password.
        url: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A statement failed.
    #[error("PostgreSQL: {context}: {}", chain(cause))]
    Postgres {
        /// What we were doing.
        context: &'static str,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// A Kafka operation failed.
    #[error("Kafka: {context}: {}", chain(cause))]
    Kafka {
        /// What we were doing.
        context: String,
        /// The client's error.
        cause: rdkafka::error::KafkaError,
    },
    /// The database holds something that cannot be (e.g. an unknown code).
    #[error("inconsistent state: {0}")]
    Inconsistent(String),
    /// Another `stockflow run`, started later, took over the database or the
    /// output topics; this one must stop (it would interleave its work with
    /// the newer one's).
    #[error("{0}")]
    Fenced(String),
}

/// An error and its causes on one line: `a: b: c`, without repeats.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl SinkError {
    /// Wraps a statement error with what we were doing.
    pub fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
        move |cause| SinkError::Postgres { context, cause }
    }

    /// Whether waiting and trying again can help.
    ///
    /// Retriable: the connection is gone or cannot be made (server down or
    /// restarting), the server is shutting down or out of connections,
    /// serialization failures and deadlocks (another writer won a race; the
    /// whole transaction is redone). Everything else (constraint violations,
    /// syntax errors, a missing table) is a bug or a broken schema, and
    /// retrying would only repeat it.
    pub fn is_retriable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            SinkError::Connect { .. } | SinkError::ConnectTimeout { .. } => true,
            SinkError::Postgres { cause, .. } => match cause.code() {
                None => true, // I/O error, closed connection
                Some(code) => {
                    *code == SqlState::T_R_SERIALIZATION_FAILURE
                        || *code == SqlState::T_R_DEADLOCK_DETECTED
                        || *code == SqlState::ADMIN_SHUTDOWN
                        || *code == SqlState::CRASH_SHUTDOWN
                        || *code == SqlState::CANNOT_CONNECT_NOW
                        || *code == SqlState::TOO_MANY_CONNECTIONS
                        || code.code().starts_with("08") // connection exceptions
                }
            },
            SinkError::Kafka { cause: rdkafka::error::KafkaError::Transaction(e), .. } => !e.is_fatal(),
            SinkError::Kafka { cause, .. } => !matches!(
                cause.rdkafka_error_code(),
                Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge)
                    | Some(rdkafka::types::RDKafkaErrorCode::InvalidConfig)
            ),
            SinkError::Migration(_) | SinkError::Inconsistent(_) | SinkError::Fenced(_) => false,
        }
    }
}
