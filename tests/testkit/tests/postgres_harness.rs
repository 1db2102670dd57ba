//! The `PostgresServer` harness: private clusters, stop and restart on the same port with data kept, cleanup on drop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use mesh_testkit::PostgresServer;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Polls until nothing listens on `addr` any more, or fails after a deadline.
async fn wait_until_refused(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(()),
            outcome => {
                anyhow::ensure!(Instant::now() < deadline, "{addr} still accepts connections ({outcome:?})");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether table `name` exists in the `public` schema.
async fn table_exists(client: &tokio_postgres::Client, name: &str) -> anyhow::Result<bool> {
    let row = client.query_one("SELECT to_regclass($1)::text", &[&format!("public.{name}")]).await?;
    Ok(row.get::<_, Option<String>>(0).is_some())
}

#[tokio::test]
async fn two_servers_start_in_parallel_on_different_ports_and_share_nothing() -> anyhow::Result<()> {
    let (first, second) = tokio::join!(PostgresServer::start(), PostgresServer::start());
    let (first, second) = (first?, second?);
    assert_ne!(first.port(), second.port());
    assert_eq!(first.url(), format!("postgres://postgres@127.0.0.1:{}/postgres", first.port()));
    assert_eq!(first.addr().port(), first.port());

    let on_first = first.client().await?;
    let on_second = second.client().await?;
    on_first
        .batch_execute("CREATE TABLE harness_items (id bigint PRIMARY KEY); INSERT INTO harness_items VALUES (1)")
        .await?;

    assert!(table_exists(&on_first, "harness_items").await?);
    assert!(!table_exists(&on_second, "harness_items").await?, "the two servers must not share data");

    // the URL works for clients configured from it
    let (by_url, connection) = tokio_postgres::connect(&second.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let one: i32 = by_url.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    Ok(())
}

#[tokio::test]
async fn data_survives_a_stop_and_a_restart_on_the_same_port() -> anyhow::Result<()> {
    let mut server = PostgresServer::start().await?;
    let port = server.port();
    let client = server.client().await?;
    client.batch_execute("CREATE TABLE harness_audit (id bigint PRIMARY KEY, what text NOT NULL)").await?;
    client.execute("INSERT INTO harness_audit VALUES ($1, $2)", &[&7_i64, &"kept"]).await?;
    assert!(server.is_running());

    server.stop().await;
    assert!(!server.is_running());
    assert_eq!(server.port(), port);
    assert!(client.query_one("SELECT 1", &[]).await.is_err(), "a stopped server must have closed its connections");
    assert!(server.client().await.is_err(), "a stopped server must refuse connections");
    wait_until_refused(server.addr()).await?;
    server.stop().await; // stopping a stopped server does nothing
    let log = std::fs::read_to_string(server.dir().join("postgres.log"))?;
    assert!(log.contains("received fast shutdown request"), "stop must be a fast shutdown, not a kill:\n{log}");

    server.restart().await.context("restart")?;
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let client = server.client().await?;
    let row = client.query_one("SELECT what FROM harness_audit WHERE id = $1", &[&7_i64]).await?;
    assert_eq!(row.get::<_, String>(0), "kept");
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_stops_it_and_removes_its_directory() -> anyhow::Result<()> {
    let server = PostgresServer::start().await?;
    let addr = server.addr();
    let url = server.url();
    let dir = server.dir().to_path_buf();
    let client = server.client().await.context("a running server accepts connections")?;
    assert!(server.data_dir().starts_with(&dir));

    drop(server);
    wait_until_refused(addr).await?;
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls).await.is_err(), "a dropped server must be gone");
    assert!(client.query_one("SELECT 1", &[]).await.is_err(), "a dropped server must have closed its connections");
    assert!(!dir.exists(), "the server's directory must be removed");
    Ok(())
}
