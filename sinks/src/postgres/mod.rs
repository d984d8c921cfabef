//! PostgreSQL: connecting, the schema, reference data and epoch commits.

mod catalog;
mod connect;
mod migrate;

pub use catalog::{SeedOutcome, load_catalog, seed_catalog};
pub use connect::{connect, redact_url};
pub use migrate::migrate;
