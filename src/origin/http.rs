//! HTTP origin: `GET` a URL template with `{key}` replaced by the
//! percent-encoded key, through one pooled client.
//!
//! # Key encoding
//! Everything except the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`)
//! is percent-encoded, so a key is always one opaque path segment or query
//! value: `../admin` becomes `..%2Fadmin`, `http://x` becomes `http%3A%2F%2Fx`,
//! and `?`, `#`, `&`, `%` and spaces are encoded too. The keys `.` and `..`
//! (which URL parsers collapse even when encoded) and the empty key are
//! refused with [`OriginError::InvalidKey`]; `crate::keys` refuses them
//! earlier as well.
//!
//! # Template
//! [`HttpOrigin::new`] checks the template once: it must contain `{key}`, use
//! `http` or `https`, parse as a URL once a key is substituted, and keep
//! `{key}` out of the scheme, credentials, host, port and fragment (checked by
//! substituting two different keys and comparing those parts).
//!
//! # Responses
//! | origin answer | result |
//! |---|---|
//! | 2xx | [`Fetched`] with the body; `max_age` from `Cache-Control` (below) |
//! | 404 | [`OriginError::NotFound`] |
//! | any other status | [`OriginError::Status`], with `Retry-After` (seconds or HTTP-date) |
//! | no answer within the timeout (body included) | [`OriginError::Timeout`] |
//! | connection failed | [`OriginError::Connect`] |
//! | anything else (e.g. body cut off) | [`OriginError::Other`] |
//!
//! `max_age` is `None` unless a valid `s-maxage` or `max-age` directive is
//! present (`s-maxage` wins, as it targets shared caches like this one).
//! `no-store` and `no-cache` alone do not change it: the service warms what
//! it is told to, and the default TTL applies.
//!
//! Redirects are followed only within the same scheme, host and port, at
//! most [`MAX_REDIRECTS`] times; any other redirect is returned as its 3xx
//! status (not retryable).
//!
//! # HTTP version
//! [`OriginHttp`] (`WARMING_ORIGIN_HTTP`): `http1` (the default) speaks
//! HTTP/1.1 over a pool of keep-alive connections, so load spreads over many
//! connections (as a connection-balancing load balancer in front of the
//! origin needs); `auto` does the same on `http://` and lets TLS ALPN choose
//! HTTP/2 or HTTP/1.1 on `https://`; `http2` uses only HTTP/2, on `http://`
//! too (prior knowledge, h2c), which multiplexes the concurrent fetches over
//! one connection: fewer system calls per key than one request per
//! connection at a time (docs/benchmarks.md has the figures).
//!
//! # Client
//! hyper-util's pooled client (keep-alive, `TCP_NODELAY`), behind
//! tower-http's redirect policy. For `https://`, rustls trusts the Mozilla
//! roots and the CA certificates of `WARMING_ORIGIN_CA_FILE` (an origin
//! signed by an internal CA). The origin is reached directly: proxy
//! variables (`HTTP_PROXY`, ...) are not read.
//!
//! reqwest, which wraps the same client, is not used here: its layers cost
//! about as much CPU per fetch as the pooled request itself, and the warm
//! path makes one fetch per key (docs/benchmarks.md, "the origin client without reqwest").

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tower::ServiceExt;
use tower_http::follow_redirect::FollowRedirect;
use tower_http::follow_redirect::policy::{And, Limited, PolicyExt, SameOrigin};
use url::Url;

use super::{Fetched, Origin, OriginError};
use crate::config::OriginHttp;

/// Same-origin redirects followed per request.
pub const MAX_REDIRECTS: usize = 3;

/// Idle keep-alive connections kept per origin host; above the largest
/// concurrency the service allows, so a busy pool never reconnects.
const POOL_IDLE_PER_HOST: usize = 1024;

/// Idle connections are closed after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Placeholder replaced by the encoded key.
const PLACEHOLDER: &str = "{key}";

/// Stands in for the key while the template is normalized: alphanumeric, so
/// URL parsing leaves it as it is, and unlikely to be in a template.
const MARKER: &str = "wArMiNgKeYmArKeR0x7f3a";

/// Everything but RFC 3986 unreserved characters is encoded.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const AGENT: &str = concat!("warming/", env!("CARGO_PKG_VERSION"));

type Pool = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;
type Redirects = And<Limited, SameOrigin>;

/// Fetches `GET <template with {key} replaced>` through a pooled client
/// (module documentation, "Client").
pub struct HttpOrigin {
    template: String,
    /// The template, normalized by a URL parser once, split at `{key}`.
    parts: Vec<String>,
    client: FollowRedirect<Pool, Redirects>,
}

impl HttpOrigin {
    /// Checks `template` and builds the client; see the module documentation.
    pub fn new(template: &str) -> Result<Self, OriginError> {
        Self::with_version(template, OriginHttp::default())
    }

    /// [`HttpOrigin::new`], speaking the HTTP `version` given.
    pub fn with_version(template: &str, version: OriginHttp) -> Result<Self, OriginError> {
        Self::with_options(template, version, None)
    }

