//! Failures, classified once: transient (waiting and trying again can
//! help: retried with backoff) or permanent (a one-line error and a
//! non-zero exit). Every retry loop in stockflow asks [`SinkError::failure`],
//! [`kafka_failure`] or [`postgres_failure`], and nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio_postgres::error::SqlState;

/// Whether waiting can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The dependency is away or busy (down, restarting, unreachable, out of
    /// space, a lost race): wait and try again.
    Transient,
    /// Waiting will not help (credentials, permissions, a missing table or
    /// topic, a broken constraint, a bad configuration): stop and say why.
    Permanent,
}

/// Classifies a librdkafka error code.
///
/// Permanent: credentials, TLS, authorization (ACLs), configuration, a
/// message the broker will never take, a topic the client cannot find in
/// the cluster's metadata, and librdkafka's own fatal errors. Everything
/// else (brokers down or unreachable, timeouts, leader elections, a broker
/// that does not know a partition *yet*) is transient: librdkafka itself
/// reconnects and retries those.
pub fn kafka_code_failure(code: RDKafkaErrorCode) -> Failure {
    use RDKafkaErrorCode as C;
    match code {
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::SSL
        | C::TopicAuthorizationFailed
        | C::GroupAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed
        | C::DelegationTokenAuthorizationFailed
        | C::InvalidConfig
        | C::InvalidArgument
        | C::MessageSizeTooLarge
        | C::UnknownTopic
        | C::Fatal => Failure::Permanent,
        _ => Failure::Transient,
    }
}

/// Classifies a Kafka client error: a fatal transactional error is
/// permanent; otherwise its code decides ([`kafka_code_failure`]); an
/// error without a code (a client-side timeout, a cancelled call) is
/// transient.
pub fn kafka_failure(e: &KafkaError) -> Failure {
    if let KafkaError::Transaction(rd) = e
        && rd.is_fatal()
    {
        return Failure::Permanent;
    }
    e.rdkafka_error_code().map_or(Failure::Transient, kafka_code_failure)
}

/// Classifies a PostgreSQL error by its SQLSTATE.
///
/// Transient: no SQLSTATE (an I/O error, a closed or refused connection),
/// connection exceptions (class 08), the server shutting down, starting up
/// or out of connections, out of disk space, memory or other resources
/// (class 53), serialization failures and deadlocks (another writer won a
/// race; the whole transaction is redone), a lock not available, a
/// cancelled statement, a read-only server (a standby during a failover),
/// and system I/O errors (class 58). Everything else is permanent: a wrong
/// password or user (class 28), a missing database (3D000), no privilege
/// (42501), a missing table or column, a broken constraint, a syntax error:
/// a bug or a broken setup that retrying would only repeat.
pub fn postgres_failure(e: &tokio_postgres::Error) -> Failure {
    sqlstate_failure(e.code())
}

/// [`postgres_failure`] by the SQLSTATE alone (`None`: the error has none).
pub fn sqlstate_failure(code: Option<&SqlState>) -> Failure {
    let Some(code) = code else { return Failure::Transient };
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::QUERY_CANCELED,
        SqlState::READ_ONLY_SQL_TRANSACTION,
    ];
    let class = &code.code()[..2];
    if transient.contains(code) || matches!(class, "08" | "53" | "58") {
        Failure::Transient
    } else {
        Failure::Permanent
    }
}

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
    /// The TLS handshake failed: an untrusted certificate, a host name the
    /// certificate does not name, no TLS on the server.
    #[error("cannot connect to PostgreSQL at {url}: TLS: {}", chain(cause))]
    Tls {
        /// The URL, without its password.
        url: String,
        /// The driver's error.
        cause: tokio_postgres::Error,
    },
    /// A setting that cannot work (an unreadable file it names, say).
    #[error("{0}")]
    Config(String),
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
    /// The process was asked to stop while it waited for `0` (a signal
    /// during an outage). Nothing was lost: what was not committed is read
    /// again on the next start.
    #[error("stopped while waiting for {0}")]
    Interrupted(&'static str),
}

/// What a call that may wait on a dependency needs from its caller.
#[derive(Clone, Copy)]
pub struct Wait<'a> {
    /// Told `true` when the call starts waiting (the `waiting` metric),
    /// `false` when the dependency answers again.
    pub waiting: &'a dyn Fn(bool),
    /// Set when the process is stopping: the call stops waiting and returns
    /// [`SinkError::Interrupted`].
    pub stop: &'a AtomicBool,
}

