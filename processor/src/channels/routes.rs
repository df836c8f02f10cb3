//! Routes: which channels an event goes to, by its category, type, user
//! and session, whether a route requires it (past the recipient's
//! opt-outs), whether it waits for the user's earlier events, and whether
//! it collects them into digests.

use std::time::Duration;

use herald::Event;

use super::settings::{DEFAULT_DIGEST_MAX_EVENTS, RouteSettings};

/// A filter on one attribute: any of its patterns (`user.*` for a prefix),
/// or anything when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Filter(Vec<String>);

impl Filter {
    fn of(values: &[String]) -> Self {
        Self(values.to_vec())
    }

    fn matches(&self, value: &str) -> bool {
        herald::subscription::any_matches(&self.0, value)
    }
}

/// A route: its filters, and the channels (by place) it sends to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    categories: Filter,
    types: Filter,
    users: Filter,
    sessions: Filter,
    channels: Vec<usize>,
    required: bool,
    ordered: bool,
    digest: Option<Digesting>,
}

/// How a digest route collects a user's events of one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digesting {
    /// How long a digest stays open after its first event.
    pub window: Duration,
    /// The most events of one digest.
    pub max_events: u32,
}

/// The digest route an event matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestRoute {
    /// How it collects.
    pub digesting: Digesting,
    /// Its channels, by place.
    pub channels: Vec<usize>,
    /// Whether it is required (past the recipient's opt-outs).
    pub required: bool,
}

impl Route {
    /// The route `settings` describe, its channels found by name with `place`.
    pub fn new(settings: &RouteSettings, place: impl Fn(&str) -> Option<usize>) -> Self {
        Self {
            categories: Filter::of(&settings.categories),
            types: Filter::of(&settings.types),
            users: Filter::of(&settings.users),
            sessions: Filter::of(&settings.sessions),
            channels: settings.channels.iter().filter_map(|n| place(n)).collect(),
            required: settings.required,
            ordered: settings.ordered,
            digest: settings.digest.map(|window| Digesting {
                window,
                max_events: settings.max_events.unwrap_or(DEFAULT_DIGEST_MAX_EVENTS),
            }),
        }
    }

    /// A route of every event to channel `place`.
    pub fn everything_to(place: usize) -> Self {
        Self {
            categories: Filter::default(),
            types: Filter::default(),
            users: Filter::default(),
            sessions: Filter::default(),
            channels: vec![place],
            required: false,
            ordered: false,
            digest: None,
        }
    }

    fn matches(&self, event: &Event) -> bool {
        self.categories.matches(&event.category)
            && self.types.matches(&event.event_type)
            && self.users.matches(&event.user_id)
            && self.sessions.matches(&event.session_id)
    }
}

/// A channel a route chose for an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// The channel, by place.
    pub place: usize,
    /// Whether a required route chose it: the recipient's opt-outs do not
    /// apply.
    pub required: bool,
}

/// Whether some route with a channel is ordered.
pub fn any_ordered(routes: &[Route]) -> bool {
    routes.iter().any(|r| r.ordered && !r.channels.is_empty())
}

/// Whether an ordered route with a channel matches `event`: its delivery
/// waits for the user's earlier events.
pub fn ordered(routes: &[Route], event: &Event) -> bool {
    routes
        .iter()
        .any(|r| r.ordered && !r.channels.is_empty() && r.matches(event))
}

/// Whether some route with a channel collects digests.
pub fn any_digest(routes: &[Route]) -> bool {
    routes
        .iter()
        .any(|r| r.digest.is_some() && !r.channels.is_empty())
}

/// The first digest route with a channel that matches `event`: the event
/// goes out in one of its digests (and to the channels of the other
/// routes at once).
pub fn digest(routes: &[Route], event: &Event) -> Option<DigestRoute> {
    routes
        .iter()
        .filter(|r| !r.channels.is_empty() && r.matches(event))
        .find_map(|r| {
            Some(DigestRoute {
                digesting: r.digest?,
                channels: r.channels.clone(),
                required: r.required,
            })
        })
}

/// The channels (each once, in order of place) that the routes matching
/// `event` send to at once (digest routes send later), each required if
/// any required route chose it.
pub fn choose(routes: &[Route], event: &Event) -> Vec<Chosen> {
    let mut chosen: Vec<Chosen> = routes
        .iter()
        .filter(|r| r.digest.is_none() && r.matches(event))
        .flat_map(|r| {
            r.channels.iter().map(|&place| Chosen {
                place,
                required: r.required,
            })
        })
        .collect();
    // Required first within a place, so dedup keeps it.
    chosen.sort_unstable_by_key(|c| (c.place, !c.required));
    chosen.dedup_by_key(|c| c.place);
    chosen
}

#[cfg(test)]
mod tests {
    use herald::{NewEvent, partition::Partitions};

    use super::*;

