//! Integration tests: the real `prism` binary against the local AWS emulator.

mod apply;
mod browser;
mod capacity;
mod chaos;
mod continuation;
mod contract;
mod destroy;
mod docs;
mod emulator;
mod help;
mod manifest;
mod members;
mod out_of_hours;
mod owners;
mod plan;
mod promises;
mod quota;
mod resize;
mod schedule;
mod schema;
mod serve;
mod settings;
mod storage;
mod term;
mod watch;
mod workspace;