    /// [`HttpOrigin::with_version`], also trusting the CA certificates of
    /// the PEM file `ca_file` (`WARMING_ORIGIN_CA_FILE`) for `https://`.
    pub fn with_options(
        template: &str,
        version: OriginHttp,
        ca_file: Option<&Path>,
    ) -> Result<Self, OriginError> {
        let template = template.trim();
        let parts = check_template(template)
            .map_err(|why| OriginError::Other(format!("origin URL {template:?}: {why}")))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let tls = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(ca_file)?)
            .https_or_http();
        let connector = match version {
            OriginHttp::Auto => tls.enable_all_versions().wrap_connector(http),
            OriginHttp::Http1 => tls.enable_http1().wrap_connector(http),
            OriginHttp::Http2 => tls.enable_http2().wrap_connector(http),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if version == OriginHttp::Http2 {
            // Prior knowledge (h2c on http://). Flow-control windows sized
            // to the connection (not the 64 KiB stream default), so many
            // concurrent small responses never wait for window updates.
            builder.http2_only(true).http2_adaptive_window(true);
        }
        let redirects = Limited::new(MAX_REDIRECTS)
            .and::<_, Empty<Bytes>, hyper_util::client::legacy::Error>(SameOrigin::new());
        Ok(HttpOrigin {
            template: template.to_string(),
            parts,
            client: FollowRedirect::with_policy(builder.build(connector), redirects),
        })
    }

    /// The URL that would be requested for `key`.
    pub fn url_for(&self, key: &str) -> Result<String, OriginError> {
        if key.is_empty() || key == "." || key == ".." {
            return Err(OriginError::InvalidKey(format!(
                "{key:?} cannot be a URL segment"
            )));
        }
        let encoded = utf8_percent_encode(key, KEY_ENCODE).to_string();
        Ok(self.parts.join(&encoded))
    }

    fn uri(&self, key: &str) -> Result<Uri, OriginError> {
        Uri::try_from(self.url_for(key)?).map_err(|e| OriginError::InvalidKey(e.to_string()))
    }

    async fn get(&self, uri: Uri) -> Result<Fetched, OriginError> {
        let request = Request::get(uri)
            .header(USER_AGENT, HeaderValue::from_static(AGENT))
            .header(ACCEPT, HeaderValue::from_static("*/*"))
            .body(Empty::new())
            .map_err(|e| OriginError::InvalidKey(e.to_string()))?;
        let response = self.client.clone().oneshot(request).await.map_err(|e| {
            if e.is_connect() {
                OriginError::Connect(error_chain(&e))
            } else {
                OriginError::Other(error_chain(&e))
            }
        })?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Err(OriginError::NotFound);
        }
        if !status.is_success() {
            return Err(OriginError::Status {
                status: status.as_u16(),
                retry_after: retry_after(response.headers()),
            });
        }
        let max_age = max_age(response.headers());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| OriginError::Other(error_chain(&e)))?
            .to_bytes();
        Ok(Fetched { body, max_age })
    }
}

#[async_trait]
impl Origin for HttpOrigin {
    async fn fetch(&self, key: &str, timeout: Duration) -> Result<Fetched, OriginError> {
        let uri = self.uri(key)?;
        // The timeout covers connecting, the response head and the body.
        tokio::time::timeout(timeout, self.get(uri))
            .await
            .unwrap_or(Err(OriginError::Timeout))
    }

    fn describe(&self) -> String {
        self.template.clone()
    }
}

fn substitute(template: &str, key: &str) -> String {
    template.replace(
        PLACEHOLDER,
        &utf8_percent_encode(key, KEY_ENCODE).to_string(),
    )
}

/// TLS client settings: the Mozilla roots, plus every certificate of the
/// PEM file `ca_file` when one is given (a file without any is refused).
fn tls_config(ca_file: Option<&Path>) -> Result<ClientConfig, OriginError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad =
            |why: String| OriginError::Other(format!("origin CA file {}: {why}", path.display()));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("holds no PEM certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OriginError::Other(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Checks `template` (module documentation) and returns it normalized by
/// the URL parser (host lower-cased, IDNA applied, dot segments removed),
/// split where the key goes.
fn check_template(template: &str) -> Result<Vec<String>, String> {
    if !template.contains(PLACEHOLDER) {
        return Err(format!("must contain {PLACEHOLDER}"));
    }
    let parse = |key: &str| Url::parse(&substitute(template, key)).map_err(|e| e.to_string());
    let a = parse("sample-a")?;
    let b = parse("sample-b")?;
    if !matches!(a.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            a.scheme()
        ));
    }
    if a.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    let fixed = |u: &Url| {
        (
            u.scheme().to_string(),
            u.username().to_string(),
            u.password().map(str::to_string),
            u.host_str().map(str::to_string),
            u.port(),
        )
    };
    if fixed(&a) != fixed(&b) {
        return Err(format!(
            "{PLACEHOLDER} may only appear in the path or the query"
        ));
    }
    if a.fragment() != b.fragment() {
        return Err(format!("{PLACEHOLDER} in the fragment is never sent"));
    }
    if template.contains(MARKER) {
        return Err(format!("must not contain {MARKER:?}"));
    }
    let mut normalized =
        Url::parse(&template.replace(PLACEHOLDER, MARKER)).map_err(|e| e.to_string())?;
    // A fragment is never sent.
    normalized.set_fragment(None);
    let parts: Vec<String> = normalized
        .as_str()
        .split(MARKER)
        .map(str::to_string)
        .collect();
    if parts.len() != template.matches(PLACEHOLDER).count() + 1 {
        return Err(format!("{PLACEHOLDER} did not survive URL normalization"));
    }
    // What the client will be handed for a key must parse as its URI too.
    Uri::try_from(parts.join("sample-a")).map_err(|e| e.to_string())?;
    Ok(parts)
}

