//! TLS on the controller's listeners (rustls with ring): the gRPC listener (public API and
//! worker protocol) through tonic, with client certificates optional there and required of
//! the worker protocol by [`crate::auth`] when `--tls-client-ca` is given; the REST listener
//! through tokio-rustls, each handshake in a task of its own so a slow client holds up no one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use axum::serve::IncomingStream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate files of a TLS listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM: the listener's certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: its private key.
    pub key: PathBuf,
    /// PEM: the CA that signs workers' client certificates (mTLS), if workers must present one.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {what} {}", path.display()))
}

impl ServerTls {
    /// tonic's configuration of the gRPC listener: client certificates asked for, verified
    /// against `client_ca` when one is sent, and optional (API clients come with tokens).
    pub fn grpc(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        // Parsed here as well, so that a bad file is named (tonic's error does not).
        self.certificates()?;
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "--tls-cert")?,
            read(&self.key, "--tls-key")?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = &self.client_ca {
            let pem = read(ca, "--tls-client-ca")?;
            let found = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("--tls-client-ca {}: {e}", ca.display()))?;
            if found.is_empty() {
                anyhow::bail!("--tls-client-ca {}: no certificate in it", ca.display());
            }
            config = config
                .client_ca_root(tonic::transport::Certificate::from_pem(pem))
                .client_auth_optional(true);
        }
        Ok(config)
    }

    fn certificates(
        &self,
    ) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let cert_pem = read(&self.cert, "--tls-cert")?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("--tls-cert {}: {e}", self.cert.display()))?;
        if certs.is_empty() {
            anyhow::bail!("--tls-cert {}: no certificate in it", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "--tls-key")?)
            .map_err(|e| anyhow!("--tls-key {}: no private key read: {e}", self.key.display()))?;
        Ok((certs, key))
    }

    /// The REST listener's acceptor: server authentication only (REST clients are tools with
    /// tokens), HTTP/1.1.
    pub fn rest_acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let (certs, key) = self.certificates()?;
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .with_context(|| {
                    format!(
                        "--tls-cert {} and --tls-key {}",
                        self.cert.display(),
                        self.key.display()
                    )
                })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A REST listener speaking TLS: connections whose handshake completed, for `axum::serve`.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` in the background until the returned listener is dropped.
    pub fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = send.closed() => return,
                };
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "REST listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let send = send.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = send.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(%peer, error = %e, "REST listener: TLS handshake failed")
                        }
                        Err(_) => tracing::info!(%peer, "REST listener: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task only ends once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The address a REST call came from, for [`crate::auth`]'s log lines, on either listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}
