//! The users table in SQLite: create, read, update and soft-delete, each
//! one committed transaction; what changed comes back for the event.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

/// A user as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Its id (a UUID).
    pub id: String,
    /// Its email address, lower-cased; unique among users not deleted.
    pub email: String,
    /// Its name.
    pub name: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
}

impl User {
    /// The user as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// A field's change: its old and new value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// `email` or `name`.
    pub field: &'static str,
    /// The value before.
    pub from: String,
    /// The value after.
    pub to: String,
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No user (not deleted) has that id.
    #[error("no user {0}")]
    NotFound(String),
    /// Another user (not deleted) has that email.
    #[error("another user has the email {0}")]
    EmailTaken(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
}

/// How many users there are, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Users not deleted.
    pub active: u64,
    /// Users deleted (their rows are kept).
    pub deleted: u64,
}

/// The database: one connection, used from blocking tasks.
#[derive(Clone)]
pub struct Store {
    db: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (and if needed creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let db = Connection::open(path)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS users (
                 id TEXT PRIMARY KEY,
                 email TEXT NOT NULL,
                 name TEXT NOT NULL,
                 created_at TEXT NOT NULL,
                 updated_at TEXT NOT NULL,
                 deleted_at TEXT
             );
             CREATE UNIQUE INDEX IF NOT EXISTS users_live_email
                 ON users (email) WHERE deleted_at IS NULL;",
        )?;
        Ok(Self {
            db: Arc::new(Mutex::new(db)),
        })
    }

    /// Runs `work` on the connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut db = db.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut db)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Users by state.
    pub async fn counts(&self) -> Result<Counts, StoreError> {
        self.with(|db| {
            let (active, deleted): (i64, i64) = db.query_row(
                "SELECT COUNT(*) FILTER (WHERE deleted_at IS NULL),
                        COUNT(*) FILTER (WHERE deleted_at IS NOT NULL) FROM users",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )?;
            Ok(Counts {
                active: active.unsigned_abs(),
                deleted: deleted.unsigned_abs(),
            })
        })
        .await
    }

    /// Creates a user.
    pub async fn create(&self, email: String, name: String) -> Result<User, StoreError> {
        self.with(move |db| {
            let now = now();
            let user = User {
                id: Uuid::now_v7().to_string(),
                email,
                name,
                created_at: now.clone(),
                updated_at: now,
            };
            db.execute(
                "INSERT INTO users (id, email, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![user.id, user.email, user.name, user.created_at, user.updated_at],
            )
            .map_err(|e| taken_or(e, &user.email))?;
            Ok(user)
        })
        .await
    }

    /// The user with this id, unless deleted.
    pub async fn get(&self, id: String) -> Result<User, StoreError> {
        self.with(move |db| live(db, &id)).await
    }

    /// Sets the given fields; returns the user and what changed.
    pub async fn update(
        &self,
        id: String,
        email: Option<String>,
        name: Option<String>,
    ) -> Result<(User, Vec<Change>), StoreError> {
        self.with(move |db| {
            let tx = db.transaction()?;
            let mut user = live(&tx, &id)?;
            let mut changes = Vec::new();
            for (field, new, old) in [
                ("email", email, &mut user.email),
                ("name", name, &mut user.name),
            ] {
                if let Some(new) = new.filter(|new| new != old) {
                    changes.push(Change {
                        field,
                        from: std::mem::replace(old, new.clone()),
                        to: new,
                    });
                }
            }
            if !changes.is_empty() {
                user.updated_at = now();
                tx.execute(
                    "UPDATE users SET email = ?2, name = ?3, updated_at = ?4 WHERE id = ?1",
                    params![user.id, user.email, user.name, user.updated_at],
                )
                .map_err(|e| taken_or(e, &user.email))?;
            }
            tx.commit()?;
            Ok((user, changes))
        })
        .await
    }

    /// Marks the user deleted (its row stays); returns it as it was.
    pub async fn delete(&self, id: String) -> Result<User, StoreError> {
        self.with(move |db| {
            let tx = db.transaction()?;
            let user = live(&tx, &id)?;
            tx.execute(
                "UPDATE users SET deleted_at = ?2 WHERE id = ?1",
                params![id, now()],
            )?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }
}

/// The user `id`, unless deleted.
fn live(db: &Connection, id: &str) -> Result<User, StoreError> {
    db.query_row(
        "SELECT id, email, name, created_at, updated_at FROM users WHERE id = ?1 AND deleted_at IS NULL",
        [id],
        |row| {
            Ok(User {
                id: row.get(0)?,
                email: row.get(1)?,
                name: row.get(2)?,
                created_at: row.get(3)?,
                updated_at: row.get(4)?,
            })
        },
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(id.to_owned()))
}

/// `err`, read as a taken email when it is the unique index's violation.
fn taken_or(err: rusqlite::Error, email: &str) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::EmailTaken(email.to_owned()),
        _ => StoreError::Database(err),
    }
}

/// Now, as RFC 3339 with microseconds.
fn now() -> String {
    herald_client::rfc3339(herald_client::now())
}
