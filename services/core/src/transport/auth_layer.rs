//! [`AuthLayer`]: the tower layer every mesh service sits behind. For each gRPC call it
//! reads `authorization: Bearer <token>`, verifies the token and inserts the [`Caller`] into
//! the request extensions; a missing or invalid token is answered with UNAUTHENTICATED and
//! a reason, and the service is never called.
//!
//! Open without a token: only the services in [`OPEN_SERVICES`] (health, reflection). The
//! decision is made on the path alone, never on the content type: a call that claims not to
//! be gRPC would otherwise reach a service unchecked. Plain HTTP endpoints (which check
//! their own credentials, e.g. signed URLs) are routed before this layer, not through it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::Error;
use crate::auth::{Caller, TokenVerifier};

/// gRPC services reachable without a token: infrastructure that load balancers, grpcurl
/// and buf curl use before they have credentials.
pub const OPEN_SERVICES: &[&str] =
    &["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// Verifies bearer tokens in front of the services it wraps.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    verifier: Arc<TokenVerifier>,
    open_services: Arc<[String]>,
}

impl AuthLayer {
    /// A layer that checks tokens with `verifier` and leaves [`OPEN_SERVICES`] open.
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self::with_open_services(verifier, OPEN_SERVICES.iter().map(|name| (*name).to_owned()))
    }

    /// A layer whose open services are exactly `open_services` (fully-qualified names).
    pub fn with_open_services(verifier: Arc<TokenVerifier>, open_services: impl IntoIterator<Item = String>) -> Self {
        Self { verifier, open_services: open_services.into_iter().collect() }
    }

    fn is_open(&self, path: &str) -> bool {
        // A gRPC path is `/<package>.<Service>/<Method>`.
        let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        self.open_services.iter().any(|open| open == service)
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
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if self.layer.is_open(request.uri().path()) {
            return AuthFuture::Inner { future: self.inner.call(request) };
        }
        match self.layer.authenticate(request.headers()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                AuthFuture::Inner { future: self.inner.call(request) }
            }
            Err(error) => {
                tracing::debug!(
                    reason = error.reason(),
                    path = request.uri().path(),
                    "call rejected: not authenticated"
                );
                AuthFuture::Rejected { response: Some(tonic::Status::from(error).into_http()) }
            }
        }
    }
}

pin_project! {
    /// Either the wrapped service's future or an immediate UNAUTHENTICATED answer.
    #[project = AuthFutureProjection]
    pub enum AuthFuture<F, ResBody> {
        /// The call passed: the service's own future.
        Inner { #[pin] future: F },
        /// The call was rejected.
        Rejected { response: Option<Response<ResBody>> },
    }
}

impl<F, ResBody, E> Future for AuthFuture<F, ResBody>
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
