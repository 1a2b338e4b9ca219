//! mgmt store.
