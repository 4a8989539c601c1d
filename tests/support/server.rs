//! Starts the real service on `127.0.0.1:0` for a test, with a throw-away
//! state directory, and offers small JSON helpers to drive it over HTTP.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use warming::api::Server;
use warming::config::Settings;

/// Settings for a test: the given origin, embedded cache, no built-in
/// schedules (the hourly one could fire mid-test), no rate limit.
pub fn settings(origin_template: &str) -> Settings {
    let mut s = Settings::default();
    s.service.listen = "127.0.0.1:0".into();
    s.service.origin_url = Some(origin_template.to_string());
    s.service.builtin_schedules = false;
    s.tunables.max_origin_rps = 0;
    s.tunables.backoff_base = Duration::from_millis(10);
    s
}

/// A running service plus an HTTP client.
pub struct TestServer {
    server: Option<Server>,
    pub url: String,
    pub http: reqwest::Client,
    pub state_dir: std::path::PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts with a fresh state directory.
    pub async fn start(mut settings: Settings) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        settings.service.state_dir = dir.path().to_path_buf();
        let mut t = Self::start_in(settings).await;
        t._dir = Some(dir);
        t
    }

    /// Starts with `settings.service.state_dir` as given (restart tests).
    pub async fn start_in(settings: Settings) -> TestServer {
        let state_dir = settings.service.state_dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start(settings, listener)
            .await
            .expect("service starts");
        TestServer {
            url: server.base_url(),
            server: Some(server),
            http: reqwest::Client::new(),
            state_dir,
            _dir: None,
        }
    }

    pub fn engine(&self) -> &std::sync::Arc<warming::warm::Engine> {
        &self.server.as_ref().unwrap().engine
    }

    /// Sends `req` and returns the status and the body as JSON (or as a
    /// JSON string when it is not JSON).
    async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The Prometheus text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        get_text(&self.http, &format!("{}/metrics", self.url)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.http.get(format!("{}{path}", self.url))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, body: String) -> (StatusCode, Value) {
        let req = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        Self::send(req).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        Self::send(self.http.delete(format!("{}{path}", self.url))).await
    }

    /// Polls `GET /warm/jobs/{id}` until the job is done (panics after `within`).
    pub async fn wait_job(&self, job_id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/warm/jobs/{job_id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["done"] == true {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} not done in {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until `check(status)` holds (panics after `within`).
    pub async fn wait_status(
        &self,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, body) = self.get("/warm/status").await;
            if check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "status never showed {what} in {within:?}: {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Orderly shutdown, as on SIGTERM.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// Asserts the `{"error": {"code", "message"}}` shape and returns the code.
pub fn error_code(body: &Value) -> String {
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"));
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "no message in {body}"
    );
    code.to_string()
}

/// The body of `GET url` as text (e.g. a `/metrics` page).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// A TCP port free on 127.0.0.1 right now (for a child process to bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
