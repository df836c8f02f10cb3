//! Webhooks: each event POSTed as JSON to an endpoint, signed the Standard
//! Webhooks way (see `herald_client::webhooks`).
//!
//! An answer of 2xx is success. 408, 429 and 5xx, timeouts and connection
//! errors are retried (after `Retry-After` when the endpoint gives one);
//! 410 Gone disables the endpoint until the channels are reloaded (its
//! events fail, and go to the dead letters for a redrive); other 4xx fail
//! at once unless `retry_4xx`. Redirects are not followed. At most
//! `concurrency` requests are in flight; an event that waits longer than
//! the timeout for a place, or finds the circuit breaker open, is left for
//! later without an attempt.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use bytes::Bytes;
use herald::{Event, domain::Recipient};
use herald_client::webhooks::{self, Secret};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;
use tracing::warn;

use super::{
    Channel, ChannelKind, Failure, Next, Reason, Sent, SettingError, breaker::Breaker,
    settings::WebhookSettings,
};
use crate::metrics::ChannelGauges;

/// Most bytes of an endpoint's answer kept in an error.
const ANSWER_SNIPPET: usize = 200;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A webhook endpoint.
pub struct WebhookChannel {
    name: String,
    url: Uri,
    /// The URL as attempts, logs and readers see it: user information and
    /// query values hidden (they may be credentials).
    shown: String,
    secrets: Vec<Secret>,
    timeout: Duration,
    retry_4xx: bool,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    places: Semaphore,
    concurrency: u32,
    breaker: Breaker,
    disabled: AtomicBool,
    gauges: ChannelGauges,
}

impl WebhookChannel {
    /// The channel `name` of `settings` (checked when the file was read).
    pub fn new(
        name: &str,
        settings: &WebhookSettings,
        gauges: ChannelGauges,
    ) -> Result<Self, SettingError> {
        let url: Uri = settings
            .url
            .parse()
            .map_err(|_| SettingError::new("url", "not a URL"))?;
        let secrets = settings
            .secret
            .iter()
            .chain(&settings.secrets)
            .map(|s| Secret::parse(s).map_err(|e| SettingError::new("secret", e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*super::client_tls(settings.tls_ca.as_deref())?).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        gauges.disabled.set(0);
        Ok(Self {
            name: name.to_owned(),
            shown: herald::redact::url(&settings.url),
            url,
            secrets,
            timeout: settings.timeout,
            retry_4xx: settings.retry_4xx,
            client,
            places: Semaphore::new(settings.concurrency as usize),
            concurrency: settings.concurrency,
            breaker: Breaker::new(
                settings.breaker_failures,
                settings.breaker_cooldown,
                gauges.breaker.clone(),
            ),
            disabled: AtomicBool::new(false),
            gauges,
        })
    }

    /// The `webhook-id` of `event` to this endpoint: the same on every retry.
    fn message_id(&self, event: &Event) -> String {
        format!("msg_{}_{}", event.id.simple(), self.name)
    }

    /// One POST of `event`, within the timeout.
    async fn post(&self, event: &Event) -> Result<Sent, Failure> {
        let body = Bytes::from(event.to_json().to_string());
        let headers = webhooks::headers(
            &self.message_id(event),
            SystemTime::now(),
            &self.secrets,
            &body,
        );
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("herald/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| Failure::give_up(Reason::Request, e.to_string()))?;
        request.headers_mut().extend(headers);
        let answer = async {
            let response = self.client.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Failure::retry(
                        Reason::Connect,
                        format!("cannot connect: {}", root_cause(&e)),
                    )
                } else {
                    Failure::retry(
                        Reason::Http,
                        format!("HTTP exchange failed: {}", root_cause(&e)),
                    )
                }
            })?;
            let (parts, mut body) = response.into_parts();
            let mut snippet = Vec::new();
            if !parts.status.is_success() {
                while snippet.len() < ANSWER_SNIPPET {
                    match body.frame().await {
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                let room = ANSWER_SNIPPET - snippet.len();
                                snippet.extend_from_slice(&data[..data.len().min(room)]);
                            }
                        }
                        _ => break,
                    }
                }
            }
            Ok::<_, Failure>((parts.status, parts.headers, snippet))
        };
        let (status, headers, snippet) = tokio::time::timeout(self.timeout, answer)
            .await
            .map_err(|_| {
                Failure::retry(
                    Reason::Timeout,
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                )
            })??;
        self.judge(status, &headers, &snippet)
    }

    /// What an answer means.
    fn judge(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        snippet: &[u8],
    ) -> Result<Sent, Failure> {
        let code = status.as_u16();
        if status.is_success() {
            return Ok(Sent {
                http_status: Some(code),
            });
        }
        let text = herald::error::truncate(&String::from_utf8_lossy(snippet), ANSWER_SNIPPET);
        let error = match text.trim() {
            "" => format!("HTTP {status}"),
            answer => format!("HTTP {status}: {answer}"),
        };
        let mut failure = match code {
            410 => {
                if !self.disabled.swap(true, Ordering::Relaxed) {
                    warn!(channel = %self.name, url = %self.shown, "endpoint answered 410 Gone; disabled until the channels are reloaded");
                    self.gauges.disabled.set(1);
                }
                Failure::give_up(Reason::Gone, format!("{error} (endpoint disabled)"))
            }
            408 | 429 | 500..=599 => Failure::retry(
                if code < 500 {
                    Reason::Http4xx
                } else {
                    Reason::Http5xx
                },
                error,
            ),
            400..=499 if self.retry_4xx => Failure::retry(Reason::Http4xx, error),
            400..=499 => Failure::give_up(Reason::Http4xx, error),
            _ => Failure::give_up(
                Reason::HttpOther,
                format!("{error} (redirects are not followed)"),
            ),
        };
        failure.http_status = Some(code);
        if let (Next::Retry(_), Some(after)) = (failure.next, retry_after(headers)) {
            failure.next = Next::Retry(Some(after.min(MAX_RETRY_AFTER)));
        }
        Err(failure)
    }
}

