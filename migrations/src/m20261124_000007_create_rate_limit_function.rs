use sea_orm_migration::prelude::*;

/// One sliding-log decision on PostgreSQL as a single round trip.
///
/// `tessera_rate_limit_log(event, key, limit, window_ms, cost, now_ms, record)` takes the
/// key's transaction-scoped advisory lock (when recording), reads the store's clock
/// (unless `now_ms` is given, as tests do), reads the key's events still inside the
/// window, records `cost` events when they fit, and answers one row per event it read,
/// oldest first: `(now_ms, occurred_ms)`, in milliseconds (a single row with a NULL
/// `occurred_ms` when there was none). The caller derives the decision from those with the
/// same arithmetic as every other backend.
///
/// A PL/pgSQL function, not one statement, because under READ COMMITTED each statement
/// inside it takes a fresh snapshot: the read after the lock sees every event the lock's
/// previous holder committed. A single statement would read with the snapshot it took
/// before it waited for the lock. SQLite needs none of this: its hits run in a
/// `BEGIN IMMEDIATE` transaction in-process.
#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION tessera_rate_limit_log(
    p_event text, p_key text, p_limit bigint, p_window_ms bigint,
    p_cost bigint, p_now_ms bigint, p_record boolean)
RETURNS TABLE (now_ms bigint, occurred_ms bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_now bigint;
    v_events bigint[];
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_event || chr(31) || p_key, 0));
    END IF;
    v_now := coalesce(p_now_ms, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    SELECT coalesce(array_agg(floor(extract(epoch FROM e.occurred_at) * 1000)::bigint
                              ORDER BY e.occurred_at), '{}')
      INTO v_events
      FROM auth_rate_limit_events e
     WHERE e.event_type = p_event AND e.key = p_key
       AND e.occurred_at > timestamptz 'epoch' + (v_now - p_window_ms) * interval '1 millisecond';
    IF p_record AND cardinality(v_events) + p_cost <= p_limit THEN
        INSERT INTO auth_rate_limit_events (event_type, key, occurred_at)
        SELECT p_event, p_key, timestamptz 'epoch' + v_now * interval '1 millisecond'
          FROM generate_series(1, p_cost);
    END IF;
    IF cardinality(v_events) = 0 THEN
        RETURN QUERY SELECT v_now, NULL::bigint;
    ELSE
        RETURN QUERY SELECT v_now, u.t FROM unnest(v_events) WITH ORDINALITY AS u(t, i) ORDER BY u.i;
    END IF;
END
$fn$
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS tessera_rate_limit_log(text, text, bigint, bigint, bigint, bigint, boolean)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, CREATE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, DROP).await
    }
}
