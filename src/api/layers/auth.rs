//! Authentication and authorization of every call before it reaches a
//! handler: the bearer token is checked against the configured hashes and
//! its scopes against the method table ([`crate::security::requirement`]).

use std::sync::Arc;

use http::header::AUTHORIZATION;

use super::{Guard, GuardFuture, GuardLayer, HttpRequest, Inner, Refusal, refuse};
use crate::security::{Caller, Requirement, TokenSet, requirement};

pub type AuthLayer = GuardLayer<Auth>;

impl AuthLayer {
    pub fn new(tokens: TokenSet) -> AuthLayer {
        GuardLayer(Auth {
            tokens: (!tokens.is_empty()).then(|| Arc::new(tokens)),
        })
    }
}

#[derive(Clone)]
pub struct Auth {
    /// `None`: no tokens are configured and every call passes (allowed on
    /// loopback only, see `Config::exposure`).
    tokens: Option<Arc<TokenSet>>,
}

/// The token of an `authorization: Bearer <token>` header.
fn bearer_token(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// A refusal, with the caller when the token was valid but lacked a scope.
type Denial = (Refusal, Option<Caller>);

/// Who is making the call (`None` on open methods), or why it may not
/// proceed.
fn authorize(tokens: &TokenSet, request: &HttpRequest) -> Result<Option<Caller>, Denial> {
    let needed = requirement(request.uri().path());
    if needed == Requirement::Open {
        return Ok(None);
    }
    let Some(token) = bearer_token(request) else {
        return Err((Refusal::MissingToken, None));
    };
    let Some(caller) = tokens.verify(token) else {
        return Err((Refusal::InvalidToken, None));
    };
    if !caller.satisfies(needed) {
        let scopes = match needed {
            Requirement::Scope(scope) => scope.to_string(),
            Requirement::AnyOf(scopes) => {
                let names: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
                names.join(" or ")
            }
            Requirement::Open | Requirement::AnyToken => String::new(),
        };
        return Err((Refusal::MissingScope(scopes), Some(caller.clone())));
    }
    Ok(Some(caller.clone()))
}

impl Guard for Auth {
    fn guard<S: Inner>(&self, mut request: HttpRequest, mut inner: S) -> GuardFuture<S::Error> {
        let Some(tokens) = &self.tokens else {
            return Box::pin(inner.call(request));
        };
        let caller = match authorize(tokens, &request) {
            Ok(caller) => caller,
            Err((refusal, caller)) => {
                let mut response = refuse(refusal);
                // For the access log: a known caller was refused.
                if let Some(caller) = caller {
                    response.extensions_mut().insert(caller);
                }
                return Box::pin(std::future::ready(Ok(response)));
            }
        };
        // Handlers have no use for the secret; dropping it here keeps it
        // out of anything that might log request metadata later.
        request.headers_mut().remove(AUTHORIZATION);
        let Some(caller) = caller else {
            return Box::pin(inner.call(request));
        };
        request.extensions_mut().insert(caller.clone());
        let response = inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            response.extensions_mut().insert(caller);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use tower::{Layer, Service};

    use super::super::{BoxFuture, HttpResponse};
    use super::*;
    use crate::security::{Scope, hash_token};

    /// A stand-in handler that answers with the caller it was given.
    #[derive(Clone)]
    struct EchoCaller;

    impl Service<HttpRequest> for EchoCaller {
        type Response = HttpResponse;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Result<HttpResponse, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: HttpRequest) -> Self::Future {
            let name = request
                .extensions()
                .get::<Caller>()
                .map(|caller| caller.token_name.clone())
                .unwrap_or_default();
            let leaked = request.headers().contains_key(AUTHORIZATION);
            Box::pin(async move {
                assert!(!leaked, "the token reached the handler");
                Ok(tonic::Status::ok(name).into_http())
            })
        }
    }

    fn request(path: &str, token: &str) -> HttpRequest {
        http::Request::builder()
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(tonic::body::Body::default())
            .expect("request")
    }

    #[tokio::test]
    async fn handlers_see_the_caller_and_not_the_token() {
        let caller = Caller {
            token_name: "bi".to_owned(),
            scopes: vec![Scope::ProfilesRead],
        };
        let tokens = TokenSet::new([(hash_token("t0ken"), caller.clone())]);
        let mut service = AuthLayer::new(tokens).layer(EchoCaller);
        let response = service
            .call(request("/sightline.v1.ProfileService/GetProfile", "t0ken"))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Ok);
        assert_eq!(status.message(), "bi");
        assert_eq!(response.extensions().get::<Caller>(), Some(&caller));

        let refused = service
            .call(request("/sightline.v1.ProfileService/Identify", "t0ken"))
            .await
            .unwrap();
        let status = tonic::Status::from_header_map(refused.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(refused.extensions().get::<Caller>(), Some(&caller));
    }
}
