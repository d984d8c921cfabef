//! ARCHITECTURE.md's ER diagram is kept in step with `migrations/`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::TestEnv;

/// `(table, column, type)` triples from the Mermaid `erDiagram` block.
fn diagram_columns() -> BTreeSet<(String, String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/ARCHITECTURE.md")).unwrap();
    let start = doc.find("erDiagram").expect("ARCHITECTURE.md has an erDiagram");
    let block = &doc[start..doc[start..].find("```").map(|e| start + e).unwrap()];
    let mut out = BTreeSet::new();
    let mut table: Option<String> = None;
    for line in block.lines().map(str::trim) {
        if let Some(name) = line.strip_suffix(" {") {
            table = Some(name.trim().to_string());
        } else if line == "}" {
            table = None;
        } else if let Some(t) = &table {
            let mut words = line.split_whitespace();
            let (ty, col) = (words.next().unwrap(), words.next().unwrap());
            out.insert((t.clone(), col.to_string(), ty.to_string()));
        }
    }
    out
}

#[tokio::test]
async fn er_diagram_matches_the_migrated_schema() {
    let env = TestEnv::new("arch").await;
    env.ok(&["migrate"]);
    let client = env.client().await;
    let rows = client
        .query(
            "SELECT c.table_name, c.column_name, c.udt_name \
             FROM information_schema.columns c \
             JOIN information_schema.tables t USING (table_schema, table_name) \
             WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' \
               AND c.table_name <> 'refinery_schema_history' \
               AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = (quote_ident(c.table_name))::regclass)",
            &[],
        )
        .await
        .unwrap();
    let alias = |t: &str| {
        match t {
            "int4" => "integer",
            "int8" => "bigint",
            "bool" => "boolean",
            other => other,
        }
        .to_string()
    };
    let db: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1), alias(r.get::<_, &str>(2))))
        .collect();
    let doc = diagram_columns();
    let missing_in_doc: Vec<_> = db.difference(&doc).collect();
    let missing_in_db: Vec<_> = doc.difference(&db).collect();
    assert!(
        missing_in_doc.is_empty() && missing_in_db.is_empty(),
        "ARCHITECTURE.md is out of step with migrations/.\nin the database, not the diagram: {missing_in_doc:?}\nin the diagram, not the database: {missing_in_db:?}"
    );
}
