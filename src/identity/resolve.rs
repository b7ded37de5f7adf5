//! Deterministic resolution with merge protection.
//!
//! A call asserts that all its identifiers belong to one person. The
//! identifiers fall into groups: one per profile that already holds some of
//! them, plus one of identifiers nobody holds yet. The group holding the
//! call's strongest identifier (by kind priority; ties go to the oldest
//! profile) is the anchor, and receives the call's data. Every other group
//! joins the anchor unless joining would
//! - exceed a per-kind limit (two `user_id`s on one profile), or
//! - add a second value of a kind on the strength of weaker evidence only:
//!   a shared tablet's `device_id` must not make two different emails one
//!   person, while a `user_id` login may bring a new email to a profile, or
//! - undo an operator's unmerge of the two.
//!
//! A group that does not join is a blocked link: its profile stays as it
//! is, and new identifiers that could not join get a profile of their own.

use std::collections::{BTreeMap, BTreeSet};

use super::MergeRules;
use crate::model::{Identifier, IdentifierKind, ProfileId, UnixMillis};

/// A profile that holds some of a call's identifiers.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownProfile {
    pub id: ProfileId,
    /// Every identifier the profile holds.
    pub identifiers: Vec<Identifier>,
    /// Live profiles an operator split from this one.
    pub separated_from: BTreeSet<ProfileId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// The merged profile would hold more identifiers of `kind` than allowed.
    KindLimit { kind: String, max: usize },
    /// Two different values of `kind` linked only by weaker identifiers.
    WeakLink { kind: String },
    /// An operator split these profiles apart.
    Separated,
}

impl std::fmt::Display for BlockReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockReason::KindLimit { kind, max } => {
                write!(f, "a profile holds at most {max} {kind} identifier(s)")
            }
            BlockReason::WeakLink { kind } => write!(
                f,
                "different {kind} identifiers linked only by weaker identifiers"
            ),
            BlockReason::Separated => f.write_str("the profiles were unmerged by an operator"),
        }
    }
}

/// A link the call asked for that merge protection refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedLink {
    /// The profile that was not merged; `None` for new identifiers that
    /// could not join (they get a profile of their own, or are dropped
    /// when the call alone exceeds a limit).
    pub profile: Option<ProfileId>,
    /// The call's identifiers on the refused side.
    pub identifiers: Vec<Identifier>,
    /// The call's identifiers weaker than the conflicting kind: the glue
    /// that tried to join two people, counted towards hub detection.
    pub weak_identifiers: Vec<Identifier>,
    pub reason: BlockReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolutionPlan {
    /// The profile that receives the call; `None` creates one.
    pub survivor: Option<ProfileId>,
    /// Profiles merged into the survivor.
    pub absorbed: Vec<ProfileId>,
    /// Identifiers new to the store that join the survivor.
    pub attach: Vec<Identifier>,
    /// New identifiers that could not join; they form a profile of their own.
    pub detached: Vec<Identifier>,
    /// New identifiers dropped because the call alone exceeds a limit.
    pub dropped: Vec<Identifier>,
    pub blocked: Vec<BlockedLink>,
}

/// One side of a potential merge.
struct Group {
    profile: Option<ProfileId>,
    /// The call's identifiers in this group.
    evidence: Vec<Identifier>,
    values: BTreeMap<IdentifierKind, BTreeSet<String>>,
    separated_from: BTreeSet<ProfileId>,
}

impl Group {
    fn strength(&self, rules: &MergeRules) -> u8 {
        self.evidence
            .iter()
            .map(|identifier| rules.priority(identifier.kind()))
            .max()
            .unwrap_or(0)
    }
}

/// The merged state built up from the anchor.
struct Combined {
    profiles: BTreeSet<ProfileId>,
    has_new: bool,
    evidence: Vec<Identifier>,
    strength: u8,
    values: BTreeMap<IdentifierKind, BTreeSet<String>>,
    separated_from: BTreeSet<ProfileId>,
}

impl Combined {
    fn from_group(group: Group, rules: &MergeRules) -> Combined {
        let strength = group.strength(rules);
        Combined {
            profiles: group.profile.into_iter().collect(),
            has_new: group.profile.is_none(),
            evidence: group.evidence,
            strength,
            values: group.values,
            separated_from: group.separated_from,
        }
    }

