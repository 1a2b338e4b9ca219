//! End-to-end tests of the `mgmt` binary: real processes, real files, real
//! inotify. One test binary (modules below) keeps link time down.

mod bad_input;
mod changeover;
mod cluster;
mod exports;
mod fleet;
mod host_kinds;
mod http_face;
mod linearizable;
mod operator;
mod package;
mod patroni;
mod pkg;
mod run;
mod source;
mod store;
mod support;
mod svc;
mod system;
mod timer;
