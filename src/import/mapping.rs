//! Which CSV column becomes what: identifiers, traits (the reserved ones
//! that fuzzy matching reads, or free-form ones named after the header), the
//! event time, or nothing. Also turns one row into an identify item and
//! derives its message id from the row's content.

use std::collections::BTreeMap;
use std::str::FromStr;

use xxhash_rust::xxh3::xxh3_128;

use super::ImportError;
use crate::api::pb;

/// Where one column's values go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Identifier(String),
    Trait(String),
    /// A field of the `address` trait (`street`, `city`, `postal_code`, ...).
    Address(String),
    /// The time the row's data was true at the source.
    Timestamp,
    Ignore,
}

impl Target {
    /// How the column is named in the message id and shown to the operator.
    fn describe(&self) -> String {
        match self {
            Target::Identifier(kind) => format!("identifier:{kind}"),
            Target::Trait(name) => format!("trait:{name}"),
            Target::Address(field) => format!("trait:address.{field}"),
            Target::Timestamp => "timestamp".to_owned(),
            Target::Ignore => "ignore".to_owned(),
        }
    }

    /// `identifier:KIND`, `trait:NAME` (`trait:address.FIELD` for an
    /// address field) or `ignore`, as given to `--map`.
    fn parse(text: &str) -> Result<Target, ImportError> {
        if text == "ignore" {
            return Ok(Target::Ignore);
        }
        match text.split_once(':') {
            Some(("identifier", kind)) if !kind.is_empty() => {
                Ok(Target::Identifier(kind.to_owned()))
            }
            Some(("trait", name)) if !name.is_empty() => Ok(match name.strip_prefix("address.") {
                Some(field) if !field.is_empty() => Target::Address(field.to_owned()),
                _ => Target::Trait(name.to_owned()),
            }),
            _ => Err(ImportError::Usage(format!(
                "`{text}` is not identifier:KIND, trait:NAME or ignore"
            ))),
        }
    }
}

/// A header as compared with the known names: lower case, with spaces,
/// hyphens and dots read as underscores.
fn normalize_header(header: &str) -> String {
    header
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' | '.' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The column a common CRM header stands for. Trait names are the ones
/// fuzzy matching reads (`first_name`, `last_name`, `birthday`, and the
/// fields of `address`).
fn automatic(normalized: &str) -> Option<Target> {
    let identifier = |kind: &str| Some(Target::Identifier(kind.to_owned()));
    let named = |name: &str| Some(Target::Trait(name.to_owned()));
    let address = |field: &str| Some(Target::Address(field.to_owned()));
    match normalized {
        "email" | "e_mail" | "email_address" | "mail" => identifier("email"),
        "phone" | "mobile" | "phone_number" | "mobile_number" | "mobile_phone" | "telephone"
        | "tel" | "cell" | "cell_phone" => identifier("phone"),
        "customer_id" | "customerid" | "user_id" | "userid" | "id" | "crm_id" => {
            identifier("user_id")
        }
        "device_id" | "deviceid" => identifier("device_id"),
        "anonymous_id" | "anonymousid" | "anon_id" => identifier("anonymous_id"),
        "first_name" | "firstname" | "given_name" | "forename" => named("first_name"),
        "last_name" | "lastname" | "surname" | "family_name" => named("last_name"),
        "birthday" | "dob" | "date_of_birth" | "birth_date" | "birthdate" => named("birthday"),
        "street" | "street_address" | "address" | "address1" | "address_1" | "address_line1"
        | "address_line_1" => address("street"),
        "address2" | "address_2" | "address_line2" | "address_line_2" | "line2" => address("line2"),
        "city" | "town" => address("city"),
        "postcode" | "post_code" | "zip" | "zipcode" | "zip_code" | "postal_code" => {
            address("postal_code")
        }
        "state" | "county" | "region" | "province" => address("state"),
        "country" | "country_code" => address("country"),
        // A rejects file of an earlier import, fixed and imported again.
        "reject_line" | "reject_reason" => Some(Target::Ignore),
        _ => None,
    }
}

/// `HEADER=TARGET` from `--map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    header: String,
    target: Target,
}

impl FromStr for Override {
    type Err = ImportError;

