//! `herald.v1.EventLogger`: thin handlers that convert, call the store, map errors.

use std::sync::Arc;

use herald::{
    Error, Event, EventStatus, NewEvent,
    auth::Scope,
    dead_letters::{DeadLetterPage, MAX_REDRIVE, RedriveRequest},
    domain::{
        EventInput, Rules, StatusChange, now, parse_batch_changes, parse_batch_creates,
        parse_event_id,
    },
    pb::{self, event_logger_server::EventLogger},
    query::{ListQuery, PageTokens, Position},
    sizing::{cut_to_fit, fit_results, max_batch_items},
    trace::{self, TraceParent},
};
use herald_storage::{Backend, DeadLetters, DeliveryLog, EventStore, redrive_oldest};
use tonic::{Request, Response, Status};

use crate::{
    auth::{Identity, check_user_change, source_of, user_of},
    limits::ActiveStreams,
    metrics::EventMetrics,
    observe::{Write, WriteObserver},
};

/// The EventLogger service over an [`EventStore`].
pub struct EventLoggerService {
    store: Arc<dyn EventStore>,
    deliveries: Arc<dyn DeliveryLog>,
    dead_letters: Arc<dyn DeadLetters>,
    rules: Rules,
    counters: WriteObserver,
    streams: Option<ActiveStreams>,
    /// Largest response message: every answer is built to fit it.
    message_limit: usize,
}

impl EventLoggerService {
    /// The service over `backend`'s store, delivery log and dead letters,
    /// checking new events against `rules` and counting what it does in
    /// `metrics`.
    pub fn new(backend: &Backend, rules: Rules, metrics: EventMetrics) -> Self {
        Self {
            store: backend.store.clone(),
            deliveries: backend.deliveries.clone(),
            dead_letters: backend.dead_letters.clone(),
            rules,
            counters: WriteObserver::new(metrics),
            streams: None,
            message_limit: 4 * 1024 * 1024,
        }
    }

    /// Builds every answer to fit in `bytes` (the server's message limit).
    pub fn with_message_limit(mut self, bytes: usize) -> Self {
        self.message_limit = bytes;
        self
    }

    /// Most items of a batch whose answer fits, up to `max`.
    fn batch_items(&self, max: usize) -> usize {
        max_batch_items(self.message_limit, max)
    }

    /// Reports `streams` as the active subscribers in GetStats.
    pub fn with_streams(mut self, streams: ActiveStreams) -> Self {
        self.streams = Some(streams);
        self
    }

    /// Runs one write (a creation if `created`, else a status change) and
    /// counts what it did.
    async fn counted(
        &self,
        kind: Write,
        write: impl Future<Output = Result<Event, Error>>,
    ) -> Result<Event, Error> {
        let since = now();
        let outcome = write.await;
        self.counters.record([&outcome], since, kind);
        outcome
    }

    /// Runs a batch write and counts what each item did; a failed call
    /// counts as one failure.
    async fn counted_batch(
        &self,
        kind: Write,
        write: impl Future<Output = Result<Vec<Result<Event, Error>>, Error>>,
    ) -> Result<Vec<Result<Event, Error>>, Error> {
        let since = now();
        let outcomes = write.await;
        match &outcomes {
            Ok(each) => self.counters.record(each, since, kind),
            Err(err) => self.counters.record([&Err(err.clone())], since, kind),
        }
        outcomes
    }

    /// Whether `event` has a type the registry does not know (its payload
    /// went unchecked).
    fn unregistered(&self, event: &Event) -> bool {
        !event.event_type.is_empty() && !self.rules.types.is_registered(&event.event_type)
    }

    /// Applies the valid ones of these status changes in one store call,
    /// counted; refused items keep their errors.
    async fn apply_changes(
        &self,
        items: Vec<Result<StatusChange, Error>>,
    ) -> Result<Vec<Result<Event, Error>>, Error> {
        let write = apply_valid(items, async |valid: Vec<StatusChange>| {
            self.store.update_status_many(&valid).await
        });
        self.counted_batch(Write::Change, write).await
    }
}

/// One page of `query` as an answer of at most `limit` bytes holds it, and
/// the token of the next page (empty after the last): a page too large for
/// one answer ends early, and the next starts after it.
pub(crate) async fn page_within(
    store: &dyn EventStore,
    query: &ListQuery,
    tokens: &PageTokens,
    limit: usize,
) -> Result<(Vec<pb::Event>, String), Error> {
    let page = store.list(query).await?;
    let positions: Vec<Position> = page.events.iter().map(Position::of).collect();
    let mut events: Vec<pb::Event> = page.events.into_iter().map(Into::into).collect();
    let next = if cut_to_fit(&mut events, limit) {
        positions.get(events.len().wrapping_sub(1)).copied()
    } else {
        page.next
    };
    let token = next.map(|p| tokens.sign(query, p)).unwrap_or_default();
    Ok((events, token))
}

