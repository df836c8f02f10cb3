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

/// An RFC 3339 rendering of a time, with 0, 3, 6 or 9 fractional digits as
/// its value needs, as grpcurl prints it.
pub fn rfc3339(t: SystemTime) -> String {
    prost_types::Timestamp::from(t).to_string()
}

/// An RFC 3339 rendering with exactly six fractional digits (Herald's
/// precision), so that times line up in columns: `2026-12-01T20:30:00.100000Z`
/// where [`rfc3339`] writes `.100Z`.
pub fn rfc3339_micros(t: SystemTime) -> String {
    let whole = prost_types::Timestamp::from(t);
    let micros = whole.nanos / 1_000;
    let seconds = prost_types::Timestamp {
        seconds: whole.seconds,
        nanos: 0,
    };
    let text = seconds.to_string();
    format!("{}.{micros:06}Z", text.trim_end_matches('Z'))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_are_always_six_digits() {
        let at = |micros| from_micros(micros);
        assert_eq!(
            rfc3339_micros(at(1_764_621_000_100_000)),
            "2025-12-01T20:30:00.100000Z"
        );
        assert_eq!(
            rfc3339(at(1_764_621_000_100_000)),
            "2025-12-01T20:30:00.100Z"
        );
        assert_eq!(
            rfc3339_micros(at(1_764_621_000_000_000)),
            "2025-12-01T20:30:00.000000Z"
        );
        assert_eq!(
            rfc3339_micros(at(1_764_621_000_000_007)),
            "2025-12-01T20:30:00.000007Z"
        );
        assert_eq!(rfc3339_micros(at(-1)), "1969-12-31T23:59:59.999999Z");
    }
}
