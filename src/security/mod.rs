//! Who may call what: scopes, bearer tokens stored as SHA-256 hashes, the
//! authenticated `Caller`, and the table that gives every gRPC method the
//! scope it needs. Pure: no tonic, no I/O, so the CLI's `token create` and
//! the server's authentication layer share one definition.

mod methods;
mod token;

pub use methods::{Requirement, requirement};
pub use token::{TokenHash, TokenHashError, TokenSet, generate_token, hash_token};

use std::{fmt, str::FromStr};

/// A permission a token grants. `Admin` implies every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    ProfilesRead,
    EventsWrite,
    SegmentsRead,
    SegmentsWrite,
    PrivacyExport,
    PrivacyErase,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::ProfilesRead,
        Scope::EventsWrite,
        Scope::SegmentsRead,
        Scope::SegmentsWrite,
        Scope::PrivacyExport,
        Scope::PrivacyErase,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ProfilesRead => "profiles:read",
            Scope::EventsWrite => "events:write",
            Scope::SegmentsRead => "segments:read",
            Scope::SegmentsWrite => "segments:write",
            Scope::PrivacyExport => "privacy:export",
            Scope::PrivacyErase => "privacy:erase",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "unknown scope `{0}`: expected one of profiles:read, events:write, segments:read, \
     segments:write, privacy:export, privacy:erase, admin"
)]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Scope, UnknownScope> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text.trim())
            .ok_or_else(|| UnknownScope(text.to_owned()))
    }
}

impl TryFrom<String> for Scope {
    type Error = UnknownScope;

    fn try_from(text: String) -> Result<Scope, UnknownScope> {
        text.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Scope, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The authenticated caller of one request. The authentication layer puts
/// it into the request's extensions, so a handler reads it with
/// `request.extensions().get::<Caller>()`; it is absent when authentication
/// is off (no tokens configured) and on open methods (health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The configured name of the token, never the token itself.
    pub token_name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|held| *held == scope || *held == Scope::Admin)
    }

    pub fn satisfies(&self, requirement: Requirement) -> bool {
        match requirement {
            Requirement::Open | Requirement::AnyToken => true,
            Requirement::Scope(scope) => self.has(scope),
            Requirement::AnyOf(scopes) => scopes.iter().any(|scope| self.has(*scope)),
        }
    }
}

/// The caller's name when the server runs without tokens.
pub const ANONYMOUS: &str = "anonymous";

/// Token names appear in logs and in generated config, so they are kept to
/// characters that need no quoting or escaping anywhere.
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_admin_implies_all() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>().unwrap(), scope);
        }
        assert!("profiles:write".parse::<Scope>().is_err());
        let admin = Caller {
            token_name: "ops".to_owned(),
            scopes: vec![Scope::Admin],
        };
        assert!(Scope::ALL.iter().all(|scope| admin.has(*scope)));
        let reader = Caller {
            token_name: "bi".to_owned(),
            scopes: vec![Scope::ProfilesRead],
        };
        assert!(reader.has(Scope::ProfilesRead));
        assert!(!reader.has(Scope::EventsWrite));
        assert!(!reader.has(Scope::Admin));
    }

    #[test]
    fn token_names_are_plain() {
        assert!(valid_token_name("crm-sync_2.prod"));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("a b"));
        assert!(!valid_token_name("quote\"d"));
    }
}