#[tonic::async_trait]
impl EventLogger for EventLoggerService {
    async fn create_event(
        &self,
        request: Request<pb::CreateEventRequest>,
    ) -> Result<Response<pb::CreateEventResponse>, Status> {
        let source = source_of(&request);
        let caller = call_trace(&request);
        let trace = caller.map_or_else(TraceParent::new_root, |t| t.child());
        let input = EventInput::try_from(request.into_inner())?;
        let new = NewEvent::validate(input, &self.rules)?
            .with_source(source)
            .in_trace(trace);
        let event = self
            .counted(Write::Create(caller), self.store.create(new))
            .await?;
        Ok(Response::new(pb::CreateEventResponse {
            unregistered_type: self.unregistered(&event),
            event: Some(event.into()),
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        let id = parse_event_id(&request.into_inner().event_id, "event_id")?;
        let event = self.store.get(id).await?;
        Ok(Response::new(pb::GetEventResponse {
            event: Some(event.into()),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let tokens = PageTokens::new(self.store.page_token_key().await?);
        let query = ListQuery::parse(request.into_inner(), &tokens)?;
        let (events, next_page_token) =
            page_within(self.store.as_ref(), &query, &tokens, self.message_limit).await?;
        Ok(Response::new(pb::ListEventsResponse {
            next_page_token,
            events,
        }))
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let user = user_of(&request);
        let header = call_trace(&request);
        let mut change = StatusChange::try_from(request.into_inner())?;
        change.trace = change.trace.or(header);
        if let Some(user) = user {
            check_user_change(&user, &change, self.store.as_ref()).await?;
        }
        let event = self
            .counted(Write::Change, self.store.apply(change))
            .await?;
        Ok(Response::new(pb::UpdateStatusResponse {
            event: Some(event.into()),
        }))
    }

    async fn create_events(
        &self,
        request: Request<pb::CreateEventsRequest>,
    ) -> Result<Response<pb::CreateEventsResponse>, Status> {
        let source = source_of(&request);
        // The events of one call share a trace, each its own span.
        let caller = call_trace(&request);
        let trace = caller.unwrap_or_else(TraceParent::new_root);
        let max = self.batch_items(herald::domain::MAX_BATCH_CREATES);
        let items = parse_batch_creates(request.into_inner(), &self.rules, max)?;
        let write = apply_valid(items, async |valid: Vec<NewEvent>| {
            let valid = valid
                .into_iter()
                .map(|e| e.with_source(source.clone()).in_trace(trace.child()))
                .collect();
            self.store.create_many(valid).await
        });
        let outcomes = self.counted_batch(Write::Create(caller), write).await?;
        let unregistered: Vec<bool> = outcomes
            .iter()
            .map(|outcome| outcome.as_ref().is_ok_and(|e| self.unregistered(e)))
            .collect();
        let mut results: Vec<pb::CreateEventResult> =
            fit_results(outcomes, self.message_limit, false);
        for (result, unregistered) in results.iter_mut().zip(unregistered) {
            result.unregistered_type = unregistered;
        }
        Ok(Response::new(pb::CreateEventsResponse { results }))
    }

    async fn batch_update_status(
        &self,
        request: Request<pb::BatchUpdateStatusRequest>,
    ) -> Result<Response<pb::BatchUpdateStatusResponse>, Status> {
        let header = call_trace(&request);
        let max = self.batch_items(herald::domain::MAX_BATCH_CHANGES);
        let request = request.into_inner();
        let summaries_only = request.summaries_only;
        let items = parse_batch_changes(request, max)?
            .into_iter()
            .map(|item| item.map(|c| c.in_trace(c.trace.or(header))))
            .collect();
        let outcomes = self.apply_changes(items).await?;
        let results = fit_results(outcomes, self.message_limit, summaries_only);
        Ok(Response::new(pb::BatchUpdateStatusResponse { results }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let page = DeadLetterPage::try_from(request.into_inner())?;
        let (size, mut after) = (page.size, page.start(self.dead_letters.partitions())?);
        let page = self.dead_letters.dead_letters(&after, size).await?;
        let full = page.len() == size;
        let ids: Vec<_> = page.iter().map(|d| d.id).collect();
        let mut dead_letters: Vec<pb::DeadLetter> = page
            .into_iter()
            .map(|d| pb::DeadLetter {
                dead_letter_id: d.id.to_string(),
                event: Some(d.delivery.event.into()),
                reason: d.reason,
                deliveries: i64::try_from(d.delivery.deliveries).unwrap_or(i64::MAX),
            })
            .collect();
        // A page too large for one answer ends early; the next starts after it.
        let cut = cut_to_fit(&mut dead_letters, self.message_limit);
        for id in &ids[..dead_letters.len()] {
            after.advance(id.partition, id.id);
        }
        let next_page_token = if full || cut {
            after.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters,
            next_page_token,
        }))
    }

    async fn list_delivery_attempts(
        &self,
        request: Request<pb::ListDeliveryAttemptsRequest>,
    ) -> Result<Response<pb::ListDeliveryAttemptsResponse>, Status> {
        let id = parse_event_id(&request.get_ref().event_id, "event_id")?;
        let attempts = self.deliveries.attempts(id).await?;
        Ok(Response::new(pb::ListDeliveryAttemptsResponse {
            attempts: attempts.into_iter().map(Into::into).collect(),
        }))
    }

    async fn redrive_events(
        &self,
        request: Request<pb::RedriveEventsRequest>,
    ) -> Result<Response<pb::RedriveEventsResponse>, Status> {
        let trace = call_trace(&request).map(|t| t.child());
        let back = |id| StatusChange::new(id, EventStatus::Pending).in_trace(trace);
        let max = self.batch_items(MAX_REDRIVE);
        let redrive = RedriveRequest::try_from(request.into_inner())?.within(max)?;
        // One store operation: each event back to PENDING with its dead
        // letters removed, atomically per partition.
        let mut more = false;
        let outcomes = match redrive {
            RedriveRequest::Events(ids) => {
                let items = ids.into_iter().map(|id| id.map(back)).collect();
                let write = apply_valid(items, async |valid: Vec<StatusChange>| {
                    self.dead_letters.redrive_many(&valid).await
                });
                self.counted_batch(Write::Change, write).await?
            }
            RedriveRequest::All => {
                // The events of the oldest dead letters, as many as one
                // answer holds; `more` tells the caller to come back.
                let write = async {
                    let (outcomes, others) =
                        redrive_oldest(self.dead_letters.as_ref(), trace, max).await?;
                    more = others;
                    Ok(outcomes)
                };
                self.counted_batch(Write::Change, write).await?
            }
        };
        let results = fit_results(outcomes, self.message_limit, false);
        Ok(Response::new(pb::RedriveEventsResponse { results, more }))
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let counts = self.store.status_counts().await?;
        let c = &self.counters;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Ok(Response::new(pb::GetStatsResponse {
            total_events: n(counts.total()),
            pending_events: n(counts.pending),
            processed_events: n(counts.processed),
            opened_events: n(counts.opened),
            failed_events: n(counts.failed),
            events_created: n(c.created()),
            status_updates: n(c.updated()),
            events_published: n(c.published()),
            publish_failures: n(c.publish_failures()),
            active_subscribers: n(self.streams.as_ref().map_or(0, ActiveStreams::count)),
            started_at: Some(c.started().into()),
            uptime: prost_types::Duration::try_from(c.uptime()).ok(),
            scheduled_events: n(counts.scheduled),
            cancelled_events: n(counts.cancelled),
        }))
    }

    async fn cancel_event(
        &self,
        request: Request<pb::CancelEventRequest>,
    ) -> Result<Response<pb::CancelEventResponse>, Status> {
        let trace = call_trace(&request).map(|t| t.child());
        let identity = request.extensions().get::<Identity>().cloned();
        let id = parse_event_id(&request.get_ref().event_id, "event_id")?;
        // A client cancels the events it created; a key that may process
        // every event (or admin) cancels any.
        if let Some(identity) = identity.filter(|i| !i.allows(Scope::EventsProcess)) {
            let event = self.store.get(id).await?;
            if event.source != identity.client_id {
                return Err(Status::permission_denied(format!(
                    "client {} did not create event {id} (a client cancels its own \
                     events; events:process cancels any)",
                    identity.client_id
                )));
            }
        }
        let change = StatusChange::new(id, EventStatus::Cancelled).in_trace(trace);
        let event = match self.counted(Write::Change, self.store.apply(change)).await {
            Ok(event) => event,
            Err(Error::InvalidTransition { from, .. }) => {
                let queued = match from {
                    EventStatus::Pending => " (it is queued for delivery already)",
                    _ => "",
                };
                return Err(Status::failed_precondition(format!(
                    "event {id} is {from}{queued}: only a SCHEDULED event can be cancelled"
                )));
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Response::new(pb::CancelEventResponse {
            event: Some(event.into()),
        }))
    }
}

/// The trace context the caller sent in its `traceparent` header, if valid
/// (an invalid one is ignored, as W3C Trace Context asks).
fn call_trace<T>(request: &Request<T>) -> Option<TraceParent> {
    request
        .metadata()
        .get(trace::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// Runs the valid items of a batch through `apply` in one call and puts each
/// outcome back in its item's place; refused items keep their errors.
async fn apply_valid<T>(
    items: Vec<Result<T, Error>>,
    apply: impl AsyncFnOnce(Vec<T>) -> Result<Vec<Result<Event, Error>>, Error>,
) -> Result<Vec<Result<Event, Error>>, Error> {
    let mut valid = Vec::new();
    let mut slots = Vec::with_capacity(items.len());
    for item in items {
        slots.push(match item {
            Ok(value) => {
                valid.push(value);
                Ok(())
            }
            Err(err) => Err(err),
        });
    }
    let mut applied = apply(valid).await?.into_iter();
    Ok(slots
        .into_iter()
        .map(|slot| {
            slot.and_then(|()| {
                applied.next().unwrap_or_else(|| {
                    Err(Error::Internal("store answered too few results".into()))
                })
            })
        })
        .collect())
}
