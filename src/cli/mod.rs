//! Command-line subcommands other than `serve`.

pub mod ca;
pub mod dapr;
pub mod request;
