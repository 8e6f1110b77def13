//! One integration-test binary: the real `outpost` binary against real git repositories, real
//! ssh-keygen signatures and real SQLite files in temp dirs.

mod support;

mod absent;
mod apply;
mod apply_bad_input;
mod bad_input;
mod coarse;
mod container;
mod crash;
mod daemon;
mod deployment;
mod docs;
mod health;
mod hostile_stick;
mod import;
mod originals;
mod package;
mod recovery;
mod relay;
mod rollback;
mod secrets;
mod state;
mod stock_bundles;
mod storage;
mod sync;
mod time_floor;
mod unit_manifest;
mod units;
mod usb;
