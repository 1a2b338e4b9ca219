//! The store's reserved key space, named once: everything mgmt itself writes
//! lives under [`RESERVED`], and deploys under [`DEPLOYS`] within it. Each
//! namespace's keys are built and parsed by the module that owns them
//! (`cluster::keys`, `deploy`, `fleet`, `export`); the store's auth
//! (`kv::auth`) keeps users out of the whole space. A leaf module, so that
//! the key space's owners and its guard need not import each other.

/// Namespace of every key mgmt writes (clustering, exports, fleet, deploys).
pub const RESERVED: &str = "/_mgmt/";
/// Deploys, under [`RESERVED`]: written by root and granted users only.
pub const DEPLOYS: &str = "/_mgmt/deploy/";

#[cfg(test)]
mod tests {
    #[test]
    fn deploys_lie_within_the_reserved_space() {
        assert!(super::DEPLOYS.starts_with(super::RESERVED));
    }
}
