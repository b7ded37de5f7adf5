//! Blocking: a pair is only scored when the two share a blocking key, so
//! the work stays near-linear. Several independent rules, each over
//! different fields, are unioned: a typo in any one field leaves the rules
//! that do not read it, so the twin record is still met. Each key names its
//! rule in a prefix, which lets training sample pairs rule by rule.
//!
//! Keys hold personal data: index them, never log them.

use super::compare::Field;
use super::fields::{MatchFields, MatchProfile};
use super::names::name_code;

/// Mailbox names shorter than this (`info`, `jo`) are shared by too many.
const MAILBOX_CHARS_MIN: usize = 5;
/// Emails of a variant that get blocking keys: the first ones are the
/// person's own, and each adds index writes to every change of the profile.
const EMAILS_BLOCKED_MAX: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockingRule {
    /// The exact birthday.
    Birthday,
    /// Last-name code and birth year: survives a slip in the day or month.
    LastNameBirthYear,
    /// First-name code and postal code.
    FirstNamePostalCode,
    /// Postal code and house number: survives typos in both names.
    PostalCodeStreetNumber,
    /// Both name codes, in either order: survives a move and a new birthday.
    Names,
    /// Street-name code and house number: survives a mistyped postal code.
    StreetNumber,
    /// City and last-name code.
    CityLastName,
    /// The mailbox at any provider, and a name code with the mailbox's
    /// digits at one provider: a mistyped copy of an address.
    Email,
}

impl BlockingRule {
    pub const ALL: [BlockingRule; 8] = [
        BlockingRule::Birthday,
        BlockingRule::LastNameBirthYear,
        BlockingRule::FirstNamePostalCode,
        BlockingRule::PostalCodeStreetNumber,
        BlockingRule::Names,
        BlockingRule::StreetNumber,
        BlockingRule::CityLastName,
        BlockingRule::Email,
    ];

    /// The key prefix naming the rule; never a prefix of another rule's.
    pub fn prefix(self) -> &'static str {
        match self {
            BlockingRule::Birthday => "b:",
            BlockingRule::LastNameBirthYear => "ly:",
            BlockingRule::FirstNamePostalCode => "fp:",
            BlockingRule::PostalCodeStreetNumber => "pn:",
            BlockingRule::Names => "nn:",
            BlockingRule::StreetNumber => "sn:",
            BlockingRule::CityLastName => "cl:",
            BlockingRule::Email => "e:",
        }
    }

    /// The fields the rule's pairs agree on by construction (or nearly):
    /// training leaves them out of this rule's estimate.
    pub fn fields(self) -> &'static [Field] {
        match self {
            BlockingRule::Birthday => &[Field::Birthday],
            BlockingRule::LastNameBirthYear => &[Field::LastName, Field::Birthday],
            BlockingRule::FirstNamePostalCode => &[Field::FirstName, Field::PostalCode],
            BlockingRule::PostalCodeStreetNumber => &[Field::PostalCode, Field::StreetNumber],
            BlockingRule::Names => &[Field::FirstName, Field::LastName],
            BlockingRule::StreetNumber => &[Field::StreetName, Field::StreetNumber],
            BlockingRule::CityLastName => &[Field::City, Field::LastName],
            BlockingRule::Email => &[Field::Email, Field::FirstName, Field::LastName],
        }
    }

    pub fn of_key(key: &str) -> Option<BlockingRule> {
        BlockingRule::ALL
            .into_iter()
            .find(|rule| key.starts_with(rule.prefix()))
    }
}

