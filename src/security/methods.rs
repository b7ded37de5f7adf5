//! The scope every gRPC method needs, keyed by its full path
//! (`/package.Service/Method`). A method missing from the table needs
//! `admin`: a new method is closed until someone decides who may call it.

use super::Scope;

/// What a call must present to reach its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    /// No token needed: health checks, which load balancers send bare.
    Open,
    /// Any valid token, whatever its scopes (server reflection).
    AnyToken,
    Scope(Scope),
    /// Any one of these scopes.
    AnyOf(&'static [Scope]),
}

const PROFILES: &str = "/sightline.v1.ProfileService/";
const SEGMENTS: &str = "/sightline.v1.SegmentService/";
const PRIVACY: &str = "/sightline.v1.PrivacyService/";
const ADMIN: &str = "/sightline.v1.AdminService/";
const RECOMMENDATIONS: &str = "/sightline.v1.RecommendationService/";
const HEALTH: &str = "/grpc.health.v1.Health/";
const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

pub fn requirement(path: &str) -> Requirement {
    use Requirement::{AnyOf, AnyToken, Open};
    let scope = Requirement::Scope;
    if path.starts_with(HEALTH) {
        return Open;
    }
    if REFLECTION.iter().any(|prefix| path.starts_with(prefix)) {
        return AnyToken;
    }
    if path.starts_with(ADMIN) {
        return scope(Scope::Admin);
    }
    let method = |service: &str| path.strip_prefix(service).unwrap_or_default();
    if path.starts_with(PROFILES) {
        return match method(PROFILES) {
            "GetProfile" | "ListMatchCandidates" | "ListProfiles" | "CountProfiles" => {
                scope(Scope::ProfilesRead)
            }
            "Identify" | "Track" | "Ingest" | "UpdateConsent" => scope(Scope::EventsWrite),
            _ => scope(Scope::Admin),
        };
    }
    if path.starts_with(SEGMENTS) {
        return match method(SEGMENTS) {
            "PutSegment" | "DeleteSegment" | "PutComputedTrait" | "DeleteComputedTrait" => {
                scope(Scope::SegmentsWrite)
            }
            "GetSegment" | "ListSegments" | "ListMembers" | "CheckMembership"
            | "WatchMembership" | "PreviewSegment" | "GetComputedTrait" | "ListComputedTraits" => {
                scope(Scope::SegmentsRead)
            }
            _ => scope(Scope::Admin),
        };
    }
    if path.starts_with(RECOMMENDATIONS) {
        return match method(RECOMMENDATIONS) {
            "GetRecommendations" | "GetRelatedProducts" => scope(Scope::ProfilesRead),
            "PutProducts" => scope(Scope::EventsWrite),
            _ => scope(Scope::Admin),
        };
    }
    if path.starts_with(PRIVACY) {
        return match method(PRIVACY) {
            "ExportSubject" => scope(Scope::PrivacyExport),
            "EraseSubject" => scope(Scope::PrivacyErase),
            "ListPrivacyRequests" => AnyOf(&[Scope::PrivacyExport, Scope::PrivacyErase]),
            _ => scope(Scope::Admin),
        };
    }
    scope(Scope::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_their_scopes_and_unknown_ones_to_admin() {
        let cases = [
            (
                "/sightline.v1.ProfileService/GetProfile",
                Requirement::Scope(Scope::ProfilesRead),
            ),
            (
                "/sightline.v1.ProfileService/Ingest",
                Requirement::Scope(Scope::EventsWrite),
            ),
            (
                "/sightline.v1.ProfileService/Unmerge",
                Requirement::Scope(Scope::Admin),
            ),
            (
                "/sightline.v1.ProfileService/RunMaintenance",
                Requirement::Scope(Scope::Admin),
            ),
            (
                "/sightline.v1.ProfileService/SomethingNew",
                Requirement::Scope(Scope::Admin),
            ),
            (
                "/sightline.v1.SegmentService/WatchMembership",
                Requirement::Scope(Scope::SegmentsRead),
            ),
            (
                "/sightline.v1.SegmentService/PutSegment",
                Requirement::Scope(Scope::SegmentsWrite),
            ),
            (
                "/sightline.v1.PrivacyService/EraseSubject",
                Requirement::Scope(Scope::PrivacyErase),
            ),
            (
                "/sightline.v1.AdminService/Backup",
                Requirement::Scope(Scope::Admin),
            ),
            ("/grpc.health.v1.Health/Check", Requirement::Open),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                Requirement::AnyToken,
            ),
            ("/other.Service/Method", Requirement::Scope(Scope::Admin)),
            ("", Requirement::Scope(Scope::Admin)),
        ];
        for (path, expected) in cases {
            assert_eq!(requirement(path), expected, "{path}");
        }
        assert_eq!(
            requirement("/sightline.v1.PrivacyService/ListPrivacyRequests"),
            Requirement::AnyOf(&[Scope::PrivacyExport, Scope::PrivacyErase])
        );
    }
}
