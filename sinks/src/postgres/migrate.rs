use dataflow::model::EventKind;
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
///
/// Then writes `event_kinds` from this binary's model: one row per
/// [`EventKind::ALL`] (its `event_type`, topic and sale source), updated in
/// place when it differs. Rows of kinds the model no longer has are kept
/// (the history held may still have such events).
pub async fn migrate(client: &mut Client) -> Result<Vec<String>, SinkError> {
    let report = embedded::migrations::runner().set_grouped(true).run_async(client).await?;
    let (types, topics, sources) = model_rows();
    client
        .execute(
            "INSERT INTO event_kinds (event_type, topic, sale_source) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (event_type) DO UPDATE \
             SET topic = EXCLUDED.topic, sale_source = EXCLUDED.sale_source",
            &[&types, &topics, &sources],
        )
        .await
        .map_err(SinkError::pg("write event_kinds from the model"))?;
    Ok(report.applied_migrations().iter().map(|m| m.to_string()).collect())
}

/// The model's `event_kinds` rows, as three columns.
fn model_rows() -> (Vec<&'static str>, Vec<&'static str>, Vec<Option<&'static str>>) {
    let types = EventKind::ALL.iter().map(|k| k.event_type()).collect();
    let topics = EventKind::ALL.iter().map(|k| k.topic()).collect();
    let sources = EventKind::ALL.iter().map(|k| k.sale_source().map(|s| s.as_str())).collect();
    (types, topics, sources)
}

/// Checks that `event_kinds` has this binary's model: a row for every kind
/// of [`EventKind::ALL`], with the same topic and sale source. The SQL that
/// tells sales from other events (reconcile, `stockflow archive`) reads the
/// table, so a binary whose kinds it lacks must not write events: the error
/// says to run `stockflow migrate` with this binary. Extra rows (kinds of
/// another binary) are fine.
pub async fn check_event_kinds(client: &Client) -> Result<(), SinkError> {
    let rows = client
        .query("SELECT event_type, topic, sale_source FROM event_kinds", &[])
        .await
        .map_err(SinkError::pg("read event_kinds"))?;
    let stored: Vec<(String, String, Option<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    match kinds_mismatch(&stored) {
        Some(msg) => Err(SinkError::Config(msg)),
        None => Ok(()),
    }
}

/// The first kind of the model that `stored` (event_kinds' rows) lacks or
/// has otherwise, as a one-line message.
fn kinds_mismatch(stored: &[(String, String, Option<String>)]) -> Option<String> {
    EventKind::ALL.iter().find_map(|k| {
        let want_source = k.sale_source().map(|s| s.as_str());
        match stored.iter().find(|(t, _, _)| t == k.event_type()) {
            None => Some(format!(
                "event_kinds has no row for `{}` (run `stockflow migrate` with this binary)",
                k.event_type()
            )),
            Some((_, topic, source)) if topic != k.topic() || source.as_deref() != want_source => {
                let show = |s: Option<&str>| s.map_or("NULL".to_string(), |s| format!("'{s}'"));
                Some(format!(
                    "event_kinds has `{}` with topic '{topic}', sale_source {}; this binary has topic '{}', \
                     sale_source {} (run `stockflow migrate` with this binary)",
                    k.event_type(),
                    show(source.as_deref()),
                    k.topic(),
                    show(want_source)
                ))
            }
            Some(_) => None,
        }
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Vec<(String, String, Option<String>)> {
        let (types, topics, sources) = model_rows();
        (0..types.len())
            .map(|i| (types[i].to_string(), topics[i].to_string(), sources[i].map(str::to_string)))
            .collect()
    }

    #[test]
    fn the_model_rows_are_one_per_kind_sales_with_their_source() {
        let rows = model();
        assert_eq!(rows.len(), EventKind::ALL.len());
        for (k, (t, topic, source)) in EventKind::ALL.iter().zip(&rows) {
            assert_eq!(t, k.event_type());
            assert_eq!(topic, k.topic());
            assert_eq!(source.as_deref(), k.sale_source().map(|s| s.as_str()));
        }
        assert_eq!(kinds_mismatch(&rows), None);
    }

    #[test]
    fn a_missing_or_different_kind_is_named_extra_rows_are_fine() {
        let mut rows = model();
        rows.push(("customer_return".into(), "customer_returns".into(), None));
        assert_eq!(kinds_mismatch(&rows), None);

        let missing: Vec<_> = model().into_iter().filter(|r| r.0 != "store_sale").collect();
        assert_eq!(
            kinds_mismatch(&missing).as_deref(),
            Some("event_kinds has no row for `store_sale` (run `stockflow migrate` with this binary)")
        );

        let mut other = model();
        other.iter_mut().find(|r| r.0 == "supplier_restock").unwrap().2 = Some("store".into());
        let msg = kinds_mismatch(&other).unwrap();
        assert!(msg.starts_with("event_kinds has `supplier_restock` with topic 'supplier_restocks', sale_source 'store'; this binary has topic 'supplier_restocks', sale_source NULL"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
