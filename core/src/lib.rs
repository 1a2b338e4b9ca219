//! The pure, deterministic core of mgmt.
//!
//! Everything here is a function of its inputs: the graph compiler
//! ([`compile`]), the graph model ([`graph`]) and the scheduling state machine
//! ([`engine`]), the nomination decisions ([`cluster`]) and the MVCC key
//! space of the store ([`kv`]), and the fleet's values: graph templates
//! rendered with a host's facts ([`template`], [`facts`]), deploys
//! ([`deploy`]) and each host's status ([`fleet`]). The core reads no clock, no randomness, no disk and no network;
//! time and events come in as values and decisions go out as values. That is
//! what lets the simulator, proptest and the fuzzer drive it exhaustively.

pub mod accounts;
pub mod algo;
pub mod autoedge;
pub mod autogroup;
pub mod changeover;
pub mod cluster;
pub mod compile;
pub mod deploy;
pub mod diagnostic;
pub mod engine;
pub mod export;
pub mod facts;
pub mod fleet;
pub mod graph;
pub mod hostname;
pub mod keyspace;
pub mod kv;
pub mod line;
pub mod mounts;
pub mod resource;
pub mod template;
pub mod time;

pub use compile::{CompileError, Diagnostic, compile};
pub use engine::{Carried, Engine, EngineConfig, Input, Members, Output};
pub use graph::{Graph, VertexId};
pub use hostname::{Hostname, HostnameError};
pub use resource::{Kind, Resource, ResourceId};
pub use time::Millis;