    fn from_str(text: &str) -> Result<Override, ImportError> {
        let (header, target) = text
            .split_once('=')
            .ok_or_else(|| ImportError::Usage(format!("--map `{text}` is not HEADER=TARGET")))?;
        Ok(Override {
            header: header.to_owned(),
            target: Target::parse(target)?,
        })
    }
}

/// How a trait column's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueType {
    /// A number when the text is one (`42`, `-3.5`; not `007`, which is a
    /// code), `true`/`false` as booleans, anything else text.
    Auto,
    Text,
    Number,
    Bool,
    /// A date or a time, kept as ISO 8601 text (`2024-05-01`).
    Date,
}

impl FromStr for ValueType {
    type Err = ImportError;

    fn from_str(text: &str) -> Result<ValueType, ImportError> {
        Ok(match text.trim() {
            "auto" => ValueType::Auto,
            "text" => ValueType::Text,
            "number" => ValueType::Number,
            "bool" => ValueType::Bool,
            "date" => ValueType::Date,
            other => {
                return Err(ImportError::Usage(format!(
                    "`{other}` is not a column type: auto, text, number, bool or date"
                )));
            }
        })
    }
}

/// `HEADER=TYPE` from `--types`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeOverride {
    header: String,
    value_type: ValueType,
}

impl FromStr for TypeOverride {
    type Err = ImportError;

    fn from_str(text: &str) -> Result<TypeOverride, ImportError> {
        let (header, value_type) = text
            .split_once('=')
            .ok_or_else(|| ImportError::Usage(format!("--types `{text}` is not HEADER=TYPE")))?;
        Ok(TypeOverride {
            header: header.to_owned(),
            value_type: value_type.parse()?,
        })
    }
}

/// The reserved traits are text whatever they look like: a birthday or a
/// postcode is never a number.
fn default_type(target: &Target) -> ValueType {
    const RESERVED: [&str; 5] = ["first_name", "last_name", "birthday", "gender", "language"];
    match target {
        Target::Trait(name) if !RESERVED.contains(&name.as_str()) => ValueType::Auto,
        _ => ValueType::Text,
    }
}

fn typed_value(
    text: &str,
    value_type: ValueType,
    header: &str,
) -> Result<prost_types::Value, RowError> {
    use prost_types::value::Kind;
    let kind = match value_type {
        ValueType::Text => Kind::StringValue(text.to_owned()),
        ValueType::Auto => match plain_number(text) {
            Some(number) => Kind::NumberValue(number),
            None => match text.to_ascii_lowercase().as_str() {
                "true" => Kind::BoolValue(true),
                "false" => Kind::BoolValue(false),
                _ => Kind::StringValue(text.to_owned()),
            },
        },
        ValueType::Number => Kind::NumberValue(
            text.parse::<f64>()
                .ok()
                .filter(|number| number.is_finite())
                .ok_or_else(|| RowError(format!("column `{header}` is not a number")))?,
        ),
        ValueType::Bool => Kind::BoolValue(match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" => true,
            "false" | "no" | "n" | "0" => false,
            _ => return Err(RowError(format!("column `{header}` is not true or false"))),
        }),
        ValueType::Date => {
            let date_part = text.get(..10).unwrap_or(text);
            let valid = chrono::NaiveDate::parse_from_str(date_part, "%Y-%m-%d").is_ok();
            if !valid {
                return Err(RowError(format!(
                    "column `{header}` is not a date (YYYY-MM-DD or RFC 3339)"
                )));
            }
            Kind::StringValue(text.to_owned())
        }
    };
    Ok(prost_types::Value { kind: Some(kind) })
}

/// A number written plainly: digits, an optional sign and fraction, no
/// leading zero (so that codes such as `007` stay text).
fn plain_number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let whole_ok = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && (whole == "0" || !whole.starts_with('0'));
    let fraction_ok =
        fraction.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    if whole_ok && fraction_ok && whole.len() <= 15 {
        text.parse().ok()
    } else {
        None
    }
}

/// Why a row was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError(pub String);

#[derive(Debug, Clone)]
pub struct Mapping {
    /// One per column, in file order.
    columns: Vec<(String, Target)>,
    /// How each column's text becomes a value, in file order.
    types: Vec<ValueType>,
    /// Column positions in the order the message id hashes them: by
    /// header, so that reordering columns keeps the ids.
    hash_order: Vec<usize>,
}

