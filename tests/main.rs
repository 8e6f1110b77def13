//! One integration-test binary: the real `outpost` binary against real git repositories, real
//! ssh-keygen signatures and real SQLite files in temp dirs.

mod support;

mod apply;
mod apply_bad_input;
mod bad_input;
mod crash;
mod hostile_stick;
mod import;
mod state;
mod stock_bundles;
mod sync;
mod time_floor;
