//! Comparison levels: how two variants agree, field by field. Each field's
//! outcome is one of a few ordered levels (exact, close, …, else); the model
//! gives each level its weight. A field missing on either side has no level
//! and so weighs nothing: "missing neither helps nor hurts".

use super::fields::{MatchFields, postal_district};
use super::names::nicknames_of_one_name;

/// The compared fields, in the order of [`Comparison`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    FirstName,
    LastName,
    Birthday,
    PostalCode,
    StreetNumber,
    StreetName,
    Line2,
    City,
    State,
    Country,
    Email,
}

pub const FIELD_COUNT: usize = 11;

impl Field {
    pub const ALL: [Field; FIELD_COUNT] = [
        Field::FirstName,
        Field::LastName,
        Field::Birthday,
        Field::PostalCode,
        Field::StreetNumber,
        Field::StreetName,
        Field::Line2,
        Field::City,
        Field::State,
        Field::Country,
        Field::Email,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Birthday => "birthday",
            Field::PostalCode => "postal_code",
            Field::StreetNumber => "street_number",
            Field::StreetName => "street_name",
            Field::Line2 => "line2",
            Field::City => "city",
            Field::State => "state",
            Field::Country => "country",
            Field::Email => "email",
        }
    }

    pub fn from_name(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|field| field.name() == name)
    }

    /// Level names, strongest agreement first; the last is always `else`.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::FirstName => &[
                EXACT,
                "nickname",
                "jaro_winkler_0.92",
                "shared_word",
                "jaro_winkler_0.80",
                "initial",
                SWAPPED,
                ELSE,
            ],
            Field::LastName => &[
                EXACT,
                "jaro_winkler_0.92",
                "shared_word",
                "jaro_winkler_0.80",
                SWAPPED,
                ELSE,
            ],
            Field::Birthday => &[EXACT, "one_digit_or_transposed", "same_year", ELSE],
            Field::PostalCode => &[EXACT, "one_edit", "same_district", ELSE],
            Field::StreetName | Field::Line2 | Field::City => {
                &[EXACT, "jaro_winkler_0.90", "jaro_winkler_0.75", ELSE]
            }
            Field::StreetNumber | Field::State | Field::Country => &[EXACT, ELSE],
            Field::Email => &["mistyped_copy", "same_mailbox", ELSE],
        }
    }

    pub fn level_count(self) -> usize {
        self.levels().len()
    }

    /// The level named `name`, if this field has it.
    pub fn level_index(self, name: &str) -> Option<u8> {
        self.levels()
            .iter()
            .position(|level| *level == name)
            .and_then(|index| u8::try_from(index).ok())
    }
}

pub const EXACT: &str = "exact";
pub const SWAPPED: &str = "swapped";
pub const ELSE: &str = "else";

/// Per field, the level that fired, or `None` when either side lacks it.
pub type Comparison = [Option<u8>; FIELD_COUNT];

/// Similarity a swapped pair of names must reach on both crossings, on
/// average: both names copied into each other's field, with at most a slip.
const SWAPPED_SIMILARITY_MIN: f64 = 0.92;
/// Edits (optimal string alignment) by which a mistyped copy of an email
/// differs at most. Counted in edits rather than by Jaro-Winkler, whose
/// matching window spans half of a long address.
const EMAIL_TYPO_EDITS_MAX: usize = 2;
/// Mailbox names shorter than this (`info`, `jo`) say little about a person.
const MAILBOX_CHARS_MIN: usize = 5;

/// Compares two variants field by field.
pub fn compare(a: &MatchFields, b: &MatchFields) -> Comparison {
    let mut levels: Comparison = [None; FIELD_COUNT];
    let (first, last) = compare_names(a, b);
    levels[Field::FirstName.index()] = first;
    levels[Field::LastName.index()] = last;
    levels[Field::Birthday.index()] = both(&a.birthday, &b.birthday, compare_birthdays);
    levels[Field::PostalCode.index()] = both(&a.postal_code, &b.postal_code, compare_postal_codes);
    levels[Field::StreetNumber.index()] = both(&a.street_number, &b.street_number, exact);
    let (street, line2) = compare_address_lines(a, b);
    levels[Field::StreetName.index()] = street;
    levels[Field::Line2.index()] = line2;
    levels[Field::City.index()] = both(&a.city, &b.city, compare_text);
    levels[Field::State.index()] = both(&a.state, &b.state, exact);
    levels[Field::Country.index()] = both(&a.country, &b.country, exact);
    levels[Field::Email.index()] = compare_emails(a, b);
    levels
}

