//! The origin client against a real HTTP server over loopback: key encoding,
//! status mapping, retries, timeouts, refused connections and the rate limit,
//! all observed from the server's side through [`TestOrigin`].
//!
//! Wall-clock assertions are lower bounds only; upper bounds on time live in
//! the unit tests, which run on tokio's paused clock.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use support::origin::TestOrigin;
use warming::config::OriginHttp;
use warming::origin::http::HttpOrigin;
use warming::origin::limiter::OriginLimiter;
use warming::origin::retry::{FetchObserver, FetchReport, GuardedOrigin, RetryPolicy};
use warming::origin::{Origin, OriginError};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Records what [`GuardedOrigin`] reports.
#[derive(Default)]
struct Recorder {
    rate_limited: AtomicUsize,
    attempts: Mutex<Vec<(String, Result<(), OriginError>)>>,
}

impl FetchObserver for Recorder {
    fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::SeqCst);
    }
    fn attempt(&self, key: &str, _latency: Duration, result: Result<(), &OriginError>) {
        self.attempts
            .lock()
            .push((key.to_string(), result.map_err(Clone::clone)));
    }
}

impl Recorder {
    fn attempts_for(&self, key: &str) -> usize {
        self.attempts
            .lock()
            .iter()
            .filter(|(k, _)| k == key)
            .count()
    }
}

fn http(origin: &TestOrigin) -> HttpOrigin {
    HttpOrigin::new(&origin.url_template()).unwrap()
}

fn guarded(origin: &TestOrigin, rps: u32) -> GuardedOrigin {
    GuardedOrigin::new(Arc::new(http(origin)), Arc::new(OriginLimiter::new(rps)))
}

fn policy(retries: u32, backoff_ms: u64) -> RetryPolicy {
    RetryPolicy {
        retries,
        backoff_base: Duration::from_millis(backoff_ms),
        timeout: TIMEOUT,
    }
}

fn body(report: &FetchReport) -> String {
    let fetched = report.result.as_ref().expect("fetch succeeded");
    String::from_utf8(fetched.body.to_vec()).unwrap()
}

const TRICKY_KEYS: &[&str] = &[
    "user:123:profile",
    "../admin",
    "../../etc/passwd",
    "http://x",
    "//evil.example/x",
    "a b?c#d",
    "k=v&x=y",
    "100%25 real %",
    "a+b",
    "é/ü/日本",
    "...",
    "./x",
];

#[tokio::test]
async fn keys_arrive_intact_and_never_change_the_path() {
    let server = TestOrigin::start().await;
    for template in [server.url_template(), server.query_url_template()] {
        let origin = HttpOrigin::new(&template).unwrap();
        server.reset_counts();
        for key in TRICKY_KEYS {
            let url = origin.url_for(key).unwrap();
            assert!(url.starts_with(&server.base_url()), "{key:?} -> {url}");
            let fetched = origin
                .fetch(key, TIMEOUT)
                .await
                .unwrap_or_else(|e| panic!("{key:?}: {e}"));
            assert_eq!(
                fetched.body,
                format!("value-of:{key}").into_bytes(),
                "{key:?} via {template}"
            );
            assert_eq!(server.requests_for(key), 1, "{key:?} via {template}");
        }
        assert_eq!(server.requests(), TRICKY_KEYS.len());
        assert_eq!(server.stray_requests(), Vec::<String>::new());
    }
}

#[tokio::test]
async fn dot_keys_are_refused_before_any_request() {
    let server = TestOrigin::start().await;
    let origin = http(&server);
    for key in ["", ".", ".."] {
        assert!(
            matches!(
                origin.fetch(key, TIMEOUT).await,
                Err(OriginError::InvalidKey(_))
            ),
            "{key:?}"
        );
    }
    assert_eq!(server.requests() + server.stray_requests().len(), 0);
}

#[tokio::test]
async fn success_with_and_without_max_age() {
    let server = TestOrigin::start().await;
    let origin = http(&server);

    let fetched = origin.fetch("a", TIMEOUT).await.unwrap();
    assert_eq!(fetched.body, "value-of:a");
    assert_eq!(fetched.max_age, None);

    server.set_max_age(Some(120));
    let fetched = origin.fetch("a", TIMEOUT).await.unwrap();
    assert_eq!(fetched.max_age, Some(Duration::from_secs(120)));
    assert_eq!(origin.describe(), server.url_template());
}

