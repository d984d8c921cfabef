//! stockflow's intake: the simulated upstream systems that feed the input
//! topics, and the Kafka plumbing on the input side.
#![forbid(missing_docs)]

pub mod kafka;
pub mod sim;
