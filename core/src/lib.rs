//! mgmt core.
