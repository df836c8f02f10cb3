//! URLs as they may be shown: in logs, in answers to readers and in the
//! console, a URL's user information and query values can be credentials
//! (`redis://user:password@host`, `https://hooks.example/in?token=...`).

/// `url` with its user information and the values of its query hidden
/// (`***`), read the way RFC 3986 splits a URL: the authority runs from
/// `://` to the first `/`, `?` or `#`, and its user information ends at
/// its last `@`. A fragment is dropped. Text that is not a URL with a
/// scheme is shown as `***`, since nothing in it can be told apart.
pub fn url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, after) = rest.split_at(end);
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_owned(),
    };
    let (path, query) = match after.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (after, None),
    };
    let mut shown = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=***"),
                None => "***".to_owned(),
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn credentials_in_urls_are_hidden() {
        for (given, shown) in [
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("redis://u:p@host:6379", "redis://***@host:6379"),
            ("redis://u:p@ss@host:6379/2", "redis://***@host:6379/2"),
            (
                "https://hooks.example/in?token=s3cret&x",
                "https://hooks.example/in?token=***&***",
            ),
            ("https://a:b@h/p/@me?k=v#frag", "https://***@h/p/@me?k=***"),
            ("http://h:8080", "http://h:8080"),
            ("not a url with a secret", "***"),
        ] {
            assert_eq!(url(given), shown, "{given}");
        }
    }
}
