//! Answers that always fit the message size limit.
//!
//! A batch write must never fail after its work was done because its answer
//! came out too large. So a batch is sized before any work
//! ([`max_batch_items`]: every item's result fits at worst), and its results
//! are built against the limit ([`fit_results`]): full events while they fit
//! with room for the worst case of every item still to come, then events cut
//! to their summary (id, user, status, times). A page of a list is cut short
//! instead ([`cut_to_fit`]), its next page token pointing after the last item
//! sent.

use prost::Message;

use crate::{Error, Event, domain::BatchResult, error::MAX_ERROR_BYTES, pb};

/// Most bytes one item of a batch answer takes at worst, framing included:
/// an error (bounded by [`MAX_ERROR_BYTES`]) or a summary event.
pub const MAX_RESULT_BYTES: usize = MAX_ERROR_BYTES + 16;

/// Bytes of a response message kept aside for its other fields.
const RESERVE: usize = 64;

/// Most items one batch may hold so that its answer fits in `limit` bytes
/// (and never more than `max`).
pub fn max_batch_items(limit: usize, max: usize) -> usize {
    (limit.saturating_sub(RESERVE) / MAX_RESULT_BYTES).min(max)
}

/// Bytes `message` takes as a repeated field's element (tag and length).
fn framed_len(message: &impl Message) -> usize {
    let len = message.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// The results of a batch of `outcomes.len()` items (no more than
/// [`max_batch_items`] of `limit`), within `limit` bytes in all; with
/// `summaries_only`, every event cut to its summary.
pub fn fit_results<R: BatchResult + Message>(
    outcomes: Vec<Result<Event, Error>>,
    limit: usize,
    summaries_only: bool,
) -> Vec<R> {
    if summaries_only {
        // A summary always fits: the batch was sized for the worst case.
        return outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Ok(event) => R::from_parts(Ok(summary(
                    // Converted without what the summary leaves out.
                    Event {
                        payload: None,
                        ..event
                    }
                    .into(),
                ))),
                Err(err) => R::from_outcome(Err(err)),
            })
            .collect();
    }
    let budget = limit.saturating_sub(RESERVE);
    let mut worst_to_come = outcomes.len() * MAX_RESULT_BYTES;
    let mut used = 0;
    outcomes
        .into_iter()
        .map(|outcome| {
            worst_to_come -= MAX_RESULT_BYTES;
            let mut result = R::from_outcome(outcome);
            let mut len = framed_len(&result);
            if used + len + worst_to_come > budget {
                result = match result.into_parts() {
                    (Some(event), _) => R::from_parts(Ok(summary(event))),
                    (None, status) => R::from_parts(Err(status.unwrap_or_default())),
                };
                len = framed_len(&result);
            }
            used += len;
            result
        })
        .collect()
}

/// An event cut to what identifies it and where it stands: id, user, status
/// and times.
fn summary(event: pb::Event) -> pb::Event {
    pb::Event {
        event_id: event.event_id,
        user_id: event.user_id,
        status: event.status,
        created_at: event.created_at,
        updated_at: event.updated_at,
        occurred_at: event.occurred_at,
        ..pb::Event::default()
    }
}

/// Cuts `items` to as many as fit in `limit` bytes (at least one, so a page
/// always moves on); true if any were cut.
pub fn cut_to_fit<M: Message>(items: &mut Vec<M>, limit: usize) -> bool {
    let fitting = fit_page(items, limit);
    let cut = fitting < items.len();
    items.truncate(fitting);
    cut
}

