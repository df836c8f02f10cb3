//! The console's recipient routes: one user's record read, replaced and
//! erased through the Recipients service, with the caller's key.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::HeaderMap,
    response::IntoResponse,
};
use herald::domain::{OptOut, Payload, Preferences};
use herald_client::NewRecipient;
use serde::Deserialize;
use serde_json::json;

use super::{Console, api::ApiResult};
use crate::http_api::ApiError;

/// `GET /api/recipients/{user_id}`: the user's recipient record (contact
/// data and opt-outs), or 404 when none is stored.
pub async fn recipient(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult {
    match console.client_for(&headers)?.recipient(&user_id).await? {
        Some(recipient) => Ok(Json(recipient.to_json()).into_response()),
        None => Err(ApiError::not_found(&format!(
            "no recipient {} is stored",
            herald::error::quote(&user_id)
        ))),
    }
}

/// The body of `PUT /api/recipients/{user_id}`: the whole record as the
/// page edits it (an absent field is empty; absent `opt_outs` keep the
/// stored ones).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    locale: String,
    #[serde(default)]
    time_zone: String,
    attributes: Option<Payload>,
    opt_outs: Option<Vec<OptOut>>,
}

/// `PUT /api/recipients/{user_id}`: replaces the record (PutRecipient)
/// and answers it as stored.
pub async fn put_recipient(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    body: Result<Json<RecipientBody>, JsonRejection>,
) -> ApiResult {
    let Json(body) = body?;
    let mut recipient = NewRecipient::new(user_id)
        .email(body.email)
        .name(body.name)
        .locale(body.locale)
        .time_zone(body.time_zone);
    if let Some(attributes) = &body.attributes {
        recipient = recipient.attributes(attributes);
    }
    if let Some(opt_outs) = body.opt_outs {
        recipient = recipient.preferences(Preferences { opt_outs });
    }
    let stored = console
        .client_for(&headers)?
        .put_recipient(recipient)
        .await?;
    Ok(Json(stored.to_json()).into_response())
}

/// `DELETE /api/recipients/{user_id}`: erases the record
/// (DeleteRecipient); `{"deleted"}` says whether there was one.
pub async fn delete_recipient(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
) -> ApiResult {
    let deleted = console
        .client_for(&headers)?
        .delete_recipient(&user_id)
        .await?;
    Ok(Json(json!({ "deleted": deleted })).into_response())
}
