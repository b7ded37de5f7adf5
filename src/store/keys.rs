//! Key layout of the single sled tree. Every key starts with a one-byte
//! table tag; integers are big-endian so that prefix scans come out in
//! numeric (and, for events, time) order.
//!
//! | tag | key                                   | value                     |
//! |-----|---------------------------------------|---------------------------|
//! | `i` | HMAC tag of kind, 0x00, value         | live profile id (u64)     |
//! | `p` | profile id                            | `ProfileRecord`           |
//! | `a` | merged-away profile id                | survivor profile id (u64) |
//! | `e` | profile id, timestamp, event sequence | `EventRecord`             |
//! | `m` | HMAC tag of the message id            | `DedupRecord`             |
//! | `j` | profile id, the `m` key               | empty                     |
//! | `h` | HMAC tag of kind, 0x00, value         | `HubRecord`               |
//! | `f` | rule prefix, HMAC tag of blocking key | profile ids (u64s)        |
//! | `c` | lower profile id, higher profile id   | `CandidateRecord`         |
//! | `r` | lower profile id, higher profile id   | `RejectionRecord`         |
//! | `d` | segment id                            | `SegmentRecord`           |
//! | `g` | profile id                            | `MembershipRecord`        |
//! | `x` | HMAC tag of a suppressed identifier   | `SuppressionRecord`       |
//! | `q` | privacy request id                    | `PrivacyRequestRecord`    |
//! | `l` | profile id, timestamp, sequence       | `AccessRecord`            |
//! | `u` | product key                           | `ProductRecord`           |
//! | `n` | product key                           | `PopularityRecord`        |
//! | `o` | lower product key, higher product key | co-occurrence count (i64) |
//! | `w` | custom computed trait name            | definition (JSON)         |
//! | `s` | counter name                          | u64                       |
//! | `z` | profile id                            | empty: its key destroyed  |
//! | `K` | profile id (the header: nothing)      | sealed data key           |
//!
//! Values under a profile id (`p`, `a`, `e`, `g`, `l`, and the per-profile
//! `f#` keys) are sealed under that profile's data key (`store::sealing`);
//! `K` rows exist only on a shared database (elsewhere the keys are in a
//! file of their own).
//!
//! A product key is the first 8 bytes of the SHA-256 of its id
//! (`recommend::product_key`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{Identifier, ProfileId, UnixMillis};

pub const IDENTIFIER: u8 = b'i';
pub const PROFILE: u8 = b'p';
pub const ALIAS: u8 = b'a';
pub const EVENT: u8 = b'e';
pub const MESSAGE: u8 = b'm';
pub const MESSAGE_OF: u8 = b'j';
pub const HUB: u8 = b'h';
pub const FUZZY: u8 = b'f';
pub const CANDIDATE: u8 = b'c';
pub const REJECTION: u8 = b'r';
pub const SEGMENT: u8 = b'd';
pub const MEMBERSHIP: u8 = b'g';
pub const SUPPRESSION: u8 = b'x';
pub const PRIVACY_REQUEST: u8 = b'q';
pub const ACCESS: u8 = b'l';
/// Histories earlier versions kept apart; moved into the profile records at
/// open, never reused.
pub const RETIRED_SHOPPER: u8 = b'k';
pub const PRODUCT: u8 = b'u';
/// Counts earlier versions stored; removed at open, never reused.
pub const RETIRED_POPULARITY: u8 = b'n';
pub const RETIRED_PAIR: u8 = b'o';
pub const CUSTOM_TRAIT: u8 = b'w';
/// What a group on a shared database changed, for the other servers
/// (`store::feed`); removed after a retention time.
pub const FEED: u8 = b'v';

