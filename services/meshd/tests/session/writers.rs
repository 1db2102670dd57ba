//! Optimistic locking under contention: 32 writers, 200 read-modify-write cycles each, on
//! one session through gRPC.

use std::time::Duration;

use mesh_testkit::RedisServer;
use rand::Rng;
use tonic::Code;

use crate::support::{Sessions, metadata, on_redis, user};

const WRITERS: usize = 32;
const CYCLES: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_lose_no_update() {
    let redis = RedisServer::start().await.unwrap();
    let app = on_redis(&redis, None, |_| {}).await;
    let name = user();
    let creator = Sessions::of(&app, "acme", &name);
    let session = creator.create(&[]).await.unwrap();

    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        // Each writer holds its own token of the same user, as its own client would.
        let client = Sessions::of(&app, "acme", &name);
        let id = session.session_id.clone();
        tasks.push(tokio::spawn(async move {
            let (mut successes, mut conflicts) = (0u64, 0u64);
            for cycle in 0..CYCLES {
                // Read, modify, write; on ABORTED the error carries the current version,
                // which is the fresh read of the next attempt.
                let mut version = client.get(&id).await.unwrap().version;
                let value = format!("{writer}-{cycle}");
                let key = format!("w{writer}");
                let mut attempt = 0u32;
                loop {
                    match client.update(&id, version, &[(&key, &value)], &[]).await {
                        Ok(updated) => {
                            assert_eq!(updated.version, version + 1);
                            successes += 1;
                            break;
                        }
                        Err(status) if status.code() == Code::Aborted => {
                            conflicts += 1;
                            version = metadata(&status, "current_version").unwrap().parse().unwrap();
                            // Full-jitter exponential backoff (0.5 ms doubling up to 64 ms), as
                            // a well-behaved client does: contention resolves instead of
                            // 32 writers retrying in lockstep.
                            attempt = (attempt + 1).min(7);
                            let pause = rand::thread_rng().gen_range(0..(500u64 << attempt));
                            tokio::time::sleep(Duration::from_micros(pause)).await;
                        }
                        Err(status) => panic!("writer {writer}: unexpected {status:?}"),
                    }
                }
            }
            (successes, conflicts)
        }));
    }
    let (mut successes, mut conflicts) = (0u64, 0u64);
    for task in tasks {
        let (ok, aborted) = task.await.unwrap();
        successes += ok;
        conflicts += aborted;
    }
    let last = creator.get(&session.session_id).await.unwrap();
    assert_eq!(successes, (WRITERS * CYCLES) as u64);
    assert_eq!(last.version, 1 + successes as i64, "{conflicts} conflicts retried, no update lost");
    for writer in 0..WRITERS {
        let expected = format!("{writer}-{}", CYCLES - 1);
        assert_eq!(last.attributes.get(&format!("w{writer}")), Some(&expected), "writer {writer}'s last write");
    }
}
