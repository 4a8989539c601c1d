//! The origin client alone: fetches keys `k0` .. `k{N-1}` through the
//! service's own `HttpOrigin` (the same pooled hyper client and URL
//! encoding a worker uses) with `C` concurrent tasks, and nothing else: no
//! queue, rate limiter, retries, cache write, job or event. What it reaches
//! is the most keys per second any warm run built on this client could
//! reach on the same machine; `scripts/bench-warm.sh` runs it beside the
//! service (`BENCH_CLIENT_FLOOR=1`) to split the gap to the origin's own
//! capacity into the client's share and the service's.
//!
//! ```sh
//! cargo run --release --example origin_floor -- 'http://127.0.0.1:18080/items/{key}' 100000 256 http1
//! ```
//!
//! Prints one JSON line: `{"keys", "seconds", "keys_per_sec", "cpu_seconds", "errors"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use warming::config::OriginHttp;
use warming::origin::Origin;
use warming::origin::http::HttpOrigin;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ! {
    eprintln!("usage: origin_floor URL_TEMPLATE KEYS CONCURRENCY [http1|http2|auto]");
    std::process::exit(2)
}

/// CPU seconds (user + system) this process has used, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) close with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    ticks as f64 / 100.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    let keys: usize = args[1].parse().unwrap_or_else(|_| usage());
    let conc: usize = args[2].parse().unwrap_or_else(|_| usage());
    let version = match args.get(3).map(String::as_str).unwrap_or("http1") {
        "http1" => OriginHttp::Http1,
        "http2" => OriginHttp::Http2,
        "auto" => OriginHttp::Auto,
        _ => usage(),
    };
    let origin = Arc::new(HttpOrigin::with_version(&args[0], version).expect("origin URL"));
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc.max(1) {
        let (origin, next, errors) = (origin.clone(), next.clone(), errors.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    break;
                }
                let key = format!("k{i}");
                if origin.fetch(&key, Duration::from_secs(10)).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"keys\": {keys}, \"seconds\": {secs:.3}, \"keys_per_sec\": {:.0}, \"cpu_seconds\": {cpu:.2}, \"errors\": {}}}",
        keys as f64 / secs,
        errors.load(Ordering::Relaxed)
    );
}
