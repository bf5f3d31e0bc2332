use sea_orm_migration::prelude::*;

/// The sliding-log decision on PostgreSQL answered in one row.
///
/// `tessera_rate_limit_window(event, key, limit, window_ms, cost, now_ms, record)` does
/// what `tessera_rate_limit_log` does (the key's transaction-scoped advisory lock when
/// recording, the store's clock unless `now_ms` is given, the events still inside the
/// window, `cost` events recorded when they fit), but answers a single row `(now_ms,
/// events)`: the events' times in milliseconds, oldest first, comma-separated (NULL when
/// there is none). A set of rows made the function materialise and sort its answer, and
/// the INSERT of one event went through `generate_series`: together about a fifth of a
/// hit's cost on the server. `tessera_rate_limit_log` stays for the workers of the
/// previous version until they are gone.
#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION tessera_rate_limit_window(
    p_event text, p_key text, p_limit bigint, p_window_ms bigint,
    p_cost bigint, p_now_ms bigint, p_record boolean,
    OUT now_ms bigint, OUT events text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_count bigint;
BEGIN
    IF p_record THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_event || chr(31) || p_key, 0));
    END IF;
    now_ms := coalesce(p_now_ms, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint);
    SELECT count(*),
           string_agg(floor(extract(epoch FROM e.occurred_at) * 1000)::bigint::text, ','
                      ORDER BY e.occurred_at)
      INTO v_count, events
      FROM auth_rate_limit_events e
     WHERE e.event_type = p_event AND e.key = p_key
       AND e.occurred_at > timestamptz 'epoch' + (now_ms - p_window_ms) * interval '1 millisecond';
    IF p_record AND v_count + p_cost <= p_limit THEN
        IF p_cost = 1 THEN
            INSERT INTO auth_rate_limit_events (event_type, key, occurred_at)
            VALUES (p_event, p_key, timestamptz 'epoch' + now_ms * interval '1 millisecond');
        ELSE
            INSERT INTO auth_rate_limit_events (event_type, key, occurred_at)
            SELECT p_event, p_key, timestamptz 'epoch' + now_ms * interval '1 millisecond'
              FROM generate_series(1, p_cost);
        END IF;
    END IF;
END
$fn$
"#;

const DROP: &str = "DROP FUNCTION IF EXISTS tessera_rate_limit_window(text, text, bigint, bigint, bigint, bigint, boolean)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, CREATE).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(manager, DROP).await
    }
}
