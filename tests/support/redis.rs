//! The Redis of this machine (`127.0.0.1:6379`) for the integration tests:
//! a plain connection to a test's own database, and SCAN + DEL clean-up.
//! These tests do not skip when Redis is down: they fail saying how to
//! start it.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};

/// The command that starts the Redis these tests need.
pub const START: &str = "redis-server --daemonize yes --port 6379 --save '' --appendonly no";

/// A plain connection to `url` (a database of the local Redis, such as
/// `redis://127.0.0.1:6379/9`); panics, saying how to start Redis, when it
/// cannot be reached within 3 s.
pub async fn connect(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    match tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!("cannot reach Redis at {url} ({e}); start it with `{START}`"),
        Err(_) => panic!("cannot reach Redis at {url} (no answer in 3 s); start it with `{START}`"),
    }
}

/// Deletes every key that matches the glob `pattern` (SCAN + DEL).
pub async fn delete_matching(conn: &mut impl ConnectionLike, pattern: &str) {
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL")
                .arg(&keys)
                .query_async(conn)
                .await
                .unwrap();
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}
