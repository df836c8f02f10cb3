//! Subscriptions: [`SubscribeOptions`] (filters and where to resume) and the
//! [`Message`]s of a stream that reconnects by itself and resumes after the
//! last cursor it saw, so a dropped connection loses and repeats nothing.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use herald::{
    Event, EventStatus,
    cursor::Cursor,
    pb::{self, subscribe_response::Kind},
};
use tonic::{Code, Streaming};
use tracing::{debug, warn};

use crate::{Client, Error, RetryPolicy, client::event_of};

/// What a subscription asks for; every filter given must match.
///
/// ```
/// use herald_client::{EventStatus, SubscribeOptions};
///
/// let dashboard = SubscribeOptions {
///     categories: vec!["billing".into()],
///     statuses: EventStatus::ALL.to_vec(),
///     ..SubscribeOptions::default()
/// };
/// # let _ = dashboard;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Whose changes; empty for every user's (needs notifications:subscribe).
    pub user_id: String,
    /// Only these categories (any of them); empty for all.
    pub categories: Vec<String>,
    /// Only these types (any of them); empty for all.
    pub types: Vec<String>,
    /// Only this session; empty for all.
    pub session_id: String,
    /// Changes into these statuses; empty for PROCESSED (notifications).
    pub statuses: Vec<EventStatus>,
    /// Resume after this cursor (from an earlier stream); empty for live only.
    pub after_cursor: String,
}

impl SubscribeOptions {
    /// Notifications of one user, live.
    pub fn user(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            ..Self::default()
        }
    }

    fn request(&self, after_cursor: &str) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            user_id: self.user_id.clone(),
            categories: self.categories.clone(),
            types: self.types.clone(),
            session_id: self.session_id.clone(),
            statuses: self.statuses.iter().map(|s| s.to_pb() as i32).collect(),
            after_cursor: after_cursor.to_owned(),
        }
    }
}

/// One notification (or other change) received through a subscription.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use futures_util::StreamExt;
///
/// let mut stream = client.subscribe("alice").await?;
/// if let Some(Ok(message)) = stream.next().await {
///     if let Some(n) = message.into_notification() {
///         println!("{} at {}", n.event.description, n.cursor);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The event as it was when it reached its status.
    pub event: Event,
    /// Its position in the notification log.
    pub cursor: String,
}

/// One message of a subscription.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use futures_util::StreamExt;
///
/// let mut stream = client.subscribe("alice").await?;
/// let mut resume_after = String::new();
/// while let Some(message) = stream.next().await {
///     let message = message?;
///     // Saved, it lets a later run resume with SubscribeOptions::after_cursor.
///     resume_after = message.cursor().to_owned();
/// }
/// # let _ = resume_after;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A change matching the filters: by default, a notification sent.
    Event(Box<Notification>),
    /// Nothing happened for a while; resuming after `cursor` loses nothing.
    Heartbeat {
        /// The position the subscriber has had everything up to.
        cursor: String,
    },
    /// History the subscription asked for is no longer kept: changes after
    /// `requested_cursor` may be lost; the stream goes on after `oldest_cursor`.
    HistoryGap {
        /// The cursor resumed after.
        requested_cursor: String,
        /// The oldest position kept.
        oldest_cursor: String,
        /// Why the history is gone.
        reason: String,
    },
}

impl Message {
    /// The cursor to resume after, to continue right after this message.
    pub fn cursor(&self) -> &str {
        match self {
            Message::Event(n) => &n.cursor,
            Message::Heartbeat { cursor } => cursor,
            Message::HistoryGap { oldest_cursor, .. } => oldest_cursor,
        }
    }

    /// The notification, if this message is one.
    pub fn into_notification(self) -> Option<Notification> {
        match self {
            Message::Event(n) => Some(*n),
            _ => None,
        }
    }
}

/// The stream of a subscription.
///
/// ```no_run
/// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
/// use futures_util::StreamExt;
///
/// let mut subscription: herald_client::Subscription = client.subscribe("alice").await?;
/// let first = subscription.next().await;
/// # let _ = first;
/// # Ok(()) }
/// ```
pub type Subscription = Pin<Box<dyn Stream<Item = Result<Message, Error>> + Send>>;

/// Where a resuming subscription is.
struct State {
    client: Client,
    options: SubscribeOptions,
    stream: Option<Streaming<pb::SubscribeResponse>>,
    /// The newest cursor seen: where a new connection resumes.
    cursor: String,
    /// The newest event cursor delivered, to drop repeats after a reconnect.
    delivered: Option<Cursor>,
    /// Failed reconnects in a row.
    failures: u32,
    retry: RetryPolicy,
    done: bool,
}

impl Client {
    /// Notifications sent to `user_id`, live; see [`Client::subscribe_with`].
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use futures_util::StreamExt;
    ///
    /// let mut notifications = client.subscribe("alice").await?;
    /// while let Some(message) = notifications.next().await {
    ///     if let Some(n) = message?.into_notification() {
    ///         println!("{}: {}", n.event.user_id, n.event.description);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe(&self, user_id: &str) -> Result<Subscription, Error> {
        self.subscribe_with(SubscribeOptions::user(user_id)).await
    }

    /// The changes `options` ask for. The first call's error is returned
    /// here; afterwards, when the connection drops, the server shuts down or
    /// the subscriber lagged, the stream reconnects with backoff (see
    /// [`Client::with_resubscribe`], counted per outage) and resumes after the
    /// last cursor it saw. Other errors, and outages longer than the policy
    /// allows, end the stream with an error item.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use futures_util::StreamExt;
    /// use herald_client::{Message, SubscribeOptions};
    ///
    /// let options = SubscribeOptions { after_cursor: "start".into(), ..SubscribeOptions::user("alice") };
    /// let mut stream = client.subscribe_with(options).await?;
    /// while let Some(message) = stream.next().await {
    ///     match message? {
    ///         Message::Event(n) => println!("{} after {}", n.event.id, n.cursor),
    ///         Message::HistoryGap { reason, .. } => eprintln!("gap: {reason}"),
    ///         Message::Heartbeat { .. } => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn subscribe_with(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        let request = options.request(&options.after_cursor);
        let stream = self.notifier.clone().subscribe(request).await?.into_inner();
        let state = State {
            client: self.clone(),
            cursor: options.after_cursor.clone(),
            options,
            stream: Some(stream),
            delivered: None,
            failures: 0,
            retry: self.resubscribe,
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_message)))
    }
}

