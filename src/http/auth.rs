//! Credentials as the analytics SDKs send them: HTTP Basic with the write
//! key as the user name (`base64("<key>:")`), or a bearer token. Either is
//! one of the configured tokens, checked as the gRPC layer checks them.

use axum::http::{HeaderMap, header};
use base64::Engine;

use super::reply::HttpError;
use crate::security::{ANONYMOUS, Caller, Scope, TokenSet};

/// The caller's name for the access log; `anonymous` when the server runs
/// without tokens (loopback only).
pub fn authorize(
    tokens: &TokenSet,
    headers: &HeaderMap,
    needed: Scope,
) -> Result<String, HttpError> {
    if tokens.is_empty() {
        return Ok(ANONYMOUS.to_owned());
    }
    let token = presented_token(headers).ok_or(HttpError::MissingCredentials)?;
    let caller: &Caller = tokens.verify(&token).ok_or(HttpError::InvalidCredentials)?;
    if !caller.has(needed) {
        return Err(HttpError::MissingScope(needed.as_str()));
    }
    Ok(caller.token_name.clone())
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_owned());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    // The SDKs send the key as the user name; some tools put it in the
    // password instead.
    let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    let token = if user.is_empty() { password } else { user };
    Some(token.to_owned()).filter(|token| !token.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::hash_token;

    fn tokens() -> TokenSet {
        TokenSet::new([(
            hash_token("k1"),
            Caller {
                token_name: "web".to_owned(),
                scopes: vec![Scope::EventsWrite],
            },
        )])
    }

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            authorization.parse().expect("header"),
        );
        headers
    }

    #[test]
    fn basic_with_the_key_as_user_name_or_password_and_bearer_are_accepted() {
        let basic_user = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("k1:")
        );
        let basic_password = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(":k1")
        );
        for authorization in [basic_user.as_str(), basic_password.as_str(), "Bearer k1"] {
            let name = authorize(&tokens(), &headers(authorization), Scope::EventsWrite);
            assert_eq!(name.expect("authorized"), "web");
        }
    }

    #[test]
    fn wrong_missing_and_underscoped_credentials_are_refused() {
        let wrong = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("nope:")
        );
        assert!(matches!(
            authorize(&tokens(), &headers(&wrong), Scope::EventsWrite),
            Err(HttpError::InvalidCredentials)
        ));
        assert!(matches!(
            authorize(&tokens(), &HeaderMap::new(), Scope::EventsWrite),
            Err(HttpError::MissingCredentials)
        ));
        assert!(matches!(
            authorize(&tokens(), &headers("Bearer k1"), Scope::ProfilesRead),
            Err(HttpError::MissingScope("profiles:read"))
        ));
        assert_eq!(
            authorize(&TokenSet::default(), &HeaderMap::new(), Scope::ProfilesRead).expect("open"),
            ANONYMOUS
        );
    }
}
