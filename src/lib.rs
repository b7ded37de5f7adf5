//! Sightline: a unified customer profile store.
//!
//! # Layout
//! - [`model`]: domain types (identifiers, profiles, write calls, the clock). Pure.
//! - [`identity`]: normalization and resolution rules. Pure.
//! - [`store`]: the storage interface and its sled implementation; the only
//!   module that knows sled.
//! - [`segments`]: segment rules (CEL), their checking and evaluation, and
//!   the segment use cases; knows neither tonic nor sled.
//! - [`privacy`]: subject-access exports, erasure with suppression, their
//!   audit records and the access log; knows neither tonic nor sled.
//! - [`personalisation`]: the recommendation use cases (consent, holdouts,
//!   catalogue uploads) over [`recommend`] and the store.
//! - [`service`]: validates requests against the limits and drives the store;
//!   knows neither tonic nor sled.
//! - [`api`]: tonic services, protobuf conversion, and the one mapping of
//!   errors to gRPC status.
//! - [`http`]: the HTTP/1.1 API on axum: the Segment tracking spec and JSON
//!   profile reads, over the same use cases as [`api`].
//! - [`recommend`]: product recommendations from co-occurrence and
//!   popularity counts kept incrementally. Pure.
//! - [`views`]: JSON views of profile parts (export and HTTP reads).
//! - [`server`]: assembles services, health and reflection and runs them on a
//!   given listener until a given shutdown signal.
//! - [`security`]: scopes, tokens (stored hashed), the authenticated
//!   [`security::Caller`] and the method → scope table. Pure.
//! - [`config`]: typed configuration with defaults, and the check of where
//!   the server may listen unprotected.
//! - [`cli`]: the command-line client (a gRPC client of a running server).
//! - [`quality`]: the identity-resolution quality harness (a gRPC client too).
//! - [`import`]: `sightline import`, CSV files streamed through `Ingest`
//!   (a gRPC client too).
//! - [`metrics`]: request, ingest and store metrics in the Prometheus text
//!   format on an optional HTTP port.

pub mod api;
pub mod cli;
pub mod computed;
pub mod config;
pub mod http;
pub mod identity;
pub mod import;
pub mod metrics;
pub mod model;
pub mod personalisation;
pub mod privacy;
pub mod quality;
pub mod recommend;
pub mod security;
pub mod segments;
pub mod server;
pub mod service;
pub mod store;
pub mod views;
