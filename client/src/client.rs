//! [`Client`]: typed calls to the logger.

use std::time::Duration;

use futures_util::Stream;
use herald::{
    Event, EventStatus,
    domain::{BatchResult, DeliveryAttempt, EventInput, StatusChange, json_to_struct},
    pb::{
        self, event_logger_client::EventLoggerClient, inbox_client::InboxClient,
        notifier_client::NotifierClient, recipients_client::RecipientsClient,
    },
};
use tonic::{
    Code,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use tonic_health::pb::health_client::HealthClient;
use uuid::Uuid;

use crate::{
    Error, Tls,
    error::connection_lost,
    query::{ListEvents, Page, every_page_of},
};

/// How idempotent calls are retried while the server answers UNAVAILABLE
/// or the connection breaks during the call.
///
/// ```
/// use std::time::Duration;
/// use herald_client::{Client, RetryPolicy};
///
/// # fn demo() -> Result<(), herald_client::Error> {
/// let patient = RetryPolicy { retries: 20, max_backoff: Duration::from_secs(10), ..RetryPolicy::default() };
/// let client = Client::connect_lazy("http://127.0.0.1:50051")?.with_retry(patient);
/// # let _ = client; Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: no retries).
    pub retries: u32,
    /// Wait before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Longest wait between retries.
    pub max_backoff: Duration,
}

/// How subscriptions resume by default: patient enough for a logger restart.
const RESUBSCRIBE: RetryPolicy = RetryPolicy {
    retries: 20,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(5),
};

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 5,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// An event just created, and what the logger said of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// The event as stored (PENDING).
    pub event: Event,
    /// Its type is not in the logger's event-type registry (a typo?): its
    /// payload was stored unchecked.
    pub unregistered_type: bool,
}

/// Sends the API key, if any, as `authorization: Bearer <key>` on every call.
///
/// ```
/// use herald_client::ApiKey;
///
/// assert!(ApiKey::bearer("hk_0123").is_ok());
/// assert!(ApiKey::bearer("not\na header").is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    /// The interceptor for `key`; an empty key sends nothing. A key given
    /// with its `Bearer ` prefix (copied from a header) is taken without it.
    pub fn bearer(key: &str) -> Result<Self, Error> {
        let key = key.trim_start();
        let key = match key.get(..7) {
            Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => &key[7..],
            _ => key,
        };
        match key.trim() {
            "" => Ok(Self(None)),
            key => format!("Bearer {key}")
                .parse()
                .map(|v| Self(Some(v)))
                .map_err(|_| {
                    Error::Setup("the API key holds characters a header cannot carry".into())
                }),
        }
    }
}

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that carries the API key.
type Authed = InterceptedService<Channel, ApiKey>;

/// A connection to a Herald logger. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Client {
    channel: Channel,
    logger: EventLoggerClient<Authed>,
    pub(crate) notifier: NotifierClient<Authed>,
    pub(crate) inbox: InboxClient<Authed>,
    pub(crate) recipients: RecipientsClient<Authed>,
    pub(crate) health: HealthClient<Channel>,
    pub(crate) retry: RetryPolicy,
    pub(crate) resubscribe: RetryPolicy,
}

