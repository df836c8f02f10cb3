//! Stream replies (`XREAD`, `XREADGROUP`, `XRANGE`, `XAUTOCLAIM`) read straight from the
//! reply's values. redis-rs's own reply types copy the whole reply first and
//! build a map for each stream, each entry and each entry's fields; the
//! readers here take each entry's id and field bytes out of the reply as
//! they are, which is most of what the feed and the consumers' reads cost
//! the logger and the processors beyond the bytes themselves.

use ::redis::Value;

use herald::error::{Error, Result};

/// A stream entry: its id and its fields, in the order Redis gave them.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Entry {
    /// The entry's id in its stream, as Redis spells it.
    pub id: String,
    /// The entry's fields and their values.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// Takes the value of field `name` out of the entry, if it has one.
    pub fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        let at = self.fields.iter().position(|(n, _)| n == name.as_bytes())?;
        Some(self.fields.swap_remove(at).1)
    }
}

/// The entries of an `XREAD` or `XREADGROUP` reply, stream by stream (none
/// when the read timed out).
pub(super) fn read_reply(reply: Value) -> Result<Vec<(String, Vec<Entry>)>> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        // RESP2: [[key, entries], ...]; RESP3: {key: entries, ...}.
        Value::Array(rows) => rows
            .into_iter()
            .map(|row| match row {
                Value::Array(pair) => two(pair),
                other => Err(unexpected("stream of a read", &other)),
            })
            .collect::<Result<Vec<_>>>()?,
        Value::Map(pairs) => pairs,
        other => return Err(unexpected("read", &other)),
    };
    streams
        .into_iter()
        .map(|(key, entries)| Ok((text(key)?, range_reply(entries)?)))
        .collect()
}

/// The entries of an `XRANGE` reply (or of one stream of a read).
pub(super) fn range_reply(reply: Value) -> Result<Vec<Entry>> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(entries) => entries.into_iter().map(entry).collect(),
        other => Err(unexpected("range", &other)),
    }
}

/// An `XAUTOCLAIM` reply: the id to scan on from, and the entries claimed.
/// An entry deleted while pending is nil among them (Redis 6.2) or listed
/// in a third part (Redis 7); either way it is not claimed.
pub(super) fn autoclaim_reply(reply: Value) -> Result<(String, Vec<Entry>)> {
    let Value::Array(parts) = reply else {
        return Err(unexpected("claim", &reply));
    };
    let mut parts = parts.into_iter();
    let (Some(next), Some(claimed)) = (parts.next(), parts.next()) else {
        return Err(Error::Internal(
            "redis reply: a stream claim without its entries".into(),
        ));
    };
    let Value::Array(claimed) = claimed else {
        return Err(unexpected("claim's entries", &claimed));
    };
    let claimed = claimed
        .into_iter()
        .filter(|e| *e != Value::Nil)
        .map(entry)
        .collect::<Result<_>>()?;
    Ok((text(next)?, claimed))
}

/// One entry: `[id, [field, value, ...]]`; the fields are nil for an entry
/// deleted while pending in a consumer group.
fn entry(value: Value) -> Result<Entry> {
    let Value::Array(parts) = value else {
        return Err(unexpected("entry", &value));
    };
    let (id, fields) = two(parts)?;
    let fields = match fields {
        Value::Nil => Vec::new(),
        Value::Array(flat) => {
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let Some(name) = flat.next() {
                let value = flat.next().ok_or_else(|| {
                    Error::Internal("redis reply: a field without a value".into())
                })?;
                fields.push((bytes(name)?, bytes(value)?));
            }
            fields
        }
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(name, value)| Ok((bytes(name)?, bytes(value)?)))
            .collect::<Result<_>>()?,
        other => return Err(unexpected("entry's fields", &other)),
    };
    Ok(Entry {
        id: text(id)?,
        fields,
    })
}

