//! Cluster-wide access statistics: every instance sees the accesses
//! recorded at every other instance, so predictions use them all, and the
//! warms every other instance completed, so a predictor that models when
//! cached values expire (the learned one) knows of every write.
//!
//! # Key
//! `warming:{ns}:accesses` — stream; one entry per batch of up to 500
//! events, fields `o` (the writing instance's id) and `d` (the batch:
//! lines `<unix ms>\t<key>\n` for a read, `w<unix ms>,<ttl s>\t<key>\n`
//! for a completed warm whose value lives `ttl` seconds (`w<unix ms>\t`
//! from older instances: the TTL not said); keys never contain control characters, see
//! `crate::keys`, and any that do are skipped; so are lines a reader cannot
//! parse, e.g. a newer kind of event). Trimmed with
//! `MAXLEN ~ 1,000,000` entries on every write.
//!
//! Readers use plain `XREAD` from their last id, no consumer group: a group
//! would hand each entry to one instance, and every instance must see every
//! access. A reader skips the entries its own instance wrote (it recorded
//! those locally already). A reader starts at the stream's end: accesses
//! recorded before it started are not replayed. A reader that falls more
//! than the trim length behind loses the oldest batches (statistics only).

use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::queue::as_string;
use super::{ClusterError, Coordinator, Result};

/// Accesses per stream entry.
pub const BATCH: usize = 500;
/// Approximate stream length kept.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Longest a reader blocks per `XREAD`.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Entries per `XREAD`.
const READ_COUNT: usize = 100;

/// One recorded access, or one completed warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub key: String,
    /// Unix milliseconds.
    pub at_ms: u64,
    /// A warm wrote the key's value at `at_ms`, to live this many seconds
    /// (0: not said); `None`: a read.
    pub warmed: Option<u32>,
}

/// Publishes this instance's accesses and reads everyone else's.
#[derive(Clone)]
pub struct AccessFanout {
    coord: Coordinator,
    conn: ConnectionManager,
    stream: String,
    instance_id: String,
}

impl AccessFanout {
    pub fn new(coord: &Coordinator, instance_id: &str) -> Self {
        AccessFanout {
            coord: coord.clone(),
            conn: coord.conn(),
            stream: coord.namespace().key("accesses"),
            instance_id: instance_id.to_owned(),
        }
    }

    /// Appends `accesses`, one stream entry per 500, in one pipeline.
    pub async fn publish(&self, accesses: &[Access]) -> Result<()> {
        if accesses.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for chunk in accesses.chunks(BATCH) {
            let data = encode(chunk);
            if data.is_empty() {
                continue;
            }
            pipe.cmd("XADD")
                .arg(&self.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(MAX_ENTRIES)
                .arg("*")
                .arg("o")
                .arg(&self.instance_id)
                .arg("d")
                .arg(data)
                .ignore();
        }
        let mut conn = self.conn.clone();
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Reads every other instance's accesses, from now on, into `tx` (one
    /// `Vec` per stream read) until `stop` fires or `tx` closes. Uses a
    /// connection of its own (the read blocks); errors are retried.
    pub fn spawn_reader(
        &self,
        tx: mpsc::Sender<Vec<Access>>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = me.read_loop(tx) => {}
                () = stop.cancelled() => {}
            }
        })
    }

    async fn read_loop(self, tx: mpsc::Sender<Vec<Access>>) {
        let mut conn: Option<ConnectionManager> = None;
        let mut last: Option<String> = None;
        loop {
            if tx.is_closed() {
                return;
            }
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match self
                    .coord
                    .dedicated(READ_BLOCK + Duration::from_secs(5))
                    .await
                {
                    Ok(c) => conn.insert(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "access fanout: no connection");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            let from = match &last {
                Some(id) => id.clone(),
                None => match self.tail_id(c).await {
                    Ok(id) => last.insert(id).clone(),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                },
            };
            let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(READ_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(&from)
                .query_async(c)
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "access fanout: read failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let (next, batch) = match self.decode_reply(reply) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "access fanout: bad entry");
                    continue;
                }
            };
            if let Some(id) = next {
                last = Some(id);
            }
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return;
            }
        }
    }

    /// The id of the stream's last entry, or `0-0`.
    async fn tail_id(&self, conn: &mut ConnectionManager) -> Result<String> {
        let v: Value = redis::cmd("XREVRANGE")
            .arg(&self.stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(conn)
            .await?;
        if let Value::Array(entries) = v
            && let Some(Value::Array(entry)) = entries.into_iter().next()
            && let Some(id) = entry.first()
        {
            return as_string(id);
        }
        Ok("0-0".to_owned())
    }

    /// (last id read, accesses written by other instances).
    fn decode_reply(&self, reply: Value) -> Result<(Option<String>, Vec<Access>)> {
        let mut last = None;
        let mut out = Vec::new();
        let streams = match reply {
            Value::Nil => return Ok((None, out)),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|s| match s {
                    Value::Array(kv) => kv.into_iter().nth(1),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Value::Map(m) => m.into_iter().map(|(_, v)| v).collect(),
            other => return Err(ClusterError::Decode(format!("xread reply {other:?}"))),
        };
        for entries in streams {
            let Value::Array(entries) = entries else {
                continue;
            };
            for entry in entries {
                let Value::Array(parts) = entry else { continue };
                let mut parts = parts.into_iter();
                let (Some(id), Some(Value::Array(fields))) = (parts.next(), parts.next()) else {
                    continue;
                };
                last = Some(as_string(&id)?);
                let (mut origin, mut data) = (None, None);
                for kv in fields.chunks(2) {
                    if let [f, v] = kv {
                        match as_string(f)?.as_str() {
                            "o" => origin = Some(as_string(v)?),
                            "d" => data = Some(as_string(v)?),
                            _ => {}
                        }
                    }
                }
                if origin.as_deref() == Some(self.instance_id.as_str()) {
                    continue;
                }
                if let Some(data) = data {
                    decode(&data, &mut out);
                }
            }
        }
        Ok((last, out))
    }
}

impl std::fmt::Debug for AccessFanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessFanout")
            .field("stream", &self.stream)
            .field("instance_id", &self.instance_id)
            .finish()
    }
}

