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

/// The entries of stream `stream` (consumer group `warmers`) that
/// `consumer` has claimed and not acked: `XPENDING` with a consumer, at
/// most 100.
pub async fn claimed_by(
    conn: &mut impl ConnectionLike,
    stream: &str,
    consumer: &str,
) -> Vec<redis::Value> {
    redis::cmd("XPENDING")
        .arg(stream)
        .arg("warmers")
        .arg("-")
        .arg("+")
        .arg(100)
        .arg(consumer)
        .query_async(conn)
        .await
        .unwrap()
}

/// A `redis-server` of the test's own on a free port (never the shared one
/// on 6379), for tests that take the cache away and bring it back. Killed
/// when dropped.
pub struct PrivateRedis {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts it on a free port and waits until it answers PING.
    pub async fn start() -> PrivateRedis {
        let mut r = PrivateRedis {
            child: None,
            port: super::server::free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart().await;
        r
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`stop`](Self::stop)), empty.
    pub async fn restart(&mut self) {
        self.stop();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); apt-get install redis-server")
            });
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                if redis::cmd("PING").query_async::<()>(&mut c).await.is_ok() {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server on port {} never answered PING",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
