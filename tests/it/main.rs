//! Integration tests: each module drives a real server, started on an
//! ephemeral loopback port with a temporary data directory, through the
//! generated gRPC client. One test binary, so the suite links once.

mod auth;
mod backup;
mod cli;
mod computed;
mod consent;
mod crash;
mod custom_traits;
mod durability;
mod engines;
mod faults;
mod finding;
mod fuzz_corpus;
mod fuzzy;
mod http_api;
mod idempotency;
mod import;
mod ingest;
mod layering;
mod match_model;
mod merge_protection;
mod metrics;
mod model;
mod normalization;
mod operations;
mod overload;
mod pii;
mod privacy;
mod quality;
mod readme;
mod recommendations;
mod resolution;
mod scopes;
mod sdk;
mod segments;
mod serve;
mod shredding;
mod support;
mod tls;
mod validation;
