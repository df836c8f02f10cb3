//! The event-type registry: a JSON Schema (draft 2020-12) per event type for
//! its payload, loaded and compiled once at start-up.
//!
//! The file is a JSON object `{"event_types": {"<type>": <schema>, ...}}`.
//! Without `--event-types`, the registry shipped in `config/event-types.json`
//! (web analytics: pageview, cta click, form interaction) is used.

use std::{collections::BTreeMap, path::Path};

use herald::domain::{FieldViolation, PayloadRules};
use jsonschema::{Validator, error::ValidationErrorKind};
use serde_json::Value;

use crate::loading::LoadError;

/// The registry shipped with Herald.
pub const DEFAULT_REGISTRY: &str = include_str!("../../config/event-types.json");

/// Most violations reported for one payload.
const MAX_VIOLATIONS: usize = 20;

/// What is wrong with an event-type registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The text is not JSON.
    #[error("not valid JSON")]
    NotJson(#[from] serde_json::Error),
    /// The JSON is not `{"event_types": {...}}`.
    #[error("expected an object with an \"event_types\" object")]
    Shape,
    /// A type's name is empty.
    #[error("an event type has an empty name")]
    EmptyName,
    /// A type's schema is not a valid JSON Schema (draft 2020-12).
    #[error("event type {name:?}: invalid schema: {reason}")]
    InvalidSchema {
        /// The type.
        name: String,
        /// What the schema compiler said.
        reason: String,
    },
}

/// Compiled payload schemas by event type.
pub struct EventTypes {
    schemas: BTreeMap<String, Validator>,
}

impl EventTypes {
    /// Loads and compiles a registry file; the error names the file, the type
    /// and the problem.
    pub fn load(path: &Path) -> Result<Self, LoadError<RegistryError>> {
        crate::loading::load(path, Self::parse)
    }

    /// Compiles a registry from its JSON text.
    pub fn parse(text: &str) -> Result<Self, RegistryError> {
        let root: Value = serde_json::from_str(text)?;
        let types = root
            .get("event_types")
            .and_then(Value::as_object)
            .ok_or(RegistryError::Shape)?;
        let mut schemas = BTreeMap::new();
        for (name, schema) in types {
            if name.trim().is_empty() {
                return Err(RegistryError::EmptyName);
            }
            let validator =
                jsonschema::draft202012::new(schema).map_err(|e| RegistryError::InvalidSchema {
                    name: name.clone(),
                    reason: e.to_string(),
                })?;
            schemas.insert(name.clone(), validator);
        }
        Ok(Self { schemas })
    }

    /// The registered type names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.schemas.keys().map(String::as_str)
    }
}

impl PayloadRules for EventTypes {
    fn check(&self, event_type: &str, payload: &Value) -> Option<Vec<FieldViolation>> {
        let validator = self.schemas.get(event_type)?;
        Some(
            validator
                .iter_errors(payload)
                .take(MAX_VIOLATIONS)
                .map(|error| {
                    let path = field_path(&error.instance_path().to_string());
                    match error.kind() {
                        ValidationErrorKind::Required { property } => {
                            let name = property
                                .as_str()
                                .map_or_else(|| property.to_string(), str::to_owned);
                            FieldViolation::new(format!("{path}.{name}"), "is required")
                        }
                        ValidationErrorKind::Type { kind } => {
                            let expected = match kind {
                                jsonschema::error::TypeKind::Single(t) => t.to_string(),
                                jsonschema::error::TypeKind::Multiple(ts) => ts
                                    .iter()
                                    .map(|t| t.to_string())
                                    .collect::<Vec<_>>()
                                    .join(" or "),
                            };
                            FieldViolation::new(path, format!("expected {expected}"))
                        }
                        _ => FieldViolation::new(path, error.to_string()),
                    }
                })
                .collect(),
        )
    }

    fn is_registered(&self, event_type: &str) -> bool {
        self.schemas.contains_key(event_type)
    }
}

/// A JSON pointer into the payload as a request field name:
/// `/form/first_name` is `payload.form.first_name`.
fn field_path(pointer: &str) -> String {
    let mut path = String::from("payload");
    for segment in pointer.split('/').skip(1) {
        path.push('.');
        path.push_str(&segment.replace("~1", "/").replace("~0", "~"));
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(types: &EventTypes, event_type: &str, payload: Value) -> Vec<(String, String)> {
        types
            .check(event_type, &payload)
            .expect("registered")
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    #[test]
    fn shipped_registry_checks_the_web_analytics_and_user_types() {
        let types = EventTypes::parse(DEFAULT_REGISTRY).expect("shipped registry compiles");
        assert_eq!(
            types.names().collect::<Vec<_>>(),
            [
                "cta click",
                "form interaction",
                "pageview",
                "user.created",
                "user.deleted",
                "user.updated"
            ]
        );
        let ok = serde_json::json!({"host": "example.com", "path": "/"});
        assert!(fields(&types, "pageview", ok).is_empty());
        assert_eq!(
            fields(&types, "pageview", serde_json::json!({"host": 7})),
            [
                ("payload.path".to_owned(), "is required".to_owned()),
                ("payload.host".to_owned(), "expected string".to_owned()),
            ]
        );
        assert_eq!(
            fields(
                &types,
                "cta click",
                serde_json::json!({"host": "h", "path": "/"})
            ),
            [("payload.element".to_owned(), "is required".to_owned())]
        );
        assert_eq!(
            fields(
                &types,
                "form interaction",
                serde_json::json!({"form": {"first_name": "Ada"}})
            ),
            [(
                "payload.form.last_name".to_owned(),
                "is required".to_owned()
            )]
        );
        assert!(
            types.check("checkout", &serde_json::json!({})).is_none(),
            "unknown type"
        );
    }

    #[test]
    fn a_bad_registry_names_the_type_and_the_problem() {
        let err = EventTypes::parse(r#"{"event_types": {"signup": {"type": "nonsense"}}}"#)
            .err()
            .expect("invalid schema");
        assert!(
            matches!(&err, RegistryError::InvalidSchema { name, .. } if name == "signup"),
            "{err}"
        );
        assert!(
            err.to_string().contains("\"signup\": invalid schema"),
            "{err}"
        );
        assert!(matches!(
            EventTypes::parse("[]").err(),
            Some(RegistryError::Shape)
        ));
        assert!(matches!(
            EventTypes::parse("{").err(),
            Some(RegistryError::NotJson(_))
        ));
    }

    #[test]
    fn pointers_become_field_names() {
        assert_eq!(field_path(""), "payload");
        assert_eq!(field_path("/form/first_name"), "payload.form.first_name");
        assert_eq!(field_path("/a~1b/c~0d"), "payload.a/b.c~d");
    }
}
