//! `herald.v1.EventLogger`: thin handlers that convert, call the store, map errors.

use std::sync::Arc;

use herald::{
    Error, NewEvent,
    backend::EventStore,
    domain::{EventInput, Rules, StatusChange, parse_batch_changes, parse_event_id},
    pb::{self, event_logger_server::EventLogger},
};
use tonic::{Request, Response, Status};

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
        let input = EventInput::try_from(request.into_inner())?;
        let event = self
            .store
            .create(NewEvent::validate(input, &self.rules)?)
            .await?;
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

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let change = StatusChange::try_from(request.into_inner())?;
        let event = self.store.update_status(change.id, change.status).await?;
        Ok(Response::new(pb::UpdateStatusResponse {
            event: Some(event.into()),
        }))
    }

    async fn batch_update_status(
        &self,
        request: Request<pb::BatchUpdateStatusRequest>,
    ) -> Result<Response<pb::BatchUpdateStatusResponse>, Status> {
        let items = parse_batch_changes(request.into_inner())?;
        let valid: Vec<StatusChange> = items
            .iter()
            .filter_map(|i| i.as_ref().ok().copied())
            .collect();
        let mut applied = self.store.update_status_many(&valid).await?.into_iter();
        let results = items
            .into_iter()
            .map(|item| {
                let outcome = item.and_then(|_| {
                    applied.next().unwrap_or_else(|| {
                        Err(Error::Internal("store answered too few results".into()))
                    })
                });
                let result = match outcome {
                    Ok(event) => pb::update_status_result::Result::Event(event.into()),
                    Err(err) => pb::update_status_result::Result::Error(err.into_rpc_status()),
                };
                pb::UpdateStatusResult {
                    result: Some(result),
                }
            })
            .collect();
        Ok(Response::new(pb::BatchUpdateStatusResponse { results }))
    }
}
