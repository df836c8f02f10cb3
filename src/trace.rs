//! W3C Trace Context (`traceparent`), carried with each event so that one
//! event's journey can be followed across processes: the logger takes the
//! caller's `traceparent` header on CreateEvent (or starts a trace), stores
//! it with the event and its queue entry; a processor continues it for the
//! delivery and sends it with the event's status change.
//!
//! The header is `00-{trace id: 32 hex}-{parent id: 16 hex}-{flags: 2 hex}`
//! (<https://www.w3.org/TR/trace-context/>).

use std::fmt;

/// The gRPC metadata key (and HTTP header) of the trace context.
pub const HEADER: &str = "traceparent";

/// One position in a trace: the trace and the span a change belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// A new trace, sampled, with a random trace and span id.
    pub fn new_root() -> Self {
        let mut trace_id = [0u8; 16];
        fill_nonzero(&mut trace_id);
        Self {
            trace_id,
            span_id: new_span_id(),
            flags: 1,
        }
    }

    /// A new span of the same trace, with this one as its parent.
    pub fn child(&self) -> Self {
        Self {
            span_id: new_span_id(),
            ..*self
        }
    }

    /// Reads a `traceparent` value; `None` if it is not a valid one (which,
    /// by the W3C rules, starts a new trace). Versions after `00` are read by
    /// their first four fields, as the specification asks.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let mut parts = text.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let lower_hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let mut parsed = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        decode_hex(trace, &mut parsed.trace_id)?;
        decode_hex(span, &mut parsed.span_id)?;
        if parsed.trace_id == [0; 16] || parsed.span_id == [0; 8] {
            return None;
        }
        Some(parsed)
    }

    /// The trace id as 32 lowercase hex digits, as logs and tracing systems show it.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    /// The raw trace id.
    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The raw span id.
    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The trace id, span id and flags packed as [`Self::PACKED`] bytes
    /// (how the Redis backend stores them: half the size of the text).
    pub fn to_packed(&self) -> [u8; Self::PACKED] {
        let mut out = [0u8; Self::PACKED];
        out[..16].copy_from_slice(&self.trace_id);
        out[16..24].copy_from_slice(&self.span_id);
        out[24] = self.flags;
        out
    }

    /// Reads what [`Self::to_packed`] wrote; `None` for anything else
    /// (all zeros, the packing of no trace, included).
    pub fn from_packed(bytes: &[u8]) -> Option<Self> {
        let bytes: &[u8; Self::PACKED] = bytes.try_into().ok()?;
        let mut parsed = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: bytes[24],
        };
        parsed.trace_id.copy_from_slice(&bytes[..16]);
        parsed.span_id.copy_from_slice(&bytes[16..24]);
        (parsed.trace_id != [0; 16] && parsed.span_id != [0; 8]).then_some(parsed)
    }

    /// Bytes of a packed trace context.
    pub const PACKED: usize = 25;
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Written into one buffer: this runs for every event sent out.
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut text[3..35]);
        text[35] = b'-';
        hex_into(&self.span_id, &mut text[36..52]);
        text[52] = b'-';
        hex_into(&[self.flags], &mut text[53..]);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    fill_nonzero(&mut id);
    id
}

thread_local! {
    /// Ids only need to be unlikely to collide, not secret: a per-thread
    /// generator seeded once from the OS (the clock if that fails) spares a
    /// system call per event.
    static IDS: std::cell::RefCell<crate::random::SplitMix64> = std::cell::RefCell::new({
        let mut seed = [0u8; 8];
        match getrandom::fill(&mut seed) {
            Ok(()) => crate::random::SplitMix64::new(u64::from_le_bytes(seed)),
            Err(_) => crate::random::SplitMix64::from_time(),
        }
    });
}

/// Random bytes, not all zero (the one invalid id).
fn fill_nonzero(bytes: &mut [u8]) {
    IDS.with(|rng| {
        let mut rng = rng.borrow_mut();
        loop {
            for chunk in bytes.chunks_mut(8) {
                let word = rng.next_u64().to_le_bytes();
                chunk.copy_from_slice(&word[..chunk.len()]);
            }
            if bytes.iter().any(|b| *b != 0) {
                return;
            }
        }
    });
}

fn hex(bytes: &[u8]) -> String {
    let mut text = vec![0u8; bytes.len() * 2];
    hex_into(bytes, &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// Writes `bytes` as lowercase hex digits into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

fn decode_hex(text: &str, out: &mut [u8]) -> Option<()> {
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers_round_trip() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(text).expect("valid");
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id(), "00f067aa0ba902b7");
        assert_eq!(parsed.flags(), 1);
        // A later version with more fields is read by its first four.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(
            TraceParent::parse(future).expect("valid").trace_id(),
            parsed.trace_id()
        );
    }

    #[test]
    fn packed_contexts_round_trip() {
        let root = TraceParent::new_root();
        assert_eq!(TraceParent::from_packed(&root.to_packed()), Some(root));
        assert_eq!(TraceParent::from_packed(&[0; TraceParent::PACKED]), None);
        assert_eq!(TraceParent::from_packed(&root.to_packed()[1..]), None);
    }

    #[test]
    fn invalid_headers_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1g",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_eq!(child.flags(), root.flags());
        assert_ne!(TraceParent::new_root().trace_id(), root.trace_id());
    }
}
