//! Kafka on the input side: writing simulated traffic to the input topics,
//! and reading them for the processor.

mod intake;
mod produce;
mod verify;

pub use intake::{Intake, PartitionStart, ReadReport, share};
pub use produce::{ProduceError, ProduceOptions, ProduceSummary, Target, produce};
pub use verify::{Finding, LoggedMessage, check_logged};

/// A client configuration: `base`, plus each of `defaults` that `base`
/// does not set (the user's settings win over ours).
///
/// Starts from a clone of `base`, never from `base.config_map()`: that view
/// replaces passwords (`sasl.password`, `ssl.key.password`, ...) with a
/// placeholder, and a copy made from it fails to authenticate.
fn with_defaults(base: &rdkafka::ClientConfig, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
    let mut config = base.clone();
    for (k, v) in defaults {
        if base.get(k).is_none() {
            config.set(*k, *v);
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_gaps_and_keep_secrets() {
        let mut base = rdkafka::ClientConfig::new();
        base.set("sasl.password", "s3cret").set("linger.ms", "7");
        let c = with_defaults(&base, &[("linger.ms", "2"), ("acks", "all")]);
        assert_eq!(c.get("sasl.password"), Some("s3cret"), "the password survives the copy");
        assert_eq!(c.get("linger.ms"), Some("7"), "the user's setting wins");
        assert_eq!(c.get("acks"), Some("all"));
    }
}