/// `<at_ms>\t<key>\n` per access, `w<at_ms>\t<key>\n` per warm; keys with
/// control characters are skipped.
fn encode(accesses: &[Access]) -> String {
    let mut s = String::with_capacity(accesses.len() * 32);
    for a in accesses {
        if a.key.is_empty() || a.key.chars().any(char::is_control) {
            continue;
        }
        match a.warmed {
            Some(ttl) => {
                s.push('w');
                s.push_str(&a.at_ms.to_string());
                s.push(',');
                s.push_str(&ttl.to_string());
            }
            None => s.push_str(&a.at_ms.to_string()),
        }
        s.push('\t');
        s.push_str(&a.key);
        s.push('\n');
    }
    s
}

fn decode(data: &str, out: &mut Vec<Access>) {
    for line in data.lines() {
        let (warm, line) = match line.strip_prefix('w') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        let Some((when, key)) = line.split_once('\t') else {
            continue;
        };
        let (at, ttl) = match when.split_once(',') {
            Some((at, ttl)) if warm => (at, ttl.parse().ok()),
            Some(_) => continue,
            None => (when, Some(0)),
        };
        if let (Ok(at_ms), Some(ttl)) = (at.parse(), ttl) {
            let warmed = warm.then_some(ttl);
            out.push(Access {
                key: key.to_owned(),
                at_ms,
                warmed,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_skips_control_characters() {
        let accesses = vec![
            Access {
                key: "user:1".into(),
                at_ms: 5,
                warmed: None,
            },
            Access {
                key: "bad\nkey".into(),
                at_ms: 6,
                warmed: None,
            },
            Access {
                key: "a b\u{e9}".into(),
                at_ms: 7,
                warmed: None,
            },
            Access {
                key: "warm:1".into(),
                at_ms: 8,
                warmed: Some(300),
            },
        ];
        let mut out = Vec::new();
        decode(&encode(&accesses), &mut out);
        assert_eq!(
            out,
            vec![
                accesses[0].clone(),
                accesses[2].clone(),
                accesses[3].clone()
            ]
        );
        // Lines of an unknown kind are skipped, the rest kept; a warm from
        // an instance that does not say the TTL has 0.
        out.clear();
        decode("x5\tk\n9\tkept\n9,5\tread-with-ttl\nw10\told\n", &mut out);
        let got: Vec<_> = out.iter().map(|a| (a.key.as_str(), a.warmed)).collect();
        assert_eq!(got, [("kept", None), ("old", Some(0))]);
    }
}