    fn conflict(&self, group: &Group, rules: &MergeRules) -> Option<(BlockReason, u8)> {
        let separated = group
            .profile
            .is_some_and(|id| self.separated_from.contains(&id))
            || group
                .separated_from
                .iter()
                .any(|id| self.profiles.contains(id));
        if separated {
            return Some((BlockReason::Separated, u8::MAX));
        }
        let group_strength = group.strength(rules);
        // The strongest kind in conflict names the reason: everything
        // weaker that the call sent is the glue counted towards hubs.
        let mut kinds: Vec<(&IdentifierKind, &BTreeSet<String>)> = group.values.iter().collect();
        kinds.sort_by_key(|(kind, _)| std::cmp::Reverse(rules.priority(kind)));
        for (kind, values) in kinds {
            let Some(ours) = self.values.get(kind) else {
                continue;
            };
            let union = ours.union(values).count();
            let max = rules.per_profile_max(kind);
            if union > max {
                let reason = BlockReason::KindLimit {
                    kind: kind.to_string(),
                    max,
                };
                return Some((reason, rules.priority(kind)));
            }
            let both_add_values = union > ours.len() && union > values.len();
            let needed = rules.priority(kind);
            if both_add_values && (self.strength < needed || group_strength < needed) {
                let reason = BlockReason::WeakLink {
                    kind: kind.to_string(),
                };
                return Some((reason, needed));
            }
        }
        None
    }

    fn join(&mut self, group: Group, rules: &MergeRules) {
        self.strength = self.strength.max(group.strength(rules));
        self.profiles.extend(group.profile);
        self.has_new |= group.profile.is_none();
        self.evidence.extend(group.evidence);
        for (kind, values) in group.values {
            self.values.entry(kind).or_default().extend(values);
        }
        self.separated_from.extend(group.separated_from);
    }
}

/// Plans how a call's identifiers resolve. `owners[i]` is the profile
/// holding `call[i]`, if any; `profiles` describes each of those profiles.
pub fn plan_resolution(
    rules: &MergeRules,
    call: &[Identifier],
    owners: &[Option<ProfileId>],
    profiles: &[KnownProfile],
) -> ResolutionPlan {
    let mut plan = ResolutionPlan::default();
    let mut groups: Vec<Group> = profiles
        .iter()
        .map(|profile| Group {
            profile: Some(profile.id),
            evidence: call
                .iter()
                .zip(owners)
                .filter(|(_, owner)| **owner == Some(profile.id))
                .map(|(identifier, _)| identifier.clone())
                .collect(),
            values: values_by_kind(&profile.identifiers),
            separated_from: profile.separated_from.clone(),
        })
        .collect();

    // New identifiers, strongest first, within the per-kind limits.
    let mut new: Vec<&Identifier> = call
        .iter()
        .zip(owners)
        .filter(|(_, owner)| owner.is_none())
        .map(|(identifier, _)| identifier)
        .collect();
    new.sort_by_key(|identifier| std::cmp::Reverse(rules.priority(identifier.kind())));
    let mut admitted = Vec::new();
    for identifier in new {
        let same_kind = admitted
            .iter()
            .filter(|other: &&Identifier| other.kind() == identifier.kind())
            .count();
        if same_kind < rules.per_profile_max(identifier.kind()) {
            admitted.push(identifier.clone());
        } else {
            plan.dropped.push(identifier.clone());
        }
    }
    if !plan.dropped.is_empty() {
        plan.blocked.push(BlockedLink {
            profile: None,
            identifiers: plan.dropped.clone(),
            weak_identifiers: Vec::new(),
            reason: BlockReason::KindLimit {
                kind: plan.dropped[0].kind().to_string(),
                max: rules.per_profile_max(plan.dropped[0].kind()),
            },
        });
    }
    if !admitted.is_empty() {
        groups.push(Group {
            profile: None,
            values: values_by_kind(&admitted),
            evidence: admitted,
            separated_from: BTreeSet::new(),
        });
    }

    // Strongest evidence first; on a tie existing profiles before new
    // identifiers, older profiles before younger.
    groups.sort_by_key(|group| {
        (
            std::cmp::Reverse(group.strength(rules)),
            group.profile.is_none(),
            group.profile,
        )
    });
    let mut groups = groups.into_iter();
    let Some(anchor) = groups.next() else {
        return plan;
    };
    let mut combined = Combined::from_group(anchor, rules);
    for group in groups {
        match combined.conflict(&group, rules) {
            None => combined.join(group, rules),
            Some((reason, needed)) => {
                let weak_identifiers = combined
                    .evidence
                    .iter()
                    .chain(&group.evidence)
                    .filter(|identifier| rules.priority(identifier.kind()) < needed)
                    .cloned()
                    .collect();
                if group.profile.is_none() {
                    plan.detached = group.evidence.clone();
                }
                plan.blocked.push(BlockedLink {
                    profile: group.profile,
                    identifiers: group.evidence,
                    weak_identifiers,
                    reason,
                });
            }
        }
    }

    let mut survivors = combined.profiles.into_iter();
    plan.survivor = survivors.next();
    plan.absorbed = survivors.collect();
    if combined.has_new {
        plan.attach = call
            .iter()
            .zip(owners)
            .filter(|(identifier, owner)| {
                owner.is_none()
                    && !plan.dropped.contains(identifier)
                    && !plan.detached.contains(identifier)
            })
            .map(|(identifier, _)| identifier.clone())
            .collect();
    }
    plan
}

