//! What the crates on top of the database share about it.

use sea_orm::{DbErr, RuntimeErr};

/// Whether a database error means the database cannot be reached (refused, dropped, timed
/// out, pool exhausted), as opposed to a statement it refused. Callers answer the first
/// with "unavailable, try again", the second as a server fault.
pub fn is_unreachable(e: &DbErr) -> bool {
    use sea_orm::sqlx::Error as X;
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(x)) | DbErr::Query(RuntimeErr::SqlxError(x)) => {
            matches!(
                x.as_ref(),
                X::Io(_) | X::Tls(_) | X::PoolTimedOut | X::PoolClosed | X::WorkerCrashed
            )
        }
        _ => false,
    }
}
