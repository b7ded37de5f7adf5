//! Stored value formats. Protobuf (through prost) because it is compact,
//! already a dependency, and lets later versions add fields without
//! rewriting the database. These types never leave the store.

use prost::Message;

use super::StoreError;
use crate::computed::{Activity, DayCounts, Interest, Money};
use crate::model::{
    ConsentView, EventView, Identifier, IdentifierKind, IdentifierView, JournalKind, JournalView,
    ProfileId, Provenance, TraitView, UnixMillis,
};

#[derive(Clone, PartialEq, Message)]
pub struct ProvenanceRecord {
    #[prost(string, tag = "1")]
    pub message_id: String,
    #[prost(string, tag = "2")]
    pub source: String,
    #[prost(int64, tag = "3")]
    pub received_at_ms: i64,
    /// `IndexKeys::short_tag` (keyed) of each identifier the call carried: which
    /// identifiers brought this data, for unmerge.
    #[prost(fixed64, repeated, tag = "4")]
    pub identifier_hashes: Vec<u64>,
}

/// Stands in provenance for identifiers of people since erased; a keyed
/// hash of a real identifier is this value with chance 2^-64.
pub const ERASED_IDENTIFIER_HASH: u64 = 0;

impl ProvenanceRecord {
    /// Replaces `hashes` (an erased person's identifiers) by
    /// [`ERASED_IDENTIFIER_HASH`]: nothing ties the data to the person any
    /// more, yet it still came with another side's identifiers, so an
    /// unmerge keeps it where a linking call's data stays.
    pub fn forget_identifier_hashes(&mut self, hashes: &[u64]) -> bool {
        let before = self.identifier_hashes.len();
        self.identifier_hashes.retain(|hash| !hashes.contains(hash));
        if self.identifier_hashes.len() == before {
            return false;
        }
        if !self.identifier_hashes.contains(&ERASED_IDENTIFIER_HASH) {
            self.identifier_hashes.push(ERASED_IDENTIFIER_HASH);
        }
        true
    }

