//! TLS end to end: a logger serving https with a certificate made here
//! (rcgen), clients that trust its CA or not, mutual TLS with client
//! certificates, and a processor reaching a mutual-TLS logger over Redis.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use common::{Lines, Logger};
use herald::EventStatus;
use herald_client::{Client, Error, Tls};
use herald_logger::Config;
use herald_runtime::flags::TlsArgs;
use herald_storage::testing::{RedisServer, skip_redis_tests};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common;

/// A CA and the PEM files it signed, in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA ("ca.pem"), a server certificate for localhost and 127.0.0.1
    /// ("server.pem", "server.key"), a client certificate ("client.pem",
    /// "client.key"), and a client certificate from another CA ("rogue.pem",
    /// "rogue.key").
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = ca("Herald test CA");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write PEM");
        };
        write("ca.pem", ca.pem());
        let (cert, key) = leaf(&ca, &["localhost", "127.0.0.1"]);
        write("server.pem", cert);
        write("server.key", key);
        let (cert, key) = leaf(&ca, &["processor.herald.test"]);
        write("client.pem", cert);
        write("client.key", key);
        let (cert, key) = leaf(&self::ca("Rogue CA"), &["rogue.herald.test"]);
        write("rogue.pem", cert);
        write("rogue.key", key);
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// Trusts the test CA, with the client certificate `name` if given.
    fn tls(&self, client: Option<&str>) -> Tls {
        TlsArgs {
            ca_cert: Some(self.path("ca.pem")),
            client_cert: client.map(|c| self.path(&format!("{c}.pem"))),
            client_key: client.map(|c| self.path(&format!("{c}.key"))),
        }
        .tls()
        .expect("TLS settings")
    }

    /// The logger flags that serve TLS (and require client certificates).
    fn server_args(&self, mutual: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".into(),
            self.arg("server.pem"),
            "--tls-key".into(),
            self.arg("server.key"),
        ];
        if mutual {
            args.extend(["--tls-client-ca".into(), self.arg("ca.pem")]);
        }
        args
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// A certificate for `names` signed by `ca`, and its key, as PEM.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("leaf params");
    let cert = params.signed_by(&key, ca).expect("leaf");
    (cert.pem(), key.serialize_pem())
}

async fn start(args: &[String], sink: Arc<dyn herald_processor::Channel>) -> Logger {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Logger::start(&args, sink).await
}

