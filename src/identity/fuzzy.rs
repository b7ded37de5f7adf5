//! Fuzzy matching: finding profiles that share no identifier but are likely
//! the same person (design 2.5). Pure: no I/O, not async. The caller indexes
//! profiles by [`blocking_keys`], [`score`]s the pairs that share a key and
//! acts on [`decide`].
//!
//! # Why blocking keys look the way they do
//! Comparing every pair is quadratic, so a pair is only scored when the two
//! profiles share a key, and every key is built to be selective: it always
//! combines a name with a full birthday or a full postal code, or the two of
//! them without a name. A key of last name and birth *year* would be cheaper
//! to hit but holds thousands of Smiths in a large store. Name codes are
//! phonetic (Soundex, written out below because no phonetic crate is a
//! dependency) after mapping nicknames to one name, so `Jon`/`John` and
//! `Smith`/`Smyth` land on one key. Each name gets its own key under the same
//! prefix, whether it came as a first or a last name, so a typo in either name
//! still leaves the other name's key shared, and swapped names share both.
//! Emails give keys too (the mailbox; each name code with the provider):
//! a record keyed in by hand often carries a mistyped address and little
//! else to block on.
//!
//! # Why the score is a sum of log-likelihood ratios
//! Each compared field contributes the bits of evidence its outcome carries
//! (roughly `log2(P(outcome | same person) / P(outcome | different people))`,
//! the Fellegi–Sunter model): an exact birthday is rare between strangers
//! and so weighs a lot; a differing postal code is common between records of
//! one person who moved and so weighs little against. The sum becomes a
//! probability through a logistic curve offset by [`EVIDENCE_BITS_OFFSET`].
//! Averaging similarities over the fields present would score "the names agree
//! and nothing else is known" a perfect 1.0; summing evidence makes more
//! agreeing fields mean more confidence, and a field missing on either side
//! adds exactly nothing, which is what "missing neither helps nor hurts" means.
//! The weights are hand-set estimates, not fitted: the thresholds are the knob
//! to tune against labelled pairs (pairwise precision and recall). The name
//! weights are the same for every name; a shared `Smith` says less than a
//! shared `Oduya`, so the store, which counts names, adds evidence when the
//! full name is rare ([`MatchScore::with_name_frequency`]). Names alone never
//! decide.
//!
//! Fields are treated as independent, which they are not: a shared postal
//! code implies a shared city. City is therefore compared only when the postal
//! codes cannot be, so the same fact is not counted twice.
//!
//! # Why automatic merges need more than a score
//! A merge joins two people's histories, so [`decide`] also demands that both
//! names agree strongly and that an exact birthday or exact postal code is
//! backed by one more agreeing field. A near-miss on the first name never
//! counts as strong: that is what twins look like (same last name, birthday
//! and address; `Jon` and `Joan`). Two kinds of evidence are strong enough
//! to stand in for part of that: a mistyped copy of the address (typed by
//! the same hand as a slip in a name, never twins' own two addresses), and a
//! full name so rare in the store that a namesake born on the same day is
//! not to be expected.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use serde_json::{Map, Value};

/// Raw trait text read per field; bounds normalization work on hostile input.
const RAW_CHARS_MAX: usize = 256;
/// Longest normalized name or city kept; Jaro-Winkler is quadratic in length.
const NAME_CHARS_MAX: usize = 64;
const STREET_CHARS_MAX: usize = 100;
/// Longer than any national postal code format; longer values are not codes.
const POSTAL_CODE_CHARS_MAX: usize = 10;
const POSTAL_CODE_CHARS_MIN: usize = 3;
/// Birthdays outside these years are data-entry defaults or typos, and would
/// only produce large, meaningless blocks.
const BIRTH_YEAR_MIN: u16 = 1900;
const BIRTH_YEAR_MAX: u16 = 2100;

/// Emails of a profile that get blocking keys. A profile gathers addresses
/// over the years; the first ones are the person's own, and each adds index
/// writes to every change of the profile.
const EMAILS_BLOCKED_MAX: usize = 2;
/// Upper bound on [`blocking_keys`] per profile: two names times (birthday,
/// postal code), birthday with postal code, and three per blocked email.
pub const BLOCKING_KEYS_MAX: usize = 5 + 3 * EMAILS_BLOCKED_MAX;
/// Callers should skip scoring inside a block with more profiles than this:
/// such a block is made of placeholder data (a shop's own address, a default
/// birthday), and scoring it is quadratic.
pub const BLOCK_PROFILES_MAX: usize = 1_000;

/// Values that forms put in when the person gave none. Treated as missing, so
/// they neither match each other nor fill one block with unrelated people.
const PLACEHOLDER_NAMES: &[&str] = &[
    "anonymous",
    "customer",
    "n a",
    "na",
    "no name",
    "noname",
    "none",
    "null",
    "test",
    "unknown",
    "xxx",
];
/// Default dates of forms and of Unix timestamps. A person really born on one
/// of these loses birthday evidence; that is cheaper than false matches.
const PLACEHOLDER_BIRTHDAYS: &[(u16, u8, u8)] = &[(1900, 1, 1), (1970, 1, 1)];

/// Names that count as the same given name. A name may sit in several groups
/// (`chris`), but two names match only when they share a group, so
/// `christopher` and `christine` stay apart. The first name of a group stands
/// for the group in blocking keys.
#[rustfmt::skip]
const NICKNAME_GROUPS: &[&[&str]] = &[
    &["john", "jon", "jonathan", "johnny", "jonny", "jack"],
    &["robert", "rob", "robbie", "bob", "bobby"],
    &["william", "will", "bill", "billy", "willy", "willie"],
    &["elizabeth", "liz", "lizzie", "beth", "betty", "eliza", "libby", "bess"],
    &["katherine", "catherine", "kathryn", "kathleen", "kate", "katie", "kathy", "cathy", "kat"],
    &["michael", "mike", "mick", "mickey", "mikey"],
    &["james", "jim", "jimmy", "jimmie", "jamie"],
    &["thomas", "tom", "tommy"],
    &["david", "dave", "davy"],
    &["daniel", "dan", "danny"],
    &["christopher", "chris"],
    &["christine", "christina", "chris", "chrissy", "tina"],
    &["alexander", "alex", "alec", "sasha", "sandy"],
    &["alexandra", "alex", "sasha", "lexi", "sandy"],
    &["samuel", "sam", "sammy"],
    &["samantha", "sam", "sammy"],
    &["benjamin", "ben", "benny"],
    &["matthew", "matt", "matty"],
    &["nicholas", "nick", "nicky"],
    &["anthony", "tony", "antony"],
    &["stephen", "steven", "steve", "stevie"],
    &["margaret", "peggy", "maggie", "meg", "marge"],
    &["susan", "suzanne", "sue", "susie", "suzy"],
    &["jennifer", "jen", "jenny", "jenn"],
    &["andrew", "andy", "drew"],
    &["edward", "ed", "eddie", "ted", "ned"],
    &["richard", "rich", "rick", "ricky", "richie", "dick"],
    &["patrick", "pat", "paddy"],
    &["patricia", "pat", "patty", "trish", "tricia"],
    &["timothy", "tim", "timmy"],
    &["joseph", "joe", "joey"],
    &["joshua", "josh"],
    &["gregory", "greg"],
    &["lawrence", "laurence", "larry"],
    &["jeffrey", "geoffrey", "jeff", "geoff"],
    &["ronald", "ron", "ronnie"],
    &["donald", "don", "donnie"],
    &["kenneth", "ken", "kenny"],
    &["charles", "charlie", "chuck", "chas"],
    &["henry", "harry", "hank", "hal"],
    &["harold", "harry", "hal"],
    &["frederick", "fred", "freddie"],
    &["philip", "phillip", "phil"],
    &["peter", "pete"],
    &["francis", "frank", "frankie"],
    &["frances", "fran", "frankie"],
    &["gerald", "gerry", "jerry"],
    &["raymond", "ray"],
    &["douglas", "doug"],
    &["alfred", "alf", "alfie"],
    &["oliver", "ollie"],
    &["abigail", "abby", "abbie"],
    &["rebecca", "becky", "becca"],
    &["deborah", "debra", "debbie", "deb"],
    &["jessica", "jess", "jessie"],
    &["victoria", "vicky", "vicki", "tori"],
    &["amanda", "mandy"],
    &["pamela", "pam"],
    &["sandra", "sandy"],
    &["barbara", "barb", "babs"],
    &["dorothy", "dot", "dottie", "dolly"],
    &["isabel", "isabella", "izzy", "bella"],
    &["mary", "molly", "polly"],
    &["zachary", "zach", "zack"],
    &["nathaniel", "nathan", "nate"],
    &["jacob", "jake"],
    &["jacqueline", "jackie"],
    &["kimberly", "kimberley", "kim"],
    &["theresa", "teresa", "terri", "terry", "tess", "tessa"],
    &["eleanor", "elinor", "ellie", "nell", "nellie"],
    &["josephine", "jo", "josie"],
    &["joanne", "joanna", "jo"],
    &["penelope", "penny"],
    &["sophia", "sophie"],
    &["olivia", "liv", "livvy"],
    &["charlotte", "lottie", "charlie"],
    &["florence", "flo", "florrie"],
    &["harriet", "hattie"],
    &["emily", "em", "emmy"],
];

