//! Time as Herald keeps it: microseconds since the Unix epoch, RFC 3339 text.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current time, truncated to microseconds (the precision kept in storage).
pub fn now() -> SystemTime {
    from_micros(to_micros(SystemTime::now()))
}

/// Microseconds since the Unix epoch.
pub fn to_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The time `micros` microseconds after the Unix epoch.
pub fn from_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// An RFC 3339 rendering of a time, as grpcurl and the CLI print it.
pub fn rfc3339(t: SystemTime) -> String {
    prost_types::Timestamp::from(t).to_string()
}

/// Reads an RFC 3339 time (what [`rfc3339`] writes, or any offset); the
/// error says what was wrong with `text`, quoted short.
pub fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    let t: prost_types::Timestamp = text.parse().map_err(|_| {
        format!(
            "not an RFC 3339 time: {} (e.g. 2026-11-22T10:00:00Z)",
            crate::error::quote(text)
        )
    })?;
    SystemTime::try_from(t).map_err(|_| format!("time out of range: {}", crate::error::quote(text)))
}