#[tokio::test]
async fn not_found_is_final_after_one_request() {
    let server = TestOrigin::start().await;
    server.set_status("missing", 404);
    assert_eq!(
        http(&server).fetch("missing", TIMEOUT).await,
        Err(OriginError::NotFound)
    );
    server.reset_counts();

    let observer = Recorder::default();
    let report = guarded(&server, 0)
        .fetch("missing", policy(3, 10), &observer)
        .await;
    assert_eq!(report.result, Err(OriginError::NotFound));
    assert_eq!(report.attempts, 1);
    assert_eq!(server.requests_for("missing"), 1);
    assert_eq!(observer.attempts_for("missing"), 1);
}

#[tokio::test]
async fn other_client_errors_are_final() {
    let server = TestOrigin::start().await;
    server.set_status("forbidden", 403);
    let report = guarded(&server, 0)
        .fetch("forbidden", policy(3, 10), &Recorder::default())
        .await;
    assert_eq!(
        report.result,
        Err(OriginError::Status {
            status: 403,
            retry_after: None
        })
    );
    assert_eq!(report.attempts, 1);
    assert_eq!(server.requests_for("forbidden"), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let server = TestOrigin::start().await;
    server.fail_next("flaky", &[503, 503]);
    let observer = Recorder::default();
    let start = Instant::now();
    let report = guarded(&server, 0)
        .fetch("flaky", policy(3, 100), &observer)
        .await;
    let elapsed = start.elapsed();

    assert_eq!(body(&report), "value-of:flaky");
    assert_eq!(report.attempts, 3);
    assert_eq!(server.requests_for("flaky"), 3);
    // Backoff of 100 ms, then 200 ms, at least.
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    let results: Vec<_> = observer
        .attempts
        .lock()
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let failed = Err(OriginError::Status {
        status: 503,
        retry_after: None,
    });
    assert_eq!(results, vec![failed.clone(), failed, Ok(())]);
}

#[tokio::test]
async fn exhausted_retries_return_the_last_error() {
    let server = TestOrigin::start().await;
    server.set_status("down", 500);
    let observer = Recorder::default();
    let report = guarded(&server, 0)
        .fetch("down", policy(2, 10), &observer)
        .await;
    assert_eq!(
        report.result,
        Err(OriginError::Status {
            status: 500,
            retry_after: None
        })
    );
    assert_eq!(report.attempts, 3);
    assert_eq!(server.requests_for("down"), 3);
    assert_eq!(observer.attempts_for("down"), 3);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let server = TestOrigin::start().await;
    server.set_retry_after(Some(1));
    server.fail_next("busy", &[429]);
    let start = Instant::now();
    let report = guarded(&server, 0)
        .fetch("busy", policy(2, 10), &Recorder::default())
        .await;
    assert_eq!(body(&report), "value-of:busy");
    assert_eq!(report.attempts, 2);
    // Backoff alone would be 10-20 ms.
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    server.set_status("limited", 429);
    let err = http(&server).fetch("limited", TIMEOUT).await.unwrap_err();
    assert_eq!(
        err,
        OriginError::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(1))
        }
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let server = TestOrigin::start().await;
    server.set_latency(Duration::from_millis(500));
    let timeout = Duration::from_millis(100);

    let start = Instant::now();
    assert_eq!(
        http(&server).fetch("slow", timeout).await,
        Err(OriginError::Timeout)
    );
    assert!(start.elapsed() >= timeout);
    server.reset_counts();

    let observer = Recorder::default();
    let policy = RetryPolicy {
        retries: 1,
        backoff_base: Duration::from_millis(10),
        timeout,
    };
    let report = guarded(&server, 0).fetch("slow", policy, &observer).await;
    assert_eq!(report.result, Err(OriginError::Timeout));
    assert_eq!(report.attempts, 2);
    assert_eq!(server.requests_for("slow"), 2);
    assert_eq!(observer.attempts_for("slow"), 2);
}