/// The two values of a pair.
fn two(pair: Vec<Value>) -> Result<(Value, Value)> {
    let mut pair = pair.into_iter();
    match (pair.next(), pair.next(), pair.next()) {
        (Some(a), Some(b), None) => Ok((a, b)),
        _ => Err(Error::Internal(
            "redis reply: a stream pair of another length".into(),
        )),
    }
}

/// A bulk or simple string's bytes.
fn bytes(value: Value) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(text) => Ok(text.into_bytes()),
        other => Err(unexpected("string", &other)),
    }
}

/// A string as text.
fn text(value: Value) -> Result<String> {
    String::from_utf8(bytes(value)?)
        .map_err(|_| Error::Internal("redis reply: a stream key or id not in UTF-8".into()))
}

/// Our bug: Redis answered a stream command in a shape it does not use.
fn unexpected(what: &str, value: &Value) -> Error {
    let kind = match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::ServerError(_) => "an error",
        _ => "another type",
    };
    Error::Internal(format!("redis reply: a stream {what} as {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn raw_entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let flat = fields
            .iter()
            .flat_map(|(n, v)| [bulk(n), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(flat)])
    }

    fn parsed(id: &str, fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: id.into(),
            fields: fields
                .iter()
                .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_read_gives_each_streams_entries_with_their_fields_in_order() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk("s1"),
                Value::Array(vec![
                    raw_entry("1-0", &[("id", "a"), ("change", "b")]),
                    raw_entry("2-0", &[("id", "c")]),
                ]),
            ]),
            Value::Array(vec![
                bulk("s2"),
                Value::Array(vec![Value::Array(vec![bulk("3-0"), Value::Nil])]),
            ]),
        ]);
        let read = read_reply(reply).expect("a read");
        assert_eq!(
            read,
            [
                (
                    "s1".to_owned(),
                    vec![
                        parsed("1-0", &[("id", "a"), ("change", "b")]),
                        parsed("2-0", &[("id", "c")]),
                    ]
                ),
                ("s2".to_owned(), vec![parsed("3-0", &[])]),
            ]
        );
        // RESP3 answers a read with a map of streams.
        let map = Value::Map(vec![(
            bulk("s1"),
            Value::Array(vec![raw_entry("1-0", &[("id", "a")])]),
        )]);
        assert_eq!(
            read_reply(map).expect("a map"),
            [("s1".to_owned(), vec![parsed("1-0", &[("id", "a")])])]
        );
        assert!(read_reply(Value::Nil).expect("timed out").is_empty());
    }

    #[test]
    fn fields_are_taken_by_name_and_odd_shapes_are_refused() {
        let mut entry = range_reply(Value::Array(vec![raw_entry(
            "5-1",
            &[("id", "x"), ("change", "y")],
        )]))
        .expect("a range")
        .remove(0);
        assert_eq!(entry.take("change"), Some(b"y".to_vec()));
        assert_eq!(entry.take("change"), None);
        assert_eq!(entry.take("id"), Some(b"x".to_vec()));
        assert!(range_reply(Value::Array(vec![])).expect("empty").is_empty());

        for odd in [
            Value::Int(3),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![Value::Array(vec![bulk("1-0")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("id")]),
            ])]),
        ] {
            let err = range_reply(odd.clone()).expect_err("odd");
            assert!(
                matches!(&err, Error::Internal(why) if why.starts_with("redis reply:")),
                "{odd:?}: {err:?}"
            );
        }
        let claim = Value::Array(vec![
            bulk("7-1"),
            Value::Array(vec![Value::Nil, raw_entry("7-0", &[("id", "z")])]),
            Value::Array(vec![bulk("6-0")]),
        ]);
        assert_eq!(
            autoclaim_reply(claim).expect("claimed"),
            ("7-1".to_owned(), vec![parsed("7-0", &[("id", "z")])])
        );
        assert!(autoclaim_reply(Value::Array(vec![bulk("0-0")])).is_err());
    }
}
