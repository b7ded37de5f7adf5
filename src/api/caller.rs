//! Who is calling, as the access log and request records name them.

use tonic::Request;

use crate::security::{ANONYMOUS, Caller};

/// The name of the token the call was authenticated with.
pub fn caller_name<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| ANONYMOUS.to_owned(), |caller| caller.token_name.clone())
}
