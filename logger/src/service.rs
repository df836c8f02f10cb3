//! `herald.v1.EventLogger`: thin handlers that convert, call the store, map errors.

use std::sync::Arc;

use herald::{
    Error, Event, EventStatus, NewEvent,
    backend::EventStore,
    domain::{
        BatchResult, EventInput, Rules, StatusChange, parse_batch_changes, parse_batch_creates,
        parse_event_id,
    },
    pb::{self, event_logger_server::EventLogger},
    query::ListQuery,
};
use tonic::{Request, Response, Status};

use crate::auth::Identity;

/// The EventLogger service over an [`EventStore`].
pub struct EventLoggerService {
    store: Arc<dyn EventStore>,
    rules: Rules,
}

impl EventLoggerService {
    /// The service over `store`, checking new events against `rules`.
    pub fn new(store: Arc<dyn EventStore>, rules: Rules) -> Self {
        Self { store, rules }
    }
}

#[tonic::async_trait]
impl EventLogger for EventLoggerService {
    async fn create_event(
        &self,
        request: Request<pb::CreateEventRequest>,
    ) -> Result<Response<pb::CreateEventResponse>, Status> {
        let source = source_of(&request);
        let input = EventInput::try_from(request.into_inner())?;
        let new = NewEvent::validate(input, &self.rules)?.with_source(source);
        let event = self.store.create(new).await?;
        Ok(Response::new(pb::CreateEventResponse {
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
        let query = ListQuery::try_from(request.into_inner())?;
        let page = self.store.list(&query).await?;
        Ok(Response::new(pb::ListEventsResponse {
            next_page_token: page
                .next
                .map(|p| query.next_page_token(p))
                .unwrap_or_default(),
            events: page.events.into_iter().map(Into::into).collect(),
        }))
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let user = user_of(&request);
        let change = StatusChange::try_from(request.into_inner())?;
        if let Some(user) = user {
            // An end user's token: only their own events, only to OPENED.
            if change.status != EventStatus::Opened {
                return Err(Status::permission_denied("user tokens may only set OPENED"));
            }
            if self.store.get(change.id).await?.user_id != user {
                return Err(Status::permission_denied(
                    "user tokens may only open their own events",
                ));
            }
        }
        let event = self.store.update_status(change.id, change.status).await?;
        Ok(Response::new(pb::UpdateStatusResponse {
            event: Some(event.into()),
        }))
    }

    async fn create_events(
        &self,
        request: Request<pb::CreateEventsRequest>,
    ) -> Result<Response<pb::CreateEventsResponse>, Status> {
        let source = source_of(&request);
        let items = parse_batch_creates(request.into_inner(), &self.rules)?;
        let outcomes = apply_valid(items, async |valid: Vec<NewEvent>| {
            let valid = valid
                .into_iter()
                .map(|e| e.with_source(source.clone()))
                .collect();
            let created = self.store.create_many(valid).await?;
            Ok(created.into_iter().map(Ok).collect())
        })
        .await?;
        let results = outcomes
            .into_iter()
            .map(BatchResult::from_outcome)
            .collect();
        Ok(Response::new(pb::CreateEventsResponse { results }))
    }

    async fn batch_update_status(
        &self,
        request: Request<pb::BatchUpdateStatusRequest>,
    ) -> Result<Response<pb::BatchUpdateStatusResponse>, Status> {
        if user_of(&request).is_some() {
            return Err(Status::permission_denied(
                "user tokens may not use BatchUpdateStatus",
            ));
        }
        let items = parse_batch_changes(request.into_inner())?;
        let outcomes = apply_valid(items, async |valid: Vec<StatusChange>| {
            self.store.update_status_many(&valid).await
        })
        .await?;
        let results = outcomes
            .into_iter()
            .map(BatchResult::from_outcome)
            .collect();
        Ok(Response::new(pb::BatchUpdateStatusResponse { results }))
    }
}

/// The client id of the caller (an event's `source`); empty in open mode.
pub(crate) fn source_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Identity>()
        .map(|identity| identity.client_id.clone())
        .unwrap_or_default()
}

/// The end user whose token made the call, if it was a user token.
pub(crate) fn user_of<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<Identity>()
        .and_then(|identity| identity.user.clone())
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
