//! mgmt io.