/// Connects and makes one call, all within 10 s (a refused handshake must
/// fail, not hang).
async fn try_call(url: &str, tls: &Tls) -> Result<Client, Error> {
    let attempt = async {
        let client = Client::connect_with(url, tls).await?;
        client.health("").await?;
        Ok(client)
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .expect("a TLS attempt ends within 10 s")
}

/// Waits up to 10 s for `event` to reach PROCESSED.
async fn assert_processed(client: &Client, event_id: uuid::Uuid) {
    for _ in 0..200 {
        let event = client.get_event(event_id).await.expect("get");
        if event.status == EventStatus::Processed {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("event {event_id} was not processed within 10 s");
}

#[tokio::test]
async fn https_with_a_trusted_ca_works_and_nothing_else_does() {
    let pki = Pki::new();
    let lines = Lines::default();
    let logger = start(&pki.server_args(false), lines.sink()).await;
    let https = format!("https://localhost:{}", logger.addr.port());

    let client = try_call(&https, &pki.tls(None))
        .await
        .expect("https with the CA");
    let event = client
        .create_event("tia", "Sent over TLS")
        .await
        .expect("create");
    // The embedded worker reaches the server although it serves only TLS.
    assert_processed(&client, event.id).await;
    assert!(
        lines.lines().contains(&format!(
            "Event {} has been sent to tia: Sent over TLS",
            event.id
        )),
        "{:?}",
        lines.lines()
    );
    // The certificate names 127.0.0.1 too.
    try_call(
        &format!("https://127.0.0.1:{}", logger.addr.port()),
        &pki.tls(None),
    )
    .await
    .expect("https by IP address");

    // Without the CA (public web roots only), the certificate is not trusted.
    let err = try_call(&https, &Tls::default())
        .await
        .expect_err("untrusted");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        err.to_string().contains(
            "the server's certificate is not trusted: give the CA that signed it with --ca-cert, or Tls::with_ca_pem in Rust"
        ),
        "{err}"
    );
    // A name the certificate does not carry is refused.
    let err = try_call(&https, &pki.tls(None).with_domain("other.example"))
        .await
        .expect_err("wrong name");
    assert!(
        err.to_string().contains("certificate not valid for name"),
        "{err}"
    );
    // Plain HTTP/2 to a TLS port gets nowhere. (Whether the client reads
    // the server's TLS answer, and hints at https://, or only sees it close
    // the connection depends on timing: not asserted.)
    let plain = try_call(&logger.url(), &Tls::default()).await;
    assert!(plain.is_err(), "plaintext to a TLS port must fail");

    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn mutual_tls_admits_only_certificates_of_the_client_ca() {
    let pki = Pki::new();
    let lines = Lines::default();
    let args = pki.server_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logger = Logger::start_with_console(&args, lines.sink()).await;
    // The console could not ask for a client certificate: it is not served.
    let console = logger.console_addr.expect("a console address");
    common::eventually(
        Duration::from_secs(5),
        "the console's port closed",
        || async {
            tokio::net::TcpStream::connect(console)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    let https = format!("https://localhost:{}", logger.addr.port());

    let err = try_call(&https, &pki.tls(None))
        .await
        .expect_err("no client certificate");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    let err = try_call(&https, &pki.tls(Some("rogue")))
        .await
        .expect_err("a certificate of another CA");
    assert!(err.to_string().contains("UnknownCA"), "{err}");

    let client = try_call(&https, &pki.tls(Some("client")))
        .await
        .expect("a certificate of the client CA");
    let event = client
        .create_event("uma", "Mutually authenticated")
        .await
        .expect("create");
    // The embedded worker, which has no client certificate, still settles it.
    assert_processed(&client, event.id).await;

    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_processor_settles_events_through_a_mutual_tls_logger() {
    if skip_redis_tests() {
        return;
    }
    let redis = RedisServer::start();
    let pki = Pki::new();
    let mut args = pki.server_args(true);
    args.extend(["--redis-url".into(), redis.url()]);
    let logger = start(&args, Lines::default().sink()).await;
    let https = format!("https://localhost:{}", logger.addr.port());

    let lines = Lines::default();
    let shutdown = CancellationToken::new();
    let config = herald_processor::Config {
        config: None,
        redis: herald_runtime::flags::RedisArgs::node(&redis.url()),
        logger_url: https.clone(),
        api_key: None,
        tls: TlsArgs {
            ca_cert: Some(pki.path("ca.pem")),
            client_cert: Some(pki.path("client.pem")),
            client_key: Some(pki.path("client.key")),
        },
        worker: herald_processor::WorkerArgs::parse_from_args(&["--block", "200ms"]),
        log: Default::default(),
        runtime: Default::default(),
        metrics_listen: herald_runtime::http::Listen(None),
    };
    let processor = tokio::spawn(herald_processor::run(
        config,
        lines.sink(),
        shutdown.clone(),
    ));

    let client = try_call(&https, &pki.tls(Some("client")))
        .await
        .expect("connect");
    let event = client
        .create_event("vic", "Through Redis and TLS")
        .await
        .expect("create");
    assert_processed(&client, event.id).await;
    assert_eq!(
        lines.lines(),
        [format!(
            "Event {} has been sent to vic: Through Redis and TLS",
            event.id
        )]
    );

    shutdown.cancel();
    processor
        .await
        .expect("join")
        .expect("processor ran without error");
    logger.stop_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn bad_tls_settings_stop_start_up_naming_the_flag() {
    let pki = Pki::new();
    let listener = || async { TcpListener::bind("127.0.0.1:0").await.expect("bind") };
    // A key that does not belong in the key slot.
    let args = [
        "--tls-cert",
        &pki.arg("server.pem"),
        "--tls-key",
        &pki.arg("ca.pem"),
        "--metrics-listen",
        "off",
    ];
    let err = herald_logger::run(
        listener().await,
        Config::from_args(&args),
        CancellationToken::new(),
    )
    .await
    .expect_err("a certificate is no key");
    assert!(format!("{err:#}").contains("--tls-key"), "{err:#}");
    let missing = pki.arg("missing.pem");
    let args = [
        "--tls-cert",
        &missing,
        "--tls-key",
        &pki.arg("server.key"),
        "--metrics-listen",
        "off",
    ];
    let err = herald_logger::run(
        listener().await,
        Config::from_args(&args),
        CancellationToken::new(),
    )
    .await
    .expect_err("a missing file");
    assert!(
        format!("{err:#}").contains("--tls-cert: cannot read"),
        "{err:#}"
    );
    // One of the pair alone is a usage error.
    let half = Config::try_parse_from(["herald-logger", "--tls-cert", &pki.arg("server.pem")]);
    assert!(half.is_err());
    // Client side: a CA file that is not PEM is named.
    let err = TlsArgs {
        ca_cert: Some(pki.path("server.key")),
        ..TlsArgs::default()
    }
    .tls()
    .expect_err("a key is no certificate");
    assert!(err.to_string().contains("--ca-cert"), "{err}");
}

#[tokio::test]
async fn the_end_users_listener_serves_tls_without_client_certificates() {
    let pki = Pki::new();
    // Mutual TLS on the gRPC port; browsers have no certificates, so the end
    // users' listener asks for none.
    let args = pki.server_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let logger = Logger::start_with_web(&args, Lines::default().sink()).await;
    let web = logger.web_addr.expect("web listener");

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(pki.path("ca.pem")).expect("CA");
    for cert in pem_certificates(&ca) {
        roots.add(cert).expect("CA certificate");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(web).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").expect("name"),
            tcp,
        )
        .await
        .expect("a TLS handshake without a client certificate");
    let (mut h2, connection) = h2::client::handshake(tls).await.expect("HTTP/2");
    tokio::spawn(connection);
    let request = http::Request::get(format!(
        "https://localhost:{}/v1/notifications?user_id=ann",
        web.port()
    ))
    .body(())
    .expect("request");
    let (response, _) = h2.send_request(request, true).expect("sent");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.data())
        .await
        .expect("data within 10 s")
        .expect("data")
        .expect("a chunk");
    assert!(first.starts_with(b"retry: "), "{first:?}");
    logger.stop_within(Duration::from_secs(10)).await;
}

/// The certificates of a PEM file.
fn pem_certificates(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}
