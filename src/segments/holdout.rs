//! Holdout (control group) assignment: a stable, deterministic share of a
//! segment's would-be members, decided by a hash of the segment id and the
//! profile id alone, so that it survives restarts and upgrades and is
//! independent between segments.

use crate::model::ProfileId;

/// Resolution of the percentage: 0.0001 %.
const BUCKETS: u64 = 1_000_000;

pub fn is_held_out(segment_id: &str, profile: ProfileId, holdout_percent: f64) -> bool {
    if holdout_percent <= 0.0 {
        return false;
    }
    let threshold = (holdout_percent / 100.0 * BUCKETS as f64).round() as u64;
    bucket(segment_id, profile) < threshold
}

/// FNV-1a over the segment id, a separator and the profile number, then a
/// SplitMix64 finalizer so that consecutive profile numbers spread evenly.
/// Written out rather than taken from `std`, whose hashers may change
/// between releases.
fn bucket(segment_id: &str, profile: ProfileId) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let bytes = segment_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(profile.0.to_be_bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    let mut mixed = hash.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 31;
    mixed % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_is_close_to_the_percentage_and_stable() {
        let held = (1..=100_000)
            .filter(|n| is_held_out("vip", ProfileId(*n), 10.0))
            .count();
        assert!((9_500..=10_500).contains(&held), "{held}");
        assert_eq!(
            is_held_out("vip", ProfileId(42), 10.0),
            is_held_out("vip", ProfileId(42), 10.0)
        );
        assert!(!is_held_out("vip", ProfileId(42), 0.0));
        assert!(is_held_out("vip", ProfileId(42), 100.0));
    }

    #[test]
    fn segments_hold_out_independently() {
        let both = (1..=100_000)
            .filter(|n| {
                is_held_out("a", ProfileId(*n), 10.0) && is_held_out("b", ProfileId(*n), 10.0)
            })
            .count();
        // Independent 10 % draws overlap on about 1 %.
        assert!((700..=1_300).contains(&both), "{both}");
    }
}
