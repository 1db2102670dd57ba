//! The audit trail in PostgreSQL: mutations made while the database is down reach it, each
//! exactly once, when it is back.

use std::time::Duration;

use mesh_core::config::{AuditSinkKind, Secret};
use mesh_testkit::{PostgresServer, RedisServer, eventually};

use crate::support::{Sessions, on_redis, user};

/// Waits until PostgreSQL holds at least `wanted` audit rows; returns (rows, distinct ids).
async fn rows_reach(client: &tokio_postgres::Client, wanted: i64) -> (i64, i64) {
    eventually(&format!("{wanted} audit rows exist"), Duration::from_secs(60), || async {
        let row = client.query_one("SELECT count(*), count(DISTINCT event_id) FROM audit_events", &[]).await.ok()?;
        let counts: (i64, i64) = (row.get(0), row.get(1));
        (counts.0 >= wanted).then_some(counts)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_while_postgres_is_down_are_audited_exactly_once_when_it_is_back() {
    let redis = RedisServer::start().await.unwrap();
    let mut postgres = PostgresServer::start().await.unwrap();
    let url = postgres.url();
    let app = on_redis(&redis, None, move |settings| {
        settings.session.audit_sink = AuditSinkKind::Postgres;
        settings.session.postgres_url = Some(Secret::new(url));
    })
    .await;
    let alice = Sessions::of(&app, "acme", &user());
    // The schema is in place once the first event is written.
    alice.create(&[]).await.unwrap();
    let client = postgres.client().await.unwrap();
    assert_eq!(rows_reach(&client, 1).await, (1, 1));
    drop(client);

    postgres.stop().await;
    let session = alice.create(&[("n", "0")]).await.unwrap();
    let mut version = session.version;
    for n in 1..99 {
        version = alice.update(&session.session_id, version, &[("n", &n.to_string())], &[]).await.unwrap().version;
    }
    alice.delete(&session.session_id, Some(version)).await.unwrap();
    postgres.restart().await.unwrap();

    let client = postgres.client().await.unwrap();
    assert_eq!(rows_reach(&client, 101).await, (101, 101), "the first row and the 100 mutations, none doubled");
    let kinds = client
        .query(
            "SELECT kind, count(*) FROM audit_events WHERE session_id = $1 GROUP BY kind ORDER BY kind",
            &[&session.session_id],
        )
        .await
        .unwrap();
    let kinds: Vec<(String, i64)> = kinds.iter().map(|row| (row.get(0), row.get(1))).collect();
    assert_eq!(kinds, [("CREATED".to_owned(), 1), ("DELETED".to_owned(), 1), ("UPDATED".to_owned(), 98)]);
}