/// Whether two whole profiles may be merged without a call linking them (a
/// fuzzy match, a reviewed candidate): per-kind limits and operator
/// separations apply; the weak-link rule does not, since differing emails
/// are exactly what a typo produces.
pub fn merge_allowed(
    rules: &MergeRules,
    first: &KnownProfile,
    second: &KnownProfile,
) -> Result<(), BlockReason> {
    if first.separated_from.contains(&second.id) || second.separated_from.contains(&first.id) {
        return Err(BlockReason::Separated);
    }
    let mut values = values_by_kind(&first.identifiers);
    for (kind, theirs) in values_by_kind(&second.identifiers) {
        values.entry(kind).or_default().extend(theirs);
    }
    for (kind, union) in values {
        let max = rules.per_profile_max(&kind);
        if union.len() > max {
            return Err(BlockReason::KindLimit {
                kind: kind.to_string(),
                max,
            });
        }
    }
    Ok(())
}

fn values_by_kind<'a>(
    identifiers: impl IntoIterator<Item = &'a Identifier>,
) -> BTreeMap<IdentifierKind, BTreeSet<String>> {
    let mut values: BTreeMap<IdentifierKind, BTreeSet<String>> = BTreeMap::new();
    for identifier in identifiers {
        values
            .entry(identifier.kind().clone())
            .or_default()
            .insert(identifier.value().to_owned());
    }
    values
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
    use crate::config::{FuzzyConfig, IdentityConfig, MergeConfig};
    use crate::identity::Normalizer;

    fn id(kind: &str, value: &str) -> Identifier {
        Normalizer::new(&IdentityConfig::default(), 256)
            .normalize(kind, value)
            .expect("valid identifier")
    }

    fn profile(number: u64, identifiers: &[Identifier]) -> KnownProfile {
        KnownProfile {
            id: ProfileId(number),
            identifiers: identifiers.to_vec(),
            separated_from: BTreeSet::new(),
        }
    }

    fn rules() -> MergeRules {
        MergeRules::new(&MergeConfig::default(), &FuzzyConfig::default())
    }

    #[test]
    fn unknown_identifiers_create_and_known_ones_attach() {
        let email = id("email", "a@x.com");
        let plan = plan_resolution(&rules(), std::slice::from_ref(&email), &[None], &[]);
        assert_eq!(plan.survivor, None);
        assert_eq!(plan.attach, vec![email.clone()]);

        let phone = id("phone", "+16502530000");
        let known = profile(4, std::slice::from_ref(&email));
        let plan = plan_resolution(
            &rules(),
            &[email, phone.clone()],
            &[Some(ProfileId(4)), None],
            &[known],
        );
        assert_eq!(plan.survivor, Some(ProfileId(4)));
        assert_eq!(plan.attach, vec![phone]);
        assert!(plan.blocked.is_empty());
    }

    #[test]
    fn identifiers_on_several_profiles_merge_into_the_oldest() {
        let (email, phone) = (id("email", "a@x.com"), id("phone", "+16502530000"));
        let profiles = [
            profile(9, std::slice::from_ref(&phone)),
            profile(3, std::slice::from_ref(&email)),
        ];
        let plan = plan_resolution(
            &rules(),
            &[email, phone],
            &[Some(ProfileId(3)), Some(ProfileId(9))],
            &profiles,
        );
        assert_eq!(plan.survivor, Some(ProfileId(3)));
        assert_eq!(plan.absorbed, vec![ProfileId(9)]);
    }

    #[test]
    fn a_shared_device_does_not_join_two_emails() {
        let tablet = id("device_id", "tablet");
        let first = profile(1, &[tablet.clone(), id("email", "one@x.com")]);
        let second_email = id("email", "two@x.com");
        let plan = plan_resolution(
            &rules(),
            &[tablet.clone(), second_email.clone()],
            &[Some(ProfileId(1)), None],
            &[first],
        );
        assert_eq!(plan.survivor, None, "the new email gets its own profile");
        assert_eq!(plan.attach, vec![second_email]);
        assert_eq!(plan.blocked.len(), 1);
        assert_eq!(plan.blocked[0].profile, Some(ProfileId(1)));
        assert_eq!(plan.blocked[0].weak_identifiers, vec![tablet]);
    }

    #[test]
    fn a_login_may_bring_a_second_email() {
        let user = id("user_id", "u1");
        let known = profile(1, &[user.clone(), id("email", "old@x.com")]);
        let other = profile(2, &[id("email", "new@x.com")]);
        let plan = plan_resolution(
            &rules(),
            &[user, id("email", "new@x.com")],
            &[Some(ProfileId(1)), Some(ProfileId(2))],
            &[known, other],
        );
        assert_eq!(plan.survivor, Some(ProfileId(1)));
        assert_eq!(plan.absorbed, vec![ProfileId(2)]);
    }

    #[test]
    fn two_user_ids_never_merge() {
        let (first, second) = (id("user_id", "u1"), id("user_id", "u2"));
        let profiles = [
            profile(1, std::slice::from_ref(&first)),
            profile(2, std::slice::from_ref(&second)),
        ];
        let plan = plan_resolution(
            &rules(),
            &[first, second],
            &[Some(ProfileId(1)), Some(ProfileId(2))],
            &profiles,
        );
        assert_eq!(plan.survivor, Some(ProfileId(1)));
        assert!(plan.absorbed.is_empty());
        assert!(matches!(
            plan.blocked[0].reason,
            BlockReason::KindLimit { .. }
        ));
    }

    #[test]
    fn the_strongest_kind_in_conflict_names_the_reason_and_the_glue() {
        let (first, second) = (id("email", "a@x.com"), id("email", "b@x.com"));
        let profiles = [
            profile(
                1,
                &[id("user_id", "u1"), first.clone(), id("email", "c@x.com")],
            ),
            profile(2, &[id("user_id", "u2"), second.clone()]),
        ];
        let merge = MergeConfig {
            identifiers_per_kind_max: [("email".to_owned(), 2), ("user_id".to_owned(), 1)]
                .into_iter()
                .collect(),
            ..MergeConfig::default()
        };
        let rules = MergeRules::new(&merge, &FuzzyConfig::default());
        let plan = plan_resolution(
            &rules,
            &[first.clone(), second.clone()],
            &[Some(ProfileId(1)), Some(ProfileId(2))],
            &profiles,
        );
        assert_eq!(
            plan.blocked[0].reason,
            BlockReason::KindLimit {
                kind: "user_id".to_owned(),
                max: 1
            },
            "two user ids, not three emails"
        );
        assert_eq!(plan.blocked[0].weak_identifiers, vec![first, second]);
    }

    #[test]
    fn separated_profiles_stay_apart() {
        let (email, phone) = (id("email", "a@x.com"), id("phone", "+16502530000"));
        let mut first = profile(1, std::slice::from_ref(&email));
        first.separated_from.insert(ProfileId(2));
        let plan = plan_resolution(
            &rules(),
            &[email, phone.clone()],
            &[Some(ProfileId(1)), Some(ProfileId(2))],
            &[first, profile(2, &[phone])],
        );
        assert!(plan.absorbed.is_empty());
        assert_eq!(plan.blocked[0].reason, BlockReason::Separated);
    }

    #[test]
    fn older_values_do_not_replace_newer_ones() {
        assert!(incoming_trait_wins(UnixMillis(10), UnixMillis(11)));
        assert!(incoming_trait_wins(UnixMillis(10), UnixMillis(10)));
        assert!(!incoming_trait_wins(UnixMillis(10), UnixMillis(9)));
    }
}
