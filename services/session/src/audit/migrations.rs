//! The PostgreSQL schema of the audit trail: SQL migrations embedded from
//! `services/session/migrations/*.sql`, applied at start by [`apply`].
//!
//! Applied migrations are recorded in `schema_migrations` under this crate's component name,
//! so other crates can keep their own migrations in the same database. All pending
//! migrations run in one transaction that first takes a transaction-level advisory lock:
//! instances starting together apply each migration exactly once, the others wait and then
//! find nothing to do. A migration is never edited once released; changes are new files.

use std::collections::HashSet;

use tokio_postgres::Client;

use super::AuditError;
use super::postgres::classify;

/// One schema migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its number, the order of application (from the file name).
    pub version: i64,
    /// Its name (from the file name).
    pub name: &'static str,
    /// The SQL it runs.
    pub sql: &'static str,
}

/// The audit trail's migrations, in order.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "audit_events", sql: include_str!("../../migrations/0001_audit_events.sql") }];

/// Name under which this crate's migrations are recorded in `schema_migrations`.
pub const COMPONENT: &str = "mesh-session.audit";

/// Key of the advisory lock that serializes migrations of every mesh component.
const MIGRATION_LOCK: i64 = 0x6d65_7368_6d69_6772; // "meshmigr"

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    component  TEXT        NOT NULL,
    version    BIGINT      NOT NULL,
    name       TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (component, version)
)";

/// Applies the pending [`MIGRATIONS`] in one transaction under the migration lock.
pub(super) async fn apply(client: &mut Client) -> Result<(), AuditError> {
    let transaction = client.transaction().await.map_err(classify)?;
    transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(classify)?;
    transaction.batch_execute(CREATE_SCHEMA_MIGRATIONS).await.map_err(classify)?;
    let applied: HashSet<i64> = transaction
        .query("SELECT version FROM schema_migrations WHERE component = $1", &[&COMPONENT])
        .await
        .map_err(classify)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    for migration in MIGRATIONS.iter().filter(|migration| !applied.contains(&migration.version)) {
        transaction.batch_execute(migration.sql).await.map_err(|error| match classify(error) {
            AuditError::Rejected(reason) => AuditError::Migration { version: migration.version, reason },
            outage => outage,
        })?;
        transaction
            .execute(
                "INSERT INTO schema_migrations (component, version, name) VALUES ($1, $2, $3)",
                &[&COMPONENT, &migration.version, &migration.name],
            )
            .await
            .map_err(classify)?;
        tracing::info!(version = migration.version, name = migration.name, "applied audit schema migration");
    }
    transaction.commit().await.map_err(classify)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
            assert!(!migration.sql.trim().is_empty());
        }
    }
}
