//! The email channel: a message per event to the recipient's address, over
//! SMTP (STARTTLS, TLS or, for a local test server, plain), through a pool
//! of connections, rendered from the channel's [`templates`].
//!
//! The address is the recipient record's (or a payload field's, when the
//! channel names one); an event whose user has none is skipped, with the
//! reason, not failed. Each message carries a `Message-ID` made from the
//! event and the channel (the same for every attempt, so a receiver can
//! tell a repeat). A 4xx answer or a broken connection is retried with the
//! channel's backoff; a 5xx answer fails the channel for that event at
//! once, the server's answer recorded in the attempt. A circuit breaker
//! stops attempts to a server that keeps failing.

pub mod templates;

use std::time::Duration;

use async_trait::async_trait;
use herald::{
    Event,
    domain::{ChannelKind, OptOut, Recipient},
    links::{Link, LinkSigner},
};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Mailbox, MultiPart, SinglePart,
        header::{ContentType, HeaderName, HeaderValue},
    },
    transport::smtp::{
        PoolConfig,
        authentication::Credentials,
        client::{Certificate, CertificateStore, Tls, TlsParameters},
    },
};

use super::{
    Channel, Failure, Reason, Sent, SettingError,
    breaker::Breaker,
    settings::{EmailSettings, EmailTls},
};
use crate::metrics::ChannelGauges;
use templates::Templates;

/// Sends each event as an email.
pub struct EmailChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    templates: Templates,
    address_field: Option<String>,
    /// Where links lead (no trailing `/`), their signer, and whether HTML
    /// messages carry the open pixel.
    links: Option<(String, LinkSigner, bool)>,
    timeout: Duration,
    breaker: Breaker,
    /// The channel's name, in each `Message-ID`.
    name: String,
    /// The domain of `from`, in each `Message-ID`.
    domain: String,
    /// `smtp://host:port`, as attempts record it.
    shown: String,
}

impl EmailChannel {
    /// The channel `name` of `settings` (connections are made on first
    /// use); a bad setting or template is an error naming it.
    pub fn new(
        name: &str,
        settings: &EmailSettings,
        gauges: ChannelGauges,
    ) -> Result<Self, SettingError> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| SettingError::new("from", format!("not an address: {e}")))?;
        let (host, port) = settings
            .server
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
            .filter(|(host, _)| !host.is_empty())
            .ok_or_else(|| SettingError::new("server", "must be host:port"))?;
        let tls = match settings.tls {
            EmailTls::None => Tls::None,
            EmailTls::Starttls => Tls::Required(tls_parameters(&host, settings)?),
            EmailTls::Tls => Tls::Wrapper(tls_parameters(&host, settings)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host)
            .port(port)
            .tls(tls)
            .timeout(Some(settings.timeout))
            .pool_config(PoolConfig::new().max_size(settings.pool.max(1)));
        if let Some(user) = &settings.username {
            let password = settings.password.clone().unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        let scheme = match settings.tls {
            EmailTls::Tls => "smtps",
            _ => "smtp",
        };
        Ok(Self {
            transport: builder.build(),
            domain: from.email.domain().to_owned(),
            from,
            templates: Templates::load(&settings.templates)?,
            address_field: settings.address_field.clone(),
            links: settings.links.as_ref().map(|l| {
                (
                    l.base_url.trim_end_matches('/').to_owned(),
                    LinkSigner::new(&l.secret),
                    l.open_tracking,
                )
            }),
            timeout: settings.timeout,
            breaker: Breaker::new(
                settings.breaker_failures,
                settings.breaker_cooldown,
                gauges.breaker,
            ),
            name: name.to_owned(),
            shown: format!("{scheme}://{host}:{port}"),
        })
    }

    /// Where `event` goes: the payload field the channel names, else the
    /// recipient's address; `None` when there is none.
    fn address(&self, event: &Event, recipient: Option<&Recipient>) -> Option<String> {
        let from_payload = self.address_field.as_ref().and_then(|field| {
            event
                .payload
                .as_ref()?
                .get(field)?
                .as_str()
                .map(str::to_owned)
        });
        from_payload
            .or_else(|| recipient.map(|r| r.contact.email.clone()))
            .filter(|a| !a.is_empty())
    }

    /// The unsubscribe and open links of `event`, if the channel has links:
    /// the unsubscribe link opts out of this channel for the event's
    /// category (else its type, else altogether).
    fn links(&self, event: &Event) -> Option<(String, String)> {
        let (base, signer, _) = self.links.as_ref()?;
        let opt_out = OptOut {
            channel: self.name.clone(),
            category: event.category.clone(),
            event_type: if event.category.is_empty() {
                event.event_type.clone()
            } else {
                String::new()
            },
        };
        let unsubscribe = signer.sign(&Link::Unsubscribe {
            user: event.user_id.clone(),
            opt_out,
        });
        let open = signer.sign(&Link::Open {
            event_id: event.id,
            user: event.user_id.clone(),
        });
        Some((
            format!("{base}/v1/unsubscribe?t={unsubscribe}"),
            format!("{base}/v1/open?t={open}"),
        ))
    }

    /// The message of `event` to `to`, rendered.
    fn message(
        &self,
        event: &Event,
        recipient: Option<&Recipient>,
        to: Mailbox,
    ) -> Result<Message, Failure> {
        let links = self.links(event);
        let context = match &links {
            Some((unsubscribe, open)) => {
                minijinja::context! { unsubscribe => unsubscribe, open_pixel => open }
            }
            None => minijinja::Value::from(()),
        };
        let rendered = self
            .templates
            .render(event, recipient, context)
            .unwrap_or_else(|| {
                Ok(templates::Rendered {
                    subject: event.description.clone(),
                    text: super::notification_line(event),
                    html: None,
                })
            })
            .map_err(|e| Failure::give_up(Reason::Request, e))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!(
                "<{}.{}@{}>",
                event.id.simple(),
                self.name,
                self.domain
            )));
        let mut html = rendered.html;
        if let Some((unsubscribe, open)) = &links {
            // The base URL was checked and the token is hex: nothing to encode.
            let header = |name: &'static str, value: String| {
                HeaderValue::dangerous_new_pre_encoded(
                    HeaderName::new_from_ascii_str(name),
                    value.clone(),
                    value,
                )
            };
            builder = builder
                .raw_header(header("List-Unsubscribe", format!("<{unsubscribe}>")))
                .raw_header(header(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
            if let (Some(body), Some((_, _, true))) = (html.as_mut(), &self.links) {
                body.push_str(&format!(
                    "<img src=\"{open}\" width=\"1\" height=\"1\" alt=\"\">"
                ));
            }
        }
        let text = SinglePart::builder()
            .header(ContentType::TEXT_PLAIN)
            .body(rendered.text);
        let built = match html {
            Some(html) => builder.multipart(
                MultiPart::alternative().singlepart(text).singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
            ),
            None => builder.singlepart(text),
        };
        built.map_err(|e| {
            Failure::give_up(Reason::Request, format!("cannot build the message: {e}"))
        })
    }
}

