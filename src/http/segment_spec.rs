//! Messages of the Segment tracking spec (identify, track, page, screen,
//! alias, group) translated into Sightline's calls. Pure: no I/O, no
//! normalization; the caller resolves what needs the store.
//!
//! The mapping follows the spec's common and reserved fields: `userId`,
//! `anonymousId`, `traits.email`, `traits.phone` (also in `context.traits`)
//! and `context.device.id` become identifiers; camelCase reserved traits
//! become Sightline's snake_case reserved traits; `page` and `screen`
//! become `Page Viewed` and `Screen Viewed` events.

use serde_json::{Map, Value};

use crate::model::UnixMillis;
use crate::service::{Json, RawIdentifier, ServiceError};

/// The spec's call types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Identify,
    Track,
    Page,
    Screen,
    Alias,
    Group,
}

impl MessageType {
    pub fn parse(text: &str) -> Option<MessageType> {
        Some(match text {
            "identify" => MessageType::Identify,
            "track" => MessageType::Track,
            "page" => MessageType::Page,
            "screen" => MessageType::Screen,
            "alias" => MessageType::Alias,
            "group" => MessageType::Group,
            _ => return None,
        })
    }
}

/// One message, translated.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub message_id: String,
    /// When the call happened, corrected for the client's clock; `None`
    /// when the message carries no time (the time of receipt then).
    pub timestamp: Option<UnixMillis>,
    /// The sending library, for provenance.
    pub source: String,
    /// Identifiers the message names in its own fields (`userId`,
    /// `anonymousId`, `context.device.id`): a malformed one rejects it.
    pub identifiers: Vec<RawIdentifier>,
    /// Identifiers found among traits, with the field they came from: a
    /// malformed one is dropped and reported, the message still counts.
    pub trait_identifiers: Vec<(String, RawIdentifier)>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Identify {
        traits: Json,
    },
    Track {
        event: String,
        properties: Json,
    },
    /// Link `previous_id` (an anonymous id or an earlier user id) with the
    /// message's `userId`.
    Alias {
        previous_id: String,
    },
    /// Record membership of a group, with the group's traits.
    Group {
        group_id: String,
        traits: Json,
    },
}

/// Source names are kept to characters that need no escaping anywhere.
const SOURCE_LIBRARY_CHARS_MAX: usize = 48;