#[tokio::test]
async fn refused_connection_is_a_connect_error() {
    let server = TestOrigin::start().await;
    let template = server.url_template();
    server.shutdown().await;
    let origin = HttpOrigin::new(&template).unwrap();
    let err = origin.fetch("k", TIMEOUT).await.unwrap_err();
    assert!(matches!(err, OriginError::Connect(_)), "{err:?}");
    assert!(err.is_retryable());

    let report = GuardedOrigin::new(Arc::new(origin), Arc::new(OriginLimiter::new(0)))
        .fetch("k", policy(1, 10), &Recorder::default())
        .await;
    assert!(matches!(report.result, Err(OriginError::Connect(_))));
    assert_eq!(report.attempts, 2);
}

#[tokio::test]
async fn redirects_are_followed_only_within_the_origin() {
    let server = TestOrigin::start().await;
    let other = TestOrigin::start().await;
    let origin = http(&server);

    server.set_redirect("moved", "/items/new-home");
    let fetched = origin.fetch("moved", TIMEOUT).await.unwrap();
    assert_eq!(fetched.body, "value-of:new-home");

    // Another port, or another name for the same host, is another origin.
    for location in [
        format!("{}/items/x", other.base_url()),
        format!("http://localhost:{}/items/x", server.addr().port()),
    ] {
        server.set_redirect("away", &location);
        let err = origin.fetch("away", TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            OriginError::Status {
                status: 302,
                retry_after: None
            },
            "{location}"
        );
        assert!(!err.is_retryable());
    }
    assert_eq!(other.requests(), 0);
    assert_eq!(server.requests_for("x"), 0);

    // A redirect loop stops after a few hops.
    server.set_redirect("loop", "/items/loop");
    let err = origin.fetch("loop", TIMEOUT).await.unwrap_err();
    assert_eq!(
        err,
        OriginError::Status {
            status: 302,
            retry_after: None
        }
    );
    assert_eq!(
        server.requests_for("loop"),
        1 + warming::origin::http::MAX_REDIRECTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_under_concurrency() {
    const RPS: u32 = 30;
    const TASKS: usize = 100;
    let server = TestOrigin::start().await;
    let guarded = guarded(&server, RPS);
    let observer = Arc::new(Recorder::default());

    let tasks: Vec<_> = (0..TASKS)
        .map(|i| {
            let (guarded, observer) = (guarded.clone(), observer.clone());
            tokio::spawn(async move {
                guarded
                    .fetch(&format!("k{i}"), policy(0, 10), &*observer)
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().result.is_ok());
    }

    let times = server.request_times();
    assert_eq!(times.len(), TASKS);
    let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
    let rate = (TASKS - 1) as f64 / span;
    assert!(
        rate <= f64::from(RPS) + 1.0,
        "{rate:.1} requests/s over {span:.2} s"
    );
    assert_eq!(observer.attempts.lock().len(), TASKS);
    // All but the first waited for the limiter.
    assert!(observer.rate_limited.load(Ordering::SeqCst) >= TASKS - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_fetches_run_concurrently_on_one_pool() {
    let server = TestOrigin::start().await;
    server.set_latency(Duration::from_millis(300));
    let origin = Arc::new(http(&server));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let origin = origin.clone();
            tokio::spawn(async move { origin.fetch(&format!("c{i}"), TIMEOUT).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(server.requests(), 50);
    assert!(
        server.max_concurrency() >= 40,
        "{}",
        server.max_concurrency()
    );
}

/// `WARMING_ORIGIN_HTTP`: `auto` and `http1` speak HTTP/1.1 to an `http://`
/// origin; `http2` speaks HTTP/2 without TLS (prior knowledge) and keeps the
/// same semantics (status mapping, `max-age`, key encoding) while multiplexing
/// concurrent fetches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_http_version_is_the_one_configured() {
    use axum::http::Version;
    let server = TestOrigin::start().await;
    for (setting, want) in [
        (OriginHttp::Auto, Version::HTTP_11),
        (OriginHttp::Http1, Version::HTTP_11),
        (OriginHttp::Http2, Version::HTTP_2),
    ] {
        server.reset_counts();
        let origin = Arc::new(HttpOrigin::with_version(&server.url_template(), setting).unwrap());
        server.set_max_age(Some(60));
        let fetched = origin.fetch("a/b c", TIMEOUT).await.unwrap();
        assert_eq!(fetched.body, "value-of:a/b c", "{setting:?}");
        assert_eq!(
            fetched.max_age,
            Some(Duration::from_secs(60)),
            "{setting:?}"
        );
        server.set_status("gone", 404);
        assert!(
            matches!(
                origin.fetch("gone", TIMEOUT).await,
                Err(OriginError::NotFound)
            ),
            "{setting:?}"
        );
        server.set_latency(Duration::from_millis(200));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let origin = origin.clone();
                tokio::spawn(async move { origin.fetch(&format!("m{i}"), TIMEOUT).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_ok(), "{setting:?}");
        }
        server.set_latency(Duration::ZERO);
        assert!(
            server.max_concurrency() >= 15,
            "{setting:?}: {}",
            server.max_concurrency()
        );
        let versions = server.versions();
        assert_eq!(versions.len(), 22, "{setting:?}");
        assert!(
            versions.iter().all(|v| *v == want),
            "{setting:?}: want {want:?}, origin saw {versions:?}"
        );
        assert!(server.stray_requests().is_empty());
    }
}

#[tokio::test]
async fn test_origin_scripts_statuses_in_order() {
    let server = TestOrigin::start().await;
    let origin = http(&server);
    server.set_status("k", 404);
    server.fail_next("k", &[503, 429]);
    let status = |s| {
        Err(OriginError::Status {
            status: s,
            retry_after: None,
        })
    };
    assert_eq!(origin.fetch("k", TIMEOUT).await.map(|_| ()), status(503));
    assert_eq!(origin.fetch("k", TIMEOUT).await.map(|_| ()), status(429));
    assert_eq!(
        origin.fetch("k", TIMEOUT).await.map(|_| ()),
        Err(OriginError::NotFound)
    );
    server.set_status("k", 200);
    assert!(origin.fetch("k", TIMEOUT).await.is_ok());
    assert_eq!(server.requests_for("k"), 4);
    server.reset_counts();
    assert_eq!((server.requests(), server.requests_for("k")), (0, 0));
    assert!(server.request_times().is_empty());
}

/// An HTTPS origin whose certificate is signed by a CA of its own (as an
/// internal service's is). Answers `tls:<path>` and records the HTTP
/// version of each request. Returns its port and the versions seen.
async fn start_tls_origin(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> (u16, Arc<Mutex<Vec<http::Version>>>) {
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    seen.lock().push(req.version());
                    let body = format!("tls:{}", req.uri().path());
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, versions)
}

/// `WARMING_ORIGIN_CA_FILE`: an HTTPS origin signed by a private CA is
/// refused with the public roots alone, and fetched (HTTP/2 by ALPN with
/// `auto`, HTTP/1.1 with `http1`) once that CA's certificate is given. A CA
/// file that holds no certificate, or is missing, is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_signed_by_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "warming test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into());
    let (port, versions) = start_tls_origin(server.der().clone(), key).await;
    let template = format!("https://localhost:{port}/items/{{key}}");

    let public_only = HttpOrigin::with_options(&template, OriginHttp::Auto, None).unwrap();
    let err = public_only.fetch("k", TIMEOUT).await.unwrap_err();
    assert!(matches!(err, OriginError::Connect(_)), "{err:?}");
    assert!(versions.lock().is_empty(), "no request without trust");

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    for (setting, want) in [
        (OriginHttp::Auto, http::Version::HTTP_2),
        (OriginHttp::Http1, http::Version::HTTP_11),
    ] {
        let origin = HttpOrigin::with_options(&template, setting, Some(&ca_file)).unwrap();
        let fetched = origin.fetch("a b/c", TIMEOUT).await.unwrap();
        assert_eq!(fetched.body, "tls:/items/a%20b%2Fc", "{setting:?}");
        assert_eq!(versions.lock().last(), Some(&want), "{setting:?}");
    }

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    for bad in [empty, dir.path().join("missing.pem")] {
        let err = HttpOrigin::with_options(&template, OriginHttp::Auto, Some(&bad))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("origin CA file"), "{err}");
    }
}
