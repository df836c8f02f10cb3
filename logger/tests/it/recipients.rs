//! Recipients end to end, over real sockets: put, read, import and erase
//! with API keys by scope (bad fields named, nothing changed), and a
//! user's own preferences with their token over gRPC and JSON. What the
//! processors do with preferences is in `channels`.

use herald_client::{NewRecipient, OptOut, Preferences};
use serde_json::json;
use tonic::Code;

use crate::web::{json_call, setup, token};

fn fields(err: &herald_client::Error) -> Vec<String> {
    err.violations().iter().map(|v| v.field.clone()).collect()
}

fn opt_out(channel: &str, category: &str) -> OptOut {
    OptOut {
        channel: channel.into(),
        category: category.into(),
        ..OptOut::default()
    }
}

#[tokio::test]
async fn recipients_are_kept_by_scope_and_users_set_only_their_own_preferences() {
    let (_keys, logger, web, admin) = setup(&[]).await;
    let attributes = json!({"plan": "pro"}).as_object().cloned().expect("object");
    let ann = admin
        .put_recipient(
            NewRecipient::new("ann")
                .email("ann@example.com")
                .name("Ann Lee")
                .locale("pt-BR")
                .time_zone("europe/paris")
                .attributes(&attributes),
        )
        .await
        .expect("put");
    assert_eq!(
        ann.contact.time_zone, "Europe/Paris",
        "as the database spells it"
    );
    assert_eq!(ann.contact.attributes, Some(attributes));

    // A bad record names each bad field and changes nothing.
    let bad = admin
        .put_recipient(NewRecipient::new("ann").email("ann@").locale("pt_BR"))
        .await
        .expect_err("bad fields");
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(fields(&bad), ["recipient.email", "recipient.locale"]);
    let kept = admin.recipient("ann").await.expect("get").expect("stored");
    assert_eq!(kept.contact.email, "ann@example.com");

    // An import: each item on its own.
    let results = admin
        .put_recipients(vec![
            NewRecipient::new("bob").email("bob@example.com"),
            NewRecipient::new("cy").time_zone("Mars/Olympus"),
        ])
        .await
        .expect("batch");
    assert!(results[0].is_ok());
    let refused = results[1].as_ref().expect_err("bad zone");
    assert_eq!(fields(refused), ["recipients[1].time_zone"]);
    assert_eq!(admin.recipient("cy").await.expect("get"), None);

    // Scopes: a reader of events is no reader of recipients.
    let reader = logger.client_with_key("reader-key").await;
    let denied = reader.recipient("ann").await.expect_err("no scope");
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.to_string().contains("recipients:read"), "{denied}");

    // A user's token: their own preferences only, and no contact data.
    let as_ann = logger.client_with_key(&token("ann")).await;
    let set = as_ann
        .set_preferences("ann", vec![opt_out("email", "marketing")])
        .await
        .expect("own preferences");
    assert_eq!(set.opt_outs, [opt_out("email", "marketing")]);
    for denied in [
        as_ann
            .set_preferences("bob", vec![])
            .await
            .expect_err("bob's"),
        as_ann.preferences("bob").await.expect_err("bob's"),
        as_ann
            .put_recipient(NewRecipient::new("ann"))
            .await
            .map(|_| ())
            .expect_err("contact data"),
    ] {
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    }
    let empty = as_ann
        .set_preferences("ann", vec![OptOut::default()])
        .await
        .expect_err("an opt-out of nothing");
    assert_eq!(fields(&empty), ["preferences.opt_outs[0]"]);

    // The same over the end users' JSON API.
    let bearer = format!("Bearer {}", token("ann"));
    let (status, got) = json_call(web, "GET", "/v1/preferences", &bearer, None).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["opt_outs"][0]["category"], "marketing");
    let (status, put) = json_call(
        web,
        "PUT",
        "/v1/preferences",
        &bearer,
        Some(json!({"opt_outs": [{"type": "digest"}]})),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(
        put["opt_outs"],
        json!([{"channel": "", "category": "", "type": "digest"}])
    );
    let (status, refused) = json_call(
        web,
        "PUT",
        "/v1/preferences",
        &bearer,
        Some(json!({"user_id": "bob", "opt_outs": []})),
    )
    .await;
    assert_eq!(status, 403, "{refused}");

    // Contact data stayed through the preference changes; erasing takes all.
    let now = admin.recipient("ann").await.expect("get").expect("stored");
    assert_eq!(now.contact.email, "ann@example.com");
    assert_eq!(now.preferences.opt_outs.len(), 1);
    assert!(admin.delete_recipient("ann").await.expect("delete"));
    assert!(!admin.delete_recipient("ann").await.expect("again"));
    assert_eq!(admin.recipient("ann").await.expect("get"), None);
    assert_eq!(
        admin.preferences("ann").await.expect("none"),
        Preferences::default()
    );
}
