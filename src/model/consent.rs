use std::fmt;
use std::str::FromStr;

use super::{ProfileId, Provenance, UnixMillis};

/// A channel a person can be contacted through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
    Post,
    Phone,
}

/// What the data may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Purpose {
    Marketing,
    Personalisation,
    Analytics,
}

impl Channel {
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Post,
        Channel::Phone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Post => "post",
            Channel::Phone => "phone",
        }
    }
}

impl Purpose {
    pub const ALL: [Purpose; 3] = [
        Purpose::Marketing,
        Purpose::Personalisation,
        Purpose::Analytics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Personalisation => "personalisation",
            Purpose::Analytics => "analytics",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what}; expected one of {expected}")]
pub struct UnknownConsentTerm {
    pub what: &'static str,
    pub expected: &'static str,
}

impl FromStr for Channel {
    type Err = UnknownConsentTerm;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .into_iter()
            .find(|channel| channel.as_str() == text)
            .ok_or(UnknownConsentTerm {
                what: "channel",
                expected: "email, sms, push, post, phone",
            })
    }
}

impl FromStr for Purpose {
    type Err = UnknownConsentTerm;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        // British and American spellings name one purpose.
        let text = if text == "personalization" {
            "personalisation"
        } else {
            text
        };
        Purpose::ALL
            .into_iter()
            .find(|purpose| purpose.as_str() == text)
            .ok_or(UnknownConsentTerm {
                what: "purpose",
                expected: "marketing, personalisation, analytics",
            })
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One consent decision: granted or withdrawn, when and through which call.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentView {
    pub channel: Channel,
    pub purpose: Purpose,
    pub granted: bool,
    /// When the person decided (the caller's timestamp).
    pub at: UnixMillis,
    pub provenance: Provenance,
}

/// A request to record consent decisions for one profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentCall {
    pub profile_id: ProfileId,
    pub changes: Vec<(Channel, Purpose, bool)>,
    pub at: UnixMillis,
    pub provenance: Provenance,
}