/// Each nickname's groups, built once: scoring looks names up for every
/// candidate pair.
static NICKNAMES: LazyLock<HashMap<&'static str, Vec<usize>>> = LazyLock::new(|| {
    let mut groups_by_name: HashMap<&'static str, Vec<usize>> = HashMap::new();
    for (group, names) in NICKNAME_GROUPS.iter().enumerate() {
        for name in names.iter() {
            groups_by_name.entry(name).or_default().push(group);
        }
    }
    groups_by_name
});

/// Bits of evidence per outcome of comparing two names.
struct NameWeights {
    /// Equal, or nicknames of one name.
    exact: f64,
    /// A likely typo or spelling variant.
    close: f64,
    /// One side gave only an initial, and it fits.
    initial: f64,
    /// One edit apart (a letter dropped, doubled, swapped or mistyped) yet
    /// not alike by Jaro-Winkler or sound: short names (`lee`/`lre`). As
    /// often another name one letter away (`jon`/`jan`) as a slip.
    typo: f64,
    disagree: f64,
}

const FIRST_NAME: NameWeights = NameWeights {
    exact: 4.0,
    close: 2.5,
    initial: 1.0,
    // Distinct given names one letter apart are common (Jon, Jan, Joan,
    // Dan, Don): such a pair says nothing either way.
    typo: 0.0,
    disagree: -3.0,
};
/// Family names are rarer than given names, so agreement says more; they
/// change with marriage, so disagreement says no more than for given names.
const LAST_NAME: NameWeights = NameWeights {
    exact: 6.0,
    close: 4.0,
    initial: 1.5,
    typo: 2.0,
    disagree: -3.0,
};
/// Used when one side's first name is compared with the other's last name.
/// A swap is itself a data-entry error, so a crossed agreement weighs less
/// than a straight one and needs a little more corroboration.
const CROSSED_NAME: NameWeights = NameWeights {
    exact: 4.5,
    close: 2.5,
    initial: 0.5,
    typo: 0.0,
    disagree: -3.0,
};
/// Jaro-Winkler at or above this is a typo-level difference (`jonh`/`john`).
const NAME_CLOSE_SIMILARITY_MIN: f64 = 0.92;
/// A weaker Jaro-Winkler still counts as close when the names also sound
/// alike (`smith`/`smyth` is 0.89).
const NAME_PHONETIC_SIMILARITY_MIN: f64 = 0.85;
/// Below this length one edit turns a name into an unrelated one (`al`/`ali`).
const NAME_TYPO_CHARS_MIN: usize = 3;

/// Strangers share an exact birthday about once in 20,000 pairs, which alone
/// would be worth some 14 bits; it is held at 7, below the two names together,
/// because default dates slip past any placeholder list. One person's records
/// rarely disagree on it, so a disagreement weighs heavily against; a typo
/// (day wrong within the month, or day and month transposed) keeps a little
/// positive weight.
const BIRTHDAY_EXACT: f64 = 7.0;
const BIRTHDAY_CLOSE: f64 = 1.5;
const BIRTHDAY_DISAGREE: f64 = -6.0;
/// A full postal code covers a few streets; but people move, so a differing
/// code is weak evidence against.
const POSTAL_CODE_EXACT: f64 = 6.0;
const POSTAL_CODE_DISTRICT: f64 = 2.0;
const POSTAL_CODE_DISAGREE: f64 = -1.5;
/// Street and city are minor: entered inconsistently, and shared by many.
const STREET_AGREE: f64 = 2.0;
const STREET_DISAGREE: f64 = -0.5;
const CITY_AGREE: f64 = 1.0;
const CITY_DISAGREE: f64 = -0.5;
const PLACE_SIMILARITY_MIN: f64 = 0.9;

/// The evidence, in bits, at which a pair scores 0.5. Two exactly matching
/// names (10 bits) stay below it; names plus an exact birthday (17 bits)
/// reach 0.97. It stands in for the prior odds that two profiles sharing a
/// blocking key are one person.
pub const EVIDENCE_BITS_OFFSET: f64 = 12.0;

/// Evidence field names, as they appear in [`FieldEvidence::field`].
pub const FIELD_FIRST_NAME: &str = "first_name";
pub const FIELD_LAST_NAME: &str = "last_name";
/// One side's first name against the other's last name (swapped names).
pub const FIELD_CROSSED_NAME: &str = "crossed_name";
pub const FIELD_BIRTHDAY: &str = "birthday";
pub const FIELD_POSTAL_CODE: &str = "postal_code";
pub const FIELD_STREET: &str = "street";
pub const FIELD_CITY: &str = "city";
pub const FIELD_EMAIL: &str = "email";
/// Not a trait: a call once carried identifiers of both profiles and merge
/// protection refused the link (a device or cookie seen with both).
pub const FIELD_REFUSED_LINK: &str = "refused_link";
/// Not a trait: the full name the pair shares, with the birthday, is rare
/// among the stored profiles (see [`MatchScore::with_name_frequency`]).
pub const FIELD_NAME_RARITY: &str = "name_rarity";
/// A full name expected on at most this many stored profiles is rare: the
/// chance that another holder shares the birthday is then about
/// `holders / 20,000` (below 3 in 10,000), while a record sharing name and
/// birthday with a profile is a duplicate far more often than that. A
/// `John Smith` in a store of a million profiles is expected hundreds of
/// times and never counts.
pub const RARE_NAME_HOLDERS_MAX: f64 = 5.0;
/// What a rare shared name adds: the fixed name weights assume a full name
/// shared by one pair in about 2^10, a rare one is shared far less often.
const RARE_NAME_BITS: f64 = 3.0;
/// A refused link is the same person's own device as often as a shared one:
/// on its own it proves nothing (that is why it was refused), beside
/// agreeing names and birthday it is strong corroboration.
const REFUSED_LINK_BITS: f64 = 5.0;

/// A validated calendar date of birth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Birthday {
    year: u16,
    month: u8,
    day: u8,
}

impl Birthday {
    /// Parses `YYYY-MM-DD` (a trailing ISO time is ignored). Impossible dates,
    /// implausible years and known placeholder dates give `None`.
    pub fn parse(text: &str) -> Option<Birthday> {
        let text = text.trim();
        let date = match text.as_bytes().get(10) {
            None => text,
            Some(b'T' | b' ') => text.get(..10)?,
            Some(_) => return None,
        };
        let bytes = date.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let year: u16 = digits(date.get(0..4)?)?;
        let month: u8 = digits(date.get(5..7)?)?;
        let day: u8 = digits(date.get(8..10)?)?;
        if !(BIRTH_YEAR_MIN..=BIRTH_YEAR_MAX).contains(&year)
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || PLACEHOLDER_BIRTHDAYS.contains(&(year, month, day))
        {
            return None;
        }
        Some(Birthday { year, month, day })
    }

    pub fn year(self) -> u16 {
        self.year
    }

    pub fn month(self) -> u8 {
        self.month
    }

    pub fn day(self) -> u8 {
        self.day
    }
}

