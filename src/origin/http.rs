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

use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{CACHE_CONTROL, HeaderMap, RETRY_AFTER};
use reqwest::{Client, StatusCode, Url, redirect};

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

/// Everything but RFC 3986 unreserved characters is encoded.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Fetches `GET <template with {key} replaced>` through a pooled client.
pub struct HttpOrigin {
    template: String,
    client: Client,
}

impl HttpOrigin {
    /// Checks `template` and builds the client; see the module documentation.
    pub fn new(template: &str) -> Result<Self, OriginError> {
        Self::with_version(template, OriginHttp::default())
    }

    /// [`HttpOrigin::new`], speaking the HTTP `version` given.
    pub fn with_version(template: &str, version: OriginHttp) -> Result<Self, OriginError> {
        let template = template.trim();
        check_template(template)
            .map_err(|why| OriginError::Other(format!("origin URL {template:?}: {why}")))?;
        let builder = match version {
            OriginHttp::Auto => Client::builder(),
            OriginHttp::Http1 => Client::builder().http1_only(),
            // Flow-control windows sized to the connection (not the 64 KiB
            // stream default), so many concurrent small responses never
            // wait for window updates.
            OriginHttp::Http2 => Client::builder()
                .http2_prior_knowledge()
                .http2_adaptive_window(true),
        };
        let client = builder
            .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .tcp_nodelay(true)
            .redirect(same_origin_redirects())
            .user_agent(concat!("warming/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OriginError::Other(format!("cannot build HTTP client: {e}")))?;
        Ok(HttpOrigin {
            template: template.to_string(),
            client,
        })
    }

    /// The URL that would be requested for `key`.
    pub fn url_for(&self, key: &str) -> Result<String, OriginError> {
        Ok(self.url(key)?.into())
    }

    fn url(&self, key: &str) -> Result<Url, OriginError> {
        if key.is_empty() || key == "." || key == ".." {
            return Err(OriginError::InvalidKey(format!(
                "{key:?} cannot be a URL segment"
            )));
        }
        Url::parse(&substitute(&self.template, key))
            .map_err(|e| OriginError::InvalidKey(e.to_string()))
    }
}

#[async_trait]
impl Origin for HttpOrigin {
    async fn fetch(&self, key: &str, timeout: Duration) -> Result<Fetched, OriginError> {
        let url = self.url(key)?;
        // reqwest's timeout covers connecting, the response head and the body.
        let response = self
            .client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(classify)?;
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
        let body = response.bytes().await.map_err(classify)?;
        Ok(Fetched { body, max_age })
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

fn check_template(template: &str) -> Result<(), String> {
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
    Ok(())
}

fn same_origin_redirects() -> redirect::Policy {
    redirect::Policy::custom(|attempt| {
        let same = attempt.previous().first().is_some_and(|first| {
            first.scheme() == attempt.url().scheme()
                && first.host_str() == attempt.url().host_str()
                && first.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if same && attempt.previous().len() <= MAX_REDIRECTS {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn classify(e: reqwest::Error) -> OriginError {
    if e.is_timeout() {
        OriginError::Timeout
    } else if e.is_connect() {
        OriginError::Connect(error_chain(&e))
    } else {
        OriginError::Other(error_chain(&e))
    }
}

/// reqwest's own message is terse ("error sending request"); add the causes.
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
    use reqwest::header::HeaderValue;

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

    fn headers(name: reqwest::header::HeaderName, values: &[&str]) -> HeaderMap {
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
