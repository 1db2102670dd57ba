//! The `RedisServer` harness: private servers, stop and restart on the same port, cleanup on drop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use mesh_testkit::RedisServer;
use redis::AsyncCommands as _;
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

#[tokio::test]
async fn two_servers_start_in_parallel_without_port_clashes() -> anyhow::Result<()> {
    let (first, second) = tokio::join!(RedisServer::start(), RedisServer::start());
    let (first, second) = (first?, second?);
    assert_ne!(first.port(), second.port());
    assert_eq!(first.url(), format!("redis://127.0.0.1:{}", first.port()));
    assert_eq!(first.addr().port(), first.port());

    let mut on_first = first.connection().await?;
    let mut on_second = second.connection().await?;
    let () = on_first.set("harness:key", "first").await?;

    let value: Option<String> = on_first.get("harness:key").await?;
    assert_eq!(value.as_deref(), Some("first"));
    let value: Option<String> = on_second.get("harness:key").await?;
    assert_eq!(value, None, "the two servers must not share data");
    Ok(())
}

#[tokio::test]
async fn a_restarted_server_comes_back_on_the_same_port() -> anyhow::Result<()> {
    let mut server = RedisServer::start().await?;
    let port = server.port();
    let mut conn = server.connection().await?;
    let () = conn.set("harness:key", "value").await?;
    assert!(server.is_running());

    server.stop().await;
    assert!(!server.is_running());
    assert_eq!(server.port(), port);
    assert!(server.connection().await.is_err(), "a stopped server must refuse connections");
    wait_until_refused(server.addr()).await?;

    server.restart().await.context("restart")?;
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let mut conn = server.connection().await?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
    assert_eq!(pong, "PONG");
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_stops_it() -> anyhow::Result<()> {
    let server = RedisServer::start().await?;
    let addr = server.addr();
    let dir = server.dir().to_path_buf();
    TcpStream::connect(addr).await.context("a running server accepts connections")?;

    drop(server);
    wait_until_refused(addr).await?;
    assert!(!dir.exists(), "the server's directory must be removed");
    Ok(())
}
