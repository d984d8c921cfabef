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
