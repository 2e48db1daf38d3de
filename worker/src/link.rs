//! The client side of a connection to the controller, for workers and the CLI: TLS (the
//! controller verified against `--tls-ca`, a client certificate for mTLS) and the bearer token
//! every call carries.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel to the controller whose calls carry the token.
pub type Link = InterceptedService<Channel, Bearer>;

/// How to reach the controller: TLS files and the token.
#[derive(Clone, Default)]
pub struct LinkSecurity {
    /// PEM: the CA that signed the controller's certificate (an `https://` URL needs it).
    pub ca: Option<PathBuf>,
    /// PEM: this client's certificate and key, for a controller that asks workers for one.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The bearer token; never printed.
    pub token: Option<String>,
}

impl std::fmt::Debug for LinkSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSecurity")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("token", &self.token.as_ref().map(|_| "[hidden]"))
            .finish()
    }
}

impl LinkSecurity {
    /// The token from `--token-file` (its first line) or, without one, `SLUICE_TOKEN`.
    pub fn read_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
        let token = match file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("read --token-file {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("SLUICE_TOKEN").ok(),
        };
        match token {
            Some(t) if t.is_empty() => bail!("the token (--token-file or SLUICE_TOKEN) is empty"),
            other => Ok(other),
        }
    }

    /// An endpoint for `url` with this TLS configuration.
    pub fn endpoint(&self, url: &str) -> anyhow::Result<Endpoint> {
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .with_context(|| format!("controller URL {url}: not a URL"))?
            .tcp_nodelay(true);
        let https = url.starts_with("https://");
        let read = |path: &PathBuf, flag: &str| {
            std::fs::read(path).with_context(|| format!("read {flag} {}", path.display()))
        };
        match (&self.ca, https) {
            (None, false) => {
                if self.cert.is_some() {
                    bail!("--tls-cert needs an https:// controller URL (and --tls-ca)");
                }
            }
            (None, true) => bail!("an https:// controller URL needs --tls-ca (the CA that signed the controller's certificate)"),
            (Some(_), false) => bail!("--tls-ca is given but the controller URL {url} is not https://"),
            (Some(ca), true) => {
                let mut tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(ca, "--tls-ca")?));
                match (&self.cert, &self.key) {
                    (Some(cert), Some(key)) => {
                        tls = tls.identity(Identity::from_pem(
                            read(cert, "--tls-cert")?,
                            read(key, "--tls-key")?,
                        ));
                    }
                    (None, None) => {}
                    _ => bail!("--tls-cert and --tls-key go together"),
                }
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| anyhow!("TLS to {url}: {e}"))?;
            }
        }
        Ok(endpoint)
    }

    fn bearer(&self) -> anyhow::Result<Bearer> {
        match &self.token {
            None => Ok(Bearer(None)),
            // The error leaves the token out.
            Some(token) => MetadataValue::try_from(format!("Bearer {token}"))
                .map(|v| Bearer(Some(v)))
                .map_err(|_| anyhow!("the token holds characters a header cannot carry")),
        }
    }

    /// A channel that connects on first use (and again after a failure).
    pub fn lazy(&self, url: &str, connect_timeout: Duration) -> anyhow::Result<Link> {
        let channel = self
            .endpoint(url)?
            .connect_timeout(connect_timeout)
            .connect_lazy();
        Ok(InterceptedService::new(channel, self.bearer()?))
    }

    /// A connected channel; a failure to connect is a `tonic::Status` UNAVAILABLE naming `url`.
    pub async fn connect(&self, url: &str, connect_timeout: Duration) -> anyhow::Result<Link> {
        let endpoint = self.endpoint(url)?.connect_timeout(connect_timeout);
        let bearer = self.bearer()?;
        let channel = endpoint.connect().await.map_err(|e| {
            anyhow::Error::new(tonic::Status::unavailable(format!(
                "cannot reach the controller at {url}: {}",
                chain(&e)
            )))
        })?;
        Ok(InterceptedService::new(channel, bearer))
    }
}

/// An error with its sources: tonic's transport error says little, its sources say why
/// (connection refused, the certificate refused in the handshake).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

/// What a failed call's status says, with the transport error under it if any.
pub fn reason(status: &tonic::Status) -> String {
    match std::error::Error::source(status) {
        Some(source) => format!("{}: {}", status.message(), chain(source)),
        None => status.message().to_string(),
    }
}

/// Adds `authorization: Bearer TOKEN` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        sluice_telemetry::inject_metadata(request.metadata_mut());
        Ok(request)
    }
}
