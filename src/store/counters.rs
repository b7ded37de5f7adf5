//! The writer's sequence counters: profile ids and event sequences, handed
//! out in order on an engine of its own and from reserved blocks on a
//! database several servers share.

use super::StoreError;
use super::engine::Transaction;
use super::keys;
use super::overlay::CallWrites;
use crate::model::ProfileId;

/// Sequence counters, owned by the writer. On an engine of its own, both
/// are persisted with every group that advances them. On a database other
/// servers share, each server hands out ids and sequences from blocks it
/// reserves in the database (in the transaction of the call that needs
/// one), so that two servers never hand out the same number and calls do
/// not all write one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    next_profile_id: u64,
    next_event_sequence: u64,
    /// The ends (exclusive) of the reserved blocks; `None` when this
    /// server is the database's only writer.
    blocks: Option<Blocks>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blocks {
    profile_ids_end: u64,
    sequences_end: u64,
}

/// Numbers reserved at a time on a shared database: a reservation is a
/// write of one key every few thousand calls, not a race on every call.
const PROFILE_ID_BLOCK: u64 = 1_000;
const SEQUENCE_BLOCK: u64 = 10_000;

impl Counters {
    /// For the database's only writer, from the persisted counters.
    pub fn sole(next_profile_id: u64, next_event_sequence: u64) -> Counters {
        Counters {
            next_profile_id,
            next_event_sequence,
            blocks: None,
        }
    }

    /// As the database holds them now (for a server sharing it, nothing
    /// reserved).
    pub fn load(reads: &dyn Transaction, shared: bool) -> Result<Counters, StoreError> {
        if shared {
            return Ok(Counters::shared());
        }
        let read = |key: &[u8]| -> Result<u64, StoreError> {
            match reads.get(key)? {
                Some(bytes) => decode_counter(&bytes),
                None => Ok(FIRST_COUNTER_VALUE),
            }
        };
        Ok(Counters::sole(
            read(keys::NEXT_PROFILE_ID)?,
            read(keys::NEXT_EVENT_SEQUENCE)?,
        ))
    }

    /// For a server sharing its database: nothing reserved yet.
    pub fn shared() -> Counters {
        Counters {
            next_profile_id: 0,
            next_event_sequence: 0,
            blocks: Some(Blocks {
                profile_ids_end: 0,
                sequences_end: 0,
            }),
        }
    }

    pub(super) fn next_sequence(
        &mut self,
        writes: &mut CallWrites<'_, '_>,
    ) -> Result<u64, StoreError> {
        if let Some(blocks) = &mut self.blocks {
            reserve(
                writes,
                keys::NEXT_EVENT_SEQUENCE,
                &mut self.next_event_sequence,
                &mut blocks.sequences_end,
                SEQUENCE_BLOCK,
            )?;
        }
        let sequence = self.next_event_sequence;
        self.next_event_sequence += 1;
        Ok(sequence)
    }

    pub(super) fn persist(&self, writes: &mut CallWrites<'_, '_>) {
        if self.blocks.is_some() {
            // Only the reservations are stored.
            return;
        }
        writes.insert(
            keys::NEXT_PROFILE_ID,
            keys::encode_u64(self.next_profile_id),
        );
        writes.insert(
            keys::NEXT_EVENT_SEQUENCE,
            keys::encode_u64(self.next_event_sequence),
        );
    }

    pub(super) fn new_profile_id(
        &mut self,
        writes: &mut CallWrites<'_, '_>,
    ) -> Result<ProfileId, StoreError> {
        if let Some(blocks) = &mut self.blocks {
            reserve(
                writes,
                keys::NEXT_PROFILE_ID,
                &mut self.next_profile_id,
                &mut blocks.profile_ids_end,
                PROFILE_ID_BLOCK,
            )?;
        }
        let id = ProfileId(self.next_profile_id);
        self.next_profile_id += 1;
        // Ids are handed out once, so nothing is stored under this one yet.
        writes.known_absent(&keys::profile_point_keys(id));
        Ok(id)
    }
}

impl Counters {
    /// At a clean stop on a shared database: hands back what is left of
    /// this server's blocks when nobody reserved after them, so that a
    /// restart goes on without a gap.
    pub(super) fn release_unused(&self, writes: &mut CallWrites<'_, '_>) -> Result<(), StoreError> {
        let Some(blocks) = self.blocks else {
            return Ok(());
        };
        for (key, next, end) in [
            (
                keys::NEXT_PROFILE_ID,
                self.next_profile_id,
                blocks.profile_ids_end,
            ),
            (
                keys::NEXT_EVENT_SEQUENCE,
                self.next_event_sequence,
                blocks.sequences_end,
            ),
        ] {
            let stored = match writes.get(key)? {
                Some(bytes) => decode_counter(&bytes)?,
                None => continue,
            };
            if next < end && stored == end {
                writes.insert(key, keys::encode_u64(next));
            }
        }
        Ok(())
    }
}

/// Reserves the next block of a shared counter when this server's is used
/// up: the stored value is the first number nobody has reserved.
fn reserve(
    writes: &mut CallWrites<'_, '_>,
    key: &[u8],
    next: &mut u64,
    end: &mut u64,
    size: u64,
) -> Result<(), StoreError> {
    if *next < *end {
        return Ok(());
    }
    let unreserved = match writes.get(key)? {
        Some(bytes) => decode_counter(&bytes)?,
        None => FIRST_COUNTER_VALUE,
    };
    *next = unreserved.max(FIRST_COUNTER_VALUE);
    *end = *next + size;
    writes.insert(key, keys::encode_u64(*end));
    Ok(())
}

/// Profile id 0 is never handed out, so "p0" can never name a profile.
pub const FIRST_COUNTER_VALUE: u64 = 1;

pub fn decode_counter(bytes: &[u8]) -> Result<u64, StoreError> {
    keys::decode_u64(bytes).ok_or(StoreError::Corrupt {
        what: "counter",
        reason: format!("expected 8 bytes, found {}", bytes.len()),
    })
}
