-- Second edition, operator tools (contract 5.5 and 5.7): stock as of any
-- instant, reconciliation, DLQ redrive.

-- Stock changes per product and UTC hour, on two time axes: 'event' buckets
-- by occurred_at (event time), 'commit' by processed_at (the commit's time).
-- Written by every commit, in the same transaction as the events_log rows
-- they sum, so `stock_as_of` reads whole hours here and only the events of
-- T's own hour from events_log. `reconcile_differences` checks both axes.
CREATE TABLE stock_hourly (
    axis       text NOT NULL CHECK (axis IN ('event', 'commit')),
    hour       timestamptz NOT NULL CHECK (extract(epoch FROM hour)::bigint % 3600 = 0),
    product_id text NOT NULL,
    delta      bigint NOT NULL,
    events     bigint NOT NULL,
    PRIMARY KEY (axis, hour, product_id)
);

-- History written before this table existed.
INSERT INTO stock_hourly (axis, hour, product_id, delta, events)
SELECT 'event', date_trunc('hour', occurred_at, 'UTC'), product_id, sum(delta), count(*)
FROM events_log WHERE status = 'applied' GROUP BY 2, 3;
INSERT INTO stock_hourly (axis, hour, product_id, delta, events)
SELECT 'commit', date_trunc('hour', processed_at, 'UTC'), product_id, sum(delta), count(*)
FROM events_log WHERE status = 'applied' GROUP BY 2, 3;

-- Finds the events of one commit-time hour without a scan (processed_at
-- has no index of its own; the commit's epochs row has the same time).
CREATE INDEX epochs_started_at ON epochs (started_at);

-- The stock of every product as of instant t: the opening stock plus the
-- deltas of the applied events with occurred_at <= t (event time), or,
-- with processed, of the events committed at or before t. A product with
-- no inventory row and no event counts 0.
CREATE FUNCTION stock_as_of(t timestamptz, processed boolean DEFAULT false)
    RETURNS TABLE (product_id text, quantity_on_hand bigint)
    LANGUAGE sql STABLE AS $$
    WITH cut AS (SELECT date_trunc('hour', t, 'UTC') AS h),
    deltas AS (
        SELECT s.product_id, s.delta
        FROM stock_hourly s, cut
        WHERE s.axis = CASE WHEN processed THEN 'commit' ELSE 'event' END AND s.hour < cut.h
        UNION ALL
        SELECT e.product_id, e.delta
        FROM events_log e, cut
        WHERE NOT processed AND e.status = 'applied' AND e.occurred_at >= cut.h AND e.occurred_at <= t
        UNION ALL
        SELECT e.product_id, e.delta
        FROM epochs x JOIN events_log e ON e.epoch = x.epoch, cut
        WHERE processed AND x.started_at >= cut.h AND x.started_at <= t
          AND e.status = 'applied' AND e.processed_at <= t),
    sums AS (SELECT d.product_id, sum(d.delta) AS delta FROM deltas d GROUP BY d.product_id)
    SELECT p.product_id, (coalesce(i.opening_quantity, 0) + coalesce(s.delta, 0))::bigint
    FROM products p
    LEFT JOIN inventory i ON i.product_id = p.product_id
    LEFT JOIN sums s ON s.product_id = p.product_id
$$;

-- Every way the derived tables differ from what the applied events say
-- (contract 5.5), one row per difference; no row when all hold. Checks:
-- inventory (opening + deltas), sales_hourly and sales_daily (sums of the
-- applied sales, revenue from their orders rows), the hours of each day
-- against the day, stock_hourly on both axes, and an orders row for every
-- applied sale. Both `stockflow reconcile` and the daily report call it.
CREATE FUNCTION reconcile_differences()
    RETURNS TABLE (table_name text, key text, actual text, expected text)
    LANGUAGE sql STABLE
    SET work_mem = '256MB'
    AS $$
    WITH g AS MATERIALIZED (
        -- One pass over the applied events, grouped as finely as any check needs.
        SELECT e.product_id,
               CASE e.event_type WHEN 'online_order' THEN 'online' WHEN 'store_sale' THEN 'store' END AS source,
               date_trunc('hour', e.occurred_at, 'UTC') AS ev_hour,
               date_trunc('hour', e.processed_at, 'UTC') AS commit_hour,
               sum(e.delta) AS delta,
               count(*) AS events,
               sum(-e.delta * o.unit_price) AS revenue,
               count(*) FILTER (WHERE e.event_type <> 'supplier_restock' AND o.event_id IS NULL) AS no_order
        FROM events_log e
        LEFT JOIN orders o ON o.event_id = e.event_id AND e.event_type <> 'supplier_restock'
        WHERE e.status = 'applied'
        GROUP BY 1, 2, 3, 4),
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
$$;

-- The report's outcome of reconcile_differences() (contract 5.7); NULL for
-- reports written before it existed.
ALTER TABLE reports ADD COLUMN reconciled boolean;

-- Every message `stockflow dlq redrive` re-sent: the rejected row it came
-- from and where the copy went. A copy whose offset has no events_log row
-- yet is still on its way, and is not sent again.
CREATE TABLE dlq_redrives (
    redrive_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    log_id          bigint NOT NULL REFERENCES events_log (log_id),
    error_code      text NOT NULL,
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    redriven_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dlq_redrives_log_id ON dlq_redrives (log_id);