fn both(a: &Option<String>, b: &Option<String>, compare: fn(&str, &str) -> u8) -> Option<u8> {
    Some(compare(a.as_deref()?, b.as_deref()?))
}

fn exact(a: &str, b: &str) -> u8 {
    u8::from(a != b)
}

/// Jaro-Winkler, also over the words run together: data entry splits and
/// joins words (`soph ie`, `vanwijk`), which costs the plain measure a lot.
fn similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let plain = strsim::jaro_winkler(a, b);
    if !a.contains(' ') && !b.contains(' ') {
        return plain;
    }
    let joined = |text: &str| -> String { text.chars().filter(|c| *c != ' ').collect() };
    plain.max(strsim::jaro_winkler(&joined(a), &joined(b)))
}

/// Whether two multi-word values share a whole word of three letters or
/// more: `van wijk` and `wijk`, `mary ann` and `mary`.
fn share_word(a: &str, b: &str) -> bool {
    (a.contains(' ') || b.contains(' '))
        && a.split(' ')
            .any(|word| word.chars().count() >= 3 && b.split(' ').any(|other| other == word))
}

/// Whether one name is the other's initial (`j` and `john`).
fn initial_of(a: &str, b: &str) -> bool {
    let initial = |short: &str, long: &str| {
        short.chars().count() == 1 && long.chars().count() > 1 && long.starts_with(short)
    };
    initial(a, b) || initial(b, a)
}

fn name_level(field: Field, a: &str, b: &str) -> u8 {
    let level = |name: &str| field.level_index(name).unwrap_or(u8::MAX);
    if a == b {
        return level(EXACT);
    }
    if field == Field::FirstName && nicknames_of_one_name(a, b) {
        return level("nickname");
    }
    let similarity = similarity(a, b);
    if similarity >= 0.92 {
        level("jaro_winkler_0.92")
    } else if share_word(a, b) {
        level("shared_word")
    } else if similarity >= 0.80 {
        level("jaro_winkler_0.80")
    } else if field == Field::FirstName && initial_of(a, b) {
        level("initial")
    } else {
        level(ELSE)
    }
}

/// Given and last names, straight or swapped: a form filled in the wrong
/// order holds both names, crossed.
fn compare_names(a: &MatchFields, b: &MatchFields) -> (Option<u8>, Option<u8>) {
    let straight = (
        both_names(Field::FirstName, &a.first_name, &b.first_name),
        both_names(Field::LastName, &a.last_name, &b.last_name),
    );
    if let (Some(first_a), Some(last_a), Some(first_b), Some(last_b)) = (
        a.first_name.as_deref(),
        a.last_name.as_deref(),
        b.first_name.as_deref(),
        b.last_name.as_deref(),
    ) {
        let crossed = similarity(first_a, last_b) + similarity(last_a, first_b);
        let along = similarity(first_a, first_b) + similarity(last_a, last_b);
        if crossed >= 2.0 * SWAPPED_SIMILARITY_MIN && crossed > along + 0.1 {
            return (
                Field::FirstName.level_index(SWAPPED),
                Field::LastName.level_index(SWAPPED),
            );
        }
    }
    straight
}

fn both_names(field: Field, a: &Option<String>, b: &Option<String>) -> Option<u8> {
    Some(name_level(field, a.as_deref()?, b.as_deref()?))
}

/// Exact; one digit mistyped, two adjacent digits or day and month swapped;
/// the same year; else. Compared as `YYYYMMDD` digits.
fn compare_birthdays(a: &str, b: &str) -> u8 {
    if a == b {
        return 0;
    }
    let differing = a.bytes().zip(b.bytes()).filter(|(x, y)| x != y).count();
    let day_month_swapped =
        a.get(..4) == b.get(..4) && a.get(4..6) == b.get(6..8) && a.get(6..8) == b.get(4..6);
    if a.len() == b.len()
        && (differing == 1 || strsim::osa_distance(a, b) == 1 || day_month_swapped)
    {
        1
    } else if a.get(..4) == b.get(..4) {
        2
    } else {
        3
    }
}

