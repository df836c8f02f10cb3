//! `herald.v1.Recipients`: each user's contact data and preferences, for
//! API keys with the `recipients:*` scopes, and a user's own preferences
//! for their token (over gRPC, gRPC-Web and the end users' JSON API,
//! [`crate::web`]). The processors read the same records before each
//! channel ([`herald_storage::RecipientStore`]).

use std::sync::Arc;

use herald::{
    Error,
    domain::{OptOut, Preferences, RecipientUpdate, parse_batch_recipients, within},
    pb::{self, recipients_server::Recipients},
};
use herald_storage::{Backend, RecipientStore, recipient};
use tonic::{Request, Response, Status};

use crate::auth::{only_own, require_user_id, user_of};

/// The Recipients service over a [`RecipientStore`].
pub struct RecipientsService {
    store: Arc<dyn RecipientStore>,
}

impl RecipientsService {
    /// The service over `backend`'s recipients.
    pub fn new(backend: &Backend) -> Self {
        Self {
            store: backend.recipients.clone(),
        }
    }

    /// GetPreferences for `caller` (a user token's user, if the call came
    /// with one).
    pub async fn get_preferences(
        &self,
        caller: Option<&str>,
        request: pb::GetPreferencesRequest,
    ) -> Result<pb::GetPreferencesResponse, Status> {
        only_own(caller, &request.user_id, "preferences")?;
        require_user_id(&request.user_id)?;
        let stored = recipient(self.store.as_ref(), &request.user_id).await?;
        Ok(pb::GetPreferencesResponse {
            preferences: Some(stored.map(|r| r.preferences).unwrap_or_default().into()),
        })
    }

    /// SetPreferences for `caller`.
    pub async fn set_preferences(
        &self,
        caller: Option<&str>,
        request: pb::SetPreferencesRequest,
    ) -> Result<pb::SetPreferencesResponse, Status> {
        only_own(caller, &request.user_id, "preferences")?;
        require_user_id(&request.user_id)?;
        let preferences = match request.preferences {
            Some(p) => Preferences::from_pb(p, "preferences")?,
            None => Preferences::default(),
        };
        let stored = self
            .store
            .set_preferences(&request.user_id, &preferences)
            .await?;
        Ok(pb::SetPreferencesResponse {
            preferences: Some(stored.preferences.into()),
        })
    }
}

impl RecipientsService {
    /// Adds `opt_out` to `user`'s preferences (an unsubscribe link):
    /// whether `user` has a record to add it to.
    pub async fn unsubscribe(&self, user: &str, opt_out: &OptOut) -> Result<bool, Error> {
        Ok(self.store.add_opt_out(user, opt_out).await?.is_some())
    }
}

#[tonic::async_trait]
impl Recipients for RecipientsService {
    async fn put_recipient(
        &self,
        request: Request<pb::PutRecipientRequest>,
    ) -> Result<Response<pb::PutRecipientResponse>, Status> {
        let Some(recipient) = request.into_inner().recipient else {
            return Err(Error::invalid("recipient", "is required").into());
        };
        let update = within("recipient", RecipientUpdate::from_pb(recipient))?;
        let stored = self.store.put_recipients(&[update]).await?;
        Ok(Response::new(pb::PutRecipientResponse {
            recipient: stored.into_iter().next().map(Into::into),
        }))
    }

    async fn put_recipients(
        &self,
        request: Request<pb::PutRecipientsRequest>,
    ) -> Result<Response<pb::PutRecipientsResponse>, Status> {
        // The valid updates are stored together; each refused one keeps
        // its error in its place.
        let (mut valid, mut refusals) = (Vec::new(), Vec::new());
        for item in parse_batch_recipients(request.into_inner())? {
            match item {
                Ok(update) => {
                    valid.push(update);
                    refusals.push(None);
                }
                Err(err) => refusals.push(Some(err)),
            }
        }
        let mut stored = self.store.put_recipients(&valid).await?.into_iter();
        let results = refusals
            .into_iter()
            .map(|refusal| {
                use pb::put_recipient_result::Result as Outcome;
                let outcome = match refusal {
                    None => stored.next().map(|r| {
                        Outcome::Recipient(pb::Recipient {
                            user_id: r.user_id,
                            updated_at: Some(r.updated_at.into()),
                            ..Default::default()
                        })
                    }),
                    Some(err) => Some(Outcome::Error(err.into_rpc_status())),
                };
                pb::PutRecipientResult { result: outcome }
            })
            .collect();
        Ok(Response::new(pb::PutRecipientsResponse { results }))
    }

    async fn get_recipient(
        &self,
        request: Request<pb::GetRecipientRequest>,
    ) -> Result<Response<pb::GetRecipientResponse>, Status> {
        let user = request.into_inner().user_id;
        require_user_id(&user)?;
        match recipient(self.store.as_ref(), &user).await? {
            Some(r) => Ok(Response::new(pb::GetRecipientResponse {
                recipient: Some(r.into()),
            })),
            None => Err(Status::not_found(format!(
                "no recipient {}",
                herald::error::quote(&user)
            ))),
        }
    }

    async fn delete_recipient(
        &self,
        request: Request<pb::DeleteRecipientRequest>,
    ) -> Result<Response<pb::DeleteRecipientResponse>, Status> {
        let user = request.into_inner().user_id;
        require_user_id(&user)?;
        Ok(Response::new(pb::DeleteRecipientResponse {
            deleted: self.store.delete_recipient(&user).await?,
        }))
    }

    async fn get_preferences(
        &self,
        request: Request<pb::GetPreferencesRequest>,
    ) -> Result<Response<pb::GetPreferencesResponse>, Status> {
        let caller = user_of(&request);
        RecipientsService::get_preferences(self, caller.as_deref(), request.into_inner())
            .await
            .map(Response::new)
    }

    async fn set_preferences(
        &self,
        request: Request<pb::SetPreferencesRequest>,
    ) -> Result<Response<pb::SetPreferencesResponse>, Status> {
        let caller = user_of(&request);
        RecipientsService::set_preferences(self, caller.as_deref(), request.into_inner())
            .await
            .map(Response::new)
    }
}
