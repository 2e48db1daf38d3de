//! Who may call what, for both public listeners (gRPC and REST) and the worker protocol.
//!
//! Callers present a bearer token (`authorization: Bearer TOKEN`) from the controller's token
//! file; each token has a role. `admin` may call everything, `viewer` only what reads, and
//! `worker` only the worker protocol. A worker may instead present a client certificate signed
//! by `--tls-client-ca` (the TLS layer has verified it before a call reaches this module).
//! Without a token file calls need no token (a loopback listener; `lib.rs` refuses to start a
//! non-loopback one so unless `--insecure`). Every denied call is logged: who, what, from where.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, bail, Context as _};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads and changes everything.
    Admin,
    /// Reads: lists, configs (secrets hidden as everywhere), statuses, offsets, plugins.
    Viewer,
    /// Speaks the worker protocol only.
    Worker,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks and reflection: anyone.
    Open,
    Read,
    Change,
    /// The worker protocol.
    Worker,
}

struct Holder {
    /// SHA-256 of the token: the file's tokens are not kept in memory as they are.
    digest: [u8; 32],
    name: String,
    role: Role,
}

/// The token file: one `NAME ROLE TOKEN` per line (`#` starts a comment), roles `admin`,
/// `viewer`, `worker`.
pub struct Tokens {
    holders: Vec<Holder>,
}

impl Tokens {
    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read token file {}", path.display()))?;
        Tokens::parse(&text).with_context(|| format!("token file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let mut holders: Vec<Holder> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            // The token itself is never part of an error: the line number says where.
            let [name, role, token] = fields[..] else {
                bail!(
                    "line {}: expected NAME ROLE TOKEN, found {} fields",
                    n + 1,
                    fields.len()
                );
            };
            let role = Role::parse(role).ok_or_else(|| {
                anyhow!(
                    "line {}: role {role:?} is none of admin, viewer, worker",
                    n + 1
                )
            })?;
            if token.len() < 16 {
                bail!(
                    "line {}: the token of {name:?} is shorter than 16 characters",
                    n + 1
                );
            }
            let digest = digest(token);
            if holders.iter().any(|h| h.digest == digest) {
                bail!("line {}: the token of {name:?} is already given", n + 1);
            }
            holders.push(Holder {
                digest,
                name: name.to_string(),
                role,
            });
        }
        if holders.is_empty() {
            bail!("no tokens");
        }
        Ok(Tokens { holders })
    }

    /// The holder of `token`: every digest is compared whole, so timing says nothing of which
    /// bytes matched.
    fn holder(&self, token: &str) -> Option<&Holder> {
        let digest = digest(token);
        let mut found = None;
        for holder in &self.holders {
            let difference = holder
                .digest
                .iter()
                .zip(&digest)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(holder);
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A refusal, as gRPC and REST answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, or ones nobody holds: UNAUTHENTICATED / 401.
    Unauthenticated(String),
    /// Known caller, not allowed this: PERMISSION_DENIED / 403.
    PermissionDenied(String),
}

impl Denied {
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(m) | Denied::PermissionDenied(m) => m,
        }
    }