/// TLS with the CA of `tls_ca` (else the Web PKI roots) for `host`.
fn tls_parameters(host: &str, settings: &EmailSettings) -> Result<TlsParameters, SettingError> {
    let mut params = TlsParameters::builder(host.to_owned());
    params = match &settings.tls_ca {
        Some(path) => {
            let bad = |e: &dyn std::fmt::Display| {
                SettingError::new("tls_ca", format!("{}: {e}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(&e))?;
            params
                .certificate_store(CertificateStore::None)
                .add_root_certificate(Certificate::from_pem(&pem).map_err(|e| bad(&e))?)
        }
        None => params.certificate_store(CertificateStore::WebpkiRoots),
    };
    params
        .build_rustls()
        .map_err(|e| SettingError::new("tls", e.to_string()))
}

/// What a failed send means.
fn failure(err: &lettre::transport::smtp::Error) -> Failure {
    let error = err.to_string();
    if err.is_permanent() {
        Failure::give_up(Reason::Smtp5xx, error)
    } else if err.is_transient() {
        Failure::retry(Reason::Smtp4xx, error)
    } else if err.is_timeout() {
        Failure::retry(Reason::Timeout, error)
    } else {
        Failure::retry(Reason::Connect, error)
    }
}

#[async_trait]
impl Channel for EmailChannel {
    async fn send(&self, event: &Event, recipient: Option<&Recipient>) -> Result<Sent, Failure> {
        let Some(address) = self.address(event, recipient) else {
            return Err(Failure::skip(
                Reason::NoAddress,
                format!("no email address for user {}", event.user_id),
            ));
        };
        let email = address.parse().map_err(|e| {
            Failure::give_up(Reason::Request, format!("{address:?} is no address: {e}"))
        })?;
        let name = recipient
            .map(|r| r.contact.name.clone())
            .filter(|n| !n.is_empty());
        let message = self.message(event, recipient, Mailbox::new(name, email))?;
        let send = async {
            match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
                Ok(Ok(_)) => Ok(Sent::default()),
                Ok(Err(err)) => Err(failure(&err)),
                Err(_) => Err(Failure::retry(
                    Reason::Timeout,
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                )),
            }
        };
        self.breaker.guard(send).await
    }

    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    fn target(&self) -> String {
        self.shown.clone()
    }
}
