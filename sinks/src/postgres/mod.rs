//! PostgreSQL: connecting, the schema, reference data, the processor's state,
//! epoch commits and the operator commands' queries.

mod catalog;
mod commit;
mod connect;
mod history;
mod migrate;
mod operator;
mod state;
pub mod view;

pub use catalog::{SeedOutcome, load_catalog, seed_catalog};
pub use commit::{
    CommitOutcome, StockAlert, StockLevel, UnpublishedRow, batch_offsets, commit_epoch, raw_bytes, raw_text,
    unpublished_alerts, unpublished_rows,
};
pub use connect::{connect, redact_url};
pub use history::{
    ArchiveReport, ArchivedFile, PARTITION_DAYS_AHEAD, archive, ensure_partitions, verify_archive,
};
pub use migrate::{check_event_kinds, grant_roles, migrate};
pub use operator::{
    Difference, RedriveCandidate, reconcile, record_redrives, redrive_candidates, stock_as_of,
};
pub use state::{
    PreloadedId, ProcessorStatus, Reference, applied_hashes, last_committed_epoch, last_logged, load_offsets,
    load_recent_applied, load_reference, low_count, published_epoch, set_published_epoch, take_generation,
    write_processor_status,
};
