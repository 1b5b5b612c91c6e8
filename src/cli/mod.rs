//! Command-line subcommands other than `serve`.

pub mod ca;
pub mod request;
