use std::{collections::HashSet, str::FromStr};

use phonenumber::{Mode, country};

use crate::config::IdentityConfig;
use crate::model::{Identifier, IdentifierKind};

/// Why a sent identifier cannot be used. Messages never echo the value, which
/// is personal data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("unknown identifier kind `{0}`")]
    UnknownKind(String),
    #[error("identifier value is empty")]
    Empty,
    #[error("identifier value is longer than {max_bytes} bytes")]
    TooLong { max_bytes: usize },
    #[error("identifier value contains control characters")]
    ControlCharacters,
    #[error("not a valid email address: {0}")]
    Email(&'static str),
    #[error("not a valid phone number for default region {region}")]
    Phone { region: String },
    #[error("{kind} must not contain whitespace")]
    Whitespace { kind: &'static str },
}

const EMAIL_LOCAL_BYTES_MAX: usize = 64;
const EMAIL_BYTES_MAX: usize = 254;
const DOMAIN_LABEL_BYTES_MAX: usize = 63;

/// Turns identifiers as callers send them into canonical form, so that
/// `Jane@Example.COM ` and `jane@example.com` are one identifier.
#[derive(Debug, Clone)]
pub struct Normalizer {
    region: country::Id,
    fold_email_aliases: bool,
    custom_kinds: HashSet<String>,
    value_bytes_max: usize,
}

impl Normalizer {
    /// `config` must have passed `Config::validate`; an unknown region falls
    /// back to the US numbering plan.
    pub fn new(config: &IdentityConfig, value_bytes_max: usize) -> Self {
        Normalizer {
            region: country::Id::from_str(&config.default_region).unwrap_or(country::Id::US),
            fold_email_aliases: config.fold_email_aliases,
            custom_kinds: config.custom_kinds.iter().cloned().collect(),
            value_bytes_max,
        }
    }

    pub fn kind(&self, name: &str) -> Result<IdentifierKind, NormalizeError> {
        if let Some(kind) = IdentifierKind::built_in(name) {
            return Ok(kind);
        }
        if self.custom_kinds.contains(name) {
            return Ok(IdentifierKind::Custom(name.to_owned()));
        }
        Err(NormalizeError::UnknownKind(truncate_for_message(name)))
    }

    pub fn normalize(&self, kind: &str, raw_value: &str) -> Result<Identifier, NormalizeError> {
        let kind = self.kind(kind)?;
        let value = raw_value.trim();
        if value.is_empty() {
            return Err(NormalizeError::Empty);
        }
        if value.len() > self.value_bytes_max {
            return Err(NormalizeError::TooLong {
                max_bytes: self.value_bytes_max,
            });
        }
        if value.chars().any(char::is_control) {
            return Err(NormalizeError::ControlCharacters);
        }
        let normalized = match &kind {
            IdentifierKind::Email => self.email(value)?,
            IdentifierKind::Phone => self.phone(value)?,
            IdentifierKind::DeviceId => no_whitespace(value, "device_id")?.to_lowercase(),
            IdentifierKind::AnonymousId => no_whitespace(value, "anonymous_id")?.to_owned(),
            // CRM ids can be case-sensitive and may contain spaces; keep them as sent.
            IdentifierKind::UserId | IdentifierKind::Custom(_) => value.to_owned(),
        };
        // Lower-casing can lengthen a value (U+023A is 2 bytes, its
        // lowercase 3): the stored form must be within the limit too, or a
        // caller looking it up as it was returned would be refused.
        if normalized.len() > self.value_bytes_max {
            return Err(NormalizeError::TooLong {
                max_bytes: self.value_bytes_max,
            });
        }
        Ok(Identifier::from_normalized(kind, normalized))
    }

    fn email(&self, value: &str) -> Result<String, NormalizeError> {
        let lowered = value.to_lowercase();
        if lowered.len() > EMAIL_BYTES_MAX {
            return Err(NormalizeError::Email("longer than 254 bytes"));
        }
        let (local, domain) = lowered
            .split_once('@')
            .ok_or(NormalizeError::Email("no `@`"))?;
        if domain.contains('@') {
            return Err(NormalizeError::Email("more than one `@`"));
        }
        check_email_local_part(local)?;
        check_email_domain(domain)?;
        if self.fold_email_aliases && matches!(domain, "gmail.com" | "googlemail.com") {
            let without_tag = local.split('+').next().unwrap_or(local);
            let folded: String = without_tag.chars().filter(|c| *c != '.').collect();
            if folded.is_empty() {
                return Err(NormalizeError::Email("empty local part"));
            }
            return Ok(format!("{folded}@gmail.com"));
        }
        Ok(lowered)
    }

    fn phone(&self, value: &str) -> Result<String, NormalizeError> {
        let invalid = || NormalizeError::Phone {
            region: self.region.as_ref().to_owned(),
        };
        // The parser accepts letters as keypad digits (`1-800-FLOWERS`); a
        // phone identifier made of words is far more likely junk.
        if value.chars().any(|c| c.is_alphabetic()) {
            return Err(invalid());
        }
        let number = phonenumber::parse(Some(self.region), value).map_err(|_| invalid())?;
        if !phonenumber::is_valid(&number) {
            return Err(invalid());
        }
        Ok(number.format().mode(Mode::E164).to_string())
    }
}

fn no_whitespace<'a>(value: &'a str, kind: &'static str) -> Result<&'a str, NormalizeError> {
    if value.chars().any(char::is_whitespace) {
        return Err(NormalizeError::Whitespace { kind });
    }
    Ok(value)
}

fn check_email_local_part(local: &str) -> Result<(), NormalizeError> {
    if local.is_empty() {
        return Err(NormalizeError::Email("empty local part"));
    }
    if local.len() > EMAIL_LOCAL_BYTES_MAX {
        return Err(NormalizeError::Email("local part longer than 64 bytes"));
    }
    if local
        .chars()
        .any(|c| c.is_whitespace() || "\"(),:;<>[\\]".contains(c))
    {
        return Err(NormalizeError::Email("forbidden character in local part"));
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(NormalizeError::Email("misplaced `.` in local part"));
    }
    Ok(())
}

fn check_email_domain(domain: &str) -> Result<(), NormalizeError> {
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(NormalizeError::Email("domain has no `.`"));
    }
    for label in &labels {
        let well_formed = !label.is_empty()
            && label.len() <= DOMAIN_LABEL_BYTES_MAX
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-');
        if !well_formed {
            return Err(NormalizeError::Email("malformed domain"));
        }
    }
    let top_level = labels.last().copied().unwrap_or_default();
    if top_level.chars().count() < 2 || top_level.chars().all(|c| c.is_ascii_digit()) {
        return Err(NormalizeError::Email("malformed top-level domain"));
    }
    Ok(())
}

