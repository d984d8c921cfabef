-- Roles of least privilege for stockflow, applied by `stockflow migrate
-- --roles` (after the migrations, by the role that owns the schema; safe
-- to run again, and to be run again after every upgrade, since it grants
-- on the tables that exist now).
--
-- Group roles (NOLOGIN); the operator gives each service a login role in
-- one of them, e.g.
--   CREATE ROLE stockflow_run LOGIN PASSWORD '...' IN ROLE stockflow_processor;
--
--   owner                the role that runs `stockflow migrate` (owns every
--                        table; seeds; runs `dlq redrive`)
--   stockflow_processor  `stockflow run`: reads the catalog, reads and
--                        writes its own tables; no DDL, no DELETE, nothing
--                        of the reports or of dlq_redrives
--   stockflow_reporting  the Airflow DAG and `reconcile`/`stock`: reads
--                        everything, writes `reports`
--   stockflow_readonly   `stockflow serve`, dashboards: reads everything
--
-- Roles belong to the whole PostgreSQL cluster, grants to this database.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['stockflow_processor', 'stockflow_reporting', 'stockflow_readonly'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a concurrent run
            END;
        END IF;
    END LOOP;
END
$$;

-- No one creates objects in the schema but its owner (PostgreSQL 15's
-- default; older servers granted CREATE to PUBLIC).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO stockflow_processor, stockflow_reporting, stockflow_readonly;

-- The processor: the catalog, read only; its own tables, read and written.
GRANT SELECT ON products, suppliers TO stockflow_processor;
GRANT SELECT, INSERT, UPDATE ON
    inventory, events_log, orders, sales_daily, sales_hourly, stock_hourly,
    stock_alerts, stock_alert_state, source_offsets, stream_progress, epochs,
    processor_status
    TO stockflow_processor;

-- The processor makes the coming days' partitions through the one function
-- that may (it runs with its owner's rights; migration V7), and reads how
-- far the history is held.
REVOKE EXECUTE ON FUNCTION stockflow_ensure_partitions(date, date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION stockflow_ensure_partitions(date, date) TO stockflow_processor;
GRANT SELECT ON archived_partitions TO stockflow_processor;

-- The processor checks at start that event_kinds has its model's kinds
-- (migration V8; `stockflow migrate` writes it).
GRANT SELECT ON event_kinds TO stockflow_processor;

-- Reporting: everything, read; the reports, written.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO stockflow_reporting;
GRANT INSERT, UPDATE ON reports TO stockflow_reporting;

-- Read-only: everything, read.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO stockflow_readonly;

-- The other functions (stock_is_low, stock_as_of, reconcile_differences,
-- history_held_from) are executable by every role (PostgreSQL's default
-- for functions). `stockflow archive` runs as the owner: it drops tables.