/// How many of `items` (as messages) fit in `limit` bytes; at least one, so
/// a page always moves on.
fn fit_page<M: Message>(items: &[M], limit: usize) -> usize {
    let budget = limit.saturating_sub(RESERVE);
    let mut used = 0;
    let fitting = items
        .iter()
        .take_while(|item| {
            used += framed_len(*item);
            used <= budget
        })
        .count();
    fitting.max(1).min(items.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NewEvent, domain::EventInput, pb};

    /// An event as large as the limits allow: long text, a 32 KiB payload.
    fn big_event() -> Event {
        let payload = serde_json::json!({"text": "x".repeat(32 * 1024 - 20)});
        let input = EventInput {
            user_id: "u".repeat(256),
            description: "d".repeat(4096),
            payload: payload.as_object().cloned(),
            ..EventInput::default()
        };
        NewEvent::validate(input, &Default::default())
            .expect("within the limits")
            .into_event(crate::partition::Partitions::default())
    }

    fn worst_error(i: usize) -> Error {
        Error::InvalidArgument(
            (0..50)
                .map(|j| crate::FieldViolation::new(format!("requests[{i}].f{j}"), "é".repeat(500)))
                .collect(),
        )
    }

    #[test]
    fn a_full_batch_of_big_events_and_errors_fits() {
        for limit in [256 * 1024, 1024 * 1024, 4 * 1024 * 1024] {
            let n = max_batch_items(limit, 1000);
            assert!(n >= 250, "{limit}: {n}");
            let big = big_event();
            let outcomes = (0..n)
                .map(|i| {
                    if i % 3 == 0 {
                        Err(worst_error(i))
                    } else {
                        Ok(big.clone())
                    }
                })
                .collect();
            let results: Vec<pb::UpdateStatusResult> = fit_results(outcomes, limit, false);
            assert_eq!(results.len(), n);
            let size = pb::BatchUpdateStatusResponse {
                results: results.clone(),
            }
            .encoded_len();
            assert!(size <= limit, "{limit}: {size}");
            // Where the limit leaves room, the first results carry whole
            // events; every later one at least the id and user.
            if limit >= 1024 * 1024 {
                let (first, _) = results[1].clone().into_parts();
                assert_eq!(first.expect("an event").description.len(), 4096);
            }
            for result in &results {
                if let (Some(event), _) = result.clone().into_parts() {
                    assert_eq!(event.event_id, big.id.to_string());
                    assert_eq!(event.user_id.len(), 256);
                }
            }
        }
    }

    #[test]
    fn small_results_are_left_whole() {
        let event = NewEvent::new("u", "d")
            .expect("valid")
            .into_event(crate::partition::Partitions::default());
        let outcomes = vec![Ok(event.clone()); 1000];
        let results: Vec<pb::CreateEventResult> = fit_results(outcomes, 1024 * 1024, false);
        let want = pb::Event::from(event);
        assert!(
            results
                .into_iter()
                .all(|r| r.into_parts().0.as_ref() == Some(&want))
        );
    }

    #[test]
    fn summaries_are_given_when_asked_for() {
        let mut event = NewEvent::new("u", "d")
            .expect("valid")
            .into_event(crate::partition::Partitions::default());
        event.payload = serde_json::json!({"n": 1}).as_object().cloned();
        let outcomes = vec![Ok(event.clone()), Err(Error::NotFound(event.id))];
        let results: Vec<pb::UpdateStatusResult> = fit_results(outcomes, 1024 * 1024, true);
        let (got, _) = results[0].clone().into_parts();
        assert_eq!(got, Some(summary(pb::Event::from(event))));
        assert!(matches!(results[1].clone().into_parts(), (None, Some(_))));
    }

    #[test]
    fn pages_are_cut_to_fit_but_always_move_on() {
        let big = pb::Event::from(big_event());
        let page = vec![big.clone(); 100];
        let n = fit_page(&page, 1024 * 1024);
        assert!(n > 1 && n < 100, "{n}");
        let size = pb::ListEventsResponse {
            events: page[..n].to_vec(),
            next_page_token: "t".repeat(60),
        }
        .encoded_len();
        assert!(size <= 1024 * 1024, "{size}");
        assert_eq!(fit_page(&page, 1000), 1);
        assert_eq!(fit_page::<pb::Event>(&[], 1000), 0);
    }
}