fn compare_postal_codes(a: &str, b: &str) -> u8 {
    if a == b {
        0
    } else if strsim::osa_distance(a, b) == 1 {
        1
    } else if postal_district(a).is_some() && postal_district(a) == postal_district(b) {
        2
    } else {
        3
    }
}

fn compare_text(a: &str, b: &str) -> u8 {
    let similarity = similarity(a, b);
    if a == b {
        0
    } else if similarity >= 0.90 {
        1
    } else if similarity >= 0.75 {
        2
    } else {
        3
    }
}

/// The street name and `line2`, straight or crossed, whichever agrees
/// better: forms differ in which line the street goes on.
fn compare_address_lines(a: &MatchFields, b: &MatchFields) -> (Option<u8>, Option<u8>) {
    let sim = |x: &Option<String>, y: &Option<String>| match (x, y) {
        (Some(x), Some(y)) => similarity(x, y),
        _ => 0.0,
    };
    let along = sim(&a.street_name, &b.street_name) + sim(&a.line2, &b.line2);
    let crossed = sim(&a.street_name, &b.line2) + sim(&a.line2, &b.street_name);
    if crossed > along + 0.2 {
        (
            both(&a.street_name, &b.line2, compare_text),
            both(&a.line2, &b.street_name, compare_text),
        )
    } else {
        (
            both(&a.street_name, &b.street_name, compare_text),
            both(&a.line2, &b.line2, compare_text),
        )
    }
}

/// The closest pair of addresses: a mistyped copy, the same mailbox at
/// another provider, or else. `None` unless both sides have one.
fn compare_emails(a: &MatchFields, b: &MatchFields) -> Option<u8> {
    if a.emails.is_empty() || b.emails.is_empty() {
        return None;
    }
    let mut best = 2;
    for email_a in &a.emails {
        for email_b in &b.emails {
            if email_copy(email_a, email_b, a, b) {
                return Some(0);
            }
            let mailbox_a = mailbox(email_a);
            if mailbox_a == mailbox(email_b) && mailbox_a.chars().count() >= MAILBOX_CHARS_MIN {
                best = 1;
            }
        }
    }
    Some(best)
}

fn mailbox(email: &str) -> &str {
    email.split('@').next().unwrap_or_default()
}

/// Whether `email_b` reads as `email_a` mistyped: a few edits apart, the
/// same digits (a different number is another mailbox, as providers number
/// taken names), a mailbox long enough to be a person's, and not merely the
/// holders' own different names in one pattern.
fn email_copy(email_a: &str, email_b: &str, a: &MatchFields, b: &MatchFields) -> bool {
    let digits = |email: &str| -> String { email.chars().filter(char::is_ascii_digit).collect() };
    email_a != email_b
        && mailbox(email_a).chars().count() >= MAILBOX_CHARS_MIN
        && mailbox(email_b).chars().count() >= MAILBOX_CHARS_MIN
        && digits(email_a) == digits(email_b)
        && strsim::osa_distance(email_a, email_b) <= EMAIL_TYPO_EDITS_MAX
        && !mirrors_names(email_a, email_b, a, b)
}

/// True when the two addresses become one once each holder's own name is
/// blanked out, for names in which the holders differ: `jon.parker@` and
/// `joan.parker@` belong to Jon and Joan, not to one mistyping person.
fn mirrors_names(email_a: &str, email_b: &str, a: &MatchFields, b: &MatchFields) -> bool {
    let (mut blanked_a, mut blanked_b) = (email_a.to_owned(), email_b.to_owned());
    let mut blanked = false;
    let names = [
        (a.first_name.as_deref(), b.first_name.as_deref()),
        (a.last_name.as_deref(), b.last_name.as_deref()),
    ];
    for (name_a, name_b) in names {
        let (Some(name_a), Some(name_b)) = (name_a, name_b) else {
            continue;
        };
        let (word_a, word_b) = (mailbox_word(name_a), mailbox_word(name_b));
        if word_a == word_b || word_a.is_empty() || word_b.is_empty() {
            continue;
        }
        if blanked_a.contains(&word_a) && blanked_b.contains(&word_b) {
            blanked_a = blanked_a.replacen(&word_a, "\u{0}", 1);
            blanked_b = blanked_b.replacen(&word_b, "\u{0}", 1);
            blanked = true;
        }
    }
    blanked && blanked_a == blanked_b
}

