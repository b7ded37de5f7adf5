//! The fields a profile is matched on, normalized once: names, birthday and
//! address, plus the emails it holds. A profile keeps several variants of
//! them ([`MatchProfile`]): every value it was known by, not only the
//! latest, so a record carrying an older spelling or address still finds it.

use serde::{Deserialize, Serialize};
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
/// Emails compared per profile; bounds the pairwise comparison.
const EMAILS_COMPARED_MAX: usize = 5;
/// Variants kept per profile. Each adds blocking keys and comparisons to
/// every match of the profile; a person is rarely known by more spellings
/// and addresses than this, and a profile that is (a shared account) is
/// better matched on its first and latest ones.
pub const VARIANTS_MAX: usize = 4;

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
const PLACEHOLDER_BIRTHDAYS: &[&str] = &["19000101", "19700101"];

/// One variant of a profile's matching fields (reserved trait names:
/// `first_name`, `last_name`, `birthday` `YYYY-MM-DD`, `address`
/// {`street`, `line2`, `city`, `postal_code`, `state`, `country`}).
///
/// Always normalized: names, city, street and line2 lowercased with Latin
/// accents folded and punctuation collapsed; the street split into its
/// house number and its name; postal code uppercase alphanumerics; country
/// upper-case ISO alpha-2; birthday as the eight digits `YYYYMMDD`, kept
/// even when a typo made it an impossible date, since `1956-02-31` is still
/// one digit away from the person's real birthday.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MatchFields {
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub(super) first_name: Option<String>,
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub(super) last_name: Option<String>,
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub(super) birthday: Option<String>,
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub(super) street_number: Option<String>,
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub(super) street_name: Option<String>,
    #[serde(rename = "2", default, skip_serializing_if = "Option::is_none")]
    pub(super) line2: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub(super) city: Option<String>,
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub(super) postal_code: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub(super) state: Option<String>,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub(super) country: Option<String>,
    /// Normalized email identifiers: not traits, but a mistyped address is
    /// the commonest way one person ends up with two profiles. Never stored
    /// with a variant: they are read from the profile's identifiers.
    #[serde(skip)]
    pub(super) emails: Vec<String>,
}

impl MatchFields {
    /// Adds the profile's (normalized) email identifiers as evidence.
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
                .and_then(scalar_text)
        };
        let (street_number, street_name) = address_text("street")
            .and_then(|street| normalize_words(&street, true, STREET_CHARS_MAX))
            .map(|street| split_street(&street))
            .unwrap_or_default();
        MatchFields {
            first_name: text("first_name").and_then(normalize_name),
            last_name: text("last_name").and_then(normalize_name),
            birthday: text("birthday").and_then(birthday_digits),
            street_number,
            street_name,
            line2: address_text("line2")
                .and_then(|line| normalize_words(&line, true, STREET_CHARS_MAX)),
            city: address_text("city")
                .and_then(|city| normalize_words(&city, false, NAME_CHARS_MAX)),
            postal_code: address_text("postal_code").and_then(|code| normalize_postal_code(&code)),
            state: address_text("state")
                .and_then(|state| normalize_words(&state, false, NAME_CHARS_MAX)),
            country: address_text("country").and_then(|country| normalize_country(&country)),
            emails: Vec::new(),
        }
    }

    /// True when nothing matching could use is known.
    pub fn is_empty(&self) -> bool {
        self.without_emails() == MatchFields::default() && self.emails.is_empty()
    }

    /// The variant as it is stored: emails belong to the profile's
    /// identifiers, not to the variant.
    pub fn without_emails(&self) -> MatchFields {
        MatchFields {
            emails: Vec::new(),
            ..self.clone()
        }
    }

    pub fn first_name(&self) -> Option<&str> {
        self.first_name.as_deref()
    }

    pub fn last_name(&self) -> Option<&str> {
        self.last_name.as_deref()
    }

    /// `YYYYMMDD`.
    pub fn birthday(&self) -> Option<&str> {
        self.birthday.as_deref()
    }

    pub fn postal_code(&self) -> Option<&str> {
        self.postal_code.as_deref()
    }

    pub fn city(&self) -> Option<&str> {
        self.city.as_deref()
    }

    pub fn emails(&self) -> &[String] {
        &self.emails
    }
}

/// Every variant a profile is matched on: its current fields first, then
/// the older ones it was known by (at most [`VARIANTS_MAX`] in all).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MatchProfile {
    variants: Vec<MatchFields>,
}

