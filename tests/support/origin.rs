//! A controllable origin server for integration tests.
//!
//! [`TestOrigin::start`] binds an axum server on `127.0.0.1:0` inside the test
//! process. It answers `GET /items/{key}` (and `GET /get?k={key}`, for query
//! templates) with `200` and the body `value-of:<key>`, and lets the test
//! script its behaviour and then inspect what it received:
//!
//! | knob | effect |
//! |---|---|
//! | [`set_latency`](TestOrigin::set_latency) | every response waits this long first |
//! | [`set_max_age`](TestOrigin::set_max_age) | `Cache-Control: max-age=N` on 200s |
//! | [`set_status`](TestOrigin::set_status) | permanent status for one key (e.g. 404) |
//! | [`fail_next`](TestOrigin::fail_next) | the next answers for one key use these statuses, then 200 |
//! | [`set_retry_after`](TestOrigin::set_retry_after) | `Retry-After: N` on every non-2xx |
//! | [`set_redirect`](TestOrigin::set_redirect) | `302 Found` to a location instead of a 200 for one key |
//!
//! | question | accessor |
//! |---|---|
//! | how many requests, in total or for one key | [`requests`](TestOrigin::requests), [`requests_for`](TestOrigin::requests_for) |
//! | which keys were asked for, in arrival order (dispatch order checks) | [`request_keys`](TestOrigin::request_keys) |
//! | when they arrived (rate checks) | [`request_times`](TestOrigin::request_times) |
//! | most requests in flight at once | [`max_concurrency`](TestOrigin::max_concurrency) |
//! | requests to any other path (a key that escaped its segment) | [`stray_requests`](TestOrigin::stray_requests) |
//! | the HTTP versions the item requests came in (HTTP/1.1, or HTTP/2 without TLS) | [`versions`](TestOrigin::versions) |
//!
//! Keys are taken from the *raw* request path and percent-decoded here, so an
//! encoded `/` (`..%2Fadmin`) arrives as the key `../admin`; a request whose
//! path was changed by the client (`/admin`) lands in the stray list instead.
//!
//! Scripted state (statuses, `fail_next` queues) survives
//! [`reset_counts`](TestOrigin::reset_counts); only the counters are cleared.
//! Dropping the `TestOrigin` stops the server; [`shutdown`](TestOrigin::shutdown)
//! does so and waits until the port refuses connections.
//!
//! ```ignore
//! mod support;
//! use support::origin::TestOrigin;
//!
//! let origin = TestOrigin::start().await;
//! origin.fail_next("k", &[503, 503]);
//! // ... point the service at origin.url_template() ...
//! assert_eq!(origin.requests_for("k"), 3);
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, Response, StatusCode, Uri, Version, header};
use axum::routing::get;
use parking_lot::Mutex;
use percent_encoding::percent_decode_str;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running test origin; see the module documentation.
pub struct TestOrigin {
    addr: SocketAddr,
    state: Arc<Shared>,
    /// Dropping or firing this stops the server.
    shutdown: Option<oneshot::Sender<()>>,
    /// The server task, awaited by [`TestOrigin::shutdown`].
    task: Option<JoinHandle<()>>,
}