/// Kind names are not personal data, but they are caller-controlled: keep
/// error messages bounded.
fn truncate_for_message(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalizer(region: &str, fold: bool) -> Normalizer {
        let config = IdentityConfig {
            default_region: region.to_owned(),
            fold_email_aliases: fold,
            custom_kinds: vec!["loyalty_id".to_owned()],
            ..IdentityConfig::default()
        };
        Normalizer::new(&config, 256)
    }

    fn value(normalizer: &Normalizer, kind: &str, raw: &str) -> Result<String, NormalizeError> {
        normalizer
            .normalize(kind, raw)
            .map(|identifier| identifier.value().to_owned())
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let n = normalizer("GB", false);
        assert_eq!(
            value(&n, "email", " Jane@Example.COM ").unwrap(),
            "jane@example.com"
        );
        assert_eq!(
            value(&n, "email", "j.a+x@gmail.com").unwrap(),
            "j.a+x@gmail.com"
        );
    }

    #[test]
    fn gmail_aliases_fold_only_when_configured() {
        let n = normalizer("GB", true);
        assert_eq!(
            value(&n, "email", "J.A.Ne+shop@googlemail.com").unwrap(),
            "jane@gmail.com"
        );
        assert_eq!(
            value(&n, "email", "j.ane+x@example.com").unwrap(),
            "j.ane+x@example.com"
        );
    }

    #[test]
    fn malformed_emails_are_rejected() {
        let n = normalizer("GB", false);
        for bad in [
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "jane@@example.com",
            "jane@exa_mple.com",
            ".jane@example.com",
            "jane@example.c",
            "jane@-example.com",
            "jane..doe@example.com",
            "jane@example.123",
        ] {
            assert!(
                matches!(value(&n, "email", bad), Err(NormalizeError::Email(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn phones_become_e164_in_the_default_region() {
        let n = normalizer("GB", false);
        assert_eq!(
            value(&n, "phone", "020 7946 0958").unwrap(),
            "+442079460958"
        );
        assert_eq!(
            value(&n, "phone", "+44 20 7946 0958").unwrap(),
            "+442079460958"
        );
        assert_eq!(
            value(&n, "phone", "+1 (650) 253-0000").unwrap(),
            "+16502530000"
        );
        let us = normalizer("US", false);
        assert_eq!(
            value(&us, "phone", "(650) 253-0000").unwrap(),
            "+16502530000"
        );
    }

    #[test]
    fn invalid_phones_are_rejected() {
        let n = normalizer("GB", false);
        for bad in [
            "12",
            "not a phone",
            "+44 20 7946",
            "1-800-FLOWERS",
            "+999 1234567",
        ] {
            assert!(
                matches!(value(&n, "phone", bad), Err(NormalizeError::Phone { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn device_and_other_ids_follow_their_kind() {
        let n = normalizer("GB", false);
        assert_eq!(value(&n, "device_id", " ABC-123 ").unwrap(), "abc-123");
        assert_eq!(value(&n, "user_id", " CRM-42 ").unwrap(), "CRM-42");
        assert_eq!(value(&n, "anonymous_id", "Cookie-A").unwrap(), "Cookie-A");
        assert_eq!(value(&n, "loyalty_id", " L 7 ").unwrap(), "L 7");
        assert_eq!(
            value(&n, "device_id", "ab cd"),
            Err(NormalizeError::Whitespace { kind: "device_id" })
        );
    }

    #[test]
    fn values_that_grow_when_lowercased_stay_within_the_limit() {
        let n = normalizer("GB", false);
        // U+023A is 2 bytes in UTF-8 and its lowercase U+2C65 is 3.
        let grows = "\u{23a}".repeat(100);
        assert_eq!(grows.len(), 200);
        assert_eq!(
            value(&n, "device_id", &grows),
            Err(NormalizeError::TooLong { max_bytes: 256 })
        );
        let fits = "\u{23a}".repeat(80);
        let stored = value(&n, "device_id", &fits).unwrap();
        assert_eq!(value(&n, "device_id", &stored).unwrap(), stored);
    }

    #[test]
    fn unknown_kinds_empty_long_and_control_values_are_rejected() {
        let n = normalizer("GB", false);
        assert!(matches!(
            value(&n, "fax", "1"),
            Err(NormalizeError::UnknownKind(_))
        ));
        assert_eq!(value(&n, "user_id", "   "), Err(NormalizeError::Empty));
        assert_eq!(
            value(&n, "user_id", &"x".repeat(257)),
            Err(NormalizeError::TooLong { max_bytes: 256 })
        );
        assert_eq!(
            value(&n, "user_id", "a\u{0}b"),
            Err(NormalizeError::ControlCharacters)
        );
    }
}
