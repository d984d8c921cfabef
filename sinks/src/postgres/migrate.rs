use tokio_postgres::Client;

use crate::SinkError;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// Applies every migration in `migrations/` that the database lacks.
///
/// Running it again is a no-op. Returns the names of the migrations applied
/// now. refinery keeps its own history table (`refinery_schema_history`) and
/// refuses to run if an applied migration's file has changed.
pub async fn migrate(client: &mut Client) -> Result<Vec<String>, SinkError> {
    let report = embedded::migrations::runner().set_grouped(true).run_async(client).await?;
    Ok(report.applied_migrations().iter().map(|m| m.to_string()).collect())
}

/// The roles of least privilege and their grants on this database
/// (`sinks/src/postgres/roles.sql`, whose header says who may do what).
const ROLES_SQL: &str = include_str!("roles.sql");

/// Creates the roles of least privilege when missing and grants them this
/// database's tables. Idempotent; run by the schema's owner after
/// [`migrate`].
pub async fn grant_roles(client: &Client) -> Result<(), SinkError> {
    client.batch_execute(ROLES_SQL).await.map_err(SinkError::pg("create the roles and grant them"))
}