/// The keys of one variant, each at most once.
pub fn variant_keys(fields: &MatchFields) -> Vec<String> {
    let code = |name: &Option<String>| name.as_deref().map(name_code);
    let first = code(&fields.first_name);
    let last = code(&fields.last_name);
    let birthday = fields.birthday.as_deref();
    let postal_code = fields.postal_code.as_deref();
    let number = fields.street_number.as_deref();
    let mut keys = Vec::new();
    let mut push = |rule: BlockingRule, parts: &[Option<&str>]| {
        if parts.iter().all(Option::is_some) {
            let body: Vec<&str> = parts.iter().flatten().copied().collect();
            keys.push(format!("{}{}", rule.prefix(), body.join(":")));
        }
    };
    push(BlockingRule::Birthday, &[birthday]);
    push(
        BlockingRule::LastNameBirthYear,
        &[last.as_deref(), birthday.and_then(|date| date.get(..4))],
    );
    push(
        BlockingRule::FirstNamePostalCode,
        &[first.as_deref(), postal_code],
    );
    push(BlockingRule::PostalCodeStreetNumber, &[postal_code, number]);
    if let (Some(first), Some(last)) = (&first, &last) {
        let (low, high) = if first <= last {
            (first, last)
        } else {
            (last, first)
        };
        push(BlockingRule::Names, &[Some(low), Some(high)]);
    }
    let street_code = fields
        .street_name
        .as_deref()
        .and_then(|street| street.split(' ').next())
        .map(name_code);
    push(
        BlockingRule::StreetNumber,
        &[street_code.as_deref(), number],
    );
    let city: Option<String> = fields
        .city
        .as_deref()
        .map(|city| city.chars().filter(|c| *c != ' ').collect());
    push(
        BlockingRule::CityLastName,
        &[city.as_deref(), last.as_deref()],
    );
    for email in fields.emails.iter().take(EMAILS_BLOCKED_MAX) {
        let Some((mailbox, domain)) = email.rsplit_once('@') else {
            continue;
        };
        if mailbox.chars().count() >= MAILBOX_CHARS_MIN {
            push(BlockingRule::Email, &[Some("m"), Some(mailbox)]);
        }
        // A copy keeps the mailbox's digits, so they narrow the block at
        // no cost in recall.
        let digits: String = mailbox.chars().filter(char::is_ascii_digit).collect();
        let at_domain = format!("{digits}@{domain}");
        for name in [&first, &last].into_iter().flatten() {
            push(
                BlockingRule::Email,
                &[Some("n"), Some(name), Some(&at_domain)],
            );
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// The keys of every variant of a profile, each at most once.
pub fn blocking_keys(profile: &MatchProfile) -> Vec<String> {
    let mut keys: Vec<String> = profile.variants().iter().flat_map(variant_keys).collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(value: serde_json::Value) -> Vec<String> {
        variant_keys(&MatchFields::from_traits(value.as_object().unwrap()))
    }

    #[test]
    fn a_typo_in_any_one_field_leaves_a_shared_key() {
        let record = json!({
            "first_name": "Alexandra", "last_name": "Whitcombe", "birthday": "1961-04-09",
            "address": {"street": "14 Tarrant Close", "city": "Kilmore", "postal_code": "3764"}
        });
        let original = keys(record.clone());
        for (path, typo) in [
            ("/first_name", "Alexnadra"),
            ("/last_name", "Whitcomb"),
            ("/birthday", "1961-04-19"),
            ("/address/postal_code", "3746"),
            ("/address/street", "14 Tarant Close"),
            ("/address/city", "Kilmre"),
        ] {
            let mut changed = record.clone();
            *changed.pointer_mut(path).unwrap() = json!(typo);
            let changed = keys(changed);
            assert!(
                original.iter().any(|key| changed.contains(key)),
                "a typo in {path} loses every key"
            );
        }
    }

    #[test]
    fn swapped_names_share_the_names_key() {
        let a = keys(json!({"first_name": "Jon", "last_name": "Smith"}));
        let b = keys(json!({"first_name": "Smith", "last_name": "Jon"}));
        assert!(
            a.iter()
                .any(|key| key.starts_with("nn:") && b.contains(key))
        );
    }

    #[test]
    fn every_key_names_its_rule() {
        let all = keys(json!({
            "first_name": "Ann", "last_name": "Lee", "birthday": "1980-01-02",
            "address": {"street": "3 Low Rd", "city": "Leeds", "postal_code": "LS1 4AP"}
        }));
        assert!(all.iter().all(|key| BlockingRule::of_key(key).is_some()));
        assert_eq!(all.len(), 7);
    }
}
