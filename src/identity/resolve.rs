use crate::model::{ProfileId, UnixMillis};

/// What a call's identifiers mean for the profiles they point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolutionPlan {
    /// No identifier is known: a new profile holds them all.
    Create,
    /// Every known identifier is on this profile; new ones attach to it.
    Attach(ProfileId),
    /// The identifiers span several profiles: the oldest survives and absorbs
    /// the others.
    Merge {
        survivor: ProfileId,
        absorbed: Vec<ProfileId>,
    },
}

/// Decides create / attach / merge from the live profiles the call's known
/// identifiers resolve to. Profile ids increase with creation time, so the
/// oldest profile is the smallest id.
pub fn plan_resolution(known_profiles: impl IntoIterator<Item = ProfileId>) -> ResolutionPlan {
    let mut profiles: Vec<ProfileId> = known_profiles.into_iter().collect();
    profiles.sort_unstable();
    profiles.dedup();
    match profiles.as_slice() {
        [] => ResolutionPlan::Create,
        [only] => ResolutionPlan::Attach(*only),
        [survivor, absorbed @ ..] => ResolutionPlan::Merge {
            survivor: *survivor,
            absorbed: absorbed.to_vec(),
        },
    }
}

/// Last write wins by the time the value was set at its source, not by
/// arrival order. On a tie the later arrival wins, so that a correction
/// re-sent with the same timestamp takes effect.
pub fn incoming_trait_wins(stored_at: UnixMillis, incoming_at: UnixMillis) -> bool {
    incoming_at >= stored_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_create_attach_and_merge_into_the_oldest() {
        assert_eq!(plan_resolution([]), ResolutionPlan::Create);
        assert_eq!(
            plan_resolution([ProfileId(7), ProfileId(7)]),
            ResolutionPlan::Attach(ProfileId(7))
        );
        assert_eq!(
            plan_resolution([ProfileId(9), ProfileId(3), ProfileId(5), ProfileId(3)]),
            ResolutionPlan::Merge {
                survivor: ProfileId(3),
                absorbed: vec![ProfileId(5), ProfileId(9)],
            }
        );
    }

    #[test]
    fn older_values_do_not_replace_newer_ones() {
        assert!(incoming_trait_wins(UnixMillis(10), UnixMillis(11)));
        assert!(incoming_trait_wins(UnixMillis(10), UnixMillis(10)));
        assert!(!incoming_trait_wins(UnixMillis(10), UnixMillis(9)));
    }
}
