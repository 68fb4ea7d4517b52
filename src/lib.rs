//! prism keeps fleets of EC2 research workspaces in the state a manifest declares.
//!
//! The modules follow the pipeline: a [`manifest`] is loaded and validated, the
//! [`cloud`] is observed ([`observe`]), a pure [`plan`] is made from both, checked
//! against the account's [`quota`]s, and rendered by the [`cli`].

pub mod cli;
pub mod cloud;
pub mod manifest;
pub mod observe;
pub mod plan;
pub mod quota;
