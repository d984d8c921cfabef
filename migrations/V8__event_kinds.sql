-- Event kinds: which event_type is a sale, and of which source,
-- is decided by the binary's model (`dataflow::model::EventKind`), not by
-- literals in the SQL. The table below carries that decision; reconcile
-- and `stockflow archive` read it.

-- One row per kind of input event (`EventKind::ALL`), written by `stockflow
-- migrate` from the binary's model (sinks::postgres::migrate, after the
-- migrations): its event_type, its input topic (unprefixed) and, for a
-- sale, its source (the orders/sales_* `source`); sale_source NULL = not a
-- sale. `stockflow run` refuses to start when a row of its model is
-- missing or differs. The rows below are those of the model at this
-- migration, so that the migration alone leaves a working database.
CREATE TABLE event_kinds (
    event_type  text PRIMARY KEY,
    topic       text NOT NULL UNIQUE,
    sale_source text CHECK (sale_source IN ('online', 'store'))
);
INSERT INTO event_kinds (event_type, topic, sale_source) VALUES
    ('online_order', 'online_orders', 'online'),
    ('store_sale', 'store_sales', 'store'),
    ('supplier_restock', 'supplier_restocks', NULL);

-- archived_rollup.kind: the sale source, or 'none' for an event that is not
-- a sale (was 'restock', when restocks were the only such kind).
ALTER TABLE archived_rollup DROP CONSTRAINT archived_rollup_kind_check;
UPDATE archived_rollup SET kind = 'none' WHERE kind = 'restock';
ALTER TABLE archived_rollup ADD CONSTRAINT archived_rollup_kind_check
    CHECK (kind IN ('online', 'store', 'none'));
COMMENT ON COLUMN archived_rollup.kind IS
    'The events'' sale source (event_kinds.sale_source), or ''none'' for events that are not sales';

