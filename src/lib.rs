//! prism keeps fleets of EC2 research workspaces in the state a manifest declares.
//!
//! The modules follow the pipeline: a [`manifest`] is loaded and validated, the
//! [`cloud`] is observed ([`observe`]), a pure [`plan`] is made from both and checked
//! against the account's [`quota`]s, and the [`engine`] carries it out, paced and
//! retried, for every front door: the [`cli`] and [`watch`]. Only `cli` prints.

pub mod cli;
pub mod cloud;
pub mod config;
pub mod engine;
pub mod errors;
pub mod inventory;
pub mod manifest;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod quota;
pub mod retry;
pub mod serve;
pub mod store;
pub mod teardown;
pub mod watch;

#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;
