//! prism keeps fleets of EC2 research workspaces in the state a manifest declares.
//!
//! The modules follow the pipeline: a [`manifest`] is loaded and validated, the
//! [`cloud`] is observed ([`observe`]), a pure [`plan`] is made from both and checked
//! against the account's [`quota`]s, and [`apply`] carries it out; the [`cli`] renders
//! each step.

pub mod apply;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod errors;
pub mod manifest;
pub mod observe;
pub mod plan;
pub mod quota;
pub mod retry;
pub mod watch;