/// Translates one message. `kind` is the endpoint's type, or `None` for a
/// batch item, whose `type` field then decides. `batch_sent_at` is the
/// batch's `sentAt`, used when the message has none; `received_at` is now.
pub fn translate(
    message: &Value,
    kind: Option<MessageType>,
    batch_sent_at: Option<&Value>,
    received_at: UnixMillis,
) -> Result<Translated, ServiceError> {
    let message = message
        .as_object()
        .ok_or_else(|| ServiceError::invalid("", "a message is a JSON object"))?;
    let kind = match kind {
        Some(kind) => kind,
        None => {
            let text = message.get("type").and_then(Value::as_str).ok_or_else(|| {
                ServiceError::invalid(
                    "type",
                    "a batch message needs a type: identify, track, page, screen, alias or group",
                )
            })?;
            MessageType::parse(text).ok_or_else(|| {
                ServiceError::invalid(
                    "type",
                    "unknown type; expected identify, track, page, screen, alias or group",
                )
            })?
        }
    };
    let context = object_field(message, "context")?;
    let mut identifiers = Vec::new();
    let user_id = id_field(message, "userId")?;
    if let Some(user_id) = &user_id {
        identifiers.push(raw("user_id", user_id));
    }
    if let Some(anonymous_id) = id_field(message, "anonymousId")? {
        identifiers.push(raw("anonymous_id", &anonymous_id));
    }
    if let Some(device) = context.and_then(|context| context.get("device")) {
        if let Some(device_id) = device.get("id").and_then(id_text) {
            identifiers.push(raw("device_id", &device_id));
        }
    }
    let traits = object_field(message, "traits")?;
    let context_traits = context
        .map(|context| object_field(context, "traits"))
        .transpose()?
        .flatten();
    let mut trait_identifiers = Vec::new();
    // The group's traits describe the group, not the person.
    let person_traits = match kind {
        MessageType::Group => None,
        _ => traits,
    };
    for (prefix, source) in [
        ("traits", person_traits),
        ("context.traits", context_traits),
    ] {
        for name in ["email", "phone"] {
            let value = source
                .and_then(|traits| traits.get(name))
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|value| !value.is_empty());
            if let Some(value) = value {
                let found = raw(name, value);
                if !trait_identifiers.iter().any(|(_, known)| *known == found) {
                    trait_identifiers.push((format!("{prefix}.{name}"), found));
                }
            }
        }
    }
    let action = match kind {
        MessageType::Identify => Action::Identify {
            traits: person_traits.map(reserved_traits).unwrap_or_default(),
        },
        MessageType::Track => {
            let event = message
                .get("event")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ServiceError::invalid("event", "a track call needs an event name")
                })?;
            Action::Track {
                event: event.to_owned(),
                properties: object_field(message, "properties")?
                    .cloned()
                    .unwrap_or_default(),
            }
        }
        MessageType::Page | MessageType::Screen => {
            let mut properties = object_field(message, "properties")?
                .cloned()
                .unwrap_or_default();
            for name in ["name", "category"] {
                if let Some(value) = message.get(name).filter(|value| !value.is_null()) {
                    properties
                        .entry(name.to_owned())
                        .or_insert_with(|| value.clone());
                }
            }
            let event = if kind == MessageType::Page {
                "Page Viewed"
            } else {
                "Screen Viewed"
            };
            Action::Track {
                event: event.to_owned(),
                properties,
            }
        }
        MessageType::Alias => {
            let previous_id = id_field(message, "previousId")?.ok_or_else(|| {
                ServiceError::invalid("previousId", "an alias call needs a previousId")
            })?;
            if user_id.is_none() {
                return Err(ServiceError::invalid(
                    "userId",
                    "an alias call needs the userId to link previousId with",
                ));
            }
            Action::Alias { previous_id }
        }
        MessageType::Group => {
            let group_id = id_field(message, "groupId")?
                .ok_or_else(|| ServiceError::invalid("groupId", "a group call needs a groupId"))?;
            Action::Group {
                group_id,
                traits: traits.cloned().unwrap_or_default(),
            }
        }
    };
    if identifiers.is_empty() && trait_identifiers.is_empty() {
        return Err(ServiceError::invalid(
            "userId",
            "a message needs a userId or an anonymousId",
        ));
    }
    let sent_at = match message.get("sentAt").filter(|value| !value.is_null()) {
        Some(sent_at) => Some(time_field(sent_at, "sentAt")?),
        None => batch_sent_at
            .filter(|value| !value.is_null())
            .map(|sent_at| time_field(sent_at, "sentAt"))
            .transpose()?,
    };
    let original = ["timestamp", "originalTimestamp"]
        .into_iter()
        .find_map(|name| {
            message
                .get(name)
                .filter(|value| !value.is_null())
                .map(|value| time_field(value, name))
        })
        .transpose()?;
    Ok(Translated {
        message_id: message
            .get("messageId")
            .and_then(id_text)
            .unwrap_or_default(),
        timestamp: original.map(|at| corrected_time(at, sent_at, received_at)),
        source: source(context),
        identifiers,
        trait_identifiers,
        action,
    })
}

/// The client's clock may be wrong: what counts is how long before sending
/// the call happened, measured on that clock, taken back from the time the
/// server received it (`receivedAt − (sentAt − timestamp)`), as Segment
/// does.
fn corrected_time(at: i64, sent_at: Option<i64>, received_at: UnixMillis) -> UnixMillis {
    match sent_at {
        Some(sent_at) => UnixMillis(received_at.0.saturating_sub(sent_at.saturating_sub(at))),
        None => UnixMillis(at),
    }
}

/// Segment's reserved traits in Sightline's names; the others unchanged.
/// `email` and `phone` are identifiers, not traits.
fn reserved_traits(traits: &Map<String, Value>) -> Json {
    let mut mapped = Json::new();
    for (sent_name, value) in traits {
        let name = match sent_name.as_str() {
            "email" | "phone" => continue,
            "firstName" => "first_name",
            "lastName" => "last_name",
            "createdAt" => "created_at",
            other => other,
        };
        let value = match (name, value) {
            ("address", Value::Object(address)) => Value::Object(address_fields(address)),
            ("birthday", Value::String(text)) => Value::String(birth_date(text)),
            _ => value.clone(),
        };
        // A snake_case spelling sent beside the camelCase one wins.
        let renamed = name != sent_name;
        if !(renamed && mapped.contains_key(name)) {
            mapped.insert(name.to_owned(), value);
        }
    }
    if !mapped.contains_key("first_name") && !mapped.contains_key("last_name") {
        if let Some(Value::String(full)) = traits.get("name") {
            if let Some((first, last)) = full.trim().split_once(char::is_whitespace) {
                mapped.insert("first_name".to_owned(), Value::String(first.to_owned()));
                mapped.insert(
                    "last_name".to_owned(),
                    Value::String(last.trim().to_owned()),
                );
            }
        }
    }
    mapped
}