/// Whether a subscription ended by `err` is worth resuming.
fn resumable(err: &Error, lagged: bool) -> bool {
    match err.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal => true,
        Code::ResourceExhausted => lagged,
        _ => false,
    }
}

/// The next message, reconnecting as needed.
async fn next_message(mut state: State) -> Option<(Result<Message, Error>, State)> {
    if state.done {
        return None;
    }
    let mut lagged = false;
    loop {
        let stream = match state.stream.as_mut() {
            Some(stream) => stream,
            None => {
                let request = state.options.request(&state.cursor);
                match state.client.notifier.clone().subscribe(request).await {
                    Ok(response) => state.stream.insert(response.into_inner()),
                    Err(status) => {
                        if let Some(err) = retry_after(&mut state, status.into(), false).await {
                            return Some((Err(err), state));
                        }
                        continue;
                    }
                }
            }
        };
        let item = match stream.next().await {
            Some(Ok(message)) => Ok(message),
            Some(Err(status)) => Err(status),
            None => Err(tonic::Status::unavailable("the server ended the stream")),
        };
        let item = match item {
            Ok(item) => item,
            Err(status) => {
                state.stream = None;
                if let Some(err) = retry_after(&mut state, status.into(), lagged).await {
                    return Some((Err(err), state));
                }
                continue;
            }
        };
        state.failures = 0;
        if !item.cursor.is_empty() {
            state.cursor.clone_from(&item.cursor);
        }
        let message = match item.kind {
            Some(Kind::Event(event)) => {
                // A cursor the delivered ones already cover is a repeat.
                let cursor = item.cursor.parse::<Cursor>().ok();
                if let (Some(cursor), Some(delivered)) = (&cursor, &state.delivered)
                    && cursor <= delivered
                {
                    continue;
                }
                if let Some(cursor) = cursor {
                    state
                        .delivered
                        .get_or_insert_with(Cursor::default)
                        .join(&cursor);
                }
                match event_of(Some(event)) {
                    Ok(event) => Message::Event(Box::new(Notification {
                        event,
                        cursor: item.cursor,
                    })),
                    Err(err) => {
                        state.done = true;
                        return Some((Err(err), state));
                    }
                }
            }
            Some(Kind::Heartbeat(_)) => Message::Heartbeat {
                cursor: item.cursor,
            },
            Some(Kind::HistoryGap(gap)) => Message::HistoryGap {
                requested_cursor: gap.requested_cursor,
                oldest_cursor: gap.oldest_cursor,
                reason: gap.reason,
            },
            Some(Kind::Lagged(_)) => {
                debug!(cursor = %item.cursor, "subscriber lagged; resuming");
                lagged = true;
                continue;
            }
            // A kind this client does not know: its cursor still counts.
            None => continue,
        };
        return Some((Ok(message), state));
    }
}

/// After `err`: waits and returns `None` to reconnect, or gives the error
/// back when it ends the subscription.
async fn retry_after(state: &mut State, err: Error, lagged: bool) -> Option<Error> {
    if !resumable(&err, lagged) || state.failures >= state.retry.retries {
        state.done = true;
        return Some(err);
    }
    let wait = state
        .retry
        .initial_backoff
        .saturating_mul(1 << state.failures.min(16))
        .min(state.retry.max_backoff);
    state.failures += 1;
    warn!(error = %err, retry_in = ?wait, cursor = %state.cursor, "subscription interrupted; resuming");
    tokio::time::sleep(wait).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_passing_troubles_are_resumed() {
        let status = |code| Error::from(tonic::Status::new(code, "x"));
        assert!(resumable(&status(Code::Unavailable), false));
        assert!(resumable(&status(Code::ResourceExhausted), true));
        assert!(!resumable(&status(Code::ResourceExhausted), false));
        assert!(!resumable(&status(Code::PermissionDenied), false));
        assert!(!resumable(&status(Code::InvalidArgument), false));
    }

    #[test]
    fn requests_carry_every_filter_and_the_cursor() {
        let options = SubscribeOptions {
            user_id: "ann".into(),
            categories: vec!["billing".into()],
            types: vec!["invoice".into()],
            session_id: "s".into(),
            statuses: vec![EventStatus::Pending, EventStatus::Failed],
            after_cursor: "1-0".into(),
        };
        let request = options.request("2-0");
        assert_eq!(request.after_cursor, "2-0");
        assert_eq!(request.categories, ["billing"]);
        assert_eq!(request.types, ["invoice"]);
        assert_eq!(request.session_id, "s");
        assert_eq!(
            request.statuses,
            [
                pb::EventStatus::Pending as i32,
                pb::EventStatus::Failed as i32
            ]
        );
    }
}