    pub fn status(&self) -> tonic::Status {
        match self {
            Denied::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Denied::PermissionDenied(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// What a call that passed the guard may do beyond what its method needs, for the one method
/// whose need depends on its body (a dry-run PutConnectorConfig reads; a real one changes).
/// Put in the call's extensions by [`GrpcGuard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// Whether the caller may change the cluster (no tokens, or an admin token).
    pub may_change: bool,
    /// Who, for a refusal's log line.
    pub who: String,
}

impl Granted {
    /// Refuses a change to a caller that may only read (logged and counted like the guard's
    /// refusals). A call without a grant came in process, already checked by the REST layer.
    pub fn require_change(grant: Option<&Granted>, what: &str) -> Result<(), tonic::Status> {
        match grant {
            Some(g) if !g.may_change => {
                tracing::warn!(who = %g.who, what, "call denied: role may not");
                count(&Denied::PermissionDenied(String::new()));
                Err(tonic::Status::permission_denied(format!(
                    "{what}: {} may not change the cluster (a dry run is allowed)",
                    g.who
                )))
            }
            _ => Ok(()),
        }
    }
}

fn count(denied: &Denied) {
    let reason = match denied {
        Denied::Unauthenticated(_) => "unauthenticated",
        Denied::PermissionDenied(_) => "permission_denied",
    };
    crate::metrics::DENIED
        .get_or_create(&crate::metrics::Refusal {
            reason: reason.into(),
        })
        .inc();
}

/// What one call presents.
pub struct Caller<'a> {
    /// The `authorization` header, if any.
    pub authorization: Option<&'a http::HeaderValue>,
    /// Whether it came with a client certificate the TLS layer verified against
    /// `--tls-client-ca`.
    pub verified_certificate: bool,
    pub peer: Option<SocketAddr>,
}

impl<'a> Caller<'a> {
    /// What `request` presents: its headers and what its connection carries.
    pub fn of<B>(request: &'a http::Request<B>) -> Caller<'a> {
        let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer = tls
            .and_then(|t| t.get_ref().remote_addr())
            .or_else(|| {
                request
                    .extensions()
                    .get::<TcpConnectInfo>()
                    .and_then(|t| t.remote_addr())
            })
            .or_else(|| {
                request
                    .extensions()
                    .get::<axum::extract::ConnectInfo<crate::tls::Peer>>()
                    .map(|c| c.0 .0)
            });
        let verified_certificate = tls
            .and_then(|t| t.peer_certs())
            .is_some_and(|c| !c.is_empty());
        Caller {
            authorization: request.headers().get(http::header::AUTHORIZATION),
            verified_certificate,
            peer,
        }
    }
}

/// The controller's access rules.
pub struct Guard {
    /// `None`: calls need no token.
    tokens: Option<Tokens>,
    /// Whether the worker protocol needs a client certificate (`--tls-client-ca`); a token is
    /// then not enough.
    worker_certificates: bool,
}

impl Guard {
    pub fn new(tokens: Option<Tokens>, worker_certificates: bool) -> Guard {
        Guard {
            tokens,
            worker_certificates,
        }
    }

    /// Allows or refuses `what` (a gRPC path or `METHOD /path`) needing `access`; a refusal is
    /// logged with who asked and from where, and counted.
    pub fn check(
        &self,
        access: Access,
        caller: &Caller<'_>,
        what: &str,
    ) -> Result<Granted, Denied> {
        let decided = self.decide(access, caller, what);
        if let Err(denied) = &decided {
            count(denied);
        }
        decided
    }

    fn decide(&self, access: Access, caller: &Caller<'_>, what: &str) -> Result<Granted, Denied> {
        let open = Granted {
            may_change: self.tokens.is_none(),
            who: "anonymous".into(),
        };
        let peer = caller
            .peer
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into());
        if access == Access::Open {
            return Ok(open);
        }
        if access == Access::Worker && self.worker_certificates {
            if caller.verified_certificate {
                return Ok(Granted {
                    may_change: false,
                    who: "worker certificate".into(),
                });
            }
            tracing::warn!(who = "anonymous", what, %peer, "call denied: no client certificate");
            return Err(Denied::Unauthenticated(format!(
                "{what}: the worker protocol needs a client certificate signed by the \
                 controller's --tls-client-ca"
            )));
        }
        let Some(tokens) = &self.tokens else {
            return Ok(open);
        };
        let token = caller
            .authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            let denied = Denied::Unauthenticated(format!(
                "{what} needs a bearer token (authorization: Bearer TOKEN)"
            ));
            tracing::warn!(who = "anonymous", what, %peer, "call denied: no bearer token");
            return Err(denied);
        };
        let Some(holder) = tokens.holder(token) else {
            tracing::warn!(who = "unknown token", what, %peer, "call denied: token not recognised");
            return Err(Denied::Unauthenticated(format!(
                "{what}: the bearer token is not recognised"
            )));
        };
        let allowed = matches!(
            (holder.role, access),
            (_, Access::Open)
                | (Role::Admin, _)
                | (Role::Viewer, Access::Read)
                | (Role::Worker, Access::Worker)
        );
        if allowed {
            return Ok(Granted {
                may_change: holder.role == Role::Admin,
                who: holder.name.clone(),
            });
        }
        let role = format!("{:?}", holder.role).to_lowercase();
        tracing::warn!(who = %holder.name, role, what, %peer, "call denied: role may not");
        Err(Denied::PermissionDenied(format!(
            "{what}: {} ({role}) may not call this",
            holder.name
        )))
    }
}

/// What a gRPC method needs, from its path (`/package.Service/Method`).
pub fn grpc_access(path: &str) -> Access {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    if service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.") {
        return Access::Open;
    }
    if service.starts_with("sluice.cluster.") {
        return Access::Worker;
    }
    let reads = ["List", "Get"];
    // PutConnectorConfig changes unless it is a dry run, which the service checks with the
    // call's `Granted`.
    if reads.iter().any(|r| method.starts_with(r))
        || ["ValidateConfig", "DryRun", "PutConnectorConfig"].contains(&method)
    {
        Access::Read
    } else {
        Access::Change
    }
}

/// The tower layer that guards the gRPC server: a refused call is answered with its status
/// before it reaches a service.
#[derive(Clone)]
pub struct GrpcGuard(pub Arc<Guard>);