impl Wait<'_> {
    /// Whether the process is stopping.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
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
    /// The SQLSTATE of a statement PostgreSQL refused.
    pub fn db_code(&self) -> Option<&SqlState> {
        match self {
            SinkError::Postgres { cause, .. } => cause.code(),
            _ => None,
        }
    }

    /// The server's own message of a statement PostgreSQL refused.
    pub fn db_message(&self) -> Option<&str> {
        match self {
            SinkError::Postgres { cause, .. } => cause.as_db_error().map(|d| d.message()),
            _ => None,
        }
    }

    /// Wraps a statement error with what we were doing.
    pub fn pg(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> SinkError {
        move |cause| SinkError::Postgres { context, cause }
    }

    /// Whether waiting and trying again can help (see [`Failure`]).
    pub fn failure(&self) -> Failure {
        match self {
            SinkError::Connect { cause, .. } | SinkError::Postgres { cause, .. } => postgres_failure(cause),
            SinkError::ConnectTimeout { .. } => Failure::Transient,
            SinkError::Kafka { cause, .. } => kafka_failure(cause),
            SinkError::Tls { .. } | SinkError::Config(_) => Failure::Permanent,
            SinkError::Migration(_)
            | SinkError::Inconsistent(_)
            | SinkError::Fenced(_)
            | SinkError::Interrupted(_) => Failure::Permanent,
        }
    }

    /// Shorthand for `failure() == Failure::Transient`.
    pub fn is_retriable(&self) -> bool {
        self.failure() == Failure::Transient
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_credentials_acls_and_missing_topics_are_permanent_outages_are_not() {
        use RDKafkaErrorCode as C;
        for code in [
            C::Authentication,
            C::SaslAuthenticationFailed,
            C::SSL,
            C::TopicAuthorizationFailed,
            C::GroupAuthorizationFailed,
            C::TransactionalIdAuthorizationFailed,
            C::UnknownTopic,
            C::MessageSizeTooLarge,
            C::InvalidConfig,
        ] {
            assert_eq!(kafka_code_failure(code), Failure::Permanent, "{code:?}");
        }
        for code in [
            C::AllBrokersDown,
            C::BrokerTransportFailure,
            C::OperationTimedOut,
            C::RequestTimedOut,
            C::NotLeaderForPartition,
            C::LeaderNotAvailable,
            C::CoordinatorNotAvailable,
            C::NotCoordinator,
            C::UnknownTopicOrPartition,
            C::QueueFull,
        ] {
            assert_eq!(kafka_code_failure(code), Failure::Transient, "{code:?}");
        }
        let timeout = KafkaError::MetadataFetch(C::OperationTimedOut);
        assert_eq!(kafka_failure(&timeout), Failure::Transient);
        let refused = KafkaError::MetadataFetch(C::SaslAuthenticationFailed);
        assert_eq!(kafka_failure(&refused), Failure::Permanent);
        assert_eq!(kafka_failure(&KafkaError::Canceled), Failure::Transient);
    }

    #[test]
    fn postgres_outages_and_races_are_transient_broken_setups_are_not() {
        for code in [
            SqlState::CONNECTION_FAILURE,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::DISK_FULL,
            SqlState::OUT_OF_MEMORY,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::IO_ERROR,
        ] {
            assert_eq!(sqlstate_failure(Some(&code)), Failure::Transient, "{code:?}");
        }
        assert_eq!(sqlstate_failure(None), Failure::Transient);
        for code in [
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_AUTHORIZATION_SPECIFICATION,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::UNDEFINED_TABLE,
            SqlState::UNDEFINED_COLUMN,
            SqlState::UNIQUE_VIOLATION,
            SqlState::CHECK_VIOLATION,
            SqlState::SYNTAX_ERROR,
        ] {
            assert_eq!(sqlstate_failure(Some(&code)), Failure::Permanent, "{code:?}");
        }
    }

    #[test]
    fn only_stopping_processes_interrupt_a_wait() {
        let stop = AtomicBool::new(false);
        let wait = Wait { waiting: &|_| {}, stop: &stop };
        assert!(!wait.stopping());
        stop.store(true, Ordering::Relaxed);
        assert!(wait.stopping());
        assert!(!SinkError::Interrupted("Kafka").is_retriable());
        assert_eq!(SinkError::Interrupted("Kafka").to_string(), "stopped while waiting for Kafka");
    }

    #[test]
    fn every_kafka_refusal_the_docs_name_is_permanent() {
        use RDKafkaErrorCode as C;
        // Credentials and TLS, ACLs, configuration, librdkafka's fatal error:
        // the codes the first test leaves out.
        for code in [
            C::UnsupportedSASLMechanism,
            C::IllegalSASLState,
            C::ClusterAuthorizationFailed,
            C::DelegationTokenAuthorizationFailed,
            C::InvalidArgument,
            C::Fatal,
        ] {
            assert_eq!(kafka_code_failure(code), Failure::Permanent, "{code:?}");
        }
    }

    #[test]
    fn kafka_errors_are_classified_by_their_code_whatever_the_call() {
        use RDKafkaErrorCode as C;
        let cases = [
            (KafkaError::MessageProduction(C::MessageSizeTooLarge), Failure::Permanent),
            (KafkaError::MessageProduction(C::TopicAuthorizationFailed), Failure::Permanent),
            (KafkaError::MessageProduction(C::QueueFull), Failure::Transient),
            (KafkaError::Flush(C::MessageTimedOut), Failure::Transient),
            (KafkaError::Global(C::AllBrokersDown), Failure::Transient),
            (KafkaError::Global(C::Authentication), Failure::Permanent),
            (KafkaError::ConsumerCommit(C::GroupAuthorizationFailed), Failure::Permanent),
            (KafkaError::OffsetFetch(C::CoordinatorNotAvailable), Failure::Transient),
            (KafkaError::MessageConsumption(C::UnknownTopic), Failure::Permanent),
            (KafkaError::MessageConsumption(C::BrokerTransportFailure), Failure::Transient),
        ];
        for (e, want) in cases {
            assert_eq!(kafka_failure(&e), want, "{e:?}");
        }
    }

    #[test]
    fn kafka_errors_without_a_code_are_transient() {
        for e in [KafkaError::NoMessageReceived, KafkaError::PartitionEOF(3), KafkaError::Canceled] {
            assert_eq!(e.rdkafka_error_code(), None, "{e:?}");
            assert_eq!(kafka_failure(&e), Failure::Transient, "{e:?}");
        }
    }

    #[test]
    fn postgres_connection_resource_and_system_classes_are_transient_by_class() {
        for code in [
            // Class 08: connection exceptions.
            SqlState::CONNECTION_EXCEPTION,
            SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            SqlState::CONNECTION_DOES_NOT_EXIST,
            SqlState::SQLSERVER_REJECTED_ESTABLISHMENT_OF_SQLCONNECTION,
            SqlState::PROTOCOL_VIOLATION,
            // Class 53: resources.
            SqlState::INSUFFICIENT_RESOURCES,
            SqlState::CONFIGURATION_LIMIT_EXCEEDED,
            // Class 58: system errors.
            SqlState::SYSTEM_ERROR,
            SqlState::UNDEFINED_FILE,
            // The server crashed, a lock was not there, a statement was cancelled.
            SqlState::CRASH_SHUTDOWN,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
        ] {
            assert_eq!(sqlstate_failure(Some(&code)), Failure::Transient, "{code:?}");
        }
        // Codes this driver does not name: the class decides.
        for code in ["08ZZZ", "53ZZZ", "58ZZZ"] {
            assert_eq!(sqlstate_failure(Some(&SqlState::from_code(code))), Failure::Transient, "{code}");
        }
        for code in ["XXZZZ", "42ZZZ", "40ZZZ"] {
            assert_eq!(sqlstate_failure(Some(&SqlState::from_code(code))), Failure::Permanent, "{code}");
        }
    }

    #[test]
    fn postgres_bugs_and_broken_setups_are_permanent() {
        for code in [
            SqlState::FOREIGN_KEY_VIOLATION,
            SqlState::NOT_NULL_VIOLATION,
            SqlState::UNDEFINED_FUNCTION,
            SqlState::UNDEFINED_OBJECT,
            SqlState::DATATYPE_MISMATCH,
            SqlState::INVALID_TEXT_REPRESENTATION,
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            SqlState::INTERNAL_ERROR,
            // Class 40 is transient only for serialization failures and deadlocks.
            SqlState::TRANSACTION_ROLLBACK,
            SqlState::T_R_INTEGRITY_CONSTRAINT_VIOLATION,
        ] {
            assert_eq!(sqlstate_failure(Some(&code)), Failure::Permanent, "{code:?}");
        }
    }

    #[test]
    fn sink_errors_without_a_driver_error_have_a_fixed_failure() {
        use RDKafkaErrorCode as C;
        let timeout =
            SinkError::ConnectTimeout { url: "postgres://db/x".into(), timeout: Duration::from_secs(10) };
        assert_eq!(timeout.failure(), Failure::Transient);
        assert!(timeout.is_retriable());
        for e in [
            SinkError::Config("unreadable sslrootcert".into()),
            SinkError::Inconsistent("unknown code".into()),
            SinkError::Fenced("a newer run".into()),
        ] {
            assert_eq!(e.failure(), Failure::Permanent, "{e:?}");
            assert!(!e.is_retriable(), "{e:?}");
        }
        let kafka = |cause| SinkError::Kafka { context: "send to dlq".into(), cause };
        assert_eq!(
            kafka(KafkaError::MetadataFetch(C::TopicAuthorizationFailed)).failure(),
            Failure::Permanent
        );
        assert_eq!(kafka(KafkaError::MetadataFetch(C::AllBrokersDown)).failure(), Failure::Transient);
        assert_eq!(kafka(KafkaError::Canceled).failure(), Failure::Transient);
    }
}
