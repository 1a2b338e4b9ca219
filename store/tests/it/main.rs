//! Integration tests of the store: real `etcdctl` (Debian `etcd-client`) against the
//! embedded server, persistence across `kill -9`, and a 3-member cluster on loopback.

mod auth;
mod client;
mod cluster;
mod clustering;
mod common;
mod data_dir;
mod etcdctl;
mod fleet;
mod membership;
mod persistence;
mod tls;
mod watch;