/// A feed entry: the wall-clock time its group was built, the writing
/// server's instance and its sequence there.
pub fn feed_entry(at: UnixMillis, instance: u64, sequence: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[0] = FEED;
    key[1..9].copy_from_slice(&sortable_i64(at.0).to_be_bytes());
    key[9..17].copy_from_slice(&instance.to_be_bytes());
    key[17..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// The time and instance of a feed entry's key.
pub fn decode_feed_entry(key: &[u8]) -> Option<(UnixMillis, u64)> {
    if key.len() != 25 || key[0] != FEED {
        return None;
    }
    let at = decode_u64(&key[1..9])? ^ (1 << 63);
    Some((UnixMillis(at as i64), decode_u64(&key[9..17])?))
}

pub fn custom_trait(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(CUSTOM_TRAIT);
    key.extend_from_slice(name.as_bytes());
    key
}

pub const NEXT_PROFILE_ID: &[u8] = b"snext_profile_id";
pub const NEXT_EVENT_SEQUENCE: &[u8] = b"snext_event_sequence";
/// Present once every message record is named in its profile's list
/// (`message_of`); stores written before the lists gain them at open.
pub const MESSAGES_LISTED: &[u8] = b"smessages_listed";
/// Rewritten with every change to a segment or computed-trait definition,
/// so that servers sharing the database see that theirs are stale.
pub const DEFINITIONS_STAMP: &[u8] = b"sdefinitions_stamp";
pub const RFM_QUINTILES: &[u8] = b"srfm_quintiles";
pub const NEXT_SEGMENT_NUMBER: &[u8] = b"snext_segment_number";
pub const SUPPRESSION_KEY: &[u8] = b"ssuppression_key";
/// Names the index secret without revealing it, so that a restore can
/// tell privacy records of another installation.
pub const INDEX_KEY_ID: &[u8] = b"sindex_key_id";
/// Written by the writer to see whether writes succeed again after a
/// failure; holds only the time of the last probe.
pub const WRITE_PROBE: &[u8] = b"swrite_probe";

/// Index keys made of personal values (identifiers, message ids, blocking
/// keys, names) are HMAC-SHA256 tags of them under a secret key, never the
/// values: lookups compute the same tag, and nothing on disk reads back as
/// the value. An identifier's index key carries exactly its suppression
/// tag, so that erased identifiers can be told from a backup's index alone.
#[derive(Clone)]
pub struct IndexKeys {
    secret: Vec<u8>,
}

impl std::fmt::Debug for IndexKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexKeys { secret: <secret> }")
    }
}

/// Starts the hashed input of every index key that is not an identifier's;
/// identifier inputs start with an ASCII kind name, never with this byte.
const NOT_AN_IDENTIFIER: u8 = 0xff;
/// Bytes of a tag kept in keys where a collision only costs a wasted read.
const SHORT_TAG_BYTES: usize = 16;

impl IndexKeys {
    pub fn new(secret: Vec<u8>) -> Self {
        IndexKeys { secret }
    }