impl fmt::Display for Birthday {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Only ASCII digits: `str::parse` would also accept a sign.
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.bytes().all(|byte| byte.is_ascii_digit()) {
        text.parse().ok()
    } else {
        None
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Matching-relevant fields extracted from a profile's traits (reserved trait
/// names: `first_name`, `last_name`, `birthday` `YYYY-MM-DD`, `address`
/// {`street`, `line2`, `city`, `postal_code`, `state`, `country`}).
///
/// Always normalized: names, city and street lowercased with Latin accents
/// folded and punctuation collapsed; postal code uppercase alphanumerics;
/// country upper-case ISO alpha-2. `line2` and `state` are not kept: the
/// former is entered inconsistently, the latter follows from the postal code.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MatchFields {
    first_name: Option<String>,
    last_name: Option<String>,
    birthday: Option<Birthday>,
    street: Option<String>,
    city: Option<String>,
    postal_code: Option<String>,
    country: Option<String>,
    /// Normalized email identifiers: not traits, but a mistyped address is
    /// the commonest way one person ends up with two profiles.
    emails: Vec<String>,
}

/// Emails compared per profile; bounds the pairwise comparison.
const EMAILS_COMPARED_MAX: usize = 5;
/// Edits (optimal string alignment) by which a mistyped copy differs at
/// most: a slip of the finger, or two. Counted in edits rather than by
/// Jaro-Winkler, whose matching window spans half of a long address and
/// scores one swapped letter in `campbell.jacqueline50809@hotmail.co.uk`
/// at 0.91.
const EMAIL_TYPO_EDITS_MAX: usize = 2;
/// A mistyped copy of one address, once the look-alikes that are not copies
/// are ruled out (see [`email_copy`]): numbered variants (`smith.family1@` /
/// `smith.family2@`, how providers hand out a taken name) and addresses that
/// differ only by their holders' own different names (`jon.parker@` /
/// `joan.parker@`, twins). What remains almost never joins two strangers,
/// so it weighs as much as names and a birthday together, and with agreeing
/// names it is corroboration enough (see [`decide`]).
const EMAIL_NEAR: f64 = 13.0;
/// The same mailbox name at another provider (`jane.doe@gmail.com` /
/// `jane.doe@work.com`).
const EMAIL_SAME_MAILBOX: f64 = 3.0;
/// Mailbox names shorter than this (`info`, `jo`) say little about a person.
const MAILBOX_CHARS_MIN: usize = 5;

impl MatchFields {
    /// Adds the profile's (normalized) email identifiers as evidence.
    /// Different addresses are no evidence against: people have several.
    pub fn with_emails<'a>(mut self, emails: impl IntoIterator<Item = &'a str>) -> MatchFields {
        self.emails = emails
            .into_iter()
            .take(EMAILS_COMPARED_MAX)
            .map(|email| email.chars().take(RAW_CHARS_MAX).collect())
            .collect();
        self
    }

    /// Values of the wrong JSON type, unparsable or placeholder values are
    /// treated as missing.
    pub fn from_traits(traits: &Map<String, Value>) -> MatchFields {
        let text = |name: &str| traits.get(name).and_then(Value::as_str);
        let address = traits.get("address").and_then(Value::as_object);
        let address_text = |name: &str| {
            address
                .and_then(|fields| fields.get(name))
                .and_then(Value::as_str)
        };
        MatchFields {
            first_name: text("first_name").and_then(normalize_name),
            last_name: text("last_name").and_then(normalize_name),
            birthday: text("birthday").and_then(Birthday::parse),
            street: address_text("street").and_then(normalize_street),
            city: address_text("city").and_then(normalize_city),
            postal_code: address
                .and_then(|fields| fields.get("postal_code"))
                .and_then(postal_code_text)
                .and_then(|code| normalize_postal_code(&code)),
            country: address_text("country").and_then(normalize_country),
            emails: Vec::new(),
        }
    }

    /// True when a last name comes with a birthday, a postal code or an
    /// email. Less than that gives no selective blocking key, and no match
    /// worth making: a first name and a birthday describe thousands of
    /// people.
    pub fn is_matchable(&self) -> bool {
        self.last_name.is_some()
            && (self.birthday.is_some() || self.postal_code.is_some() || !self.emails.is_empty())
    }

    pub fn first_name(&self) -> Option<&str> {
        self.first_name.as_deref()
    }

    pub fn last_name(&self) -> Option<&str> {
        self.last_name.as_deref()
    }

    pub fn birthday(&self) -> Option<Birthday> {
        self.birthday
    }

    pub fn street(&self) -> Option<&str> {
        self.street.as_deref()
    }

    pub fn city(&self) -> Option<&str> {
        self.city.as_deref()
    }

    pub fn postal_code(&self) -> Option<&str> {
        self.postal_code.as_deref()
    }

    pub fn country(&self) -> Option<&str> {
        self.country.as_deref()
    }

    /// The given name proper: middle names are often dropped, so only the
    /// first word of `first_name` is compared.
    fn given_name(&self) -> Option<&str> {
        self.first_name.as_deref().map(first_word)
    }
}

fn first_word(name: &str) -> &str {
    name.split(' ').next().unwrap_or(name)
}

/// Postal codes sometimes arrive as JSON numbers from spreadsheets.
fn postal_code_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => number.as_u64().map(|code| code.to_string()),
        _ => None,
    }
}

fn normalize_name(raw: &str) -> Option<String> {
    let name = normalize_words(raw, false, NAME_CHARS_MAX)?;
    if PLACEHOLDER_NAMES.contains(&name.as_str()) {
        return None;
    }
    Some(name)
}

fn normalize_city(raw: &str) -> Option<String> {
    normalize_words(raw, false, NAME_CHARS_MAX)
}

/// Digits are kept: the house number is the most telling part of a street.
fn normalize_street(raw: &str) -> Option<String> {
    normalize_words(raw, true, STREET_CHARS_MAX)
}

/// Lowercases, folds accents, drops apostrophes (`O'Brien` is `obrien`) and
/// turns every other run of non-letters into one space.
fn normalize_words(raw: &str, keep_digits: bool, chars_max: usize) -> Option<String> {
    let mut words = String::new();
    let mut separated = false;
    for c in raw.chars().take(RAW_CHARS_MAX) {
        // Combining accents (decomposed input) and apostrophes are not word
        // breaks: `rene\u{301}e` is one word, as is `o'brien`.
        if is_combining_mark(c) || matches!(c, '\'' | '\u{2019}' | '`') {
            continue;
        }
        if c.is_alphabetic() || (keep_digits && c.is_ascii_digit()) {
            if separated && !words.is_empty() {
                words.push(' ');
            }
            separated = false;
            for lower in c.to_lowercase() {
                push_folded(&mut words, lower);
            }
        } else {
            separated = true;
        }
    }
    if let Some((end, _)) = words.char_indices().nth(chars_max) {
        words.truncate(end);
    }
    let words = words.trim_end();
    (!words.is_empty()).then(|| words.to_owned())
}

fn is_combining_mark(c: char) -> bool {
    ('\u{300}'..='\u{36f}').contains(&c)
}

/// Folds the accented Latin letters of Western and Central European names to
/// ASCII so `José`/`Jose` and `Müller`/`Muller` compare equal; other scripts
/// are kept as they are.
fn push_folded(out: &mut String, c: char) {
    let folded = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' | 'ħ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' | 'ı' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' | 'ŀ' | 'ł' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ŏ' | 'ő' => "o",
        'œ' => "oe",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'ß' => "ss",
        'ţ' | 'ť' | 'ŧ' => "t",
        'þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => {
            out.push(c);
            return;
        }
    };
    out.push_str(folded);
}

/// Keeps letters and digits only, so `sw1a 1aa` and `SW1A-1AA` are one code.
fn normalize_postal_code(raw: &str) -> Option<String> {
    let code: String = raw
        .chars()
        .take(RAW_CHARS_MAX)
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let length_ok = (POSTAL_CODE_CHARS_MIN..=POSTAL_CODE_CHARS_MAX).contains(&code.len());
    // `00000` and the like are what forms hold when no code was given.
    let placeholder = code.bytes().all(|byte| Some(byte) == code.bytes().next());
    (length_ok && !placeholder).then_some(code)
}