/// A normalized name as mailboxes spell it: letters only.
fn mailbox_word(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: serde_json::Value) -> MatchFields {
        MatchFields::from_traits(value.as_object().expect("an object"))
    }

    fn level_name(comparison: &Comparison, field: Field) -> Option<&'static str> {
        comparison[field.index()].map(|level| field.levels()[usize::from(level)])
    }

    #[test]
    fn a_typo_a_nickname_and_swapped_names_each_have_their_level() {
        let a = fields(json!({"first_name": "Jon", "last_name": "Smith"}));
        let b = fields(json!({"first_name": "John", "last_name": "Smyth"}));
        let compared = compare(&a, &b);
        assert_eq!(level_name(&compared, Field::FirstName), Some("nickname"));
        assert_eq!(
            level_name(&compared, Field::LastName),
            Some("jaro_winkler_0.80")
        );
        let swapped = fields(json!({"first_name": "Smith", "last_name": "Jon"}));
        let compared = compare(&a, &swapped);
        assert_eq!(level_name(&compared, Field::FirstName), Some(SWAPPED));
        assert_eq!(level_name(&compared, Field::LastName), Some(SWAPPED));
    }

    #[test]
    fn multi_word_names_are_compared_whole_and_by_word() {
        let a = fields(json!({"last_name": "van Wijk"}));
        let b = fields(json!({"last_name": "Wijk"}));
        assert_eq!(
            level_name(&compare(&a, &b), Field::LastName),
            Some("shared_word")
        );
        let split = fields(json!({"first_name": "soph ie"}));
        let whole = fields(json!({"first_name": "Sophie"}));
        assert_eq!(
            level_name(&compare(&split, &whole), Field::FirstName),
            Some("jaro_winkler_0.92")
        );
    }

    #[test]
    fn birthdays_one_digit_apart_or_with_day_and_month_swapped_are_near() {
        let near = |x: &str, y: &str| {
            let a = fields(json!({"birthday": x}));
            let b = fields(json!({"birthday": y}));
            level_name(&compare(&a, &b), Field::Birthday)
        };
        assert_eq!(near("1961-04-09", "1961-04-09"), Some(EXACT));
        assert_eq!(
            near("1961-04-09", "1961-04-08"),
            Some("one_digit_or_transposed")
        );
        assert_eq!(
            near("1961-04-09", "1961-09-04"),
            Some("one_digit_or_transposed")
        );
        assert_eq!(
            near("1961-04-09", "1916-04-09"),
            Some("one_digit_or_transposed")
        );
        assert_eq!(near("1961-04-09", "1961-12-30"), Some("same_year"));
        assert_eq!(near("1961-04-09", "1975-12-30"), Some(ELSE));
        // A typo may leave an impossible date; it is still the person's.
        assert_eq!(
            near("1956-02-31", "1956-02-21"),
            Some("one_digit_or_transposed")
        );
    }

    #[test]
    fn a_street_in_line2_is_compared_with_the_street() {
        let a =
            fields(json!({"address": {"street": "14 Tarrant Close", "line2": "Kilmore House"}}));
        let b =
            fields(json!({"address": {"street": "14 Kilmore House", "line2": "Tarrant Close"}}));
        let compared = compare(&a, &b);
        assert_eq!(level_name(&compared, Field::StreetNumber), Some(EXACT));
        assert_eq!(level_name(&compared, Field::StreetName), Some(EXACT));
        assert_eq!(level_name(&compared, Field::Line2), Some(EXACT));
    }

    #[test]
    fn a_field_missing_on_either_side_has_no_level() {
        let a = fields(json!({"first_name": "Ann"}));
        let b = fields(json!({"last_name": "Lee", "birthday": "1980-01-02"}));
        assert_eq!(compare(&a, &b), [None; FIELD_COUNT]);
    }

    #[test]
    fn twins_addresses_are_not_copies_of_one_another() {
        let jon = fields(json!({"first_name": "Jon", "last_name": "Parker"}))
            .with_emails(["jon.parker@example.com"]);
        let joan = fields(json!({"first_name": "Joan", "last_name": "Parker"}))
            .with_emails(["joan.parker@example.com"]);
        assert_eq!(level_name(&compare(&jon, &joan), Field::Email), Some(ELSE));
        let typo = fields(json!({"first_name": "Jon", "last_name": "Parker"}))
            .with_emails(["jon.prker@example.com"]);
        assert_eq!(
            level_name(&compare(&jon, &typo), Field::Email),
            Some("mistyped_copy")
        );
    }
}
