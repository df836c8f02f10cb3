//! [`Tls`]: how a client reaches a logger: plain `http://`, or `https://`
//! trusting the public web roots or a given CA, with a client certificate when
//! the server requires one (mutual TLS).

use std::{path::Path, time::Duration};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

/// TLS settings of a connection; the default trusts the public web roots for
/// `https://` URLs and presents no client certificate.
///
/// ```
/// use herald_client::Tls;
///
/// let tls = Tls::default()
///     .with_ca_pem(std::fs::read("ca.pem").unwrap_or_default())
///     .with_domain("herald.internal");
/// assert!(tls.endpoint("http://127.0.0.1:50051").is_err(), "TLS settings need https://");
/// ```
#[derive(Clone, Debug, Default)]
pub struct Tls {
    ca: Option<Certificate>,
    identity: Option<Identity>,
    domain: Option<String>,
}

impl Tls {
    /// Trusts only the CA certificates in `pem` (instead of the public web roots).
    pub fn with_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.ca = Some(Certificate::from_pem(pem));
        self
    }

    /// Presents this certificate chain and private key (PEM) to servers that
    /// require client certificates.
    pub fn with_identity_pem(mut self, cert: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Self {
        self.identity = Some(Identity::from_pem(cert, key));
        self
    }

    /// Checks the server's certificate for `domain` instead of the URL's host.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Settings read from PEM files; the error names the file and what is wrong.
    pub fn from_files(
        ca_cert: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, Error> {
        let mut tls = Self::default();
        if let Some(path) = ca_cert {
            tls = tls.with_ca_pem(read_pem(path, "CERTIFICATE", "--ca-cert")?);
        }
        match (client_cert, client_key) {
            (None, None) => {}
            (Some(cert), Some(key)) => {
                tls = tls.with_identity_pem(
                    read_pem(cert, "CERTIFICATE", "--client-cert")?,
                    read_pem(key, "PRIVATE KEY", "--client-key")?,
                );
            }
            _ => {
                return Err(Error::Setup(
                    "--client-cert and --client-key go together".into(),
                ));
            }
        }
        Ok(tls)
    }

    /// The endpoint for `url` (`http://` or `https://`; without a scheme,
    /// `http://`), with these settings and the client's timeouts and keepalive.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, Error> {
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let connect_error = |reason: String| Error::Connect {
            url: url.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        if endpoint.uri().scheme_str() != Some("https") {
            if self.ca.is_some() || self.identity.is_some() {
                return Err(connect_error(
                    "TLS settings (CA or client certificate) need an https:// URL".into(),
                ));
            }
            return Ok(endpoint);
        }
        let mut config = ClientTlsConfig::new().timeout(Duration::from_secs(10));
        config = match &self.ca {
            Some(ca) => config.ca_certificate(ca.clone()),
            None => config.with_webpki_roots(),
        };
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        endpoint
            .tls_config(config)
            .map_err(|e| connect_error(format!("TLS settings: {}", crate::client::error_chain(&e))))
    }
}

/// The file at `path`, checked to hold a PEM block whose label ends in
/// `label` (`CERTIFICATE`, `PRIVATE KEY`); errors name `flag`.
///
/// ```
/// let err = herald_client::tls::read_pem("missing.pem".as_ref(), "CERTIFICATE", "--ca-cert")
///     .expect_err("no such file");
/// assert!(err.to_string().starts_with("--ca-cert: cannot read missing.pem"));
/// ```
pub fn read_pem(path: &Path, label: &str, flag: &str) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Setup(format!("{flag}: cannot read {}: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|name| name.ends_with(label))
    });
    if !found {
        return Err(Error::Setup(format!(
            "{flag}: {} holds no PEM {label}",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_refuse_tls_settings() {
        let tls = Tls::default().with_ca_pem("-----BEGIN CERTIFICATE-----\n");
        let err = tls
            .endpoint("http://127.0.0.1:1")
            .expect_err("http with a CA");
        assert!(err.to_string().contains("https://"), "{err}");
        assert!(Tls::default().endpoint("127.0.0.1:1").is_ok());
    }

    #[test]
    fn files_are_checked_and_named() {
        let dir = std::env::temp_dir().join(format!("herald-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let err = Tls::from_files(Some(&not_pem), None, None).expect_err("not PEM");
        assert!(err.to_string().contains("--ca-cert") && err.to_string().contains("no PEM"));
        let missing = dir.join("missing.pem");
        let err = Tls::from_files(None, Some(&missing), Some(&not_pem)).expect_err("missing");
        assert!(
            err.to_string().contains("--client-cert: cannot read"),
            "{err}"
        );
        let err = Tls::from_files(None, Some(&not_pem), None).expect_err("half");
        assert!(err.to_string().contains("go together"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
