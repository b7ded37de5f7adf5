use std::fmt;

/// The kind of an identifier. Built-in kinds have fixed normalization rules;
/// custom kinds are declared in configuration and only trimmed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdentifierKind {
    Email,
    Phone,
    DeviceId,
    UserId,
    AnonymousId,
    Custom(String),
}

impl IdentifierKind {
    pub const BUILT_IN: [IdentifierKind; 5] = [
        IdentifierKind::Email,
        IdentifierKind::Phone,
        IdentifierKind::DeviceId,
        IdentifierKind::UserId,
        IdentifierKind::AnonymousId,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            IdentifierKind::Email => "email",
            IdentifierKind::Phone => "phone",
            IdentifierKind::DeviceId => "device_id",
            IdentifierKind::UserId => "user_id",
            IdentifierKind::AnonymousId => "anonymous_id",
            IdentifierKind::Custom(name) => name,
        }
    }

    /// The built-in kind with this name, if any.
    pub fn built_in(name: &str) -> Option<IdentifierKind> {
        Self::BUILT_IN
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for IdentifierKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A normalized identifier. Only `identity::Normalizer` and the store (which
/// reads back what was normalized before) construct one, so holding an
/// `Identifier` means its value is in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identifier {
    kind: IdentifierKind,
    value: String,
}

impl Identifier {
    /// Wraps an already-normalized value. Callers outside `identity` and
    /// `store` must go through the normalizer instead.
    pub(crate) fn from_normalized(kind: IdentifierKind, value: String) -> Self {
        Identifier { kind, value }
    }

    pub fn kind(&self) -> &IdentifierKind {
        &self.kind
    }

    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Identifiers are personal data: the debug-friendly display shows the kind
/// only, so that one cannot end up in a log line by accident.
impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:<redacted>", self.kind)
    }
}