impl MatchProfile {
    /// `current` first, then `older` (newest first), without duplicates or
    /// empty variants. The profile's emails go with every variant.
    pub fn new(current: MatchFields, older: impl IntoIterator<Item = MatchFields>) -> MatchProfile {
        let emails = current.emails.clone();
        let mut variants: Vec<MatchFields> = Vec::with_capacity(VARIANTS_MAX);
        for variant in std::iter::once(current.without_emails()).chain(older) {
            let variant = variant.without_emails();
            if variants.len() == VARIANTS_MAX {
                break;
            }
            if variant != MatchFields::default() && !variants.contains(&variant) {
                variants.push(variant);
            }
        }
        if variants.is_empty() && !emails.is_empty() {
            variants.push(MatchFields::default());
        }
        for variant in &mut variants {
            variant.emails = emails.clone();
        }
        MatchProfile { variants }
    }

    pub fn variants(&self) -> &[MatchFields] {
        &self.variants
    }

    /// The variants to store beside the profile: all but the current one,
    /// which its traits already hold.
    pub fn older(&self) -> impl Iterator<Item = MatchFields> + '_ {
        self.variants
            .iter()
            .skip(1)
            .map(MatchFields::without_emails)
    }

    pub fn current(&self) -> Option<&MatchFields> {
        self.variants.first()
    }

    pub fn is_empty(&self) -> bool {
        self.variants.is_empty()
    }

    /// The profile as the store keeps it beside the profile record, so that
    /// scoring a candidate reads this small value instead of the record.
    pub fn encode(&self) -> Vec<u8> {
        let stored = StoredProfile {
            variants: self
                .variants
                .iter()
                .map(MatchFields::without_emails)
                .collect(),
            emails: self
                .variants
                .first()
                .map(|variant| variant.emails.clone())
                .unwrap_or_default(),
        };
        // Strings and options only: serialising cannot fail.
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<MatchProfile, serde_json::Error> {
        let stored: StoredProfile = serde_json::from_slice(bytes)?;
        let mut variants = stored.variants.into_iter();
        let current = variants
            .next()
            .unwrap_or_default()
            .with_emails(stored.emails.iter().map(String::as_str));
        Ok(MatchProfile::new(current, variants))
    }
}

#[derive(Serialize, Deserialize)]
struct StoredProfile {
    #[serde(rename = "v")]
    variants: Vec<MatchFields>,
    #[serde(rename = "e", default, skip_serializing_if = "Vec::is_empty")]
    emails: Vec<String>,
}

/// Postal codes and house numbers sometimes arrive as JSON numbers from
/// spreadsheets.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => number.as_u64().map(|code| code.to_string()),
        _ => None,
    }
}

/// Splits a normalized street into its house number (the leading words
/// holding digits, or a trailing one as continental addresses write it)
/// and its name.
fn split_street(street: &str) -> (Option<String>, Option<String>) {
    let words: Vec<&str> = street.split(' ').collect();
    let has_digit = |word: &str| word.bytes().any(|byte| byte.is_ascii_digit());
    let leading = words.iter().take_while(|word| has_digit(word)).count();
    let (number, name): (Vec<&str>, Vec<&str>) = if leading > 0 {
        (words[..leading].to_vec(), words[leading..].to_vec())
    } else if words.len() > 1 && words.last().is_some_and(|word| has_digit(word)) {
        (
            words[words.len() - 1..].to_vec(),
            words[..words.len() - 1].to_vec(),
        )
    } else {
        (Vec::new(), words)
    };
    let join = |parts: Vec<&str>| (!parts.is_empty()).then(|| parts.join(" "));
    (join(number), join(name))
}

/// `YYYY-MM-DD` (a trailing ISO time ignored) as `YYYYMMDD`, or `None` for
/// other shapes, implausible years and placeholder dates.
fn birthday_digits(text: &str) -> Option<String> {
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
    let digits: String = [date.get(0..4)?, date.get(5..7)?, date.get(8..10)?].concat();
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let year: u16 = digits.get(..4)?.parse().ok()?;
    if !(BIRTH_YEAR_MIN..=BIRTH_YEAR_MAX).contains(&year)
        || PLACEHOLDER_BIRTHDAYS.contains(&digits.as_str())
    {
        return None;
    }
    Some(digits)
}

fn normalize_name(raw: &str) -> Option<String> {
    let name = normalize_words(raw, false, NAME_CHARS_MAX)?;
    if PLACEHOLDER_NAMES.contains(&name.as_str()) {
        return None;
    }
    Some(name)
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
/// of five or more (a US sectional centre, a French département and more),
/// or the first two of a four-digit code (an Australian or Swiss region).
pub(super) fn postal_district(code: &str) -> Option<&str> {
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
    } else if bytes.len() == 4 {
        code.get(..2)
    } else {
        None
    }
}
