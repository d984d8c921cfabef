//! Kafka on the input side: writing simulated traffic to the input topics,
//! and reading them for the processor.

mod intake;
mod produce;
mod verify;

pub use intake::{Intake, PartitionStart, ReadReport, share};
pub use produce::{ProduceError, ProduceOptions, ProduceSummary, Target, produce};
pub use verify::{Finding, LoggedMessage, check_logged};

/// A client configuration: `defaults`, then every setting of `base` (the
/// user's settings win over ours).
fn with_defaults(base: &rdkafka::ClientConfig, defaults: &[(&str, &str)]) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in base.config_map().iter() {
        config.set(*k, *v);
    }
    config
}
