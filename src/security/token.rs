//! Bearer tokens. The server keeps only the SHA-256 of each token, so a
//! leaked configuration file does not leak credentials; a presented token
//! is hashed and compared against every configured hash in constant time.

use std::fmt;

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Caller;

/// Random bytes in a new token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl fmt::Display for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// Deliberately opaque: a hash is not a secret, but it is no business of
/// debug output either.
impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a token hash is 64 hexadecimal digits (the SHA-256 of the token)")]
pub struct TokenHashError;

impl std::str::FromStr for TokenHash {
    type Err = TokenHashError;

    fn from_str(text: &str) -> Result<TokenHash, TokenHashError> {
        let text = text.trim().as_bytes();
        if text.len() != 64 {
            return Err(TokenHashError);
        }
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| (c as char).to_digit(16).ok_or(TokenHashError);
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(TokenHash(bytes))
    }
}

pub fn hash_token(token: &str) -> TokenHash {
    TokenHash(Sha256::digest(token.as_bytes()).into())
}

/// A new token: 32 bytes from the operating system's RNG, as 64 hex digits.
pub fn generate_token() -> Result<String, rand::rand_core::OsError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The configured tokens, each with the caller it authenticates.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    entries: Vec<(TokenHash, Caller)>,
}

impl TokenSet {
    pub fn new(entries: impl IntoIterator<Item = (TokenHash, Caller)>) -> TokenSet {
        TokenSet {
            entries: entries.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller a token belongs to. Every entry is compared, without an
    /// early exit and with a constant-time comparison, so the time taken
    /// says nothing about which entry (if any) matched or how closely.
    pub fn verify(&self, token: &str) -> Option<&Caller> {
        let presented = hash_token(token);
        let mut found = None;
        for (hash, caller) in &self.entries {
            let equal: bool = hash.0.ct_eq(&presented.0).into();
            if equal {
                found = Some(caller);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::Scope;

    #[test]
    fn hashes_round_trip_through_hex() {
        let hash = hash_token("secret");
        // sha256("secret"), as `sha256sum` prints it.
        assert_eq!(
            hash.to_string(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        assert!(hash.to_string().parse::<TokenHash>().unwrap() == hash);
        assert!("abc".parse::<TokenHash>().is_err());
        assert!("zz".repeat(32).parse::<TokenHash>().is_err());
    }

    #[test]
    fn generated_tokens_are_distinct_and_verify_only_themselves() {
        let first = generate_token().unwrap();
        let second = generate_token().unwrap();
        assert_eq!(first.len(), 64);
        assert_ne!(first, second);
        let caller = Caller {
            token_name: "crm".to_owned(),
            scopes: vec![Scope::EventsWrite],
        };
        let set = TokenSet::new([(hash_token(&first), caller.clone())]);
        assert_eq!(set.verify(&first), Some(&caller));
        assert_eq!(set.verify(&second), None);
        assert_eq!(set.verify(""), None);
    }
}