    /// The suppression tag of an identifier: HMAC of kind, 0x00, value.
    pub fn tag(&self, identifier: &Identifier) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(identifier.kind().as_str().as_bytes());
        // Kind names never contain 0x00 (config validation), so this
        // separator keeps `(ab, c)` and `(a, bc)` apart.
        mac.update(&[0]);
        mac.update(identifier.value().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A short keyed hash of an identifier, for provenance: ties a call's
    /// identifiers together without naming them, and opens to nobody
    /// without the secret.
    pub fn short_tag(&self, identifier: &Identifier) -> u64 {
        let tag = self.tag(identifier);
        u64::from_be_bytes([
            tag[0], tag[1], tag[2], tag[3], tag[4], tag[5], tag[6], tag[7],
        ])
    }

    /// Names this secret: equal ids, equal secrets, and nothing else
    /// learnt.
    pub fn key_id(&self) -> [u8; SHORT_TAG_BYTES] {
        let mut id = [0u8; SHORT_TAG_BYTES];
        id.copy_from_slice(&self.other_tag(b'i', b"index key id")[..SHORT_TAG_BYTES]);
        id
    }

    fn other_tag(&self, kind: u8, value: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(&[NOT_AN_IDENTIFIER, kind]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }
}

pub fn identifier(index: &IndexKeys, identifier: &Identifier) -> Vec<u8> {
    tagged(IDENTIFIER, &index.tag(identifier))
}

pub fn hub(index: &IndexKeys, identifier: &Identifier) -> Vec<u8> {
    tagged(HUB, &index.tag(identifier))
}

/// The suppression tag an identifier index key carries.
pub fn tag_of_identifier_key(key: &[u8]) -> Option<&[u8]> {
    (key.len() == 33 && key[0] == IDENTIFIER).then(|| &key[1..])
}

fn tagged(tag: u8, hash: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + hash.len());
    key.push(tag);
    key.extend_from_slice(hash);
    key
}

pub fn profile(id: ProfileId) -> [u8; 9] {
    tagged_u64(PROFILE, id.0)
}

pub fn alias(id: ProfileId) -> [u8; 9] {
    tagged_u64(ALIAS, id.0)
}

pub fn segment(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(SEGMENT);
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn suppression(tag: &[u8; 32]) -> [u8; 33] {
    let mut key = [0u8; 33];
    key[0] = SUPPRESSION;
    key[1..].copy_from_slice(tag);
    key
}

pub fn privacy_request(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(PRIVACY_REQUEST);
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn access_of(id: ProfileId) -> [u8; 9] {
    tagged_u64(ACCESS, id.0)
}

/// Laid out like an event key, so that [`decode_event`] reads it.
pub fn access(id: ProfileId, at: UnixMillis, sequence: u64) -> [u8; 25] {
    let mut key = event(id, at, sequence);
    key[0] = ACCESS;
    key
}

pub fn membership(id: ProfileId) -> [u8; 9] {
    tagged_u64(MEMBERSHIP, id.0)
}

pub fn events_of(id: ProfileId) -> [u8; 9] {
    tagged_u64(EVENT, id.0)
}

pub fn event(id: ProfileId, timestamp: UnixMillis, sequence: u64) -> [u8; 25] {
    let mut key = [0u8; 25];
    key[..9].copy_from_slice(&events_of(id));
    key[9..17].copy_from_slice(&sortable_i64(timestamp.0).to_be_bytes());
    key[17..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// The timestamp and sequence that follow the profile id in an event key.
pub fn event_suffix(key: &[u8]) -> Option<&[u8]> {
    (key.len() == 25).then(|| &key[9..])
}

/// The timestamp and sequence number encoded in an event key.
pub fn decode_event(key: &[u8]) -> Option<(UnixMillis, u64)> {
    let suffix = event_suffix(key)?;
    let timestamp = decode_u64(&suffix[..8])? ^ (1 << 63);
    Some((UnixMillis(timestamp as i64), decode_u64(&suffix[8..])?))
}

pub fn event_with_suffix(id: ProfileId, suffix: &[u8]) -> Vec<u8> {
    let mut key = events_of(id).to_vec();
    key.extend_from_slice(suffix);
    key
}

/// A message id may be derived from a person's data (an import row's
/// content), so it is stored as a keyed hash.
pub fn message(index: &IndexKeys, message_id: &str) -> Vec<u8> {
    tagged(MESSAGE, &index.other_tag(b'm', message_id.as_bytes()))
}

/// One profile's entry for a message record (`message`'s key): what
/// erasure reads to find every record of the person's calls.
pub fn message_of(id: ProfileId, message_key: &[u8]) -> Vec<u8> {
    let mut key = messages_of(id).to_vec();
    key.extend_from_slice(message_key);
    key
}

pub fn messages_of(id: ProfileId) -> [u8; 9] {
    tagged_u64(MESSAGE_OF, id.0)
}

/// The message record's key inside a `message_of` key.
pub fn message_of_entry(key: &[u8]) -> Option<&[u8]> {
    key.get(9..).filter(|rest| rest.first() == Some(&MESSAGE))
}

/// One blocking key; its value lists the profiles under it. A list read
/// with one point lookup is much cheaper in sled than a prefix scan. The
/// rule's prefix (`b:`, `ly:`, ...) stays readable, so that training reads
/// one rule's blocks; the values that follow it are hashed.
pub fn fuzzy_block(index: &IndexKeys, block: &str) -> Vec<u8> {
    let rule_end = block.find(':').map_or(0, |at| at + 1);
    let mut key = fuzzy_rule_blocks(&block[..rule_end]);
    key.extend_from_slice(&index.other_tag(b'f', block.as_bytes())[..SHORT_TAG_BYTES]);
    key
}

/// The prefix of every block of one blocking rule.
pub fn fuzzy_rule_blocks(rule_prefix: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + rule_prefix.len() + SHORT_TAG_BYTES);
    key.push(FUZZY);
    key.extend(rule_prefix.bytes());
    key
}

/// How many profiles carry one name: `name_key` from
/// `fuzzy::name_count_keys` (hashed), or empty for all profiles with
/// names. The `#` keeps these apart from blocking keys, which start with a
/// letter; the `$` from the per-profile keys below.
pub fn fuzzy_name_count(index: &IndexKeys, name_key: &str) -> Vec<u8> {
    let mut key = vec![FUZZY, b'#'];
    if !name_key.is_empty() {
        key.push(b'$');
        key.extend_from_slice(&index.other_tag(b'n', name_key.as_bytes())[..SHORT_TAG_BYTES]);
    }
    key
}

/// The count of every profile with names.
pub const FUZZY_POPULATION: &[u8] = &[FUZZY, b'#'];

/// The names a profile is counted under in the name counts, so that
/// re-indexing a profile (the batch pass does it from scratch) never counts
/// it twice, and profiles stored before names were counted are counted once.
pub fn fuzzy_counted_names(id: ProfileId) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.extend_from_slice(&[FUZZY, b'#', b'@']);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The older variants of a profile's matching fields (JSON), beside the
/// current ones its traits hold.
pub fn fuzzy_variants(id: ProfileId) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.extend_from_slice(&[FUZZY, b'#', b'%']);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The prefix of every profile's older variants.
pub const FUZZY_VARIANTS: &[u8] = &[FUZZY, b'#', b'%'];

/// The profiles a profile has pending match candidates with, so that a
/// change to either side finds its candidates without scanning them all.
pub fn fuzzy_candidates_of(id: ProfileId) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.extend_from_slice(&[FUZZY, b'#', b'&']);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The comparisons of the closest pairs matching left alone for this
/// profile (`recheck.rs`), re-scored under the next model.
pub fn fuzzy_recheck(id: ProfileId) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.extend_from_slice(FUZZY_RECHECK);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The prefix of every recheck mark.
pub const FUZZY_RECHECK: &[u8] = &[FUZZY, b'#', b'*'];

/// The profile a recheck mark names.
pub fn decode_fuzzy_recheck(key: &[u8]) -> Option<ProfileId> {
    let bytes: [u8; 8] = key.strip_prefix(FUZZY_RECHECK)?.try_into().ok()?;
    Some(ProfileId(u64::from_be_bytes(bytes)))
}

/// The profiles a reviewer said are not the same person as this one, so
/// that erasing either side finds its rejections without scanning them.
pub fn fuzzy_rejections_of(id: ProfileId) -> Vec<u8> {
    let mut key = Vec::with_capacity(11);
    key.extend_from_slice(&[FUZZY, b'#', b'^']);
    key.extend_from_slice(&id.0.to_be_bytes());
    key
}

/// The point keys stored under one profile id, besides its events: what
/// the writer reads of a profile it resolves to, and what cannot exist yet
/// under an id just allocated.
pub fn profile_point_keys(id: ProfileId) -> [Vec<u8>; 7] {
    [
        profile(id).to_vec(),
        alias(id).to_vec(),
        membership(id).to_vec(),
        fuzzy_counted_names(id),
        fuzzy_variants(id),
        fuzzy_candidates_of(id),
        fuzzy_recheck(id),
    ]
}

/// The current match model (JSON).
pub const FUZZY_MODEL: &[u8] = &[FUZZY, b'#', b'!'];

/// Profile ids packed as big-endian u64s.
pub fn encode_ids(ids: &[ProfileId]) -> Vec<u8> {
    ids.iter().flat_map(|id| id.0.to_be_bytes()).collect()
}

pub fn decode_ids(bytes: &[u8]) -> Vec<ProfileId> {
    bytes
        .chunks_exact(8)
        .filter_map(decode_u64)
        .map(ProfileId)
        .collect()
}

/// Pairs are stored once, lower id first.
pub fn candidate(first: ProfileId, second: ProfileId) -> [u8; 17] {
    pair(CANDIDATE, first, second)
}

pub fn rejection(first: ProfileId, second: ProfileId) -> [u8; 17] {
    pair(REJECTION, first, second)
}

pub fn decode_pair(key: &[u8]) -> Option<(ProfileId, ProfileId)> {
    if key.len() != 17 {
        return None;
    }
    Some((
        ProfileId(decode_u64(&key[1..9])?),
        ProfileId(decode_u64(&key[9..])?),
    ))
}

fn pair(tag: u8, first: ProfileId, second: ProfileId) -> [u8; 17] {
    let (low, high) = if first <= second {
        (first, second)
    } else {
        (second, first)
    };
    let mut key = [0u8; 17];
    key[0] = tag;
    key[1..9].copy_from_slice(&low.0.to_be_bytes());
    key[9..].copy_from_slice(&high.0.to_be_bytes());
    key
}

pub fn encode_u64(value: u64) -> [u8; 8] {
    value.to_be_bytes()
}

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn tagged_u64(tag: u8, value: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = tag;
    key[1..].copy_from_slice(&value.to_be_bytes());
    key
}

/// Flips the sign bit so that negative timestamps sort before positive ones
/// as unsigned big-endian bytes.
fn sortable_i64(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_keys_sort_by_time_then_sequence() {
        let id = ProfileId(3);
        let keys = [
            event(id, UnixMillis(-5), 9),
            event(id, UnixMillis(0), 2),
            event(id, UnixMillis(0), 3),
            event(id, UnixMillis(1_700_000_000_000), 1),
        ];
        let mut sorted = keys;
        sorted.sort();
        assert_eq!(sorted, keys);
        assert!(keys.iter().all(|k| k.starts_with(&events_of(id))));
        assert_eq!(event_suffix(&keys[1]), Some(&keys[1][9..]));
        assert_eq!(decode_event(&keys[0]), Some((UnixMillis(-5), 9)));
        assert_eq!(
            decode_event(&keys[3]),
            Some((UnixMillis(1_700_000_000_000), 1))
        );
    }

    #[test]
    fn profile_keys_of_neighbours_do_not_share_prefixes() {
        assert!(!events_of(ProfileId(1)).starts_with(&events_of(ProfileId(256))[..]));
    }
}
