//! The REST API: `POST /users`, `GET`, `PATCH` and `DELETE /users/{id}`,
//! and `GET /metrics` (rendered by [`crate::metrics`]). Each write publishes its event only after the
//! database committed it, through the Publisher, which never fails or slows
//! the request.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use herald_client::{EventInput, Publisher};
use serde_json::{Value, json};

use crate::{
    metrics::Metrics,
    store::{Change, Store, StoreError, User},
};

/// The event types this service publishes.
pub const EVENT_TYPES: [&str; 3] = ["user.created", "user.updated", "user.deleted"];
/// The category of its events.
pub const CATEGORY: &str = "user";
/// Longest email address accepted (RFC 5321's path limit).
const MAX_EMAIL: usize = 254;
/// Longest name accepted, in characters.
const MAX_NAME: usize = 200;

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    store: Store,
    publisher: Publisher,
    metrics: Arc<Metrics>,
}

/// The routes over `store`, publishing through `publisher`.
pub fn router(store: Store, publisher: Publisher, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/users", post(create))
        .route("/users/{id}", get(read).patch(update).delete(delete))
        .route("/metrics", get(render_metrics))
        .with_state(App {
            store,
            publisher,
            metrics,
        })
}

/// An error answer: a status and `{"error": ..., "field": ...}`.
struct Problem {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl Problem {
    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{field}: {}", message.into()),
            field: Some(field),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Self {
        let (status, field) = match &err {
            StoreError::NotFound(_) => (StatusCode::NOT_FOUND, None),
            StoreError::EmailTaken(_) => (StatusCode::CONFLICT, Some("email")),
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                (StatusCode::INTERNAL_SERVER_ERROR, None)
            }
        };
        Self {
            status,
            message: err.to_string(),
            field,
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(field) => json!({"error": self.message, "field": field}),
            None => json!({"error": self.message}),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The request body as a JSON object with only `allowed` fields, each a string.
fn fields(
    body: &Bytes,
    allowed: &[&'static str],
) -> Result<HashMap<&'static str, String>, Problem> {
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        _ => {
            return Err(Problem {
                status: StatusCode::BAD_REQUEST,
                message: "the body must be a JSON object".into(),
                field: None,
            });
        }
    };
    let mut out = HashMap::new();
    for (key, value) in object {
        let Some(field) = allowed.iter().find(|f| **f == key) else {
            return Err(Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!("unknown field {key:?}; known: {}", allowed.join(", ")),
                field: None,
            });
        };
        match value {
            Value::String(text) => out.insert(*field, text),
            _ => return Err(Problem::invalid(field, "must be a string")),
        };
    }
    Ok(out)
}

/// A checked email address, lower-cased.
fn email(text: &str) -> Result<String, Problem> {
    let text = text.trim().to_lowercase();
    let well_formed = text.len() <= MAX_EMAIL
        && !text.chars().any(char::is_whitespace)
        && text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.contains('@') && domain.contains('.')
        });
    if well_formed {
        Ok(text)
    } else {
        Err(Problem::invalid(
            "email",
            format!("must be an email address like ada@example.com (at most {MAX_EMAIL} bytes)"),
        ))
    }
}

/// A checked name, trimmed.
fn name(text: &str) -> Result<String, Problem> {
    let text = text.trim();
    if text.is_empty() || text.chars().count() > MAX_NAME {
        return Err(Problem::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(text.to_owned())
}

/// Publishes the event of a committed write.
async fn publish(app: &App, event_type: &str, user: &User, description: String, payload: Value) {
    let Value::Object(payload) = payload else {
        unreachable!("payloads are objects");
    };
    app.publisher
        .publish(EventInput {
            user_id: user.id.clone(),
            description,
            category: CATEGORY.into(),
            event_type: event_type.into(),
            payload: Some(payload),
            ..EventInput::default()
        })
        .await;
}

async fn create(State(app): State<App>, body: Bytes) -> Result<Response, Problem> {
    let mut given = fields(&body, &["email", "name"])?;
    let email = email(
        &given
            .remove("email")
            .ok_or_else(|| Problem::invalid("email", "is required"))?,
    )?;
    let name = name(
        &given
            .remove("name")
            .ok_or_else(|| Problem::invalid("name", "is required"))?,
    )?;
    let user = app.store.create(email, name).await?;
    app.metrics.user_created();
    publish(
        &app,
        "user.created",
        &user,
        format!("Welcome, {}", user.name),
        json!({"email": user.email, "name": user.name}),
    )
    .await;
    Ok((StatusCode::CREATED, axum::Json(user.json())).into_response())
}

async fn read(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let user = app.store.get(id).await?;
    Ok(axum::Json(user.json()).into_response())
}

async fn update(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let given = fields(&body, &["email", "name"])?;
    if given.is_empty() {
        return Err(Problem {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "give email, name or both".into(),
            field: None,
        });
    }
    let new_email = given.get("email").map(|e| email(e)).transpose()?;
    let new_name = given.get("name").map(|n| name(n)).transpose()?;
    let (user, changes) = app.store.update(id, new_email, new_name).await?;
    let changed: serde_json::Map<String, Value> = changes
        .iter()
        .map(|Change { field, from, to }| ((*field).to_owned(), json!({"from": from, "to": to})))
        .collect();
    let what = changes
        .iter()
        .map(|c| c.field)
        .collect::<Vec<_>>()
        .join(" and ");
    let description = match what.as_str() {
        "" => "Your profile was saved unchanged".to_owned(),
        what => format!("Your {what} changed"),
    };
    publish(
        &app,
        "user.updated",
        &user,
        description,
        json!({"changes": changed}),
    )
    .await;
    Ok(axum::Json(user.json()).into_response())
}

async fn delete(State(app): State<App>, Path(id): Path<String>) -> Result<Response, Problem> {
    let user = app.store.delete(id).await?;
    app.metrics.user_deleted();
    publish(
        &app,
        "user.deleted",
        &user,
        format!("Goodbye, {}", user.name),
        json!({"email": user.email}),
    )
    .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn render_metrics(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(&app.publisher),
    )
        .into_response()
}