    fn event(category: &str, event_type: &str, user: &str, session: &str) -> Event {
        let mut e = NewEvent::new(user, "hi")
            .expect("valid")
            .into_event(Partitions::default());
        e.category = category.into();
        e.event_type = event_type.into();
        e.session_id = session.into();
        e
    }

    fn route(edit: impl FnOnce(&mut RouteSettings), channels: &[usize]) -> Route {
        let mut settings = RouteSettings {
            categories: vec![],
            types: vec![],
            users: vec![],
            sessions: vec![],
            channels: channels.iter().map(|c| c.to_string()).collect(),
            required: false,
            ordered: false,
            digest: None,
            max_events: None,
        };
        edit(&mut settings);
        Route::new(&settings, |name| name.parse().ok())
    }

    #[test]
    fn every_filter_given_must_match_and_channels_come_once() {
        let routes = [
            route(|r| r.types = vec!["user.*".into()], &[0]),
            route(
                |r| {
                    r.categories = vec!["billing".into(), "ops".into()];
                    r.users = vec!["ann".into()];
                },
                &[1, 0],
            ),
            route(|r| r.sessions = vec!["s-*".into()], &[2]),
        ];
        let cases = [
            (event("", "user.created", "bob", ""), vec![0]),
            (event("", "user", "bob", ""), vec![]),
            (event("", "usercreated", "bob", ""), vec![]),
            (event("billing", "user.deleted", "ann", ""), vec![0, 1]),
            (event("billing", "", "bob", ""), vec![]),
            (event("ops", "", "ann", "s-1"), vec![0, 1, 2]),
            (event("", "", "ann", "s"), vec![]),
        ];
        let places = |chosen: Vec<Chosen>| chosen.into_iter().map(|c| c.place).collect::<Vec<_>>();
        for (event, want) in cases {
            assert_eq!(places(choose(&routes, &event)), want, "{event:?}");
        }
        let all = [route(|_| {}, &[3])];
        assert_eq!(places(choose(&all, &event("", "", "x", ""))), [3]);
        let star = [route(|r| r.categories = vec!["*".into()], &[4])];
        assert_eq!(
            places(choose(&star, &event("", "", "x", ""))),
            [4],
            "* matches the empty value"
        );
    }

    #[test]
    fn an_event_waits_its_turn_when_an_ordered_route_with_channels_matches() {
        let routes = [
            route(|_| {}, &[0]),
            route(
                |r| {
                    r.types = vec!["order.*".into()];
                    r.ordered = true;
                },
                &[1],
            ),
            route(
                |r| {
                    r.types = vec!["invoice.*".into()];
                    r.ordered = true;
                },
                &[],
            ),
        ];
        let ordered = |t: &str| ordered(&routes, &event("", t, "ann", ""));
        assert!(ordered("order.paid"));
        assert!(!ordered("promo"), "no ordered route matches");
        assert!(!ordered("invoice.paid"), "the ordered route sends nowhere");
    }

    #[test]
    fn a_channel_is_required_when_any_route_choosing_it_is() {
        let routes = [
            route(|_| {}, &[0, 1]),
            route(
                |r| {
                    r.types = vec!["security.*".into()];
                    r.required = true;
                },
                &[1],
            ),
        ];
        let chosen = |t: &str| choose(&routes, &event("", t, "ann", ""));
        assert_eq!(
            chosen("security.login"),
            [
                Chosen {
                    place: 0,
                    required: false
                },
                Chosen {
                    place: 1,
                    required: true
                }
            ]
        );
        assert!(chosen("promo").iter().all(|c| !c.required));
    }

    #[test]
    fn a_digest_route_takes_its_events_from_the_channels_sent_at_once() {
        let routes = [
            route(|_| {}, &[0]),
            route(
                |r| {
                    r.types = vec!["comment.*".into()];
                    r.digest = Some(Duration::from_secs(600));
                },
                &[1],
            ),
            route(
                |r| {
                    r.types = vec!["comment.*".into()];
                    r.digest = Some(Duration::from_secs(60));
                    r.max_events = Some(5);
                },
                &[2],
            ),
        ];
        let comment = event("", "comment.created", "ann", "");
        let places: Vec<usize> = choose(&routes, &comment).iter().map(|c| c.place).collect();
        assert_eq!(
            places,
            [0],
            "the digest routes' channels wait for the digest"
        );
        assert_eq!(
            digest(&routes, &comment),
            Some(DigestRoute {
                digesting: Digesting {
                    window: Duration::from_secs(600),
                    max_events: DEFAULT_DIGEST_MAX_EVENTS,
                },
                channels: vec![1],
                required: false,
            }),
            "the first digest route that matches"
        );
        assert_eq!(digest(&routes, &event("", "promo", "ann", "")), None);
        assert!(any_digest(&routes));
        assert!(!any_digest(&routes[..1]));
    }
}