fn normalize_country(raw: &str) -> Option<String> {
    let code = raw.trim();
    (code.len() == 2 && code.bytes().all(|byte| byte.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// The part of a postal code that names an area larger than a street: the
/// outward code of a UK-shaped code (`SW1A` of `SW1A1AA`, whose inward part is
/// always digit, letter, letter), else the first three characters of a code
/// of five or more (a US sectional centre, a French département and more).
fn postal_district(code: &str) -> Option<&str> {
    let bytes = code.as_bytes();
    let uk_shaped = (5..=7).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[bytes.len() - 3].is_ascii_digit()
        && bytes[bytes.len() - 2].is_ascii_alphabetic()
        && bytes[bytes.len() - 1].is_ascii_alphabetic();
    if uk_shaped {
        code.get(..bytes.len() - 3)
    } else if bytes.len() >= 5 {
        code.get(..3)
    } else {
        None
    }
}

/// American Soundex (`Robert` → `R163`), over ASCII letters only; `None` when
/// a name has none, so that two non-Latin names never look alike by accident.
fn soundex(name: &str) -> Option<[u8; 4]> {
    let mut letters = name.bytes().filter(u8::is_ascii_alphabetic);
    let first = letters.next()?;
    let mut code = [b'0'; 4];
    code[0] = first.to_ascii_uppercase();
    let mut filled = 1;
    let mut previous = soundex_digit(first);
    for letter in letters {
        if filled == code.len() {
            break;
        }
        // `h` and `w` do not separate two equal codes, vowels do.
        if matches!(letter, b'h' | b'w') {
            continue;
        }
        let digit = soundex_digit(letter);
        if digit != 0 && digit != previous {
            code[filled] = b'0' + digit;
            filled += 1;
        }
        previous = digit;
    }
    Some(code)
}

fn soundex_digit(letter: u8) -> u8 {
    match letter.to_ascii_lowercase() {
        b'b' | b'f' | b'p' | b'v' => 1,
        b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => 2,
        b'd' | b't' => 3,
        b'l' => 4,
        b'm' | b'n' => 5,
        b'r' => 6,
        _ => 0,
    }
}

/// The name standing for all of `name`'s nicknames, or `name` itself.
fn canonical_name(name: &str) -> &str {
    NICKNAMES
        .get(name)
        .and_then(|groups| groups.first())
        .and_then(|&group| NICKNAME_GROUPS.get(group))
        .and_then(|names| names.first())
        .copied()
        .unwrap_or(name)
}

fn nicknames_of_one_name(a: &str, b: &str) -> bool {
    match (NICKNAMES.get(a), NICKNAMES.get(b)) {
        (Some(groups_a), Some(groups_b)) => groups_a.iter().any(|group| groups_b.contains(group)),
        _ => false,
    }
}

/// The short code a name contributes to blocking keys: phonetic, after
/// nicknames are mapped to one name. A name without Latin letters is used
/// as it is (spaces removed, so keys stay unambiguous).
fn name_code(name: &str) -> String {
    let canonical = canonical_name(name);
    match soundex(canonical) {
        Some(code) => code.iter().map(|&byte| char::from(byte)).collect(),
        None => canonical.chars().filter(|c| *c != ' ').take(8).collect(),
    }
}

/// Blocking keys: a profile is compared only with profiles sharing at least
/// one key. At most [`BLOCKING_KEYS_MAX`] keys, each a name code, birthday or
/// postal code paired with another of them:
/// - `nb:<name code>:<YYYY-MM-DD>` and `np:<name code>:<postal code>`, once
///   for the given name and once for the last name. The prefix does not say
///   which name it was, so swapped names share keys, and a typo in one name
///   leaves the other name's keys;
/// - `bp:<YYYY-MM-DD>:<postal code>`, which survives typos in both names;
/// - per email (the first [`EMAILS_BLOCKED_MAX`]): `em:<mailbox>`, which
///   finds the same mailbox at a mistyped provider (`gmial.com`), and
///   `en:<name code>:<digits>@<domain>` once per name, which finds a
///   mistyped mailbox at the same provider even when one name is mistyped
///   too. A copy keeps the mailbox's digits (see [`email_copy`]), so they
///   narrow the block at no cost in recall; without them, names and
///   provider alone made blocks of dozens at ten thousand profiles, every
///   member scored on every identify. Most such records carry no birthday
///   or postal code to block on. A digitless mailbox of a common name at a
///   big provider still outgrows the block cap and is skipped.
///
/// Profiles that are not [`MatchFields::is_matchable`] get none. The keys
/// hold personal data: index them, never log them.
pub fn blocking_keys(fields: &MatchFields) -> Vec<String> {
    if !fields.is_matchable() {
        return Vec::new();
    }
    let mut codes: Vec<String> = fields
        .given_name()
        .into_iter()
        .chain(fields.last_name.as_deref())
        .map(name_code)
        .collect();
    codes.dedup();
    let birthday = fields.birthday.map(|date| date.to_string());
    let postal_code = fields.postal_code.as_deref();
    let mut keys = Vec::with_capacity(BLOCKING_KEYS_MAX);
    for code in &codes {
        if let Some(date) = &birthday {
            keys.push(format!("nb:{code}:{date}"));
        }
        if let Some(postal_code) = postal_code {
            keys.push(format!("np:{code}:{postal_code}"));
        }
    }
    if let (Some(date), Some(postal_code)) = (&birthday, postal_code) {
        keys.push(format!("bp:{date}:{postal_code}"));
    }
    for email in fields.emails.iter().take(EMAILS_BLOCKED_MAX) {
        let Some((mailbox, domain)) = email.rsplit_once('@') else {
            continue;
        };
        // Short mailboxes (`info`, `jo`) are shared by too many people.
        let mailbox_key =
            (mailbox.chars().count() >= MAILBOX_CHARS_MIN).then(|| format!("em:{mailbox}"));
        let digits: String = mailbox.chars().filter(char::is_ascii_digit).collect();
        let name_keys = codes
            .iter()
            .map(|code| format!("en:{code}:{digits}@{domain}"));
        for key in mailbox_key.into_iter().chain(name_keys) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    debug_assert!(keys.len() <= BLOCKING_KEYS_MAX);
    keys
}

/// How many stored profiles carry a pair's names, from which the store
/// judges how rare the full name is. Names are counted apart (given names
/// by the name standing for their nicknames), since a full name's count
/// would be one key per person; the full name's frequency is then the
/// product of the two, as if given and family names were independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameCounts {
    /// Profiles counted: those with both a given and a last name.
    pub profiles: u64,
    /// Of them, those with this given name (or one of its nicknames).
    pub given: u64,
    pub last: u64,
}

impl NameCounts {
    /// Profiles expected to carry the full name; infinite when nothing is
    /// counted, so that no name looks rare in an empty store.
    pub fn holders_expected(&self) -> f64 {
        if self.profiles == 0 {
            return f64::INFINITY;
        }
        self.given as f64 * self.last as f64 / self.profiles as f64
    }
}

/// The keys under which a profile's names are counted (`g:<given name>`,
/// `l:<last name>`), or `None` unless it has both names. Like blocking
/// keys, they hold personal data.
pub fn name_count_keys(fields: &MatchFields) -> Option<[String; 2]> {
    let given = canonical_name(fields.given_name()?);
    let last = fields.last_name.as_deref()?;
    Some([format!("g:{given}"), format!("l:{last}")])
}

/// How one field compared.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldEvidence {
    /// One of the `FIELD_*` names; a field missing on either side has no entry.
    pub field: &'static str,
    /// In [0, 1]: Jaro-Winkler for names, street and city (1 for nicknames
    /// of one name, 0 for streets with different house numbers); 1, 0.5 or 0
    /// for exact, near and different birthdays and postal codes.
    pub similarity: f64,
    /// Bits of evidence the comparison contributes: positive for agreement,
    /// negative for a disagreement.
    pub weight: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MatchScore {
    /// In [0, 1]: the summed evidence through a logistic curve.
    pub score: f64,
    /// In a fixed field order, so that equal pairs give equal evidence.
    pub evidence: Vec<FieldEvidence>,
}

impl MatchScore {
    /// Adds the evidence of a refused link between the two profiles.
    pub fn with_refused_link(mut self) -> MatchScore {
        self.evidence.push(FieldEvidence {
            field: FIELD_REFUSED_LINK,
            similarity: 1.0,
            weight: REFUSED_LINK_BITS,
        });
        self.score = probability(self.evidence_bits());
        self
    }

    /// Whether both names agree exactly (equal or nicknames of one name,
    /// straight or swapped) and so do the birthdays: the case in which how
    /// common the name is decides between one person and two namesakes
    /// born on one day.
    pub fn names_and_birthday_exact(&self) -> bool {
        let straight = self
            .weight_of(FIELD_FIRST_NAME)
            .is_some_and(|weight| weight >= FIRST_NAME.exact)
            && self
                .weight_of(FIELD_LAST_NAME)
                .is_some_and(|weight| weight >= LAST_NAME.exact);
        let crossed = self.crossed_names_exact();
        let birthday = self
            .weight_of(FIELD_BIRTHDAY)
            .is_some_and(|weight| weight >= BIRTHDAY_EXACT);
        (straight || crossed) && birthday
    }

    /// Adds [`FIELD_NAME_RARITY`] evidence when the names and birthday agree
    /// exactly and the full name is expected on at most
    /// [`RARE_NAME_HOLDERS_MAX`] stored profiles (see [`NameCounts`]).
    pub fn with_name_frequency(mut self, holders_expected: f64) -> MatchScore {
        // NaN compares false: no evidence.
        if self.names_and_birthday_exact() && holders_expected <= RARE_NAME_HOLDERS_MAX {
            self.evidence.push(FieldEvidence {
                field: FIELD_NAME_RARITY,
                similarity: 1.0,
                weight: RARE_NAME_BITS,
            });
            self.score = probability(self.evidence_bits());
        }
        self
    }

    fn crossed_names_exact(&self) -> bool {
        let mut crossed = self
            .evidence
            .iter()
            .filter(|evidence| evidence.field == FIELD_CROSSED_NAME)
            .peekable();
        crossed.peek().is_some() && crossed.all(|evidence| evidence.weight >= CROSSED_NAME.exact)
    }

    /// The summed evidence, in bits.
    pub fn evidence_bits(&self) -> f64 {
        self.evidence.iter().map(|evidence| evidence.weight).sum()
    }

    fn weight_of(&self, field: &str) -> Option<f64> {
        self.evidence
            .iter()
            .find(|evidence| evidence.field == field)
            .map(|evidence| evidence.weight)
    }
}

/// Scores how likely `a` and `b` are one person. Symmetric: `score(a, b)`
/// equals `score(b, a)`.
pub fn score(a: &MatchFields, b: &MatchFields) -> MatchScore {
    let mut evidence = compare_names(a, b);
    if let (Some(date_a), Some(date_b)) = (a.birthday, b.birthday) {
        evidence.push(compare_birthdays(date_a, date_b));
    }
    let postal_codes = a.postal_code.as_deref().zip(b.postal_code.as_deref());
    if let Some((code_a, code_b)) = postal_codes {
        let countries_differ = matches!(
            (&a.country, &b.country),
            (Some(country_a), Some(country_b)) if country_a != country_b
        );
        evidence.push(compare_postal_codes(code_a, code_b, countries_differ));
    }
    if let (Some(street_a), Some(street_b)) = (&a.street, &b.street) {
        evidence.push(compare_streets(street_a, street_b));
    }
    if postal_codes.is_none() {
        if let (Some(city_a), Some(city_b)) = (&a.city, &b.city) {
            let similarity = jaro_winkler(city_a, city_b);
            let weight = if similarity >= PLACE_SIMILARITY_MIN {
                CITY_AGREE
            } else {
                CITY_DISAGREE
            };
            evidence.push(evidence_of(FIELD_CITY, similarity, weight));
        }
    }
    evidence.extend(compare_emails(a, b));
    let bits: f64 = evidence.iter().map(|evidence| evidence.weight).sum();
    MatchScore {
        score: probability(bits),
        evidence,
    }
}

fn probability(bits: f64) -> f64 {
    1.0 / (1.0 + (EVIDENCE_BITS_OFFSET - bits).exp2())
}

fn evidence_of(field: &'static str, similarity: f64, weight: f64) -> FieldEvidence {
    FieldEvidence {
        field,
        similarity,
        weight,
    }
}

/// Compares names straight (first with first, last with last) and, when both
/// sides have both names, crossed; the reading with more evidence wins.
/// The closest pair of addresses, if any pair says something: a mistyped
/// copy, or the same mailbox name at another provider. Unrelated addresses
/// give no evidence either way.
fn compare_emails(a: &MatchFields, b: &MatchFields) -> Option<FieldEvidence> {
    let mut best: Option<FieldEvidence> = None;
    for (email_a, email_b) in a
        .emails
        .iter()
        .flat_map(|x| b.emails.iter().map(move |y| (x, y)))
    {
        let similarity = jaro_winkler(email_a, email_b);
        let (mailbox_a, mailbox_b) = (mailbox(email_a), mailbox(email_b));
        let weight = if email_copy(email_a, email_b, a, b) {
            EMAIL_NEAR
        } else if mailbox_a == mailbox_b && mailbox_a.chars().count() >= MAILBOX_CHARS_MIN {
            EMAIL_SAME_MAILBOX
        } else {
            continue;
        };
        if best.as_ref().is_none_or(|current| weight > current.weight) {
            best = Some(evidence_of(FIELD_EMAIL, similarity, weight));
        }
    }
    best
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
        (a.given_name(), b.given_name()),
        (a.last_name(), b.last_name()),
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

/// A normalized name as mailboxes spell it: letters only (`obrien nunez` →
/// `obriennunez`).
fn mailbox_word(name: &str) -> String {
    name.chars().filter(|c| c.is_alphanumeric()).collect()
}

fn compare_names(a: &MatchFields, b: &MatchFields) -> Vec<FieldEvidence> {
    let mut straight = Vec::with_capacity(2);
    if let (Some(given_a), Some(given_b)) = (a.given_name(), b.given_name()) {
        let (similarity, agreement) = compare_name(given_a, given_b);
        straight.push(evidence_of(
            FIELD_FIRST_NAME,
            similarity,
            agreement.weight(&FIRST_NAME),
        ));
    }
    if let (Some(last_a), Some(last_b)) = (&a.last_name, &b.last_name) {
        let (similarity, agreement) = compare_name(last_a, last_b);
        straight.push(evidence_of(
            FIELD_LAST_NAME,
            similarity,
            agreement.weight(&LAST_NAME),
        ));
    }
    let (Some(given_a), Some(last_a), Some(given_b), Some(last_b)) = (
        a.given_name(),
        a.last_name.as_deref(),
        b.given_name(),
        b.last_name.as_deref(),
    ) else {
        return straight;
    };
    let mut crossed: Vec<FieldEvidence> = [(given_a, last_b), (last_a, given_b)]
        .into_iter()
        .map(|(name_a, name_b)| {
            let (similarity, agreement) = compare_name(name_a, name_b);
            evidence_of(
                FIELD_CROSSED_NAME,
                similarity,
                agreement.weight(&CROSSED_NAME),
            )
        })
        .collect();
    // Which crossed pair comes first depends on argument order; sorting keeps
    // score(a, b) equal to score(b, a).
    crossed.sort_by(|x, y| {
        y.weight
            .total_cmp(&x.weight)
            .then(y.similarity.total_cmp(&x.similarity))
    });
    let bits = |evidence: &[FieldEvidence]| -> f64 { evidence.iter().map(|e| e.weight).sum() };
    if bits(&crossed) > bits(&straight) {
        crossed
    } else {
        straight
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameAgreement {
    Exact,
    Close,
    Initial,
    Typo,
    Disagree,
}

impl NameAgreement {
    fn weight(self, weights: &NameWeights) -> f64 {
        match self {
            NameAgreement::Exact => weights.exact,
            NameAgreement::Close => weights.close,
            NameAgreement::Initial => weights.initial,
            NameAgreement::Typo => weights.typo,
            NameAgreement::Disagree => weights.disagree,
        }
    }
}

fn compare_name(a: &str, b: &str) -> (f64, NameAgreement) {
    if a == b || nicknames_of_one_name(a, b) {
        return (1.0, NameAgreement::Exact);
    }
    let similarity = jaro_winkler(a, b);
    let is_initial_of =
        |initial: &str, name: &str| initial.chars().count() == 1 && name.starts_with(initial);
    if is_initial_of(a, b) || is_initial_of(b, a) {
        return (similarity, NameAgreement::Initial);
    }
    let sound_alike = matches!((soundex(a), soundex(b)), (Some(x), Some(y)) if x == y);
    let agreement = if similarity >= NAME_CLOSE_SIMILARITY_MIN
        || (sound_alike && similarity >= NAME_PHONETIC_SIMILARITY_MIN)
    {
        NameAgreement::Close
    } else if a.chars().count() >= NAME_TYPO_CHARS_MIN
        && b.chars().count() >= NAME_TYPO_CHARS_MIN
        && strsim::osa_distance(a, b) == 1
    {
        NameAgreement::Typo
    } else {
        NameAgreement::Disagree
    };
    (similarity, agreement)
}

/// Jaro-Winkler with the arguments in a fixed order: the greedy character
/// matching of Jaro is not guaranteed to be symmetric.
fn jaro_winkler(a: &str, b: &str) -> f64 {
    if a <= b {
        strsim::jaro_winkler(a, b)
    } else {
        strsim::jaro_winkler(b, a)
    }
}

fn compare_birthdays(a: Birthday, b: Birthday) -> FieldEvidence {
    let (similarity, weight) = if a == b {
        (1.0, BIRTHDAY_EXACT)
    } else if a.year == b.year && (a.month == b.month || (a.month == b.day && a.day == b.month)) {
        (0.5, BIRTHDAY_CLOSE)
    } else {
        (0.0, BIRTHDAY_DISAGREE)
    };
    evidence_of(FIELD_BIRTHDAY, similarity, weight)
}

/// Equal codes in different countries are different places (`75001` is Paris
/// and a town in Texas).
fn compare_postal_codes(a: &str, b: &str, countries_differ: bool) -> FieldEvidence {
    let (similarity, weight) = if countries_differ {
        (0.0, POSTAL_CODE_DISAGREE)
    } else if a == b {
        (1.0, POSTAL_CODE_EXACT)
    } else if postal_district(a).is_some() && postal_district(a) == postal_district(b) {
        (0.5, POSTAL_CODE_DISTRICT)
    } else {
        (0.0, POSTAL_CODE_DISAGREE)
    };
    evidence_of(FIELD_POSTAL_CODE, similarity, weight)
}

/// Two addresses on one street differ only in the house number, which
/// Jaro-Winkler barely sees; different numbers are a disagreement outright.
fn compare_streets(a: &str, b: &str) -> FieldEvidence {
    let (numbers_a, numbers_b) = (house_numbers(a), house_numbers(b));
    let numbers_conflict = !numbers_a.is_empty()
        && !numbers_b.is_empty()
        && !numbers_a.iter().any(|number| numbers_b.contains(number));
    if numbers_conflict {
        return evidence_of(FIELD_STREET, 0.0, STREET_DISAGREE);
    }
    let similarity = jaro_winkler(a, b);
    let weight = if similarity >= PLACE_SIMILARITY_MIN {
        STREET_AGREE
    } else {
        STREET_DISAGREE
    };
    evidence_of(FIELD_STREET, similarity, weight)
}

fn house_numbers(street: &str) -> Vec<&str> {
    street
        .split(' ')
        .filter(|word| word.bytes().any(|byte| byte.is_ascii_digit()))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchThresholds {
    /// Score at or above which a corroborated pair is merged without review.
    pub auto_merge: f64,
    /// Score at or above which a pair is listed for review. A score below it
    /// is no match even if it reaches `auto_merge` (a misconfiguration).
    pub review: f64,
    /// Agreeing fields besides the names an automatic merge needs, one of
    /// them an exact birthday or postal code (a mistyped copy of an address
    /// counts as two, a rare full name as one). 2 by default; 1 lets names
    /// and an exact birthday alone merge (with `auto_merge` ≤ 0.97), which
    /// raises recall but, in a large population, merges some namesakes born
    /// on the same day whatever their names.
    pub corroborating_fields_min: usize,
}

impl Default for MatchThresholds {
    /// `auto_merge` 0.99 is about 18.6 bits of evidence: names plus an exact
    /// birthday and postal code (23 bits) clear it, names plus a postal code
    /// and street (18 bits: a father and son of one name at one address)
    /// do not. `review` 0.5 is [`EVIDENCE_BITS_OFFSET`]: matching names need
    /// at least one more agreeing field to be worth a reviewer's time.
    fn default() -> Self {
        MatchThresholds {
            auto_merge: 0.99,
            review: 0.5,
            corroborating_fields_min: 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchDecision {
    AutoMerge,
    Review,
    NoMatch,
}

/// AutoMerge needs `score >= auto_merge` and corroborating evidence: both
/// names agree strongly (the given names equal or nicknames of one name, the
/// last names at least close; crossed names both exact) and an exact birthday
/// or exact postal code is backed by one more agreeing field (a rare full
/// name counts as one). Never names alone, never names and one other field.
/// A mistyped copy of an address is the exception: with names that agree
/// or differ by a slip it anchors a match and counts as two fields.
pub fn decide(score: &MatchScore, thresholds: &MatchThresholds) -> MatchDecision {
    // Comparisons with NaN are false, so a NaN score is no match.
    let reviewable = score.score >= thresholds.review;
    if !reviewable {
        return MatchDecision::NoMatch;
    }
    if score.score >= thresholds.auto_merge
        && corroborated(score, thresholds.corroborating_fields_min)
    {
        MatchDecision::AutoMerge
    } else {
        MatchDecision::Review
    }
}

fn corroborated(score: &MatchScore, agreeing_fields_min: usize) -> bool {
    let email_copy = score
        .weight_of(FIELD_EMAIL)
        .is_some_and(|weight| weight >= EMAIL_NEAR);
    let names_agree = match (
        score.weight_of(FIELD_FIRST_NAME),
        score.weight_of(FIELD_LAST_NAME),
    ) {
        // Beside a mistyped copy of the address, a slip in either name is
        // one more slip of the same hand; the score still has to clear the
        // threshold, which a slip in both names does not. Without it, a
        // near-miss on the given name is what twins look like.
        (Some(first), Some(last)) if email_copy => {
            first >= FIRST_NAME.typo && last >= LAST_NAME.typo
        }
        (Some(first), Some(last)) => first >= FIRST_NAME.exact && last >= LAST_NAME.close,
        _ => score.crossed_names_exact(),
    };
    // A mistyped copy of an address is nearly an identifier: it anchors a
    // match as an exact birthday or postal code does, and counts as two
    // agreeing fields.
    let anchored = email_copy
        || score
            .weight_of(FIELD_BIRTHDAY)
            .is_some_and(|weight| weight >= BIRTHDAY_EXACT)
        || score
            .weight_of(FIELD_POSTAL_CODE)
            .is_some_and(|weight| weight >= POSTAL_CODE_EXACT);
    let agreeing_other_fields: usize = score
        .evidence
        .iter()
        .filter(|evidence| {
            !matches!(
                evidence.field,
                FIELD_FIRST_NAME | FIELD_LAST_NAME | FIELD_CROSSED_NAME
            ) && evidence.weight > 0.0
        })
        .map(|evidence| {
            if evidence.field == FIELD_EMAIL && evidence.weight >= EMAIL_NEAR {
                2
            } else {
                1
            }
        })
        .sum();
    names_agree && anchored && agreeing_other_fields >= agreeing_fields_min.max(1)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A profile from a "First Last" name, a birthday and a postal code; empty
    /// strings leave the trait out.
    fn person(name: &str, birthday: &str, postal_code: &str) -> MatchFields {
        let mut traits = Map::new();
        let mut words = name.split_whitespace();
        if let Some(first) = words.next() {
            traits.insert("first_name".into(), json!(first));
        }
        if let Some(last) = words.next() {
            traits.insert("last_name".into(), json!(last));
        }
        if !birthday.is_empty() {
            traits.insert("birthday".into(), json!(birthday));
        }
        if !postal_code.is_empty() {
            traits.insert("address".into(), json!({ "postal_code": postal_code }));
        }
        MatchFields::from_traits(&traits)
    }

    fn fields(traits: Value) -> MatchFields {
        match traits {
            Value::Object(map) => MatchFields::from_traits(&map),
            _ => panic!("traits must be an object"),
        }
    }

    fn share_a_key(a: &MatchFields, b: &MatchFields) -> bool {
        let keys_b = blocking_keys(b);
        blocking_keys(a).iter().any(|key| keys_b.contains(key))
    }

    fn decision(a: &MatchFields, b: &MatchFields) -> MatchDecision {
        decide(&score(a, b), &MatchThresholds::default())
    }

    #[test]
    fn nickname_and_surname_typo_with_birthday_and_postcode_auto_merge() {
        let jon = person("Jon Smith", "1985-03-02", "SW1A 1AA");
        let john = person("John Smyth", "1985-03-02", "sw1a1aa");
        assert!(share_a_key(&jon, &john));
        assert_eq!(decision(&jon, &john), MatchDecision::AutoMerge);
    }

    #[test]
    fn same_name_with_different_birthday_and_postcode_is_no_match() {
        let older = person("John Smith", "1962-11-30", "M1 1AE");
        let younger = person("Jon Smith", "1985-03-02", "SW1A 1AA");
        assert!(!share_a_key(&older, &younger));
        assert_eq!(decision(&older, &younger), MatchDecision::NoMatch);
    }

    #[test]
    fn swapped_names_share_a_key_and_match() {
        let swapped = person("Smith John", "1985-03-02", "SW1A 1AA");
        let straight = person("John Smith", "1985-03-02", "SW1A 1AA");
        assert!(share_a_key(&swapped, &straight));
        let scored = score(&swapped, &straight);
        assert!(
            scored
                .evidence
                .iter()
                .any(|evidence| evidence.field == FIELD_CROSSED_NAME)
        );
        assert_eq!(
            decide(&scored, &MatchThresholds::default()),
            MatchDecision::AutoMerge
        );
    }

    #[test]
    fn common_name_alone_does_not_match_different_people() {
        let one = person("James Brown", "1970-05-12", "90210");
        let other = person("James Brown", "1988-09-23", "10001");
        assert_eq!(decision(&one, &other), MatchDecision::NoMatch);
    }

    #[test]
    fn name_and_birthday_alone_are_at_most_review() {
        let one = person("Maria Garcia", "1990-07-14", "");
        let other = person("Maria Garcia", "1990-07-14", "");
        assert_eq!(decision(&one, &other), MatchDecision::Review);
    }

    #[test]
    fn names_alone_are_no_match() {
        let one = person("Maria Garcia", "", "");
        let other = person("Maria Garcia", "", "");
        assert_eq!(decision(&one, &other), MatchDecision::NoMatch);
    }

    #[test]
    fn twins_with_similar_given_names_are_only_reviewed() {
        let jon = person("Jon Parker", "2001-06-09", "LS1 4AP");
        let joan = person("Joan Parker", "2001-06-09", "LS1 4AP");
        assert_eq!(decision(&jon, &joan), MatchDecision::Review);
    }

    #[test]
    fn a_mistyped_email_lets_a_typo_in_the_given_name_merge() {
        let jon = person("Jonathan Parker", "2001-06-09", "LS1 4AP")
            .with_emails(["jonathan.parker@gmail.com"]);
        let typed = person("Jonatahn Parker", "2001-06-09", "LS1 4AP")
            .with_emails(["jonathan.praker@gmail.com"]);
        assert_eq!(decision(&jon, &typed), MatchDecision::AutoMerge);
        let unrelated_email = person("Jonatahn Parker", "2001-06-09", "LS1 4AP")
            .with_emails(["jp.leeds@outlook.com"]);
        assert_eq!(decision(&jon, &unrelated_email), MatchDecision::Review);
        // Twins with their own addresses stay apart.
        let joan = person("Joan Parker", "2001-06-09", "LS1 4AP").with_emails(["joan.p@gmail.com"]);
        let jon = person("Jon Parker", "2001-06-09", "LS1 4AP").with_emails(["jon.p@gmail.com"]);
        assert_ne!(decision(&jon, &joan), MatchDecision::AutoMerge);
    }

    #[test]
    fn same_name_and_a_mistyped_email_merge_without_other_fields() {
        let typed = person("Jacqueline Campbell", "", "")
            .with_emails(["camlbell.jacqueline50809@hotmail.co.uk"]);
        let original = person("Jacqueline Campbell", "2004-11-23", "LS23 1ZL")
            .with_emails(["campbell.jacqueline50809@hotmail.co.uk"]);
        assert!(typed.is_matchable());
        assert!(share_a_key(&typed, &original));
        assert_eq!(decision(&typed, &original), MatchDecision::AutoMerge);
        // The same names with an unrelated address are names alone.
        let other = person("Jacqueline Campbell", "", "").with_emails(["jc.leeds@gmail.com"]);
        assert_eq!(decision(&other, &original), MatchDecision::NoMatch);
    }

    #[test]
    fn a_mistyped_provider_shares_the_mailbox_key() {
        let typed = person("Leo Khan", "", "").with_emails(["leokhan50291@outlok.com"]);
        let original =
            person("Leo Khan", "1982-01-25", "").with_emails(["leokhan50291@outlook.com"]);
        assert!(blocking_keys(&typed).contains(&"em:leokhan50291".to_owned()));
        assert_eq!(decision(&typed, &original), MatchDecision::AutoMerge);
    }

    #[test]
    fn a_slip_in_one_name_beside_a_mistyped_email_merges() {
        let original =
            person("Amy Lee", "1986-03-15", "L1 0BH").with_emails(["amylee50759@gmail.com"]);
        // `lre` is neither alike to `lee` by Jaro-Winkler nor by sound.
        let typed = person("Amy Lre", "", "L1 0BH").with_emails(["amylee50759@gmial.com"]);
        assert_eq!(compare_name("lre", "lee").1, NameAgreement::Typo);
        assert!(share_a_key(&typed, &original));
        assert_eq!(decision(&typed, &original), MatchDecision::AutoMerge);
        // Without the email, a surname one letter off is not enough.
        let no_email = person("Amy Lre", "", "L1 0BH");
        assert_ne!(decision(&no_email, &original), MatchDecision::AutoMerge);
    }

    #[test]
    fn numbered_addresses_are_different_mailboxes() {
        let one = person("John Smith", "", "").with_emails(["john.smith1@gmail.com"]);
        let two = person("John Smith", "", "").with_emails(["john.smith2@gmail.com"]);
        // Not even compared: the digits are part of the email keys.
        assert!(!share_a_key(&one, &two));
        assert_eq!(score(&one, &two).weight_of(FIELD_EMAIL), None);
        assert_eq!(decision(&one, &two), MatchDecision::NoMatch);
    }

    #[test]
    fn addresses_that_differ_by_their_holders_names_are_no_copy() {
        let jon = person("Jon Parker", "2001-06-09", "").with_emails(["jon.parker@gmail.com"]);
        let joan = person("Joan Parker", "2001-06-09", "").with_emails(["joan.parker@gmail.com"]);
        assert_eq!(score(&jon, &joan).weight_of(FIELD_EMAIL), None);
        assert_ne!(decision(&jon, &joan), MatchDecision::AutoMerge);
    }

    #[test]
    fn a_rare_full_name_with_the_birthday_merges_a_common_one_does_not() {
        let bob = person("Bob Oduya", "1992-12-01", "").with_emails(["bob.oduya@acme.com"]);
        let robert =
            person("Robert Oduya", "1992-12-01", "EH1 1YZ").with_emails(["robert.oduya@gmail.com"]);
        let scored = score(&bob, &robert);
        assert!(scored.names_and_birthday_exact());
        assert_eq!(
            decide(&scored, &MatchThresholds::default()),
            MatchDecision::Review
        );
        let rare = NameCounts {
            profiles: 1_000_000,
            given: 2_000,
            last: 40,
        };
        assert!(rare.holders_expected() <= RARE_NAME_HOLDERS_MAX);
        assert_eq!(
            decide(
                &scored.clone().with_name_frequency(rare.holders_expected()),
                &MatchThresholds::default()
            ),
            MatchDecision::AutoMerge
        );
        let common = NameCounts {
            profiles: 1_000_000,
            given: 20_000,
            last: 10_000,
        };
        assert_eq!(
            decide(
                &scored.with_name_frequency(common.holders_expected()),
                &MatchThresholds::default()
            ),
            MatchDecision::Review
        );
        // Swapped names count as the same full name.
        let swapped = person("Oduya Robert", "1992-12-01", "");
        let crossed = score(&swapped, &robert).with_name_frequency(rare.holders_expected());
        assert_eq!(
            decide(&crossed, &MatchThresholds::default()),
            MatchDecision::AutoMerge
        );
    }

    #[test]
    fn rarity_needs_exact_names_and_birthday() {
        let twin = person("Jon Oduya", "1992-12-01", "EH1 1YZ");
        let other_twin = person("Joan Oduya", "1992-12-01", "EH1 1YZ");
        let scored = score(&twin, &other_twin);
        assert!(!scored.names_and_birthday_exact());
        assert_eq!(scored.clone().with_name_frequency(0.0), scored);
        let father = person("Paul Oduya", "1960-03-02", "EH1 1YZ");
        let son = person("Paul Oduya", "1990-07-21", "EH1 1YZ");
        let scored = score(&father, &son);
        assert_eq!(scored.clone().with_name_frequency(0.0), scored);
        assert_eq!(
            NameCounts {
                profiles: 0,
                given: 0,
                last: 0
            }
            .holders_expected(),
            f64::INFINITY
        );
    }

    #[test]
    fn name_count_keys_use_the_name_behind_a_nickname() {
        let bob = person("Bob Oduya", "1992-12-01", "");
        assert_eq!(
            name_count_keys(&bob),
            Some(["g:robert".to_owned(), "l:oduya".to_owned()])
        );
        assert_eq!(name_count_keys(&person("Oduya", "1992-12-01", "")), None);
    }

    #[test]
    fn common_nicknames_are_known() {
        for (nickname, name) in [
            ("jack", "john"),
            ("jamie", "james"),
            ("sandy", "alexander"),
            ("harry", "harold"),
            ("ray", "raymond"),
            ("ollie", "oliver"),
            ("kathy", "kathleen"),
            ("jo", "josephine"),
            ("sophie", "sophia"),
            ("emmy", "emily"),
        ] {
            assert_eq!(
                compare_name(nickname, name).1,
                NameAgreement::Exact,
                "{nickname}"
            );
        }
    }

    #[test]
    fn different_emails_are_no_evidence_against() {
        let a = person("Anna Kowalski", "1979-02-28", "B1 1AA");
        let with_emails = |email: &str| a.clone().with_emails([email]);
        assert_eq!(
            score(&a, &a).score,
            score(
                &with_emails("anna@home.pl"),
                &with_emails("kowalski.a@work.com")
            )
            .score
        );
    }

    #[test]
    fn father_and_son_at_one_address_are_only_reviewed() {
        // Without birthdays, one name at one address cannot tell a father
        // from his namesake son: the records are identical.
        let address = json!({ "street": "12 Acacia Avenue", "postal_code": "BS1 5TR" });
        let father =
            fields(json!({ "first_name": "Paul", "last_name": "Jones", "address": address }));
        let son = father.clone();
        assert_eq!(decision(&father, &son), MatchDecision::Review);
    }

    #[test]
    fn missing_fields_neither_help_nor_hurt() {
        let full = fields(json!({
            "first_name": "Anna", "last_name": "Kowalski", "birthday": "1979-02-28",
            "address": { "street": "4 Mill Lane", "city": "Leeds", "postal_code": "LS6 2AB" },
        }));
        let sparse = fields(json!({
            "first_name": "Ana", "last_name": "Kowalska", "birthday": "1979-02-28",
        }));
        let full_without_address = fields(json!({
            "first_name": "Anna", "last_name": "Kowalski", "birthday": "1979-02-28",
        }));
        let with_gap = score(&full, &sparse);
        let both_missing = score(&full_without_address, &sparse);
        assert_eq!(with_gap, both_missing);
        assert!(with_gap.evidence.iter().all(|evidence| matches!(
            evidence.field,
            FIELD_FIRST_NAME | FIELD_LAST_NAME | FIELD_BIRTHDAY
        )));
    }

    #[test]
    fn profile_without_names_has_no_blocking_keys() {
        let email_only = fields(json!({ "email": "someone@example.com", "plan": "pro" }));
        assert_eq!(email_only, MatchFields::default());
        assert!(!email_only.is_matchable());
        assert!(blocking_keys(&email_only).is_empty());
        let no_names = person("", "1985-03-02", "SW1A 1AA");
        assert!(blocking_keys(&no_names).is_empty());
    }

    #[test]
    fn blocking_keys_are_few_and_survive_a_typo_in_either_name() {
        let original = person("Katherine Oduya", "1992-12-01", "EH1 1YZ");
        let keys = blocking_keys(&original);
        assert!(keys.len() <= BLOCKING_KEYS_MAX);
        assert!(keys.contains(&"bp:1992-12-01:EH11YZ".to_owned()));
        for typo in ["Xatherine Oduya", "Katherine Qduya", "Kate Oduya"] {
            assert!(
                share_a_key(&original, &person(typo, "1992-12-01", "")),
                "{typo}"
            );
        }
    }

    #[test]
    fn score_is_symmetric() {
        let people = [
            person("Jon Smith", "1985-03-02", "SW1A 1AA"),
            person("John Smyth", "1985-02-03", "SW1A 2AA"),
            person("Smith John", "", "SW1A 1AA"),
            person("J Smith", "1985-03-02", ""),
            person("Christine Bauer", "1960-01-31", "80331"),
            person("Chris Baur", "1960-01-31", "80339"),
            person("Christopher Bauer", "1960-01-13", ""),
            fields(json!({
                "first_name": "Ángel", "last_name": "Núñez",
                "address": { "street": "Calle Mayor 5", "city": "Madrid", "country": "ES" },
            })),
            fields(json!({
                "first_name": "Angel", "last_name": "Nunez",
                "address": { "street": "Calle Mayor 7", "city": "Madrit", "country": "es" },
            })),
        ];
        for a in &people {
            for b in &people {
                assert_eq!(score(a, b), score(b, a), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn normalization_folds_case_accents_and_punctuation() {
        let messy = fields(json!({
            "first_name": "  JOSÉ ", "last_name": "O'Brien-Núñez",
            "birthday": "1985-03-02T00:00:00Z",
            "address": { "street": "10, Downing St.", "city": "LONDON", "postal_code": "sw1a-2aa", "country": "gb" },
        }));
        assert_eq!(messy.first_name(), Some("jose"));
        assert_eq!(messy.last_name(), Some("obrien nunez"));
        assert_eq!(
            messy.birthday().map(|date| date.to_string()).as_deref(),
            Some("1985-03-02")
        );
        assert_eq!(messy.street(), Some("10 downing st"));
        assert_eq!(messy.city(), Some("london"));
        assert_eq!(messy.postal_code(), Some("SW1A2AA"));
        assert_eq!(messy.country(), Some("GB"));
    }

    #[test]
    fn unusable_values_are_missing() {
        let junk = fields(json!({
            "first_name": "Test", "last_name": 42, "birthday": "1985-02-30",
            "address": { "postal_code": "00000", "country": "Britain" },
        }));
        assert_eq!(junk, MatchFields::default());
        assert_eq!(Birthday::parse("1970-01-01"), None);
        assert_eq!(Birthday::parse("+985-03-02"), None);
        assert!(Birthday::parse("2000-02-29").is_some());
        assert_eq!(Birthday::parse("1900-02-29"), None);
    }

    #[test]
    fn soundex_follows_the_standard_rules() {
        let code =
            |name: &str| soundex(name).map(|code| String::from_utf8_lossy(&code).into_owned());
        assert_eq!(code("robert").as_deref(), Some("R163"));
        assert_eq!(code("rupert").as_deref(), Some("R163"));
        assert_eq!(code("ashcraft").as_deref(), Some("A261"));
        assert_eq!(code("tymczak").as_deref(), Some("T522"));
        assert_eq!(code("pfister").as_deref(), Some("P236"));
        assert_eq!(code("lee").as_deref(), Some("L000"));
        assert_eq!(code("иванов"), None);
    }

    #[test]
    fn nicknames_match_only_within_a_group() {
        assert_eq!(compare_name("bob", "robert").1, NameAgreement::Exact);
        assert_eq!(compare_name("chris", "christine").1, NameAgreement::Exact);
        assert_eq!(compare_name("chris", "christopher").1, NameAgreement::Exact);
        assert_ne!(
            compare_name("christopher", "christine").1,
            NameAgreement::Exact
        );
        assert_eq!(name_code("bill"), name_code("william"));
    }

    #[test]
    fn birthday_typos_keep_a_little_weight() {
        let date = |text: &str| Birthday::parse(text).unwrap_or_else(|| panic!("{text}"));
        let weight = |a: &str, b: &str| compare_birthdays(date(a), date(b)).weight;
        assert_eq!(weight("1985-03-02", "1985-03-02"), BIRTHDAY_EXACT);
        assert_eq!(weight("1985-03-02", "1985-02-03"), BIRTHDAY_CLOSE);
        assert_eq!(weight("1985-03-02", "1985-03-12"), BIRTHDAY_CLOSE);
        assert_eq!(weight("1985-03-02", "1958-03-02"), BIRTHDAY_DISAGREE);
    }

    #[test]
    fn postal_codes_compare_by_district_and_country() {
        assert_eq!(postal_district("SW1A1AA"), Some("SW1A"));
        assert_eq!(postal_district("M11AE"), Some("M1"));
        assert_eq!(postal_district("90210"), Some("902"));
        assert_eq!(
            compare_postal_codes("SW1A1AA", "SW1A2AA", false).weight,
            POSTAL_CODE_DISTRICT
        );
        assert_eq!(
            compare_postal_codes("75001", "75001", true).weight,
            POSTAL_CODE_DISAGREE
        );
    }

    #[test]
    fn different_house_numbers_disagree() {
        assert_eq!(
            compare_streets("12 high street", "21 high street").weight,
            STREET_DISAGREE
        );
        assert_eq!(
            compare_streets("12 high street", "12 high st").weight,
            STREET_AGREE
        );
    }
}