-- As in V7, with sales told by event_kinds instead of by event_type
-- literals: an applied event is a sale of source k.sale_source when its
-- event_type's row has one, not a sale when that is NULL, and a
-- difference of its own ('event_kinds', 'event_type=...') when there is no
-- row for its event_type (its stock still counts; its sales do not). The
-- archived events' sums (archived_rollup) stand in for the events
-- archived; kind 'none' is not a sale. Orders are joined on their commit
-- time too, so that each day's partitions join with each other only.
CREATE OR REPLACE FUNCTION reconcile_differences()
    RETURNS TABLE (table_name text, key text, actual text, expected text)
    LANGUAGE sql STABLE
    SET work_mem = '256MB'
    SET enable_partitionwise_join = on
    SET enable_partitionwise_aggregate = on
    AS $$
    WITH g AS MATERIALIZED (
        -- One pass over the applied events held, grouped as finely as any
        -- check needs, plus the archived events' sums at the same grain.
        -- The held events are summed per event_type first (each day's
        -- partitions by themselves), then told sale or not by event_kinds:
        -- joining that small table to every event instead would put the
        -- join above the partitions' and the sums after it. `unknown_type`
        -- is an event_type that event_kinds lacks (NULL for every known one).
        SELECT product_id, source, unknown_type, ev_hour, commit_hour, sum(delta) AS delta,
               sum(events) AS events, sum(revenue) AS revenue, sum(no_order) AS no_order
        FROM (
            SELECT h.product_id,
                   k.sale_source AS source,
                   CASE WHEN k.event_type IS NULL THEN coalesce(h.event_type, 'NULL') END AS unknown_type,
                   h.ev_hour,
                   h.commit_hour,
                   h.delta,
                   h.events,
                   CASE WHEN k.sale_source IS NOT NULL THEN h.revenue END AS revenue,
                   CASE WHEN k.sale_source IS NOT NULL THEN h.orderless ELSE 0 END AS no_order
            FROM (
                SELECT e.product_id,
                       e.event_type,
                       date_trunc('hour', e.occurred_at, 'UTC') AS ev_hour,
                       date_trunc('hour', e.processed_at, 'UTC') AS commit_hour,
                       sum(e.delta) AS delta,
                       count(*) AS events,
                       sum(-e.delta * o.unit_price) AS revenue,
                       count(*) FILTER (WHERE o.event_id IS NULL) AS orderless
                FROM events_log e
                LEFT JOIN orders o ON o.event_id = e.event_id AND o.processed_at = e.processed_at
                WHERE e.status = 'applied'
                GROUP BY 1, 2, 3, 4) h
            LEFT JOIN event_kinds k ON k.event_type = h.event_type
            UNION ALL
            SELECT a.product_id, nullif(a.kind, 'none'), NULL, a.ev_hour, a.commit_hour, a.delta, a.events,
                   a.revenue, a.no_order
            FROM archived_rollup a) held_and_archived
        GROUP BY 1, 2, 3, 4, 5),
    stock AS (SELECT product_id, sum(delta) AS delta FROM g GROUP BY 1),
    hourly_expected AS (
        SELECT ev_hour AS hour, product_id, source, -sum(delta) AS units,
               coalesce(sum(revenue), 0) AS revenue, sum(events) AS order_count
        FROM g WHERE source IS NOT NULL GROUP BY 1, 2, 3),
    daily_expected AS (
        SELECT (hour AT TIME ZONE 'UTC')::date AS day, product_id, source, sum(units) AS units,
               sum(revenue) AS revenue, sum(order_count) AS order_count
        FROM hourly_expected GROUP BY 1, 2, 3),
    hours_of_days AS (
        SELECT (hour AT TIME ZONE 'UTC')::date AS day, product_id, source, sum(units) AS units,
               sum(revenue) AS revenue, sum(order_count) AS order_count
        FROM sales_hourly GROUP BY 1, 2, 3),
    sh_expected AS (
        SELECT 'event'::text AS axis, ev_hour AS hour, product_id, sum(delta) AS delta, sum(events) AS events
        FROM g GROUP BY 2, 3
        UNION ALL
        SELECT 'commit', commit_hour, product_id, sum(delta), sum(events) FROM g GROUP BY 2, 3)
    SELECT 'inventory', 'product_id=' || k.product_id,
           'quantity_on_hand=' || coalesce(i.quantity_on_hand::text, 'none'),
           'quantity_on_hand=' || (coalesce(i.opening_quantity, 0) + coalesce(s.delta, 0))::text
               || ' (opening ' || coalesce(i.opening_quantity, 0) || ' + applied deltas ' || coalesce(s.delta, 0) || ')'
    FROM (SELECT product_id FROM inventory UNION SELECT product_id FROM stock) k
    LEFT JOIN inventory i ON i.product_id = k.product_id
    LEFT JOIN stock s ON s.product_id = k.product_id
    WHERE coalesce(i.quantity_on_hand, 0) IS DISTINCT FROM coalesce(i.opening_quantity, 0) + coalesce(s.delta, 0)
       OR (i.product_id IS NULL AND s.delta IS NOT NULL)
    UNION ALL
    SELECT 'sales_hourly',
           'hour=' || to_char(coalesce(a.hour, x.hour) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:00:00"Z"')
               || ' product_id=' || coalesce(a.product_id, x.product_id) || ' source=' || coalesce(a.source, x.source),
           CASE WHEN a.hour IS NULL THEN 'no row'
                ELSE format('units=%s revenue=%s order_count=%s', a.units, a.revenue, a.order_count) END,
           CASE WHEN x.hour IS NULL THEN 'no applied sales'
                ELSE format('units=%s revenue=%s order_count=%s', x.units, x.revenue, x.order_count) END
    FROM sales_hourly a
    FULL JOIN hourly_expected x ON x.hour = a.hour AND x.product_id = a.product_id AND x.source = a.source
    WHERE (a.units, a.revenue, a.order_count) IS DISTINCT FROM (x.units, x.revenue, x.order_count)
    UNION ALL
    SELECT 'sales_daily',
           'day=' || coalesce(a.day, x.day) || ' product_id=' || coalesce(a.product_id, x.product_id)
               || ' source=' || coalesce(a.source, x.source),
           CASE WHEN a.day IS NULL THEN 'no row'
                ELSE format('units=%s revenue=%s order_count=%s', a.units, a.revenue, a.order_count) END,
           CASE WHEN x.day IS NULL THEN 'no applied sales'
                ELSE format('units=%s revenue=%s order_count=%s', x.units, x.revenue, x.order_count) END
    FROM sales_daily a
    FULL JOIN daily_expected x ON x.day = a.day AND x.product_id = a.product_id AND x.source = a.source
    WHERE (a.units, a.revenue, a.order_count) IS DISTINCT FROM (x.units, x.revenue, x.order_count)
    UNION ALL
    SELECT 'sales_daily (sum of its sales_hourly)',
           'day=' || coalesce(a.day, x.day) || ' product_id=' || coalesce(a.product_id, x.product_id)
               || ' source=' || coalesce(a.source, x.source),
           CASE WHEN a.day IS NULL THEN 'no row'
                ELSE format('units=%s revenue=%s order_count=%s', a.units, a.revenue, a.order_count) END,
           CASE WHEN x.day IS NULL THEN 'no hours'
                ELSE format('units=%s revenue=%s order_count=%s', x.units, x.revenue, x.order_count) END
    FROM sales_daily a
    FULL JOIN hours_of_days x ON x.day = a.day AND x.product_id = a.product_id AND x.source = a.source
    WHERE (a.units, a.revenue, a.order_count) IS DISTINCT FROM (x.units, x.revenue, x.order_count)
    UNION ALL
    SELECT 'stock_hourly',
           'axis=' || coalesce(a.axis, x.axis)
               || ' hour=' || to_char(coalesce(a.hour, x.hour) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:00:00"Z"')
               || ' product_id=' || coalesce(a.product_id, x.product_id),
           CASE WHEN a.axis IS NULL THEN 'no row' ELSE format('delta=%s events=%s', a.delta, a.events) END,
           CASE WHEN x.axis IS NULL THEN 'no applied events' ELSE format('delta=%s events=%s', x.delta, x.events) END
    FROM stock_hourly a
    FULL JOIN sh_expected x ON x.axis = a.axis AND x.hour = a.hour AND x.product_id = a.product_id
    WHERE (a.delta, a.events) IS DISTINCT FROM (x.delta, x.events)
    UNION ALL
    SELECT 'orders', 'product_id=' || product_id, 'missing=' || sum(no_order), 'missing=0'
    FROM g WHERE no_order > 0 GROUP BY product_id
    UNION ALL
    SELECT 'event_kinds', 'event_type=' || unknown_type, 'no row',
           'a row (run `stockflow migrate` with the binary that wrote it)'
    FROM g WHERE unknown_type IS NOT NULL GROUP BY unknown_type
$$;
