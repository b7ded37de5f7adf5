//! The gRPC surface: tonic service implementations, conversion between
//! protobuf and domain types, and the one mapping of errors to status codes.
//! Only this module (and `server`) knows tonic and the generated types.

mod admin;
mod caller;
pub mod convert;
pub mod layers;
mod privacy;
mod profiles;
mod recommendations;
mod segments;
mod status;

pub use admin::AdminApi;
pub use privacy::PrivacyApi;
pub use profiles::ProfileApi;
pub use recommendations::RecommendationApi;
pub use segments::SegmentApi;
pub use status::{Refusal, code_name, refusal_status, to_status};

/// Generated protobuf and gRPC code for `sightline.v1`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("sightline.v1");

    /// Encoded descriptors of the `sightline.v1` package, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("sightline_descriptor");
}