impl Client {
    /// Connects to the logger at `url` (`http://host:port`, or `https://`
    /// trusting the public web roots), failing if it cannot be reached now.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), herald_client::Error> {
    /// let client = herald_client::Client::connect("http://127.0.0.1:50051").await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect(url: impl Into<String>) -> Result<Self, Error> {
        Self::connect_with(url, &Tls::default()).await
    }

    /// [`Client::connect`] with TLS settings (a CA to trust, a client certificate).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), herald_client::Error> {
    /// use herald_client::{Client, Tls};
    ///
    /// let tls = Tls::from_files(Some("ca.pem".as_ref()), None, None)?;
    /// let client = Client::connect_with("https://herald.example:50051", &tls).await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect_with(url: impl Into<String>, tls: &Tls) -> Result<Self, Error> {
        let url = url.into();
        let channel = tls
            .endpoint(&url)?
            .connect()
            .await
            .map_err(|e| Error::Connect {
                url: url.clone(),
                reason: error_chain(&e),
            })?;
        Ok(Self::from_channel(channel))
    }

    /// A client that connects on first use (and reconnects as needed), for
    /// services that may start before the logger.
    ///
    /// ```
    /// # fn demo() -> Result<(), herald_client::Error> {
    /// // No connection yet: the first call makes it (and waits for the logger).
    /// let client = herald_client::Client::connect_lazy("http://127.0.0.1:50051")?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn connect_lazy(url: impl Into<String>) -> Result<Self, Error> {
        Self::connect_lazy_with(url, &Tls::default())
    }

    /// [`Client::connect_lazy`] with TLS settings.
    pub fn connect_lazy_with(url: impl Into<String>, tls: &Tls) -> Result<Self, Error> {
        Ok(Self::from_channel(
            tls.endpoint(&url.into())?.connect_lazy(),
        ))
    }

    fn from_channel(channel: Channel) -> Self {
        Self::with_key(channel, ApiKey::default())
    }

    fn with_key(channel: Channel, key: ApiKey) -> Self {
        Self {
            logger: EventLoggerClient::with_interceptor(channel.clone(), key.clone()),
            notifier: NotifierClient::with_interceptor(channel.clone(), key.clone()),
            inbox: InboxClient::with_interceptor(channel.clone(), key.clone()),
            recipients: RecipientsClient::with_interceptor(channel.clone(), key),
            health: HealthClient::new(channel.clone()),
            channel,
            retry: RetryPolicy::default(),
            resubscribe: RESUBSCRIBE,
        }
    }

    /// The same client, authenticating every call with `key` (an API key);
    /// an empty key means none.
    ///
    /// ```
    /// # fn demo() -> Result<(), herald_client::Error> {
    /// let client = herald_client::Client::connect_lazy("http://127.0.0.1:50051")?.with_api_key("hk_0123")?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub fn with_api_key(self, key: &str) -> Result<Self, Error> {
        let (retry, resubscribe) = (self.retry, self.resubscribe);
        Ok(Self::with_key(self.channel, ApiKey::bearer(key)?)
            .with_retry(retry)
            .with_resubscribe(resubscribe))
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same client with another policy for resuming subscriptions (by
    /// default up to 20 reconnects in a row, 100 ms doubling to 5 s: about
    /// 80 s of outage).
    pub fn with_resubscribe(mut self, resubscribe: RetryPolicy) -> Self {
        self.resubscribe = resubscribe;
        self
    }

    /// Creates an event with only a user and a description; not retried,
    /// since without a request id a retry could create it twice.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// let event = client.create_event("alice", "Your order shipped").await?;
    /// assert_eq!(event.status, herald_client::EventStatus::Pending);
    /// # Ok(()) }
    /// ```
    pub async fn create_event(&self, user_id: &str, description: &str) -> Result<Event, Error> {
        self.create(EventInput {
            user_id: user_id.into(),
            description: description.into(),
            ..EventInput::default()
        })
        .await
    }

    /// Creates an event with any of its fields. With a `request_id` the call is
    /// idempotent (the server answers a repeat with the first event), so it is
    /// retried while the server is unavailable; without one it is not.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::EventInput;
    ///
    /// let event = client
    ///     .create(EventInput {
    ///         user_id: "alice".into(),
    ///         description: "Invoice 42 is ready".into(),
    ///         category: "billing".into(),
    ///         request_id: "invoice-42".into(),
    ///         ..EventInput::default()
    ///     })
    ///     .await?;
    /// println!("{}", event.id);
    /// # Ok(()) }
    /// ```
    pub async fn create(&self, event: EventInput) -> Result<Event, Error> {
        Ok(self.create_reporting(event).await?.event)
    }

    /// [`Client::create`], also saying whether the logger's event-type
    /// registry knew the event's type (an unknown one is stored with its
    /// payload unchecked, unless the logger refuses such events).
    pub async fn create_reporting(&self, event: EventInput) -> Result<Created, Error> {
        let request = create_request(event);
        let response = if request.request_id.is_empty() {
            self.logger
                .clone()
                .create_event(request)
                .await?
                .into_inner()
        } else {
            self.retrying(|mut logger| {
                let request = request.clone();
                async move { logger.create_event(request).await }
            })
            .await?
        };
        Ok(Created {
            unregistered_type: response.unregistered_type,
            event: event_of(response.event)?,
        })
    }

    /// Creates up to 1,000 events in one call; each has its own result, in
    /// order (field names of errors look like `requests[2].user_id`). Retried
    /// while the server is unavailable only if every event has a request id.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::EventInput;
    ///
    /// let events = ["a", "b"].map(|user| EventInput {
    ///     user_id: user.into(),
    ///     description: "Maintenance tonight".into(),
    ///     ..EventInput::default()
    /// });
    /// for result in client.create_many(events.to_vec()).await? {
    ///     match result {
    ///         Ok(event) => println!("created {}", event.id),
    ///         Err(err) => println!("refused: {err}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_many(
        &self,
        events: Vec<EventInput>,
    ) -> Result<Vec<Result<Event, Error>>, Error> {
        let idempotent = events.iter().all(|e| !e.request_id.is_empty());
        let request = pb::CreateEventsRequest {
            requests: events.into_iter().map(create_request).collect(),
        };
        let results = self.create_batch(request, idempotent).await?;
        Ok(results.into_iter().map(item_result).collect())
    }

    /// One CreateEvents call, retried while the server is unavailable if
    /// `retry`; its results, checked to be one per request.
    pub(crate) async fn create_batch(
        &self,
        request: pb::CreateEventsRequest,
        retry: bool,
    ) -> Result<Vec<pb::CreateEventResult>, Error> {
        let n = request.requests.len();
        let response = if retry {
            self.retrying(|mut logger| {
                let request = request.clone();
                async move { logger.create_events(request).await }
            })
            .await?
        } else {
            self.logger
                .clone()
                .create_events(request)
                .await?
                .into_inner()
        };
        if response.results.len() != n {
            return Err(Error::InvalidResponse(format!(
                "{} results for {n} events",
                response.results.len()
            )));
        }
        Ok(response.results)
    }

    /// The event with this id.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// let created = client.create_event("alice", "Hello").await?;
    /// let event = client.get_event(created.id).await?;
    /// println!("{} is {}", event.id, event.status);
    /// # Ok(()) }
    /// ```
    pub async fn get_event(&self, id: Uuid) -> Result<Event, Error> {
        let response = self
            .retrying(|mut logger| async move {
                logger
                    .get_event(pb::GetEventRequest {
                        event_id: id.to_string(),
                    })
                    .await
            })
            .await?;
        event_of(response.event)
    }

    /// Cancels the SCHEDULED event `id`: it becomes CANCELLED and is never
    /// delivered. One already queued is FAILED_PRECONDITION. Retried
    /// (cancelling twice cancels once).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use std::time::Duration;
    /// use herald_client::EventInput;
    ///
    /// let reminder = client
    ///     .create(EventInput {
    ///         user_id: "alice".into(),
    ///         description: "Your trial ends tomorrow".into(),
    ///         deliver_after: Some(Duration::from_secs(3 * 24 * 3600)),
    ///         ..EventInput::default()
    ///     })
    ///     .await?;
    /// // Alice upgraded meanwhile:
    /// client.cancel_event(reminder.id).await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_event(&self, id: Uuid) -> Result<Event, Error> {
        let response = self
            .retrying(|mut logger| async move {
                logger
                    .cancel_event(pb::CancelEventRequest {
                        event_id: id.to_string(),
                    })
                    .await
            })
            .await?;
        event_of(response.event)
    }

    /// Every recorded attempt to send event `id` through a channel (the
    /// newest 100), oldest first.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client, id: uuid::Uuid) -> Result<(), herald_client::Error> {
    /// for attempt in client.delivery_attempts(id).await? {
    ///     println!("{} {} {}", attempt.channel, attempt.succeeded, attempt.error);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn delivery_attempts(&self, id: Uuid) -> Result<Vec<DeliveryAttempt>, Error> {
        let response = self
            .retrying(|mut logger| async move {
                logger
                    .list_delivery_attempts(pb::ListDeliveryAttemptsRequest {
                        event_id: id.to_string(),
                    })
                    .await
            })
            .await?;
        response
            .attempts
            .into_iter()
            .map(|a| DeliveryAttempt::from_pb(id, a).map_err(Error::from))
            .collect()
    }

    /// One page of the events `query` asks for, and the token of the next.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::{EventStatus, ListEvents};
    ///
    /// let page = client
    ///     .list_events(ListEvents::new().user("alice").status(EventStatus::Processed))
    ///     .await?;
    /// for event in &page.items {
    ///     println!("{} {}", event.id, event.description);
    /// }
    /// if let Some(token) = page.next {
    ///     println!("more after {token}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_events(&self, query: ListEvents) -> Result<Page<Event>, Error> {
        let request = query.to_request();
        let response = self
            .retrying(|mut logger| {
                let request = request.clone();
                async move { logger.list_events(request).await }
            })
            .await?;
        let events = response
            .events
            .into_iter()
            .map(|e| event_of(Some(e)))
            .collect::<Result<_, _>>()?;
        Ok(Page::new(events, response.next_page_token))
    }

    /// Every event `query` asks for, page after page, as a stream that reads
    /// the next page when it needs it. The stream ends after the first error.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use futures_util::TryStreamExt;
    /// use herald_client::ListEvents;
    ///
    /// let all: Vec<_> = client.events(ListEvents::new().category("billing")).try_collect().await?;
    /// println!("{} billing events", all.len());
    /// # Ok(()) }
    /// ```
    pub fn events(
        &self,
        query: ListEvents,
    ) -> impl Stream<Item = Result<Event, Error>> + Send + 'static {
        every_page_of(
            self,
            query,
            ListEvents::page_token,
            |client, query| async move { client.list_events(query).await },
        )
    }

    /// Moves the event to `status`; retried, since setting a status twice is a no-op.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::EventStatus;
    ///
    /// let event = client.create_event("alice", "Hello").await?;
    /// let opened = client.update_status(event.id, EventStatus::Opened).await;
    /// // PENDING cannot become OPENED: FAILED_PRECONDITION.
    /// assert!(opened.is_err());
    /// # Ok(()) }
    /// ```
    pub async fn update_status(&self, id: Uuid, status: EventStatus) -> Result<Event, Error> {
        self.apply(StatusChange::new(id, status)).await
    }

    /// Applies one status change, with its trace context if it has one;
    /// retried like [`Client::update_status`].
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::{EventStatus, StatusChange};
    ///
    /// let event = client.create_event("alice", "Hello").await?;
    /// client.apply(StatusChange::new(event.id, EventStatus::Processed)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn apply(&self, change: StatusChange) -> Result<Event, Error> {
        let request = pb::UpdateStatusRequest::from(change);
        let response = self
            .retrying(|mut logger| {
                let request = request.clone();
                async move { logger.update_status(request).await }
            })
            .await?;
        event_of(response.event)
    }

    /// Applies several status changes in one call (at most 1,000); each has its
    /// own result, in order. Retried as a whole while the server is unavailable,
    /// since every change is idempotent.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::{EventStatus, StatusChange};
    ///
    /// let event = client.create_event("alice", "Hello").await?;
    /// let changes = [StatusChange::new(event.id, EventStatus::Processed)];
    /// for result in client.batch_update_status(&changes).await? {
    ///     println!("{:?}", result.map(|e| e.status));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn batch_update_status(
        &self,
        changes: &[StatusChange],
    ) -> Result<Vec<Result<Event, Error>>, Error> {
        Ok(self
            .batch_update(changes, false)
            .await?
            .into_iter()
            .map(item_result)
            .collect())
    }

    /// Like [`Self::batch_update_status`], but each change's outcome comes
    /// without its event (the server answers with summaries only): a
    /// smaller, cheaper answer for callers that only need to know which
    /// changes landed, such as a processor settling its deliveries.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::{EventStatus, StatusChange};
    ///
    /// let event = client.create_event("alice", "Hello").await?;
    /// let changes = [StatusChange::new(event.id, EventStatus::Processed)];
    /// let outcomes = client.batch_update_status_outcomes(&changes).await?;
    /// assert!(outcomes.iter().all(Result::is_ok));
    /// # Ok(()) }
    /// ```
    pub async fn batch_update_status_outcomes(
        &self,
        changes: &[StatusChange],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        Ok(self
            .batch_update(changes, true)
            .await?
            .into_iter()
            .map(|result| item_parts(result).map(|_| ()))
            .collect())
    }

    /// One BatchUpdateStatus call, retried while the server is unavailable;
    /// one result per change.
    async fn batch_update(
        &self,
        changes: &[StatusChange],
        summaries_only: bool,
    ) -> Result<Vec<pb::UpdateStatusResult>, Error> {
        let request = pb::BatchUpdateStatusRequest {
            requests: changes.iter().map(|c| (*c).into()).collect(),
            summaries_only,
        };
        let response = self
            .retrying(|mut logger| {
                let request = request.clone();
                async move { logger.batch_update_status(request).await }
            })
            .await?;
        if response.results.len() != changes.len() {
            return Err(Error::InvalidResponse(format!(
                "{} results for {} changes",
                response.results.len(),
                changes.len()
            )));
        }
        Ok(response.results)
    }

    pub(crate) async fn retrying<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: Fn(EventLoggerClient<Authed>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retrying_on(&self.logger, call).await
    }

    /// [`Self::retrying`] with a stub of another service on the connection.
    pub(crate) async fn retrying_on<C, T, F, Fut>(&self, stub: &C, call: F) -> Result<T, Error>
    where
        C: Clone,
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = self.retry.initial_backoff;
        let mut attempt = 0;
        loop {
            match call(stub.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status)
                    if (status.code() == Code::Unavailable || connection_lost(&status))
                        && attempt < self.retry.retries =>
                {
                    attempt += 1;
                    tracing::debug!(
                        attempt,
                        message = status.message(),
                        "logger unavailable, retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                }
                Err(status) => return Err(status.into()),
            }
        }
    }
}

