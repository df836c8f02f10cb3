//! Recipients: [`NewRecipient`], a record to put, and the [`Client`] calls
//! that put, read and erase recipients and read and set their
//! preferences. Callable with an API key (scopes `recipients:read` and
//! `recipients:write`), and for preferences with the user's own token.

use herald::{
    domain::{OptOut, Payload, Preferences, Recipient, json_to_struct},
    pb,
};
use tonic::Code;

use crate::{Client, Error, client::item_error};

/// A recipient record to put: the user, and whatever contact data is
/// known; preferences only if they are to be replaced.
///
/// ```
/// use herald_client::NewRecipient;
///
/// let ann = NewRecipient::new("ann").email("ann@example.com").locale("fr");
/// # let _ = ann;
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewRecipient(pb::Recipient);

impl NewRecipient {
    /// The record of `user_id`, with no contact data yet.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self(pb::Recipient {
            user_id: user_id.into(),
            ..pb::Recipient::default()
        })
    }

    /// Where email goes.
    pub fn email(mut self, email: impl Into<String>) -> Self {
        self.0.email = email.into();
        self
    }

    /// How to address the user.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = name.into();
        self
    }

    /// The user's language, a BCP 47 tag (`pt-BR`).
    pub fn locale(mut self, locale: impl Into<String>) -> Self {
        self.0.locale = locale.into();
        self
    }

    /// The user's IANA time zone (`Europe/Paris`).
    pub fn time_zone(mut self, zone: impl Into<String>) -> Self {
        self.0.time_zone = zone.into();
        self
    }

    /// Free attributes for templates (a JSON object).
    pub fn attributes(mut self, attributes: &Payload) -> Self {
        self.0.attributes = Some(json_to_struct(attributes));
        self
    }

    /// Replaces the stored preferences too (else they stay).
    pub fn preferences(mut self, preferences: Preferences) -> Self {
        self.0.preferences = Some(preferences.into());
        self
    }
}

impl Client {
    /// Puts one recipient: its contact data replaced (its preferences too,
    /// if given); retried, since putting the same record again changes
    /// nothing. Returns the record as stored.
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::NewRecipient;
    ///
    /// let ann = client
    ///     .put_recipient(NewRecipient::new("ann").email("ann@example.com"))
    ///     .await?;
    /// println!("{} at {}", ann.user_id, ann.contact.email);
    /// # Ok(()) }
    /// ```
    pub async fn put_recipient(&self, recipient: NewRecipient) -> Result<Recipient, Error> {
        let request = pb::PutRecipientRequest {
            recipient: Some(recipient.0),
        };
        let response = self
            .retrying_on(&self.recipients, |mut stub| {
                let request = request.clone();
                async move { stub.put_recipient(request).await }
            })
            .await?;
        let stored = response
            .recipient
            .ok_or_else(|| Error::InvalidResponse("response lacks the recipient".into()))?;
        Ok(Recipient::from_pb(stored))
    }

    /// Puts up to 1,000 recipients in one call (an import), each on its
    /// own: in order, each stored or the error that refused it; retried.
    pub async fn put_recipients(
        &self,
        recipients: Vec<NewRecipient>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let n = recipients.len();
        let request = pb::PutRecipientsRequest {
            recipients: recipients.into_iter().map(|r| r.0).collect(),
        };
        let response = self
            .retrying_on(&self.recipients, |mut stub| {
                let request = request.clone();
                async move { stub.put_recipients(request).await }
            })
            .await?;
        if response.results.len() != n {
            return Err(Error::InvalidResponse(format!(
                "{} results for {n} recipients",
                response.results.len()
            )));
        }
        Ok(response
            .results
            .into_iter()
            .map(|r| {
                use pb::put_recipient_result::Result as Outcome;
                match r.result {
                    Some(Outcome::Recipient(_)) => Ok(()),
                    Some(Outcome::Error(status)) => Err(item_error(&status)),
                    None => Err(Error::InvalidResponse("batch result is empty".into())),
                }
            })
            .collect())
    }

    /// `user_id`'s record, or `None` if nothing is stored; retried.
    pub async fn recipient(&self, user_id: &str) -> Result<Option<Recipient>, Error> {
        let request = pb::GetRecipientRequest {
            user_id: user_id.to_owned(),
        };
        let got = self
            .retrying_on(&self.recipients, |mut stub| {
                let request = request.clone();
                async move { stub.get_recipient(request).await }
            })
            .await;
        match got {
            Ok(response) => Ok(response.recipient.map(Recipient::from_pb)),
            Err(err) if err.code() == Code::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Erases `user_id`'s record, contact data and preferences; whether
    /// there was one. Retried (erasing twice erases once).
    pub async fn delete_recipient(&self, user_id: &str) -> Result<bool, Error> {
        let request = pb::DeleteRecipientRequest {
            user_id: user_id.to_owned(),
        };
        let response = self
            .retrying_on(&self.recipients, |mut stub| {
                let request = request.clone();
                async move { stub.delete_recipient(request).await }
            })
            .await?;
        Ok(response.deleted)
    }

    /// `user_id`'s preferences (none set: every channel on); retried.
    pub async fn preferences(&self, user_id: &str) -> Result<Preferences, Error> {
        let request = pb::GetPreferencesRequest {
            user_id: user_id.to_owned(),
        };
        let response = self
            .retrying_on(&self.recipients, |mut stub| {
                let request = request.clone();
                async move { stub.get_preferences(request).await }
            })
            .await?;
        Ok(response.preferences.map(Into::into).unwrap_or_default())
    }

    /// Replaces `user_id`'s opt-outs; retried. Returns them as stored
    /// (each kept once).
    ///
    /// ```no_run
    /// # async fn demo(client: herald_client::Client) -> Result<(), herald_client::Error> {
    /// use herald_client::{OptOut, Preferences};
    ///
    /// let no_marketing_email = OptOut {
    ///     channel: "email".into(),
    ///     category: "marketing".into(),
    ///     ..OptOut::default()
    /// };
    /// client
    ///     .set_preferences("ann", vec![no_marketing_email])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_preferences(
        &self,
        user_id: &str,
        opt_outs: Vec<OptOut>,
    ) -> Result<Preferences, Error> {
        let request = pb::SetPreferencesRequest {
            user_id: user_id.to_owned(),
            preferences: Some(Preferences { opt_outs }.into()),
        };
        let response = self
            .retrying_on(&self.recipients, |mut stub| {
                let request = request.clone();
                async move { stub.set_preferences(request).await }
            })
            .await?;
        Ok(response.preferences.map(Into::into).unwrap_or_default())
    }
}
