//! # Sigil — a SPIFFE certificate authority for Kubernetes, wire-compatible with Dapr Sentry
//!
//! This crate is the service around the pure PKI core ([`sigil_pki`]):
//!
//! - [`config`]: one typed configuration from flags (Dapr Sentry's names), environment and
//!   the Dapr `Configuration`, validated once at start.
//! - [`validator`]: who is calling, proven: insecure (development), Kubernetes
//!   (TokenReview + pod), JWKS. A seam ([`validator::TokenValidator`]).
//! - [`store`]: where CA material lives: files or the `dapr-trust-bundle` Secret. A seam
//!   ([`store::CredentialStore`]).
//! - [`rotation`]: the CA in force, swapped atomically when the store changes; bad material
//!   never replaces good.
//! - [`serving_cert`]: the server's own `dapr-sentry` certificate, renewed in process.
//! - [`ca_service`]: the gRPC `SignCertificate` handler, in Dapr's order with Dapr's codes.
//! - [`jwt`]: JWT-SVIDs next to every certificate: signing key, published JWKS, rotation.
//! - [`oidc`]: the OIDC discovery server (`/.well-known/openid-configuration`, `/jwks.json`).
//! - [`observe`]: metrics and health.
//! - [`audit`]: the audit log, one line per certificate issued or refused, for both paths.
//! - [`cluster`]: the Kubernetes API client (kubernetes mode).
//! - [`listener`]: the accept side of every listener (gRPC, health, metrics, OIDC): accept
//!   loop with back-off, connection caps, handshake/header/idle deadlines, and the gRPC
//!   request byte budget ([`listener::budget`]).
//! - [`rate_limit`]: per-caller token buckets (by address, by proven identity).
//! - [`server`]: wiring and graceful shutdown.
//!
//! Errors are one enum ([`Error`]); its [`Error::code`] is the single place where failures
//! become gRPC status codes.
#![forbid(unsafe_code)]

pub mod audit;
pub mod ca_service;
pub mod cli;
pub mod cluster;
pub mod config;
mod error;
pub mod jwt;
pub mod listener;
pub mod observe;
pub mod oidc;
pub mod pod_certificates;
pub mod rate_limit;
pub mod rotation;
pub mod server;
pub mod serving_cert;
pub mod store;
pub mod validator;

pub use error::Error;