fn address_fields(address: &Map<String, Value>) -> Map<String, Value> {
    address
        .iter()
        .map(|(name, value)| {
            let name = match name.as_str() {
                "postalCode" | "zip" | "zipCode" => "postal_code",
                "line1" | "streetAddress" => "street",
                "addressLine2" => "line2",
                other => other,
            };
            (name.to_owned(), value.clone())
        })
        .collect()
}

/// The spec allows a full ISO-8601 time for `birthday`; the reserved trait
/// is a date.
fn birth_date(text: &str) -> String {
    let date = text.trim().get(..10).unwrap_or(text.trim());
    match chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d") {
        Ok(_) => date.to_owned(),
        Err(_) => text.to_owned(),
    }
}

fn source(context: Option<&Map<String, Value>>) -> String {
    let library = context
        .and_then(|context| context.get("library"))
        .and_then(|library| library.get("name"))
        .and_then(Value::as_str)
        .map(|name| {
            name.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '/'))
                .take(SOURCE_LIBRARY_CHARS_MAX)
                .collect::<String>()
        })
        .filter(|name| !name.is_empty());
    match library {
        Some(library) => format!("http:{library}"),
        None => "http".to_owned(),
    }
}

fn raw(kind: &str, value: &str) -> RawIdentifier {
    RawIdentifier {
        kind: kind.to_owned(),
        value: value.to_owned(),
    }
}

fn object_field<'a>(
    object: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, ServiceError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(inner)) => Ok(Some(inner)),
        Some(_) => Err(ServiceError::invalid(name, "must be a JSON object")),
    }
}

/// Ids are strings in the spec; SDKs also send numbers.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.trim().to_owned()).filter(|text| !text.is_empty()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn id_field(object: &Map<String, Value>, name: &str) -> Result<Option<String>, ServiceError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match id_text(value) {
            Some(text) => Ok(Some(text)),
            None if value.as_str().is_some() => Ok(None),
            None => Err(ServiceError::invalid(name, "must be a string")),
        },
    }
}

fn time_field(value: &Value, name: &str) -> Result<i64, ServiceError> {
    value
        .as_str()
        .and_then(parse_time)
        .ok_or_else(|| ServiceError::invalid(name, "must be an ISO-8601 date and time"))
}

