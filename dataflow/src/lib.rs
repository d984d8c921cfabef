//! stockflow's engine: the domain model, message validation, and the
//! Timely/Differential dataflow that turns validated events into stock levels
//! and daily sales.
//!
//! *Architecture invariant:* this crate knows nothing of Kafka or PostgreSQL.
//! Sources hand it `(topic kind, partition, offset, bytes)`; sinks receive
//! plain records. That keeps the graph testable in memory and benchmarkable
//! without services.
#![forbid(missing_docs)]

pub mod model;
pub mod validate;

pub use model::{
    Catalog, DetailFields, ErrorCode, Event, EventDetail, EventKind, Product, Rejection, Sale, SaleSource,
    Supplier, TopicNames,
};
pub mod dedup;
pub mod graph;
pub mod harness;
pub mod records;