    /// True when every identifier of the call is among `hashes`: the data
    /// came with those identifiers alone.
    pub fn came_only_with(&self, hashes: &[u64]) -> bool {
        !self.identifier_hashes.is_empty()
            && self
                .identifier_hashes
                .iter()
                .all(|hash| hashes.contains(hash))
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct IdentifierEntry {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(int64, tag = "3")]
    pub first_seen_ms: i64,
    #[prost(int64, tag = "4")]
    pub last_seen_ms: i64,
    #[prost(message, optional, tag = "5")]
    pub provenance: Option<ProvenanceRecord>,
    /// See [`ProfileRecord::shared_provenance`].
    #[prost(uint32, tag = "6")]
    pub provenance_ref: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TraitEntry {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Compact JSON; `null` marks a removed trait, kept so that an older
    /// value arriving late cannot bring it back.
    #[prost(string, tag = "2")]
    pub value_json: String,
    #[prost(int64, tag = "3")]
    pub updated_at_ms: i64,
    #[prost(message, optional, tag = "4")]
    pub provenance: Option<ProvenanceRecord>,
    /// See [`ProfileRecord::shared_provenance`].
    #[prost(uint32, tag = "5")]
    pub provenance_ref: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct IdentifierRef {
    #[prost(string, tag = "1")]
    pub kind: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Journal kinds as stored; values never change meaning.
pub const JOURNAL_MERGE: i32 = 0;
pub const JOURNAL_BLOCKED_MERGE: i32 = 1;
pub const JOURNAL_UNMERGE: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct JournalEntry {
    #[prost(int64, tag = "1")]
    pub at_ms: i64,
    #[prost(string, tag = "2")]
    pub message_id: String,
    #[prost(uint64, repeated, tag = "3")]
    pub other_profiles: Vec<u64>,
    #[prost(int32, tag = "4")]
    pub kind: i32,
    #[prost(message, repeated, tag = "5")]
    pub identifiers: Vec<IdentifierRef>,
    #[prost(string, tag = "6")]
    pub reason: String,
    /// A blocked merge refused because only weaker identifiers linked two
    /// different values of a stronger kind; fuzzy matching counts it as
    /// evidence.
    #[prost(bool, tag = "7")]
    pub weak_link: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct ProfileRecord {
    #[prost(int64, tag = "1")]
    pub created_at_ms: i64,
    #[prost(int64, tag = "2")]
    pub updated_at_ms: i64,
    #[prost(message, repeated, tag = "3")]
    pub identifiers: Vec<IdentifierEntry>,
    /// Sorted by name; a name may have one value per origin (the set of
    /// identifiers that brought it), so that an unmerge can give each side
    /// back its own value. The newest value of a name is the trait.
    #[prost(message, repeated, tag = "4")]
    pub traits: Vec<TraitEntry>,
    /// Every profile ever merged into this one (their aliases point here).
    #[prost(uint64, repeated, tag = "5")]
    pub merged_ids: Vec<u64>,
    #[prost(uint64, tag = "6")]
    pub event_count: u64,
    #[prost(message, repeated, tag = "7")]
    pub journal: Vec<JournalEntry>,
    /// Profiles an operator split from this one (or from a profile merged
    /// into it); resolution never merges them back automatically.
    #[prost(uint64, repeated, tag = "8")]
    pub separated_from: Vec<u64>,
    /// Aggregates behind the computed traits, kept up to date per event.
    #[prost(message, optional, tag = "9")]
    pub activity: Option<ActivityRecord>,
    /// The current decision per channel and purpose.
    #[prost(message, repeated, tag = "10")]
    pub consents: Vec<ConsentEntry>,
    /// Every decision recorded, oldest first (bounded).
    #[prost(message, repeated, tag = "11")]
    pub consent_history: Vec<ConsentEntry>,
    /// Provenance stored once for the entries above that share it, which
    /// they name by `provenance_ref` (1-based; 0: their own or none). One
    /// identify call sets many identifiers and traits at once, and copies
    /// of its provenance were two thirds of a record's bytes. Only stored
    /// bytes use it: [`ProfileRecord::from_bytes`] gives every entry its
    /// provenance back, [`ProfileRecord::into_bytes`] shares it again.
    #[prost(message, repeated, tag = "12")]
    pub shared_provenance: Vec<ProvenanceRecord>,
    /// The products the person bought or viewed, for recommendations.
    #[prost(message, optional, tag = "13")]
    pub shopper: Option<ShopperRecord>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ShopperRecord {
    #[prost(message, repeated, tag = "1")]
    pub interactions: Vec<InteractionRecord>,
}

#[derive(Clone, PartialEq, Message)]
pub struct InteractionRecord {
    #[prost(fixed64, tag = "1")]
    pub product: u64,
    #[prost(sint64, optional, tag = "2")]
    pub purchased_day: Option<i64>,
    #[prost(sint64, optional, tag = "3")]
    pub viewed_day: Option<i64>,
    #[prost(uint32, tag = "4")]
    pub purchases: u32,
}

/// A profile record whose entries may lack their (shared) provenance, and
/// so do views made from its entries. It has no way back into storage, so
/// that provenance cannot be lost.
pub struct RecordForReading(ProfileRecord);

impl std::ops::Deref for RecordForReading {
    type Target = ProfileRecord;

    fn deref(&self) -> &ProfileRecord {
        &self.0
    }
}

/// An entry of a profile record that carries provenance.
trait WithProvenance {
    fn provenance_slots(&mut self) -> (&mut Option<ProvenanceRecord>, &mut u32);
}

impl WithProvenance for IdentifierEntry {
    fn provenance_slots(&mut self) -> (&mut Option<ProvenanceRecord>, &mut u32) {
        (&mut self.provenance, &mut self.provenance_ref)
    }
}

impl WithProvenance for TraitEntry {
    fn provenance_slots(&mut self) -> (&mut Option<ProvenanceRecord>, &mut u32) {
        (&mut self.provenance, &mut self.provenance_ref)
    }
}

impl WithProvenance for ConsentEntry {
    fn provenance_slots(&mut self) -> (&mut Option<ProvenanceRecord>, &mut u32) {
        (&mut self.provenance, &mut self.provenance_ref)
    }
}

impl ProfileRecord {
    /// Decodes a stored record, every entry with its own provenance.
    pub fn from_bytes(bytes: &[u8]) -> Result<ProfileRecord, StoreError> {
        let mut record: ProfileRecord = decode(bytes, "profile")?;
        let shared = std::mem::take(&mut record.shared_provenance);
        if shared.is_empty() {
            return Ok(record);
        }
        let mut unshare = |entry: &mut dyn WithProvenance| -> Result<(), StoreError> {
            let (provenance, reference) = entry.provenance_slots();
            if *reference == 0 {
                return Ok(());
            }
            let found = usize::try_from(*reference - 1)
                .ok()
                .and_then(|index| shared.get(index))
                .ok_or_else(|| StoreError::Corrupt {
                    what: "profile",
                    reason: format!("provenance {reference} of {} shared", shared.len()),
                })?;
            *provenance = Some(found.clone());
            *reference = 0;
            Ok(())
        };
        record.each_entry(&mut unshare)?;
        Ok(record)
    }

    /// Decodes a stored record for reading only, without copying shared
    /// provenance back into its entries: segment rules, match scores and
    /// aggregates never look at provenance, and the copies cost a dozen
    /// allocations per record.
    pub fn for_reading(bytes: &[u8]) -> Result<RecordForReading, StoreError> {
        Ok(RecordForReading(decode(bytes, "profile")?))
    }

    /// Encodes the record with provenance shared between its entries.
    pub fn into_bytes(mut self) -> Vec<u8> {
        let mut shared: Vec<ProvenanceRecord> = Vec::new();
        let mut share = |entry: &mut dyn WithProvenance| -> Result<(), StoreError> {
            let (provenance, reference) = entry.provenance_slots();
            let Some(own) = provenance.take() else {
                return Ok(());
            };
            // Entries of one call sit together, so the newest is the
            // likeliest match.
            let index = match shared.iter().rposition(|known| *known == own) {
                Some(index) => index,
                None => {
                    shared.push(own);
                    shared.len() - 1
                }
            };
            *reference = u32::try_from(index + 1).unwrap_or(u32::MAX);
            Ok(())
        };
        // Sharing cannot fail; only unsharing checks references.
        let _ = self.each_entry(&mut share);
        self.shared_provenance = shared;
        self.encode_to_vec()
    }

    /// Strikes `hashes` from the provenance of every entry (an erased
    /// person's identifiers, from a profile that shared a call with them);
    /// true when any was there.
    pub fn forget_identifier_hashes(&mut self, hashes: &[u64]) -> bool {
        let mut changed = false;
        let mut forget = |entry: &mut dyn WithProvenance| -> Result<(), StoreError> {
            if let (Some(provenance), _) = entry.provenance_slots() {
                changed |= provenance.forget_identifier_hashes(hashes);
            }
            Ok(())
        };
        // The visitor never fails.
        let _ = self.each_entry(&mut forget);
        changed
    }

    fn each_entry(
        &mut self,
        visit: &mut dyn FnMut(&mut dyn WithProvenance) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for entry in &mut self.identifiers {
            visit(entry)?;
        }
        for entry in &mut self.traits {
            visit(entry)?;
        }
        for entry in self.consents.iter_mut().chain(&mut self.consent_history) {
            visit(entry)?;
        }
        Ok(())
    }
}

/// The latest population quintiles for RFM scores: per score, four cut
/// keys of three values each, flattened. Tags 1-3 held the cut points of
/// an earlier scheme (recency in days); a record without keys scores
/// nobody until the next maintenance run.
#[derive(Clone, PartialEq, Message)]
pub struct RfmRecord {
    #[prost(sint64, repeated, tag = "6")]
    pub recency: Vec<i64>,
    #[prost(sint64, repeated, tag = "7")]
    pub frequency: Vec<i64>,
    #[prost(sint64, repeated, tag = "8")]
    pub monetary: Vec<i64>,
    #[prost(int64, tag = "4")]
    pub computed_at_ms: i64,
    #[prost(uint64, tag = "5")]
    pub customers: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ConsentEntry {
    #[prost(string, tag = "1")]
    pub channel: String,
    #[prost(string, tag = "2")]
    pub purpose: String,
    #[prost(bool, tag = "3")]
    pub granted: bool,
    #[prost(int64, tag = "4")]
    pub at_ms: i64,
    #[prost(message, optional, tag = "5")]
    pub provenance: Option<ProvenanceRecord>,
    /// See [`ProfileRecord::shared_provenance`].
    #[prost(uint32, tag = "6")]
    pub provenance_ref: u32,
}

impl ConsentEntry {
    /// `None` for a channel or purpose this version does not know.
    pub fn to_view(&self) -> Option<ConsentView> {
        Some(ConsentView {
            channel: self.channel.parse().ok()?,
            purpose: self.purpose.parse().ok()?,
            granted: self.granted,
            at: UnixMillis(self.at_ms),
            provenance: provenance_view(self.provenance.as_ref()),
        })
    }

    pub fn same_subject(&self, other: &ConsentEntry) -> bool {
        self.channel == other.channel && self.purpose == other.purpose
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct DayCountsRecord {
    #[prost(int64, tag = "1")]
    pub day: i64,
    #[prost(uint32, tag = "2")]
    pub opens: u32,
    #[prost(uint32, tag = "3")]
    pub clicks: u32,
    #[prost(uint32, tag = "4")]
    pub orders: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct InterestRecord {
    #[prost(string, tag = "1")]
    pub category: String,
    #[prost(double, tag = "2")]
    pub score: f64,
    #[prost(int64, tag = "3")]
    pub at_ms: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ActivityRecord {
    #[prost(uint64, tag = "1")]
    pub order_count: u64,
    /// Written by versions that summed money as floats; read when
    /// `revenue` is absent.
    #[prost(double, tag = "2")]
    pub revenue_total: f64,
    /// In ten-thousandths of the currency unit (`computed::Money`).
    #[prost(sint64, optional, tag = "8")]
    pub revenue: Option<i64>,
    #[prost(int64, optional, tag = "3")]
    pub first_order_ms: Option<i64>,
    #[prost(int64, optional, tag = "4")]
    pub last_order_ms: Option<i64>,
    #[prost(int64, optional, tag = "5")]
    pub last_seen_ms: Option<i64>,
    #[prost(message, repeated, tag = "6")]
    pub days: Vec<DayCountsRecord>,
    #[prost(message, repeated, tag = "7")]
    pub interests: Vec<InterestRecord>,
    /// User-defined computed traits' states by name (JSON).
    #[prost(string, tag = "9")]
    pub custom_json: String,
}

impl ProfileRecord {
    pub fn activity(&self) -> Activity {
        let Some(record) = &self.activity else {
            return Activity::default();
        };
        Activity {
            order_count: record.order_count,
            revenue: match record.revenue {
                Some(exact) => Money(exact),
                None => Money::from_amount(record.revenue_total).unwrap_or_default(),
            },
            first_order_at: record.first_order_ms.map(UnixMillis),
            last_order_at: record.last_order_ms.map(UnixMillis),
            last_seen_at: record.last_seen_ms.map(UnixMillis),
            days: record
                .days
                .iter()
                .map(|day| {
                    let counts = DayCounts {
                        opens: day.opens,
                        clicks: day.clicks,
                        orders: day.orders,
                    };
                    (day.day, counts)
                })
                .collect(),
            interests: record
                .interests
                .iter()
                .map(|interest| {
                    let value = Interest {
                        score: interest.score,
                        at: UnixMillis(interest.at_ms),
                    };
                    (interest.category.clone(), value)
                })
                .collect(),
            // A state that cannot be read starts again empty rather than
            // making the whole profile unreadable.
            custom: match record.custom_json.as_str() {
                "" => Default::default(),
                json => serde_json::from_str(json).unwrap_or_default(),
            },
        }
    }

    pub fn set_activity(&mut self, activity: &Activity) {
        self.activity = Some(ActivityRecord {
            order_count: activity.order_count,
            revenue_total: 0.0,
            revenue: Some(activity.revenue.0),
            first_order_ms: activity.first_order_at.map(|at| at.0),
            last_order_ms: activity.last_order_at.map(|at| at.0),
            last_seen_ms: activity.last_seen_at.map(|at| at.0),
            days: activity
                .days
                .iter()
                .map(|(day, counts)| DayCountsRecord {
                    day: *day,
                    opens: counts.opens,
                    clicks: counts.clicks,
                    orders: counts.orders,
                })
                .collect(),
            interests: activity
                .interests
                .iter()
                .map(|(category, interest)| InterestRecord {
                    category: category.clone(),
                    score: interest.score,
                    at_ms: interest.at.0,
                })
                .collect(),
            custom_json: if activity.custom.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&activity.custom).unwrap_or_default()
            },
        });
    }
}

/// An erased person's identifier, known only by its HMAC tag (the key).
#[derive(Clone, PartialEq, Message)]
pub struct SuppressionRecord {
    #[prost(int64, tag = "1")]
    pub at_ms: i64,
    #[prost(string, tag = "2")]
    pub request_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct CountsRecord {
    #[prost(uint64, tag = "1")]
    pub profiles: u64,
    #[prost(uint64, tag = "2")]
    pub identifiers: u64,
    #[prost(uint64, tag = "3")]
    pub traits: u64,
    #[prost(uint64, tag = "4")]
    pub events: u64,
    #[prost(uint64, tag = "5")]
    pub consents: u64,
    #[prost(uint64, tag = "6")]
    pub memberships: u64,
    #[prost(uint64, tag = "7")]
    pub match_entries: u64,
    #[prost(uint64, tag = "8")]
    pub access_log_entries: u64,
    #[prost(uint64, tag = "9")]
    pub message_records: u64,
    #[prost(uint64, tag = "10")]
    pub suppressed_identifiers: u64,
}

/// The one place erasure counts are copied between the domain and their
/// stored form, both ways.
macro_rules! erasure_count_fields {
    ($from:expr, $to:ident) => {
        $to {
            profiles: $from.profiles,
            identifiers: $from.identifiers,
            traits: $from.traits,
            events: $from.events,
            consents: $from.consents,
            memberships: $from.memberships,
            match_entries: $from.match_entries,
            access_log_entries: $from.access_log_entries,
            message_records: $from.message_records,
            suppressed_identifiers: $from.suppressed_identifiers,
        }
    };
}

impl From<&crate::model::ErasureCounts> for CountsRecord {
    fn from(counts: &crate::model::ErasureCounts) -> Self {
        erasure_count_fields!(counts, CountsRecord)
    }
}

impl From<&CountsRecord> for crate::model::ErasureCounts {
    fn from(record: &CountsRecord) -> Self {
        use crate::model::ErasureCounts;
        erasure_count_fields!(record, ErasureCounts)
    }
}

/// The audit record of an export or erasure; no data of the subject.
#[derive(Clone, PartialEq, Message)]
pub struct PrivacyRequestRecord {
    /// 1 export, 2 erasure.
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(string, tag = "2")]
    pub requester: String,
    #[prost(string, tag = "3")]
    pub reason: String,
    #[prost(string, tag = "4")]
    pub caller: String,
    #[prost(int64, tag = "5")]
    pub received_at_ms: i64,
    #[prost(int64, tag = "6")]
    pub due_at_ms: i64,
    #[prost(int64, optional, tag = "7")]
    pub completed_at_ms: Option<i64>,
    /// 1 received, 2 completed, 3 failed.
    #[prost(uint32, tag = "8")]
    pub status: u32,
    #[prost(message, optional, tag = "9")]
    pub counts: Option<CountsRecord>,
}

/// One read of a profile.
#[derive(Clone, PartialEq, Message)]
pub struct AccessRecord {
    #[prost(string, tag = "1")]
    pub caller: String,
    #[prost(string, tag = "2")]
    pub method: String,
}

/// A segment definition.
#[derive(Clone, PartialEq, Message)]
pub struct SegmentRecord {
    #[prost(uint32, tag = "1")]
    pub number: u32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub rule: String,
    #[prost(double, tag = "5")]
    pub holdout_percent: f64,
    #[prost(int64, tag = "6")]
    pub created_at_ms: i64,
    #[prost(int64, tag = "7")]
    pub updated_at_ms: i64,
    #[prost(uint64, tag = "8")]
    pub version: u64,
    #[prost(uint64, tag = "9")]
    pub ready_version: u64,
}

/// The segments one live profile is in; numbers, never names or values.
#[derive(Clone, PartialEq, Message)]
pub struct MembershipRecord {
    #[prost(uint32, repeated, tag = "1")]
    pub members: Vec<u32>,
    #[prost(uint32, repeated, tag = "2")]
    pub holdout: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct EventRecord {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub properties_json: String,
    #[prost(message, optional, tag = "3")]
    pub provenance: Option<ProvenanceRecord>,
}

/// Distinct profiles an identifier was refused to link (up to the hub
/// threshold).
#[derive(Clone, PartialEq, Message)]
pub struct HubRecord {
    #[prost(uint64, repeated, tag = "1")]
    pub profiles: Vec<u64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct EvidenceRecord {
    #[prost(string, tag = "1")]
    pub field: String,
    #[prost(double, tag = "2")]
    pub similarity: f64,
    #[prost(double, tag = "3")]
    pub weight: f64,
    /// The comparison level that fired.
    #[prost(string, tag = "4")]
    pub level: String,
}

/// A likely duplicate pair waiting for review.
#[derive(Clone, PartialEq, Message)]
pub struct CandidateRecord {
    #[prost(double, tag = "1")]
    pub score: f64,
    #[prost(message, repeated, tag = "2")]
    pub evidence: Vec<EvidenceRecord>,
    #[prost(int64, tag = "3")]
    pub found_at_ms: i64,
    /// The match model that scored it.
    #[prost(uint64, tag = "4")]
    pub model_version: u64,
}

/// A pair a reviewer said is not one person; never proposed again.
#[derive(Clone, PartialEq, Message)]
pub struct RejectionRecord {
    #[prost(int64, tag = "1")]
    pub at_ms: i64,
    #[prost(string, tag = "2")]
    pub message_id: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct DedupRecord {
    /// The profile the original call resolved to (it may since have been
    /// merged away; follow its alias).
    #[prost(uint64, tag = "1")]
    pub profile_id: u64,
    #[prost(int64, tag = "2")]
    pub received_at_ms: i64,
}

pub fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Corrupt {
        what,
        reason: source.to_string(),
    })
}

impl From<&Provenance> for ProvenanceRecord {
    fn from(provenance: &Provenance) -> Self {
        ProvenanceRecord {
            message_id: provenance.message_id.clone(),
            source: provenance.source.clone(),
            received_at_ms: provenance.received_at.0,
            identifier_hashes: Vec::new(),
        }
    }
}

fn provenance_view(record: Option<&ProvenanceRecord>) -> Provenance {
    record
        .map(|record| Provenance {
            message_id: record.message_id.clone(),
            source: record.source.clone(),
            received_at: UnixMillis(record.received_at_ms),
        })
        .unwrap_or_default()
}

impl IdentifierEntry {
    pub fn matches(&self, identifier: &Identifier) -> bool {
        self.kind == identifier.kind().as_str() && self.value == identifier.value()
    }

    pub fn to_identifier(&self) -> Identifier {
        identifier_from_parts(&self.kind, &self.value)
    }

    pub fn to_view(&self) -> IdentifierView {
        IdentifierView {
            identifier: self.to_identifier(),
            first_seen: UnixMillis(self.first_seen_ms),
            last_seen: UnixMillis(self.last_seen_ms),
            provenance: provenance_view(self.provenance.as_ref()),
        }
    }
}

impl TraitEntry {
    /// `None` for a removed trait.
    pub fn to_view(&self) -> Result<Option<TraitView>, StoreError> {
        let value: serde_json::Value =
            serde_json::from_str(&self.value_json).map_err(|source| StoreError::Corrupt {
                what: "trait value",
                reason: source.to_string(),
            })?;
        if value.is_null() {
            return Ok(None);
        }
        Ok(Some(TraitView {
            name: self.name.clone(),
            value,
            updated_at: UnixMillis(self.updated_at_ms),
            provenance: provenance_view(self.provenance.as_ref()),
        }))
    }
}

impl IdentifierRef {
    pub fn of(identifier: &Identifier) -> Self {
        IdentifierRef {
            kind: identifier.kind().as_str().to_owned(),
            value: identifier.value().to_owned(),
        }
    }

    pub fn to_identifier(&self) -> Identifier {
        identifier_from_parts(&self.kind, &self.value)
    }
}

fn identifier_from_parts(kind: &str, value: &str) -> Identifier {
    let kind =
        IdentifierKind::built_in(kind).unwrap_or_else(|| IdentifierKind::Custom(kind.to_owned()));
    Identifier::from_normalized(kind, value.to_owned())
}

impl JournalEntry {
    pub fn to_view(&self) -> JournalView {
        let kind = match self.kind {
            JOURNAL_BLOCKED_MERGE => JournalKind::BlockedMerge,
            JOURNAL_UNMERGE => JournalKind::Unmerge,
            _ => JournalKind::Merge,
        };
        JournalView {
            kind,
            at: UnixMillis(self.at_ms),
            message_id: self.message_id.clone(),
            other_profiles: self.other_profiles.iter().copied().map(ProfileId).collect(),
            identifiers: self
                .identifiers
                .iter()
                .map(IdentifierRef::to_identifier)
                .collect(),
            reason: self.reason.clone(),
        }
    }
}

impl ProfileRecord {
    /// The current value of every trait: per name, the newest entry (by
    /// source time, then arrival). Removed traits (null) are left out.
    /// An entry's provenance, its own or the shared one it names (in a
    /// record decoded [`ProfileRecord::for_reading`]).
    fn provenance_of<'a>(
        &'a self,
        own: Option<&'a ProvenanceRecord>,
        reference: u32,
    ) -> Option<&'a ProvenanceRecord> {
        own.or_else(|| {
            let index = usize::try_from(reference).ok()?.checked_sub(1)?;
            self.shared_provenance.get(index)
        })
    }

    pub fn trait_views(&self) -> Result<Vec<TraitView>, StoreError> {
        let mut views = Vec::new();
        for entries in self.traits.chunk_by(|a, b| a.name == b.name) {
            let newest = entries.iter().max_by_key(|entry| {
                let received = self
                    .provenance_of(entry.provenance.as_ref(), entry.provenance_ref)
                    .map_or(0, |p| p.received_at_ms);
                (entry.updated_at_ms, received)
            });
            if let Some(entry) = newest {
                views.extend(entry.to_view()?);
            }
        }
        Ok(views)
    }
}

impl EventRecord {
    pub fn to_view(&self, timestamp: UnixMillis, sequence: u64) -> Result<EventView, StoreError> {
        let properties =
            serde_json::from_str(&self.properties_json).map_err(|source| StoreError::Corrupt {
                what: "event properties",
                reason: source.to_string(),
            })?;
        Ok(EventView {
            event_id: format!("e{sequence}"),
            name: self.name.clone(),
            properties,
            timestamp,
            provenance: provenance_view(self.provenance.as_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provenance(message_id: &str) -> ProvenanceRecord {
        ProvenanceRecord {
            message_id: message_id.to_owned(),
            source: "crm".to_owned(),
            received_at_ms: 1_700_000_000_000,
            identifier_hashes: vec![1, 2, 3, 4, 5],
        }
    }

    fn identifier(value: &str, from: &str) -> IdentifierEntry {
        IdentifierEntry {
            kind: "email".to_owned(),
            value: value.to_owned(),
            provenance: Some(provenance(from)),
            ..IdentifierEntry::default()
        }
    }

    fn trait_entry(name: &str, from: &str) -> TraitEntry {
        TraitEntry {
            name: name.to_owned(),
            value_json: "\"x\"".to_owned(),
            provenance: Some(provenance(from)),
            ..TraitEntry::default()
        }
    }

    fn record() -> ProfileRecord {
        ProfileRecord {
            identifiers: vec![
                identifier("a@example.com", "m1"),
                identifier("b@example.com", "m2"),
            ],
            traits: (0..10)
                .map(|n| trait_entry(&format!("t{n}"), if n < 8 { "m1" } else { "m2" }))
                .collect(),
            consents: vec![ConsentEntry {
                channel: "email".to_owned(),
                purpose: "marketing".to_owned(),
                granted: true,
                provenance: Some(provenance("m3")),
                ..ConsentEntry::default()
            }],
            ..ProfileRecord::default()
        }
    }

    #[test]
    fn shared_provenance_round_trips_and_is_stored_once_per_call() {
        let original = record();
        let inline = original.encode_to_vec();
        let shared = original.clone().into_bytes();
        assert_eq!(ProfileRecord::from_bytes(&shared).unwrap(), original);
        let stored: ProfileRecord = decode(&shared, "profile").unwrap();
        assert_eq!(stored.shared_provenance.len(), 3);
        assert!(
            shared.len() * 2 < inline.len(),
            "{} vs {}",
            shared.len(),
            inline.len()
        );
    }

    #[test]
    fn a_record_for_reading_has_every_field_but_shared_provenance() {
        let original = record();
        let read = ProfileRecord::for_reading(&original.clone().into_bytes()).unwrap();
        assert_eq!(read.traits.len(), original.traits.len());
        assert_eq!(read.identifiers[1].value, "b@example.com");
        assert_eq!(read.identifiers[1].provenance_ref, 2);
        assert_eq!(read.consents[0].channel, "email");
    }

    #[test]
    fn the_newest_trait_value_is_the_same_however_the_record_is_read() {
        let mut original = record();
        // Two values of one trait set at the same moment: the one received
        // later wins.
        let mut later = trait_entry("t0", "m9");
        later.value_json = "\"later\"".to_owned();
        if let Some(provenance) = later.provenance.as_mut() {
            provenance.received_at_ms += 1;
        }
        original.traits.insert(0, later);
        let bytes = original.clone().into_bytes();
        let newest = |views: Vec<TraitView>| {
            views
                .into_iter()
                .find(|view| view.name == "t0")
                .map(|view| view.value)
        };
        let expected = Some(serde_json::json!("later"));
        assert_eq!(newest(original.trait_views().unwrap()), expected);
        let full = ProfileRecord::from_bytes(&bytes).unwrap();
        assert_eq!(newest(full.trait_views().unwrap()), expected);
        let lean = ProfileRecord::for_reading(&bytes).unwrap();
        assert_eq!(newest(lean.trait_views().unwrap()), expected);
    }

    #[test]
    fn records_written_with_inline_provenance_still_read() {
        let original = record();
        let inline = original.encode_to_vec();
        assert_eq!(ProfileRecord::from_bytes(&inline).unwrap(), original);
    }

    #[test]
    fn a_reference_past_the_shared_table_is_corruption() {
        let mut stored = record();
        stored.shared_provenance = vec![provenance("m1")];
        stored.identifiers[0].provenance = None;
        stored.identifiers[0].provenance_ref = 2;
        let error = ProfileRecord::from_bytes(&stored.encode_to_vec()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }
}