/// Milliseconds since the epoch of an ISO-8601 time; one without an offset
/// is taken as UTC.
fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(at.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(at) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(at.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|at| at.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

    fn one(message: Value, kind: Option<MessageType>) -> Translated {
        translate(&message, kind, None, NOW).expect("translates")
    }

    #[test]
    fn identify_maps_ids_trait_identifiers_and_reserved_traits() {
        let translated = one(
            json!({
                "userId": "u1", "anonymousId": "a1", "messageId": "m1",
                "context": {"device": {"id": "d1"}, "library": {"name": "analytics-python"},
                            "traits": {"email": "x@example.com"}},
                "traits": {"email": "ada@example.com", "phone": "+44 20 7946 0958",
                           "firstName": "Ada", "lastName": "Lovelace", "plan": "pro",
                           "birthday": "1815-12-10T00:00:00.000Z",
                           "address": {"postalCode": "W1", "street": "1 Main St", "city": "London"}}
            }),
            Some(MessageType::Identify),
        );
        assert_eq!(translated.message_id, "m1");
        assert_eq!(translated.source, "http:analytics-python");
        let kinds: Vec<_> = translated
            .identifiers
            .iter()
            .map(|id| id.kind.as_str())
            .collect();
        assert_eq!(kinds, ["user_id", "anonymous_id", "device_id"]);
        let fields: Vec<_> = translated
            .trait_identifiers
            .iter()
            .map(|(field, _)| field.as_str())
            .collect();
        assert_eq!(
            fields,
            ["traits.email", "traits.phone", "context.traits.email"]
        );
        let Action::Identify { traits } = translated.action else {
            panic!("an identify");
        };
        assert_eq!(traits["first_name"], "Ada");
        assert_eq!(traits["last_name"], "Lovelace");
        assert_eq!(traits["plan"], "pro");
        assert_eq!(traits["birthday"], "1815-12-10");
        assert_eq!(traits["address"]["postal_code"], "W1");
        assert!(!traits.contains_key("email") && !traits.contains_key("phone"));
    }

    #[test]
    fn a_full_name_fills_first_and_last_name_when_they_are_missing() {
        let translated = one(
            json!({"userId": "u1", "traits": {"name": "Grace Brewster Hopper"}}),
            Some(MessageType::Identify),
        );
        let Action::Identify { traits } = translated.action else {
            panic!("an identify");
        };
        assert_eq!(traits["first_name"], "Grace");
        assert_eq!(traits["last_name"], "Brewster Hopper");
        assert_eq!(traits["name"], "Grace Brewster Hopper");
    }

    #[test]
    fn the_event_time_is_corrected_for_the_clients_clock() {
        // The client's clock is an hour fast: it says the event happened
        // 2 s before it sent the batch.
        let client = NOW.0 + 3_600_000;
        let translated = translate(
            &json!({"type": "track", "event": "Signed Up", "userId": "u1",
                    "timestamp": chrono::DateTime::from_timestamp_millis(client - 2_000).unwrap().to_rfc3339()}),
            None,
            Some(&json!(chrono::DateTime::from_timestamp_millis(client).unwrap().to_rfc3339())),
            NOW,
        )
        .expect("translates");
        assert_eq!(translated.timestamp, Some(UnixMillis(NOW.0 - 2_000)));
        let without_sent_at = one(
            json!({"type": "track", "event": "Signed Up", "userId": "u1",
                   "timestamp": "2024-01-02T03:04:05Z"}),
            None,
        );
        assert_eq!(
            without_sent_at.timestamp,
            Some(UnixMillis(1_704_164_645_000))
        );
        assert_eq!(
            one(
                json!({"type": "track", "event": "Signed Up", "userId": "u1"}),
                None
            )
            .timestamp,
            None
        );
    }

    #[test]
    fn page_and_screen_become_viewed_events() {
        let page = one(
            json!({"userId": "u1", "name": "Home", "category": "Docs", "properties": {"path": "/"}}),
            Some(MessageType::Page),
        );
        assert_eq!(
            page.action,
            Action::Track {
                event: "Page Viewed".to_owned(),
                properties: json!({"path": "/", "name": "Home", "category": "Docs"})
                    .as_object()
                    .cloned()
                    .unwrap()
            }
        );
        let screen = one(
            json!({"type": "screen", "anonymousId": "a1", "name": "Cart"}),
            None,
        );
        assert!(
            matches!(screen.action, Action::Track { ref event, .. } if event == "Screen Viewed")
        );
    }

    #[test]
    fn alias_and_group_carry_what_they_link() {
        let alias = one(
            json!({"type": "alias", "previousId": "anon-7", "userId": "u1"}),
            None,
        );
        assert_eq!(
            alias.action,
            Action::Alias {
                previous_id: "anon-7".to_owned()
            }
        );
        let group = one(
            json!({"type": "group", "groupId": "acme", "userId": "u1",
                   "traits": {"name": "Acme", "email": "billing@acme.example"}}),
            None,
        );
        assert!(matches!(group.action, Action::Group { ref group_id, .. } if group_id == "acme"));
        // A group's email is the group's, not the person's.
        assert!(group.trait_identifiers.is_empty());
    }

    #[test]
    fn malformed_messages_name_the_field() {
        let cases = [
            (json!([1, 2]), Some(MessageType::Track), ""),
            (json!({"userId": "u1"}), None, "type"),
            (json!({"type": "fly", "userId": "u1"}), None, "type"),
            (json!({"userId": "u1"}), Some(MessageType::Track), "event"),
            (
                json!({"event": "Signed Up"}),
                Some(MessageType::Track),
                "userId",
            ),
            (
                json!({"userId": {"a": 1}, "event": "x"}),
                Some(MessageType::Track),
                "userId",
            ),
            (
                json!({"userId": "u1", "event": "x", "timestamp": "yesterday"}),
                Some(MessageType::Track),
                "timestamp",
            ),
            (
                json!({"userId": "u1", "event": "x", "properties": [1]}),
                Some(MessageType::Track),
                "properties",
            ),
            (
                json!({"anonymousId": "a1", "previousId": "a0"}),
                Some(MessageType::Alias),
                "userId",
            ),
            (json!({"userId": "u1"}), Some(MessageType::Group), "groupId"),
        ];
        for (message, kind, field) in cases {
            match translate(&message, kind, None, NOW) {
                Err(ServiceError::InvalidArgument(violation)) => {
                    assert_eq!(violation.field, field, "{message}")
                }
                other => panic!("{message}: {other:?}"),
            }
        }
    }

    #[test]
    fn numeric_ids_are_read_as_text() {
        let translated = one(
            json!({"userId": 42, "event": "x"}),
            Some(MessageType::Track),
        );
        assert_eq!(translated.identifiers[0].value, "42");
    }
}
