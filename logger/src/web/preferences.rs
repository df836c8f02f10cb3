//! A user's preferences as JSON, beside the inbox's:
//!
//! - `GET /v1/preferences`: `{"opt_outs": [{"channel", "category", "type"}…]}`
//!   (GetPreferences);
//! - `PUT /v1/preferences` with `{"opt_outs": […]}`: replaces them and
//!   answers as GET does (SetPreferences).
//!
//! Each takes `user_id` too (a user token's own by default), and the same
//! credentials in `authorization` as the gRPC call it stands for.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    response::Response,
};
use herald::pb::{self, Rpc};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Web,
    inbox::{default_user, json_call, query_pairs, respond, unknown},
};

/// The body of `PUT /v1/preferences`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPreferences {
    #[serde(default)]
    user_id: String,
    opt_outs: Vec<herald::domain::OptOut>,
}

/// `GET /v1/preferences`: the caller's preferences.
pub async fn get(State(web): State<Arc<Web>>, parts: http::request::Parts) -> Response {
    respond(async {
        let identity = web.caller_of(Rpc::GetPreferences, &parts)?;
        let mut request = pb::GetPreferencesRequest::default();
        for (key, value) in query_pairs(&parts) {
            match key.as_str() {
                "user_id" => request.user_id = value,
                other => return Err(unknown(other, "user_id")),
            }
        }
        default_user(&mut request.user_id, identity.user.as_deref());
        let got = web
            .recipients
            .get_preferences(identity.user.as_deref(), request)
            .await?;
        Ok(as_json(got.preferences))
    })
    .await
}

/// `PUT /v1/preferences`: replaces the caller's preferences.
pub async fn set(State(web): State<Arc<Web>>, request: Request) -> Response {
    respond(async {
        let (identity, body): (_, SetPreferences) =
            json_call(&web, Rpc::SetPreferences, request).await?;
        let mut request = pb::SetPreferencesRequest {
            user_id: body.user_id,
            preferences: Some(
                herald::domain::Preferences {
                    opt_outs: body.opt_outs,
                }
                .into(),
            ),
        };
        default_user(&mut request.user_id, identity.user.as_deref());
        let set = web
            .recipients
            .set_preferences(identity.user.as_deref(), request)
            .await?;
        Ok(as_json(set.preferences))
    })
    .await
}

/// Preferences as the endpoints answer them.
fn as_json(preferences: Option<pb::Preferences>) -> Value {
    let opt_outs: Vec<Value> = preferences
        .unwrap_or_default()
        .opt_outs
        .into_iter()
        .map(|o| json!({ "channel": o.channel, "category": o.category, "type": o.r#type }))
        .collect();
    json!({ "opt_outs": opt_outs })
}