/// The innermost source of an error: what the system said
/// (`Connection refused (os error 111)`), without the layers around it.
fn root_cause(err: &dyn std::error::Error) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// A `Retry-After` header: seconds, or an HTTP date.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

#[async_trait]
impl Channel for WebhookChannel {
    async fn send(&self, event: &Event, _: Option<&Recipient>) -> Result<Sent, Failure> {
        if self.disabled.load(Ordering::Relaxed) {
            return Err(Failure {
                attempted: false,
                ..Failure::give_up(
                    Reason::Disabled,
                    "the endpoint answered 410 Gone and is disabled until the channels are reloaded",
                )
            });
        }
        let place = match tokio::time::timeout(self.timeout, self.places.acquire()).await {
            Ok(Ok(place)) => place,
            _ => {
                return Err(Failure::later(
                    Reason::Busy,
                    format!(
                        "{} requests to the endpoint stayed in flight for {}",
                        self.concurrency,
                        humantime::format_duration(self.timeout)
                    ),
                ));
            }
        };
        let result = self.breaker.guard(self.post(event)).await;
        drop(place);
        result
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    fn target(&self) -> String {
        self.shown.clone()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::IntGauge;

    use super::*;

    fn channel() -> WebhookChannel {
        let settings: WebhookSettings = toml::from_str(
            "url = \"http://127.0.0.1:9/hook\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        )
        .expect("settings");
        let gauges = ChannelGauges {
            breaker: IntGauge::new("b", "b").expect("gauge"),
            disabled: IntGauge::new("d", "d").expect("gauge"),
        };
        WebhookChannel::new("hooks", &settings, gauges).expect("channel")
    }

    #[test]
    fn answers_are_judged_by_status_and_retry_after() {
        let hooks = channel();
        let judged = |code: u16, retry_after: Option<&str>| {
            let mut headers = http::HeaderMap::new();
            if let Some(value) = retry_after {
                headers.insert(header::RETRY_AFTER, value.parse().expect("header"));
            }
            hooks.judge(StatusCode::from_u16(code).expect("status"), &headers, b"no")
        };
        assert_eq!(
            judged(204, None),
            Ok(Sent {
                http_status: Some(204)
            })
        );
        for (code, reason, next) in [
            (500, Reason::Http5xx, Next::Retry(None)),
            (429, Reason::Http4xx, Next::Retry(None)),
            (408, Reason::Http4xx, Next::Retry(None)),
            (422, Reason::Http4xx, Next::GiveUp),
            (301, Reason::HttpOther, Next::GiveUp),
        ] {
            let failure = judged(code, None).expect_err("a failure");
            assert_eq!(
                (failure.reason, failure.next, failure.http_status),
                (reason, next, Some(code))
            );
        }
        let failure = judged(503, Some("7")).expect_err("a failure");
        assert_eq!(failure.next, Next::Retry(Some(Duration::from_secs(7))));
        assert!(
            failure
                .error
                .starts_with("HTTP 503 Service Unavailable: no"),
            "{}",
            failure.error
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        let Next::Retry(Some(wait)) = judged(503, Some(&later)).expect_err("a failure").next else {
            panic!("a wait");
        };
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(
            judged(503, Some("99999999")).expect_err("a failure").next,
            Next::Retry(Some(MAX_RETRY_AFTER))
        );
        // A 410 disables the endpoint: what follows is refused without a request.
        assert_eq!(judged(410, None).expect_err("gone").reason, Reason::Gone);
        assert!(hooks.disabled.load(Ordering::Relaxed));
        assert_eq!(hooks.gauges.disabled.get(), 1);
    }
}
