//! Every method of every service, taken from the served descriptors (so a
//! new method cannot be left out), called without a token, with a token
//! lacking the scope the method table names, and with one holding it.

use std::time::Duration;

use prost::Message;
use sightline::api::pb;
use sightline::config::TokenConfig;
use sightline::security::{Requirement, Scope, generate_token, hash_token, requirement};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

use crate::support::*;

/// Encodes requests and decodes answers as an empty message: an empty message is a
/// valid (default) request of every type, and unknown fields of an answer
/// are skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct Nothing {}

#[derive(Clone, Default)]
struct EmptyCodec;

impl tonic::codec::Codec for EmptyCodec {
    type Encode = Nothing;
    type Decode = Nothing;
    type Encoder = tonic_prost::ProstEncoder<Nothing>;
    type Decoder = tonic_prost::ProstDecoder<Nothing>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct Method {
    path: String,
    server_streaming: bool,
}

fn methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                methods.push(Method {
                    path: format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    methods
}

/// The call's code; a stream that is admitted and stays open counts as OK.
async fn call(server: &TestServer, method: &Method, token: Option<&str>) -> Code {
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(Nothing {});
    if let Some(token) = token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    let path = PathAndQuery::try_from(method.path.as_str()).expect("path");
    let answer = async {
        if method.server_streaming {
            let mut stream = grpc
                .server_streaming(request, path, EmptyCodec)
                .await?
                .into_inner();
            stream.message().await.map(|_| ())
        } else {
            grpc.unary(request, path, EmptyCodec).await.map(|_| ())
        }
    };
    match tokio::time::timeout(Duration::from_secs(2), answer).await {
        Ok(Ok(())) | Err(_) => Code::Ok,
        Ok(Err(status)) => status.code(),
    }
}

/// A scope that does not meet the requirement, if one exists.
fn lacking(needed: Requirement) -> Option<Scope> {
    let caller = |scope| sightline::security::Caller {
        token_name: String::new(),
        scopes: vec![scope],
    };
    Scope::ALL
        .into_iter()
        .find(|scope| !caller(*scope).satisfies(needed))
}

/// A scope that meets it.
fn holding(needed: Requirement) -> Scope {
    match needed {
        Requirement::Scope(scope) => scope,
        Requirement::AnyOf(scopes) => scopes[0],
        Requirement::Open | Requirement::AnyToken => Scope::ProfilesRead,
    }
}

/// Who may call what, written down here apart from the server's table: a
/// new method fails this test until someone decides its scope.
fn decided(path: &str) -> Option<Requirement> {
    use Requirement::{AnyOf, Scope as Needs};
    let (service, method) = path.trim_start_matches("/sightline.v1.").split_once('/')?;
    Some(match (service, method) {
        (
            "ProfileService",
            "GetProfile" | "ListMatchCandidates" | "ListProfiles" | "CountProfiles",
        ) => Needs(Scope::ProfilesRead),
        ("ProfileService", "Identify" | "Track" | "Ingest" | "UpdateConsent") => {
            Needs(Scope::EventsWrite)
        }
        (
            "ProfileService",
            "Unmerge" | "ReviewMatchCandidate" | "RunMatching" | "RunMaintenance",
        ) => Needs(Scope::Admin),
        (
            "SegmentService",
            "PutSegment" | "DeleteSegment" | "PutComputedTrait" | "DeleteComputedTrait",
        ) => Needs(Scope::SegmentsWrite),
        (
            "SegmentService",
            "GetSegment" | "ListSegments" | "ListMembers" | "CheckMembership" | "WatchMembership"
            | "PreviewSegment" | "GetComputedTrait" | "ListComputedTraits",
        ) => Needs(Scope::SegmentsRead),
        ("PrivacyService", "ExportSubject") => Needs(Scope::PrivacyExport),
        ("PrivacyService", "EraseSubject") => Needs(Scope::PrivacyErase),
        ("PrivacyService", "ListPrivacyRequests") => {
            AnyOf(&[Scope::PrivacyExport, Scope::PrivacyErase])
        }
        ("RecommendationService", "GetRecommendations" | "GetRelatedProducts") => {
            Needs(Scope::ProfilesRead)
        }
        ("RecommendationService", "PutProducts") => Needs(Scope::EventsWrite),
        ("AdminService", "Backup" | "GetMatchModel" | "EstimateMatchModel") => Needs(Scope::Admin),
        _ => return None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_of_every_service_checks_the_scope_its_table_names() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut config = test_config(&data_dir);
    let mut tokens = std::collections::BTreeMap::new();
    for scope in Scope::ALL {
        let token = generate_token().unwrap();
        config.auth.tokens.push(TokenConfig {
            name: scope.as_str().replace(':', "-"),
            scopes: vec![scope],
            sha256: hash_token(&token).to_string(),
        });
        tokens.insert(scope, token);
    }
    let server = TestServer::start_with(data_dir, config).await;
    let _ = server.client_with_token(&tokens[&Scope::Admin]).await;
    let methods = methods();
    assert!(methods.len() >= 26, "{} methods", methods.len());
    let mut checked = Vec::new();
    for method in &methods {
        let needed = requirement(&method.path);
        assert_eq!(
            Some(needed),
            decided(&method.path),
            "{}: the server's table and the decision here differ (or it is new)",
            method.path
        );
        assert_eq!(
            call(&server, method, None).await,
            Code::Unauthenticated,
            "{} without a token",
            method.path
        );
        if let Some(scope) = lacking(needed) {
            assert_eq!(
                call(&server, method, Some(&tokens[&scope])).await,
                Code::PermissionDenied,
                "{} with {scope}",
                method.path
            );
        }
        let scope = holding(needed);
        let admitted = call(&server, method, Some(&tokens[&scope])).await;
        assert!(
            !matches!(admitted, Code::Unauthenticated | Code::PermissionDenied),
            "{} with {scope}: {admitted:?}",
            method.path
        );
        checked.push(method.path.clone());
    }
    assert!(checked.iter().any(|path| path.ends_with("/PreviewSegment")));
    assert!(checked.iter().any(|path| path.ends_with("/Backup")));
    server.stop().await;
}
