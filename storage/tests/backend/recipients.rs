//! Recipients: contact data and preferences written apart, read together,
//! erased together, in the user's partition.

use herald::domain::{Contact, OptOut, Preferences, RecipientUpdate};
use herald_storage::recipient;

use super::*;

fn update(user: &str, email: &str, preferences: Option<Preferences>) -> RecipientUpdate {
    RecipientUpdate {
        user_id: user.into(),
        contact: Contact {
            email: email.into(),
            name: format!("{user} Lee"),
            locale: "fr".into(),
            time_zone: "Europe/Paris".into(),
            attributes: serde_json::json!({"plan": "pro", "seats": 3})
                .as_object()
                .cloned(),
        },
        preferences,
    }
}

fn no_marketing_email() -> Preferences {
    Preferences {
        opt_outs: vec![OptOut {
            channel: "email".into(),
            category: "marketing".into(),
            ..OptOut::default()
        }],
    }
}

pub(super) async fn recipients_keep_contact_data_and_preferences_apart(b: Backend) {
    let r = &b.recipients;
    assert_eq!(recipient(r.as_ref(), "ann").await.expect("read"), None);
    // Preferences alone (a user's own call before any import).
    let first = r
        .set_preferences("ann", &no_marketing_email())
        .await
        .expect("set");
    assert_eq!(first.contact, Contact::default());
    assert_eq!(first.preferences, no_marketing_email());
    // An import replaces the contact data and leaves the preferences.
    let stored = r
        .put_recipients(&[
            update("ann", "ann@example.com", None),
            update("bob", "bob@example.com", Some(Preferences::default())),
        ])
        .await
        .expect("put");
    assert_eq!(stored[0].contact.email, "ann@example.com");
    assert_eq!(stored[0].preferences, no_marketing_email());
    assert!(stored[0].updated_at >= first.updated_at);
    assert_eq!(stored[1].preferences, Preferences::default());
    let read = r.recipients(&["bob", "nobody", "ann"]).await.expect("read");
    assert_eq!(read[0].as_ref(), Some(&stored[1]));
    assert_eq!(read[1], None);
    assert_eq!(read[2].as_ref(), Some(&stored[0]));
    assert_eq!(
        read[2].as_ref().map(|a| a.contact.attributes.clone()),
        Some(update("ann", "", None).contact.attributes)
    );
    // Preferences given with contact data replace the old ones.
    let cleared = r
        .put_recipients(&[update(
            "ann",
            "ann@example.org",
            Some(Preferences::default()),
        )])
        .await
        .expect("put");
    assert_eq!(cleared[0].preferences, Preferences::default());
    let set = r
        .set_preferences("ann", &no_marketing_email())
        .await
        .expect("set");
    assert_eq!(set.contact.email, "ann@example.org", "contact data stays");
    // Erasing takes both halves.
    assert!(r.delete_recipient("ann").await.expect("delete"));
    assert!(!r.delete_recipient("ann").await.expect("delete again"));
    assert_eq!(recipient(r.as_ref(), "ann").await.expect("read"), None);
    assert!(recipient(r.as_ref(), "bob").await.expect("read").is_some());
}

pub(super) async fn opt_outs_are_added_once_and_never_to_an_erased_record(b: Backend) {
    let r = &b.recipients;
    let email = OptOut {
        channel: "email".into(),
        category: "news".into(),
        ..OptOut::default()
    };
    assert_eq!(
        r.add_opt_out("ann", &email).await.expect("add"),
        None,
        "no record"
    );
    assert_eq!(recipient(r.as_ref(), "ann").await.expect("read"), None);
    r.put_recipients(&[update("ann", "ann@example.com", Some(no_marketing_email()))])
        .await
        .expect("put");
    // Concurrent adds: each lands once, none lost.
    let adds = (0..8).map(|i| {
        let opt_out = OptOut {
            category: format!("c{}", i % 4),
            ..OptOut::default()
        };
        async move { r.add_opt_out("ann", &opt_out).await }
    });
    for added in futures_util::future::join_all(adds).await {
        assert!(added.expect("add").is_some());
    }
    let added = r
        .add_opt_out("ann", &email)
        .await
        .expect("add")
        .expect("a record");
    assert_eq!(added.preferences.opt_outs.len(), 1 + 4 + 1, "{added:?}");
    assert_eq!(added.contact.email, "ann@example.com", "contact data stays");
    // Full preferences refuse another, and lose none of the user's.
    let full = Preferences {
        opt_outs: (0..herald::domain::MAX_OPT_OUTS)
            .map(|i| OptOut {
                category: format!("full{i}"),
                ..OptOut::default()
            })
            .collect(),
    };
    r.set_preferences("ann", &full).await.expect("set");
    let refused = r.add_opt_out("ann", &email).await.expect_err("full");
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
    let kept = recipient(r.as_ref(), "ann")
        .await
        .expect("read")
        .expect("a record");
    assert_eq!(kept.preferences, full);
}