/// A request to create `event`.
pub(crate) fn create_request(event: EventInput) -> pb::CreateEventRequest {
    pb::CreateEventRequest {
        user_id: event.user_id,
        description: event.description,
        category: event.category,
        r#type: event.event_type,
        session_id: event.session_id,
        payload: event.payload.as_ref().map(json_to_struct),
        occurred_at: event.occurred_at.map(Into::into),
        request_id: event.request_id,
        deliver_at: event.deliver_at.map(Into::into),
        deliver_after: event
            .deliver_after
            .and_then(|d| prost_types::Duration::try_from(d).ok()),
    }
}

/// One item of a batch response: its event, or its error read like a call's.
pub(crate) fn item_result(result: impl BatchResult) -> Result<Event, Error> {
    event_of(Some(item_parts(result)?))
}

/// The event a batch result holds, or the error it holds as a status.
pub(crate) fn item_parts(result: impl BatchResult) -> Result<pb::Event, Error> {
    match result.into_parts() {
        (Some(event), _) => Ok(event),
        (None, Some(status)) => Err(item_error(&status)),
        (None, None) => Err(Error::InvalidResponse("batch result is empty".into())),
    }
}

/// The error a batch item carries as a `google.rpc.Status`, with its
/// details (field violations) as a call's error would have them.
pub(crate) fn item_error(status: &tonic_types::pb::Status) -> Error {
    use prost::Message;
    tonic::Status::with_details(
        Code::from_i32(status.code),
        status.message.clone(),
        status.encode_to_vec().into(),
    )
    .into()
}