impl<S> tower::Layer<S> for GrpcGuard {
    type Service = Guarded<S>;
    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            guard: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    guard: Arc<Guard>,
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for Guarded<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        match self
            .guard
            .check(grpc_access(path), &Caller::of(&request), path)
        {
            Ok(granted) => {
                request.extensions_mut().insert(granted);
                Box::pin(self.inner.call(request))
            }
            Err(denied) => {
                let response = denied.status().into_http();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(header: Option<&'static str>) -> (Option<http::HeaderValue>, bool) {
        (header.map(http::HeaderValue::from_static), false)
    }

    fn check(
        guard: &Guard,
        access: Access,
        header: Option<&'static str>,
    ) -> Result<Granted, Denied> {
        let (authorization, verified_certificate) = caller(header);
        guard.check(
            access,
            &Caller {
                authorization: authorization.as_ref(),
                verified_certificate,
                peer: None,
            },
            "/x/Y",
        )
    }

    #[test]
    fn roles_allow_what_they_say() {
        let tokens = Tokens::parse(
            "# name role token\nops admin aaaaaaaaaaaaaaaa\n\nread viewer bbbbbbbbbbbbbbbb\nw1 worker cccccccccccccccc\n",
        )
        .unwrap();
        let guard = Guard::new(Some(tokens), false);
        let admin = Some("Bearer aaaaaaaaaaaaaaaa");
        let viewer = Some("Bearer bbbbbbbbbbbbbbbb");
        let worker = Some("Bearer cccccccccccccccc");
        for access in [Access::Read, Access::Change, Access::Worker] {
            assert!(check(&guard, access, admin).is_ok_and(|g| g.may_change));
        }
        assert!(check(&guard, Access::Read, viewer).is_ok_and(|g| !g.may_change && g.who == "read"));
        assert!(matches!(
            check(&guard, Access::Change, viewer),
            Err(Denied::PermissionDenied(_))
        ));
        assert!(matches!(
            check(&guard, Access::Read, worker),
            Err(Denied::PermissionDenied(_))
        ));
        assert!(check(&guard, Access::Worker, worker).is_ok());
        assert!(matches!(
            check(&guard, Access::Read, None),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(matches!(
            check(&guard, Access::Read, Some("Bearer aaaaaaaaaaaaaaab")),
            Err(Denied::Unauthenticated(_))
        ));
        assert!(check(&guard, Access::Open, None).is_ok_and(|g| !g.may_change));
        assert!(check(&Guard::new(None, false), Access::Change, None).is_ok_and(|g| g.may_change));
        // With worker certificates, a worker token is not enough for the worker protocol.
        let tokens = Tokens::parse("w1 worker cccccccccccccccc\n").unwrap();
        let guard = Guard::new(Some(tokens), true);
        assert!(matches!(
            check(&guard, Access::Worker, worker),
            Err(Denied::Unauthenticated(_))
        ));
        let certified = Caller {
            authorization: None,
            verified_certificate: true,
            peer: None,
        };
        assert!(guard.check(Access::Worker, &certified, "/w").is_ok());
        assert!(guard.check(Access::Read, &certified, "/r").is_err());
    }

    #[test]
    fn a_bad_token_file_is_refused_without_showing_tokens() {
        for (text, expect) in [
            ("ops admin\n", "line 1: expected NAME ROLE TOKEN"),
            ("ops root aaaaaaaaaaaaaaaa\n", "role \"root\""),
            ("ops admin short\n", "shorter than 16"),
            (
                "a admin aaaaaaaaaaaaaaaa\nb viewer aaaaaaaaaaaaaaaa\n",
                "line 2: the token of \"b\" is already given",
            ),
            ("# nothing\n", "no tokens"),
        ] {
            let error = Tokens::parse(text).err().expect("refused").to_string();
            assert!(error.contains(expect), "{error}");
            assert!(!error.contains("aaaa"), "{error}");
        }
    }

    #[test]
    fn methods_need_what_they_do() {
        assert_eq!(
            grpc_access("/sluice.api.v1.ConnectorService/ListConnectors"),
            Access::Read
        );
        assert_eq!(
            grpc_access("/sluice.api.v1.ConnectorService/GetOffsets"),
            Access::Read
        );
        assert_eq!(
            grpc_access("/sluice.api.v1.ConnectorService/DeleteConnector"),
            Access::Change
        );
        // Read at the door; the service refuses a real change to a viewer.
        assert_eq!(
            grpc_access("/sluice.api.v1.ConnectorService/PutConnectorConfig"),
            Access::Read
        );
        assert_eq!(
            grpc_access("/sluice.api.v1.ClusterService/SetLogLevel"),
            Access::Change
        );
        assert_eq!(
            grpc_access("/sluice.cluster.v1.WorkerControl/Join"),
            Access::Worker
        );
        assert_eq!(grpc_access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(
            grpc_access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Access::Open
        );
    }
}
