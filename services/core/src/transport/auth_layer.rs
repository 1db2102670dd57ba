//! [`AuthLayer`]: the tower layer every mesh service sits behind. For each gRPC call it
//! reads `authorization: Bearer <token>`, verifies the token and inserts the [`Caller`] into
//! the request extensions; a missing or invalid token is answered with UNAUTHENTICATED and
//! a reason, and the service is never called.
//!
//! Open without a token: the services in [`OPEN_SERVICES`] (health, reflection) and the
//! methods in [`OPEN_METHODS`] (the Auth calls made before a client has a token). An open
//! call that does carry a token that verifies gets its [`Caller`] too (Logout uses it); a
//! token that does not verify is ignored there. The decision is made on the path alone,
//! never on the content type: a call that claims not to be gRPC would otherwise reach a
//! service unchecked. Plain HTTP endpoints (which check their own credentials, e.g. signed
//! URLs) are routed before this layer, not through it.
//!
//! Revocation: with [`Revocations`] the layer also rejects a token whose session or id was
//! revoked (UNAUTHENTICATED, reason `TOKEN_REVOKED`). The check is in memory while the
//! process's revocation view is live, and a store lookup otherwise (see
//! [`crate::auth::revocations`]); a store that cannot answer then fails the call with
//! UNAVAILABLE rather than let a revoked token through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::Error;
use crate::auth::{Caller, Revocations, TokenVerifier};

/// gRPC services reachable without a token: infrastructure that load balancers, grpcurl
/// and buf curl use before they have credentials.
pub const OPEN_SERVICES: &[&str] =
    &["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// gRPC methods reachable without a token (paths): the Auth calls that hand out or end
/// credentials, and the public keys.
pub const OPEN_METHODS: &[&str] = &[
    "/mesh.auth.v1.AuthService/Register",
    "/mesh.auth.v1.AuthService/Login",
    "/mesh.auth.v1.AuthService/Refresh",
    "/mesh.auth.v1.AuthService/Logout",
    "/mesh.auth.v1.AuthService/GetJwks",
];

/// Verifies bearer tokens in front of the services it wraps.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    open_services: Arc<[String]>,
    revocations: Option<Arc<Revocations>>,
}

impl AuthLayer {
    /// A layer that checks tokens with `verifier` and leaves [`OPEN_SERVICES`] and
    /// [`OPEN_METHODS`] open.
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self::with_open_services(verifier, OPEN_SERVICES.iter().map(|name| (*name).to_owned()))
    }

    /// A layer whose open services are exactly `open_services` (fully-qualified names),
    /// plus [`OPEN_METHODS`].
    pub fn with_open_services(verifier: Arc<TokenVerifier>, open_services: impl IntoIterator<Item = String>) -> Self {
        Self { verifier, open_services: open_services.into_iter().collect(), revocations: None }
    }

    /// Also rejects revoked tokens, as `revocations` knows them.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    fn is_open(&self, path: &str) -> bool {
        // A gRPC path is `/<package>.<Service>/<Method>`.
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        self.open_services.iter().any(|open| open == service) || OPEN_METHODS.contains(&path)
    }

    /// Verifies the bearer token of a request with these `headers`.
    pub fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Error> {
        let token = bearer_token(headers)?;
        self.verifier.verify(token)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated { inner, layer: self.clone() }
    }
}

/// The service [`AuthLayer`] produces.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    layer: AuthLayer,
}

