//! Who is calling, as the access log and request records name them.

use tonic::Request;

/// Callers are anonymous when the server runs without tokens.
pub const ANONYMOUS: &str = "anonymous";

pub fn caller_name<T>(_request: &Request<T>) -> String {
    ANONYMOUS.to_owned()
}
