//! mgmt core.
pub mod kv;