/// State shared between the test and the handlers.
#[derive(Default)]
struct Shared {
    script: Mutex<Script>,
    log: Mutex<Log>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// How the origin behaves; set by the test.
#[derive(Default)]
struct Script {
    latency: Duration,
    max_age: Option<u64>,
    retry_after: Option<u64>,
    statuses: HashMap<String, u16>,
    fail_next: HashMap<String, VecDeque<u16>>,
    redirects: HashMap<String, String>,
}

/// What the origin received; cleared by `reset_counts`.
#[derive(Default)]
struct Log {
    per_key: HashMap<String, usize>,
    /// The key of every item request, in arrival order.
    keys: Vec<String>,
    times: Vec<Instant>,
    stray: Vec<String>,
    versions: Vec<Version>,
}

impl TestOrigin {
    /// Binds `127.0.0.1:0` and serves until dropped. Must be called inside a
    /// tokio runtime (any `#[tokio::test]`).
    pub async fn start() -> TestOrigin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test origin");
        let addr = listener.local_addr().expect("test origin address");
        let state = Arc::new(Shared::default());
        let app = Router::new()
            .route("/items/{*key}", get(item))
            .route("/get", get(query_item))
            .fallback(stray)
            .with_state(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .expect("test origin server");
        });
        TestOrigin {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:PORT/items/{key}`.
    pub fn url_template(&self) -> String {
        format!("http://{}/items/{{key}}", self.addr)
    }

    /// `http://127.0.0.1:PORT/get?k={key}`: the key in the query string.
    pub fn query_url_template(&self) -> String {
        format!("http://{}/get?k={{key}}", self.addr)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every response (any status) waits `d` before it is sent.
    pub fn set_latency(&self, d: Duration) {
        self.state.script.lock().latency = d;
    }

    /// Adds `Cache-Control: max-age=N` to 200 responses; `None` removes it.
    pub fn set_max_age(&self, secs: Option<u64>) {
        self.state.script.lock().max_age = secs;
    }

    /// Answers `status` for `key` from now on (200 clears it).
    pub fn set_status(&self, key: &str, status: u16) {
        self.state
            .script
            .lock()
            .statuses
            .insert(key.to_string(), status);
    }

    /// The next requests for `key` get these statuses, in order; after that the
    /// key answers as before (200 unless [`set_status`](Self::set_status)).
    /// Appends to statuses still queued.
    pub fn fail_next(&self, key: &str, statuses: &[u16]) {
        self.state
            .script
            .lock()
            .fail_next
            .entry(key.to_string())
            .or_default()
            .extend(statuses.iter().copied());
    }

    /// Adds `Retry-After: N` (seconds) to every non-2xx response.
    pub fn set_retry_after(&self, secs: Option<u64>) {
        self.state.script.lock().retry_after = secs;
    }

    /// Answers `302 Found` with `Location: location` where `key` would get a
    /// 200 (scripted failures still come first).
    pub fn set_redirect(&self, key: &str, location: &str) {
        self.state
            .script
            .lock()
            .redirects
            .insert(key.to_string(), location.to_string());
    }

    /// Requests received on the item routes (stray paths not counted).
    pub fn requests(&self) -> usize {
        self.state.log.lock().times.len()
    }

    /// Requests received for `key` (the decoded key).
    pub fn requests_for(&self, key: &str) -> usize {
        self.state.log.lock().per_key.get(key).copied().unwrap_or(0)
    }

    /// The (decoded) key of every request on the item routes, in the order
    /// the requests arrived; retries appear once per attempt.
    pub fn request_keys(&self) -> Vec<String> {
        self.state.log.lock().keys.clone()
    }

    /// Arrival time of every request on the item routes, in order.
    pub fn request_times(&self) -> Vec<Instant> {
        self.state.log.lock().times.clone()
    }

    /// The most requests that arrived within any one-second window.
    pub fn busiest_second(&self) -> usize {
        let times = self.request_times();
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|u| u.duration_since(times[i]) < Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Highest number of item requests in flight at the same moment.
    pub fn max_concurrency(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    /// The HTTP version of every request on the item routes, in order.
    pub fn versions(&self) -> Vec<Version> {
        self.state.log.lock().versions.clone()
    }

    /// Raw paths (with query) of requests that matched no item route.
    pub fn stray_requests(&self) -> Vec<String> {
        self.state.log.lock().stray.clone()
    }

    /// Clears counters, arrival times and keys, stray requests and the concurrency
    /// high-water mark; the script (latency, statuses, queues) is kept.
    pub fn reset_counts(&self) {
        let mut log = self.state.log.lock();
        *log = Log::default();
        self.state.max_in_flight.store(
            self.state.in_flight.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
    }

    /// Stops the server and waits until it no longer accepts connections, e.g.
    /// to test a refused connection on a known port.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            // Graceful shutdown waits for open keep-alive connections; the
            // listener is already closed, which is all callers need.
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Counts a request as in flight while alive, even if the client goes away
/// and the handler future is dropped mid-way.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /items/{*key}`: the key is the raw rest of the path, percent-decoded.
async fn item(State(shared): State<Arc<Shared>>, version: Version, uri: Uri) -> Response<Body> {
    let raw = uri.path().strip_prefix("/items/").unwrap_or_default();
    answer(&shared, version, decode(raw)).await
}

/// `GET /get?k={key}`: the key is the raw `k` parameter, percent-decoded.
async fn query_item(
    State(shared): State<Arc<Shared>>,
    version: Version,
    uri: Uri,
) -> Response<Body> {
    let raw = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("k="))
        .unwrap_or_default();
    answer(&shared, version, decode(raw)).await
}

/// Any other path: recorded so tests can prove a key never escaped.
async fn stray(State(shared): State<Arc<Shared>>, uri: Uri) -> Response<Body> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    shared.log.lock().stray.push(path.to_string());
    plain(StatusCode::NOT_FOUND, format!("stray request {path}"))
}

fn decode(raw: &str) -> String {
    percent_decode_str(raw).decode_utf8_lossy().into_owned()
}

async fn answer(shared: &Shared, version: Version, key: String) -> Response<Body> {
    let _in_flight = InFlight::enter(shared);
    {
        let mut log = shared.log.lock();
        log.times.push(Instant::now());
        log.versions.push(version);
        log.keys.push(key.clone());
        *log.per_key.entry(key.clone()).or_default() += 1;
    }
    let (latency, status, max_age, retry_after, redirect) = {
        let mut script = shared.script.lock();
        let queued = script.fail_next.get_mut(&key).and_then(VecDeque::pop_front);
        let status = queued
            .or_else(|| script.statuses.get(&key).copied())
            .unwrap_or(200);
        let redirect = script
            .redirects
            .get(&key)
            .filter(|_| status == 200)
            .cloned();
        (
            script.latency,
            status,
            script.max_age,
            script.retry_after,
            redirect,
        )
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(location) = redirect {
        let mut response = plain(StatusCode::FOUND, format!("moved to {location}"));
        let location =
            HeaderValue::from_str(&location).expect("redirect location is a header value");
        response.headers_mut().insert(header::LOCATION, location);
        return response;
    }
    let status = StatusCode::from_u16(status).expect("valid status code in test script");
    if status.is_success() {
        let mut response = plain(status, format!("value-of:{key}"));
        if let Some(secs) = max_age {
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("max-age={secs}")).expect("header value"),
            );
        }
        response
    } else {
        let mut response = plain(status, format!("status {} for {key}", status.as_u16()));
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

fn plain(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