/// hyper's own message is terse ("client error (Connect)"); add the causes.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `s-maxage` if present and valid, else `max-age`; `None` otherwise.
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for directive in value.split(',') {
            let Some((name, arg)) = directive.split_once('=') else {
                continue;
            };
            let Ok(secs) = arg.trim().trim_matches('"').parse::<u64>() else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "max-age" => max_age = max_age.or(Some(secs)),
                "s-maxage" => s_maxage = s_maxage.or(Some(secs)),
                _ => {}
            }
        }
    }
    s_maxage.or(max_age).map(Duration::from_secs)
}

/// `Retry-After` as delay-seconds or an HTTP-date (a past date is zero).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(template: &str) -> HttpOrigin {
        HttpOrigin::new(template).unwrap()
    }

    #[test]
    fn keys_stay_in_their_segment() {
        let o = origin("http://127.0.0.1:8080/items/{key}");
        assert_eq!(
            o.url_for("user:1").unwrap(),
            "http://127.0.0.1:8080/items/user%3A1"
        );
        assert_eq!(
            o.url_for("../admin").unwrap(),
            "http://127.0.0.1:8080/items/..%2Fadmin"
        );
        assert_eq!(
            o.url_for("http://x").unwrap(),
            "http://127.0.0.1:8080/items/http%3A%2F%2Fx"
        );
        assert_eq!(
            o.url_for("a b?c#d&e%f").unwrap(),
            "http://127.0.0.1:8080/items/a%20b%3Fc%23d%26e%25f"
        );
        assert_eq!(
            o.url_for("A-z.0_9~").unwrap(),
            "http://127.0.0.1:8080/items/A-z.0_9~"
        );
        assert_eq!(
            o.url_for("é").unwrap(),
            "http://127.0.0.1:8080/items/%C3%A9"
        );
        for bad in ["", ".", ".."] {
            assert!(
                matches!(o.url_for(bad), Err(OriginError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn templates_are_normalized_once() {
        let o = origin("HTTP://Example.COM:80/a/./b/../items/{key}?v=1#top");
        assert_eq!(
            o.url_for("k 1").unwrap(),
            "http://example.com/a/items/k%201?v=1"
        );
        assert_eq!(
            o.describe(),
            "HTTP://Example.COM:80/a/./b/../items/{key}?v=1#top"
        );
        let o = origin("http://h/{key}/x/{key}");
        assert_eq!(o.url_for("a/b").unwrap(), "http://h/a%2Fb/x/a%2Fb");
    }

    #[test]
    fn keys_in_the_query() {
        let o = origin("http://h/get?k={key}&v=1");
        assert_eq!(o.url_for("a&v=2").unwrap(), "http://h/get?k=a%26v%3D2&v=1");
        assert_eq!(o.url_for("x#y").unwrap(), "http://h/get?k=x%23y&v=1");
    }

    #[test]
    fn templates_are_checked() {
        for bad in [
            "http://127.0.0.1/items/",
            "ftp://h/{key}",
            "not a url {key}",
            "http://{key}.example.com/",
            "http://h:{key}/",
            "http://{key}@h/",
            "http://h/#{key}",
            "/items/{key}",
        ] {
            assert!(HttpOrigin::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            origin(" https://h/x/{key}/y ").describe(),
            "https://h/x/{key}/y"
        );
    }

    fn headers(name: http::header::HeaderName, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(name.clone(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn cache_control() {
        let secs = |v: &[&str]| max_age(&headers(CACHE_CONTROL, v)).map(|d| d.as_secs());
        assert_eq!(secs(&[]), None);
        assert_eq!(secs(&["public, max-age=60"]), Some(60));
        assert_eq!(secs(&["Max-Age=\"30\""]), Some(30));
        assert_eq!(secs(&["max-age=60, s-maxage=600"]), Some(600));
        assert_eq!(secs(&["s-maxage=600", "max-age=60"]), Some(600));
        assert_eq!(secs(&["max-age=0"]), Some(0));
        assert_eq!(secs(&["no-store"]), None);
        assert_eq!(secs(&["no-cache, max-age=abc"]), None);
        assert_eq!(secs(&["max-age=-5"]), None);
    }

    #[test]
    fn retry_after_forms() {
        let parse = |v: &str| retry_after(&headers(RETRY_AFTER, &[v]));
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let future = (chrono::Utc::now() + chrono::TimeDelta::seconds(30)).to_rfc2822();
        let wait = parse(&future).unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert_eq!(parse("soon"), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