pub(crate) fn event_of(event: Option<pb::Event>) -> Result<Event, Error> {
    let event = event.ok_or_else(|| Error::InvalidResponse("response lacks the event".into()))?;
    Event::try_from(event).map_err(|e| Error::InvalidResponse(e.to_string()))
}

/// An error with its sources, since transport errors hide the cause there.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Wrappers often repeat their cause's words; say each thing once.
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    with_hint(text)
}

/// `text` (a transport error), with what to do about it where the cause is
/// a known mistake of the caller's: TLS spoken to a plain server or the
/// other way round, or a certificate signed by a CA this side does not
/// trust.
pub(crate) fn with_hint(text: String) -> String {
    let hint = if text.contains("frame with invalid size") {
        // TLS handshake bytes, or an HTTP/1 answer, read as HTTP/2 frames.
        "this server does not speak plain HTTP/2: if it speaks TLS, use https://; if not, it is no gRPC server"
    } else if text.contains("CertificateRequired") {
        "the server requires a client certificate: give --client-cert and --client-key, or Tls::with_identity_pem in Rust"
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        "this server does not speak TLS: use http://"
    } else if text.contains("UnknownIssuer") || text.contains("CaUsedAsEndEntity") {
        "the server's certificate is not trusted: give the CA that signed it with --ca-cert, or Tls::with_ca_pem in Rust"
    } else {
        return text;
    };
    if text.contains(hint) {
        return text;
    }
    format!("{text} ({hint})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_its_bearer_prefix_is_sent_once() {
        for given in ["hk_1", "Bearer hk_1", "bearer  hk_1", " BEARER hk_1 "] {
            let ApiKey(Some(value)) = ApiKey::bearer(given).expect("a key") else {
                panic!("{given}: no header");
            };
            assert_eq!(value.to_str().expect("ascii"), "Bearer hk_1", "{given:?}");
        }
        assert!(ApiKey::bearer("Bearer ").expect("empty").0.is_none());
    }
}