impl Mapping {
    pub fn new(
        headers: &[String],
        overrides: &[Override],
        type_overrides: &[TypeOverride],
        timestamp_column: Option<&str>,
    ) -> Result<Mapping, ImportError> {
        let position = |header: &str| {
            let wanted = normalize_header(header);
            headers
                .iter()
                .position(|h| normalize_header(h) == wanted)
                .ok_or_else(|| ImportError::Usage(format!("the file has no column `{header}`")))
        };
        let mut columns: Vec<(String, Target)> = headers
            .iter()
            .map(|header| {
                let name = header.trim();
                let target = if name.is_empty() {
                    Target::Ignore
                } else {
                    automatic(&normalize_header(name))
                        .unwrap_or_else(|| Target::Trait(name.to_owned()))
                };
                (name.to_owned(), target)
            })
            .collect();
        for choice in overrides {
            columns[position(&choice.header)?].1 = choice.target.clone();
        }
        if let Some(header) = timestamp_column {
            columns[position(header)?].1 = Target::Timestamp;
        }
        if !columns
            .iter()
            .any(|(_, target)| matches!(target, Target::Identifier(_)))
        {
            return Err(ImportError::Usage(
                "no column maps to an identifier; name one with --map HEADER=identifier:KIND"
                    .to_owned(),
            ));
        }
        let mut types: Vec<ValueType> = columns.iter().map(|(_, t)| default_type(t)).collect();
        for choice in type_overrides {
            types[position(&choice.header)?] = choice.value_type;
        }
        let mut hash_order: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].1 != Target::Ignore)
            .collect();
        hash_order.sort_by(|&a, &b| columns[a].0.cmp(&columns[b].0));
        Ok(Mapping {
            columns,
            types,
            hash_order,
        })
    }

    /// `header → target` lines, for the operator to check.
    pub fn describe(&self) -> Vec<String> {
        self.columns
            .iter()
            .zip(&self.types)
            .map(|((header, target), value_type)| match target {
                Target::Trait(_) | Target::Address(_) => {
                    format!("{header} → {} ({value_type:?})", target.describe())
                }
                _ => format!("{header} → {}", target.describe()),
            })
            .collect()
    }

    pub fn column_count(&self) -> usize {
        self.columns.len()
    }

    /// The identify item for one row. `now` stands in for the event time
    /// when there is no timestamp column.
    pub fn to_item(
        &self,
        fields: &[&str],
        source: &str,
        now: prost_types::Timestamp,
    ) -> Result<pb::IngestRequest, RowError> {
        if fields.len() != self.columns.len() {
            return Err(RowError(format!(
                "the row has {} fields, the header {}",
                fields.len(),
                self.columns.len()
            )));
        }
        let mut identifiers = Vec::new();
        let mut traits = BTreeMap::new();
        let mut address = BTreeMap::new();
        let mut timestamp = None;
        for (((header, target), raw), value_type) in
            self.columns.iter().zip(fields).zip(&self.types)
        {
            let value = raw.trim();
            if value.is_empty() {
                continue;
            }
            match target {
                Target::Identifier(kind) => identifiers.push(pb::Identifier {
                    kind: kind.clone(),
                    value: value.to_owned(),
                }),
                Target::Trait(name) => {
                    traits.insert(name.clone(), typed_value(value, *value_type, header)?);
                }
                Target::Address(field) => {
                    address.insert(field.clone(), typed_value(value, *value_type, header)?);
                }
                Target::Timestamp => timestamp = Some(parse_timestamp(value)?),
                Target::Ignore => {}
            }
        }
        if identifiers.is_empty() {
            return Err(RowError("no identifier in the row".to_owned()));
        }
        if !address.is_empty() {
            let fields = prost_types::Struct { fields: address };
            traits.insert(
                "address".to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StructValue(fields)),
                },
            );
        }
        Ok(pb::IngestRequest {
            item: Some(pb::ingest_request::Item::Identify(pb::IdentifyRequest {
                identifiers,
                traits: Some(prost_types::Struct { fields: traits }),
                message_id: self.message_id(fields),
                timestamp: Some(timestamp.unwrap_or(now)),
                source: source.to_owned(),
            })),
        })
    }

    /// `import:` and a 128-bit hash of what the row says: each mapped
    /// column's target, type and trimmed value, by header. It does not depend on
    /// the row's position, so an edited or re-sorted file keeps the ids of
    /// unchanged rows, and a rerun after an interruption sends duplicates
    /// rather than new data.
    pub fn message_id(&self, fields: &[&str]) -> String {
        let mut content = Vec::with_capacity(256);
        for &index in &self.hash_order {
            let (header, target) = &self.columns[index];
            let value = fields.get(index).map_or("", |value| value.trim());
            // The type is part of what the row says: re-imported with
            // another one, it is another call.
            let described = format!("{}:{:?}", target.describe(), self.types[index]);
            for part in [header.as_str(), &described, value] {
                content.extend_from_slice(part.as_bytes());
                // A separator no CSV text contains keeps `a,bc` and `ab,c` apart.
                content.push(0x1f);
            }
        }
        format!("import:{:032x}", xxh3_128(&content))
    }
}

