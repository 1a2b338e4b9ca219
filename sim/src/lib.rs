//! mgmt simulator.