impl<S, B, ResBody> Service<Request<B>> for Authenticated<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if self.layer.is_open(request.uri().path()) {
            // A token on an open call identifies the caller if it verifies and is not known
            // revoked; otherwise the call goes on anonymous.
            if request.headers().contains_key(header::AUTHORIZATION)
                && let Ok(caller) = self.layer.authenticate(request.headers())
                && self
                    .layer
                    .revocations
                    .as_ref()
                    .is_none_or(|revocations| revocations.check_local(&caller) != Some(true))
            {
                request.extensions_mut().insert(caller);
            }
            return AuthFuture::Inner { future: self.inner.call(request) };
        }
        let caller = match self.layer.authenticate(request.headers()) {
            Ok(caller) => caller,
            Err(error) => return rejected(error, request.uri().path()),
        };
        match self.layer.revocations.as_ref().map(|revocations| (revocations, revocations.check_local(&caller))) {
            None | Some((_, Some(false))) => {
                request.extensions_mut().insert(caller);
                AuthFuture::Inner { future: self.inner.call(request) }
            }
            Some((_, Some(true))) => rejected(crate::auth::revocations::revoked_error(), request.uri().path()),
            Some((revocations, None)) => {
                // Only the store can tell: ask it, then call a clone of the service (the
                // one that was made ready stays here for the next call).
                let revocations = revocations.clone();
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                AuthFuture::Checking {
                    future: Box::pin(async move {
                        if let Err(error) = revocations.check(&caller).await {
                            tracing::debug!(reason = error.reason(), path = request.uri().path(), "call rejected");
                            return Ok(tonic::Status::from(error).into_http());
                        }
                        request.extensions_mut().insert(caller);
                        inner.call(request).await
                    }),
                }
            }
        }
    }
}

fn rejected<F, ResBody: Default, E>(error: Error, path: &str) -> AuthFuture<F, ResBody, E> {
    tracing::debug!(reason = error.reason(), path, "call rejected: not authenticated");
    AuthFuture::Rejected { response: Some(tonic::Status::from(error).into_http()) }
}

/// A boxed future of a call (the revocation check that asks the store, then the call).
type Checked<ResBody, E> = Pin<Box<dyn Future<Output = Result<Response<ResBody>, E>> + Send>>;

pin_project! {
    /// The wrapped service's future, an immediate rejection, or a store lookup then the call.
    #[project = AuthFutureProjection]
    pub enum AuthFuture<F, ResBody, E> {
        /// The call passed: the service's own future.
        Inner { #[pin] future: F },
        /// The call was rejected.
        Rejected { response: Option<Response<ResBody>> },
        /// The revocation check had to ask the store.
        Checking { future: Checked<ResBody, E> },
    }
}

impl<F, ResBody, E> Future for AuthFuture<F, ResBody, E>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProjection::Inner { future } => future.poll(cx),
            AuthFutureProjection::Rejected { response } => {
                Poll::Ready(Ok(response.take().expect("an AuthFuture is not polled after it completed")))
            }
            AuthFutureProjection::Checking { future } => future.as_mut().poll(cx),
        }
    }
}

fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Error> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Error::unauthenticated("TOKEN_MISSING", "this call needs a bearer access token in the `authorization` metadata")
    })?;
    let value = value
        .to_str()
        .map_err(|_| Error::unauthenticated("TOKEN_MALFORMED", "the `authorization` metadata is not valid text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(Error::unauthenticated(
            "TOKEN_MALFORMED",
            "the `authorization` metadata must be `Bearer <access token>`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers("bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), "abc");
    }

    #[test]
    fn other_schemes_are_malformed() {
        assert_eq!(bearer_token(&headers("Basic dXNlcjpwYXNz")).unwrap_err().reason(), "TOKEN_MALFORMED");
        assert_eq!(bearer_token(&headers("Bearer ")).unwrap_err().reason(), "TOKEN_MALFORMED");
        assert_eq!(bearer_token(&http::HeaderMap::new()).unwrap_err().reason(), "TOKEN_MISSING");
    }

    #[test]
    fn health_and_reflection_are_open() {
        let layer = AuthLayer::new(Arc::new(TokenVerifier::new("mesh", "mesh", std::time::Duration::from_secs(60))));
        assert!(layer.is_open("/grpc.health.v1.Health/Check"));
        assert!(layer.is_open("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"));
        assert!(!layer.is_open("/mesh.session.v1.SessionService/GetSession"));
        assert!(!layer.is_open("/grpc.health.v1.HealthX/Check"));
    }
}
