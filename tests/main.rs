//! One integration-test binary: the real `outpost` binary against real git repositories, real
//! ssh-keygen signatures and real SQLite files in temp dirs.

mod support;

mod apply;
mod apply_bad_input;
mod bad_input;
mod crash;
mod daemon;
mod hostile_stick;
mod import;
mod state;
mod stock_bundles;
mod time_floor;
