//! A real 3-node Redis Cluster for a test, from the Debian `redis-server`
//! and `redis-cli` binaries (`apt-get install redis-server`).
//!
//! [`RedisCluster::start`] picks six free local ports (three client ports and
//! three cluster-bus ports, passed with `--cluster-port` so the bus never
//! lands above 65535), starts three `redis-server --cluster-enabled yes`
//! processes in a temporary directory (no RDB, no AOF, bound to 127.0.0.1),
//! joins them with `redis-cli --cluster create ... --cluster-replicas 0`, and
//! waits until every node reports `cluster_state:ok` and knows the other two.
//! A start that fails because a port was taken in between is retried with new
//! ports. Dropping the value kills the three processes and removes the
//! directory.
//!
//! ```ignore
//! mod support;
//! let cluster = support::redis_cluster::RedisCluster::start().await;
//! let cache = RedisClusterCache::connect(&cluster.url(), "p:".into()).await?;
//! let mut node0 = cluster.node(0).await; // plain connection to one node
//! ```

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Number of primaries.
pub const NODES: usize = 3;
/// Start attempts (with fresh ports) before giving up.
const ATTEMPTS: usize = 3;
/// Longest one attempt may take, from spawning to `cluster_state:ok` everywhere.
const START_WITHIN: Duration = Duration::from_secs(20);

/// Three running cluster nodes; see the module documentation.
pub struct RedisCluster {
    /// Client ports of the nodes, in `redis-cli --cluster create` order.
    pub ports: Vec<u16>,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts a fresh cluster; panics with the nodes' logs if it cannot.
    pub async fn start() -> RedisCluster {
        let mut errors = Vec::new();
        for _ in 0..ATTEMPTS {
            let mut cluster = RedisCluster::spawn();
            // `form` has its own deadline; this one also covers a hung redis-cli.
            match tokio::time::timeout(START_WITHIN * 2, cluster.form()).await {
                Ok(Ok(())) => return cluster,
                Ok(Err(e)) => errors.push(format!("{e}\n{}", cluster.logs())),
                Err(_) => errors.push(format!(
                    "not ready within {:?}\n{}",
                    START_WITHIN * 2,
                    cluster.logs()
                )),
            }
            // Dropping `cluster` kills its nodes before the next attempt.
        }
        panic!(
            "could not start a {NODES}-node Redis Cluster:\n{}",
            errors.join("\n---\n")
        );
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// `redis://127.0.0.1:Pi` of node `i`.
    pub fn node_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.ports[i])
    }

    /// A plain (non-cluster) connection to node `i`, for checks such as
    /// `DBSIZE` or `CLUSTER KEYSLOT`.
    pub async fn node(&self, i: usize) -> redis::aio::MultiplexedConnection {
        node_conn(self.ports[i]).await.unwrap()
    }

    /// Spawns the three servers (they may not be listening yet).
    fn spawn() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * NODES);
        let (client, bus) = ports.split_at(NODES);
        let children = client
            .iter()
            .zip(bus)
            .map(|(&port, &bus)| spawn_node(dir.path(), port, bus))
            .collect();
        RedisCluster {
            ports: client.to_vec(),
            children,
            dir,
        }
    }

    /// Waits for the nodes, creates the cluster, waits for `cluster_state:ok`.
    async fn form(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_WITHIN;
        for (i, &port) in self.ports.iter().enumerate() {
            loop {
                if let Some(status) = self.children[i].try_wait().map_err(|e| e.to_string())? {
                    return Err(format!("redis-server on port {port} exited: {status}"));
                }
                if let Ok(mut conn) = node_conn(port).await {
                    if redis::cmd("PING")
                        .query_async::<String>(&mut conn)
                        .await
                        .is_ok()
                    {
                        break;
                    }
                }
                if Instant::now() > deadline {
                    return Err(format!("redis-server on port {port} never answered PING"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        let mut create = tokio::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &self.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| format!("cannot run redis-cli ({e}); apt-get install redis-server"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }

        loop {
            let mut waiting = Vec::new();
            for &port in &self.ports {
                let info = cluster_info(port).await.unwrap_or_default();
                if !(info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{NODES}"))
                    && info.contains("cluster_slots_ok:16384"))
                {
                    waiting.push(format!("node {port}: {}", info.replace("\r\n", " ")));
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("cluster not ok: {}", waiting.join("; ")));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The tail of every node's log, for failure messages.
    fn logs(&self) -> String {
        self.ports
            .iter()
            .map(|port| {
                let log =
                    std::fs::read_to_string(self.dir.path().join(format!("redis-{port}.log")))
                        .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("== redis-server {port} ==\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in &mut self.children {
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    _ => break,
                }
            }
        }
    }
}

/// `n` distinct ports that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        // Held until all are picked, so the same port is not returned twice.
        held.push(listener);
    }
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

fn spawn_node(dir: &Path, port: u16, bus: u16) -> Child {
    Command::new("redis-server")
        .current_dir(dir)
        .args(["--port", &port.to_string()])
        .args(["--cluster-port", &bus.to_string()])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", "5000"])
        .args(["--dir", &dir.display().to_string()])
        .args(["--logfile", &format!("redis-{port}.log")])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--bind", "127.0.0.1"])
        .args(["--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start redis-server ({e}); install it with `apt-get install redis-server`"
            )
        })
}

async fn node_conn(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))?
        .get_multiplexed_async_connection()
        .await
}

async fn cluster_info(port: u16) -> redis::RedisResult<String> {
    let mut conn = node_conn(port).await?;
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
}