/// RFC 3339 (`2024-05-01T10:00:00Z`), a date (`2024-05-01`, midnight UTC) or
/// whole seconds since the Unix epoch.
fn parse_timestamp(value: &str) -> Result<prost_types::Timestamp, RowError> {
    if let Ok(seconds) = value.parse::<i64>() {
        return Ok(prost_types::Timestamp { seconds, nanos: 0 });
    }
    let is_date = value.len() == 10 && value.as_bytes().get(4) == Some(&b'-');
    let text = if is_date {
        format!("{value}T00:00:00Z")
    } else {
        value.to_owned()
    };
    prost_types::Timestamp::from_str(&text)
        .map_err(|_| RowError("the timestamp is not RFC 3339, a date or Unix seconds".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    fn identify(item: pb::IngestRequest) -> pb::IdentifyRequest {
        match item.item {
            Some(pb::ingest_request::Item::Identify(identify)) => identify,
            other => panic!("expected an identify item, got {other:?}"),
        }
    }

    fn now() -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }
    }

    #[test]
    fn common_headers_map_to_identifiers_and_reserved_traits() {
        let mapping = Mapping::new(
            &headers(&[
                "E-Mail",
                "Mobile",
                "Customer ID",
                "FirstName",
                "Surname",
                "DOB",
                "Zip",
                "Town",
                "Country",
                "Loyalty Tier",
            ]),
            &[],
            &[],
            None,
        )
        .unwrap();
        let row = [
            " Ann@Example.com ",
            "07700 900123",
            "c-1",
            "Ann",
            "Lee",
            "1990-04-01",
            "SW1A 1AA",
            "London",
            "GB",
            "gold",
        ];
        let item = identify(mapping.to_item(&row, "import", now()).unwrap());
        let identifiers: Vec<(&str, &str)> = item
            .identifiers
            .iter()
            .map(|i| (i.kind.as_str(), i.value.as_str()))
            .collect();
        assert_eq!(
            identifiers,
            vec![
                ("email", "Ann@Example.com"),
                ("phone", "07700 900123"),
                ("user_id", "c-1")
            ]
        );
        let traits = item.traits.unwrap().fields;
        let names: Vec<&str> = traits.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec![
                "Loyalty Tier",
                "address",
                "birthday",
                "first_name",
                "last_name"
            ]
        );
        let Some(prost_types::value::Kind::StructValue(address)) = &traits["address"].kind else {
            panic!("address is an object");
        };
        let fields: Vec<&str> = address.fields.keys().map(String::as_str).collect();
        assert_eq!(fields, vec!["city", "country", "postal_code"]);
        assert_eq!(item.timestamp, Some(now()));
        assert_eq!(item.source, "import");
    }

    #[test]
    fn overrides_replace_the_automatic_choice() {
        let overrides: Vec<Override> = [
            "id=ignore",
            "Work Email=identifier:email",
            "notes=trait:comment",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        let mapping = Mapping::new(
            &headers(&["id", "work email", "notes"]),
            &overrides,
            &[],
            None,
        )
        .unwrap();
        let item = identify(
            mapping
                .to_item(&["7", "a@b.example", "vip"], "s", now())
                .unwrap(),
        );
        assert_eq!(item.identifiers.len(), 1);
        assert_eq!(item.identifiers[0].kind, "email");
        assert!(item.traits.unwrap().fields.contains_key("comment"));

        assert!("nothing".parse::<Override>().is_err());
        assert!("a=column:x".parse::<Override>().is_err());
        let missing: Override = "absent=ignore".parse().unwrap();
        assert!(Mapping::new(&headers(&["email"]), &[missing], &[], None).is_err());
        assert!(
            Mapping::new(&headers(&["notes"]), &[], &[], None).is_err(),
            "a file without an identifier column is refused"
        );
    }

    #[test]
    fn rows_without_identifiers_or_with_bad_timestamps_are_refused() {
        let mapping = Mapping::new(&headers(&["email", "seen"]), &[], &[], Some("seen")).unwrap();
        assert!(mapping.to_item(&["", "2024-01-01"], "s", now()).is_err());
        assert!(
            mapping
                .to_item(&["a@b.example", "yesterday"], "s", now())
                .is_err()
        );
        assert!(
            mapping.to_item(&["a@b.example"], "s", now()).is_err(),
            "short row"
        );
        let at = |value: &str| {
            identify(
                mapping
                    .to_item(&["a@b.example", value], "s", now())
                    .unwrap(),
            )
            .timestamp
        };
        let midnight = Some(prost_types::Timestamp {
            seconds: 1_704_067_200,
            nanos: 0,
        });
        assert_eq!(at("2024-01-01"), midnight);
        assert_eq!(at("2024-01-01T00:00:00Z"), midnight);
        assert_eq!(at("1704067200"), midnight);
    }

    #[test]
    fn message_ids_follow_content_not_position_or_column_order() {
        let mapping = Mapping::new(&headers(&["email", "city"]), &[], &[], None).unwrap();
        let swapped = Mapping::new(&headers(&["city", "email"]), &[], &[], None).unwrap();
        let id = mapping.message_id(&["a@b.example", "Leeds"]);
        assert!(id.starts_with("import:") && id.len() == "import:".len() + 32);
        assert_eq!(id, swapped.message_id(&["Leeds", "a@b.example"]));
        assert_eq!(id, mapping.message_id(&[" a@b.example", "Leeds "]));
        assert_ne!(id, mapping.message_id(&["a@b.example", "York"]));
        assert_ne!(
            mapping.message_id(&["ab", "c"]),
            mapping.message_id(&["a", "bc"])
        );
        let ignoring = Mapping::new(
            &headers(&["email", "city", "note"]),
            &["note=ignore".parse().unwrap()],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(
            id,
            ignoring.message_id(&["a@b.example", "Leeds", "anything"])
        );
    }

    #[test]
    fn free_form_columns_are_typed_and_reserved_ones_stay_text() {
        let mapping = Mapping::new(
            &headers(&[
                "email",
                "lifetime_spend",
                "vip",
                "code",
                "zip",
                "joined",
                "reject_reason",
            ]),
            &[],
            &["joined=date".parse().unwrap(), "vip=bool".parse().unwrap()],
            None,
        )
        .unwrap();
        let item = identify(
            mapping
                .to_item(
                    &[
                        "a@b.example",
                        "1990.5",
                        "yes",
                        "007",
                        "02134",
                        "2024-05-01",
                        "bad phone",
                    ],
                    "s",
                    now(),
                )
                .unwrap(),
        );
        let fields = item.traits.unwrap().fields;
        use prost_types::value::Kind;
        assert_eq!(
            fields["lifetime_spend"].kind,
            Some(Kind::NumberValue(1990.5))
        );
        assert_eq!(fields["vip"].kind, Some(Kind::BoolValue(true)));
        assert_eq!(
            fields["code"].kind,
            Some(Kind::StringValue("007".to_owned()))
        );
        assert_eq!(
            fields["joined"].kind,
            Some(Kind::StringValue("2024-05-01".to_owned()))
        );
        let Some(Kind::StructValue(address)) = &fields["address"].kind else {
            panic!("an address");
        };
        assert_eq!(
            address.fields["postal_code"].kind,
            Some(Kind::StringValue("02134".to_owned()))
        );
        assert!(
            !fields.contains_key("reject_reason"),
            "a rejects file's columns are ignored"
        );
        let bad = mapping.to_item(&["a@b.example", "1", "maybe", "", "", "", ""], "s", now());
        assert!(bad.is_err(), "a declared bool must be one");
    }
}
