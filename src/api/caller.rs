//! Who is calling, as the access log and request records name them.

use tonic::Request;

use crate::security::Caller;

/// Callers are anonymous when the server runs without tokens.
pub const ANONYMOUS: &str = "anonymous";

/// The name of the token the call was authenticated with.
pub fn caller_name<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_owned(), |caller| caller.token_name.clone())
}
