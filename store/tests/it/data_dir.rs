//! The store only ever creates or removes `PREFIX/HOSTNAME/`: whatever the host
//! name, nothing outside the prefix, and never the prefix itself.

use std::path::Path;

use mgmt_store::{Store, StoreConfig, StoreError};

/// A prefix inside a tree with a file beside it, a file inside it (another
/// host's state) and a directory elsewhere that an absolute name could hit.
fn tree() -> (tempfile::TempDir, std::path::PathBuf) {
    let top = tempfile::tempdir().unwrap();
    let prefix = top.path().join("p");
    std::fs::create_dir_all(prefix.join("other-host")).unwrap();
    std::fs::write(prefix.join("other-host/state"), "theirs").unwrap();
    std::fs::write(top.path().join("beside"), "keep").unwrap();
    std::fs::create_dir_all(top.path().join("elsewhere")).unwrap();
    std::fs::write(top.path().join("elsewhere/data"), "keep").unwrap();
    (top, prefix)
}

fn intact(top: &Path, prefix: &Path) {
    assert_eq!(std::fs::read_to_string(top.join("beside")).unwrap(), "keep");
    assert_eq!(
        std::fs::read_to_string(top.join("elsewhere/data")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::read_to_string(prefix.join("other-host/state")).unwrap(),
        "theirs"
    );
}

fn config(name: &str, prefix: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(name, prefix);
    c.client_urls = vec!["http://127.0.0.1:0".into()];
    c.peer_urls = vec!["http://127.0.0.1:0".into()];
    c
}

#[tokio::test]
async fn no_host_name_reaches_outside_the_prefix() {
    let (top, prefix) = tree();
    let elsewhere = top.path().join("elsewhere");
    let long = "a".repeat(256);
    let names = [
        "..",
        "",
        ".",
        "a/b",
        "../elsewhere",
        elsewhere.to_str().unwrap(),
        "/",
        &long,
        "a\0b",
    ];
    for name in names {
        let c = config(name, &prefix);
        assert!(
            matches!(c.data_dir(), Err(StoreError::UnsafeDataDir { .. })),
            "{name:?}: {:?}",
            c.data_dir()
        );
        assert!(c.discard_data_dir().is_err(), "{name:?}");
        let started = Store::start_single(c).await;
        assert!(
            matches!(started, Err(StoreError::UnsafeDataDir { .. })),
            "{name:?} started a store"
        );
        intact(top.path(), &prefix);
        assert!(!prefix.join("a").exists(), "{name:?} nested a directory");
    }
}

#[tokio::test]
async fn a_symlinked_host_directory_is_refused() {
    let (top, prefix) = tree();
    std::os::unix::fs::symlink(top.path().join("elsewhere"), prefix.join("h1")).unwrap();
    let c = config("h1", &prefix);
    assert!(matches!(
        c.data_dir(),
        Err(StoreError::UnsafeDataDir { .. })
    ));
    assert!(c.discard_data_dir().is_err());
    assert!(Store::start_single(c).await.is_err());
    intact(top.path(), &prefix);
}

#[tokio::test]
async fn discarding_removes_only_this_hosts_directory() {
    let (top, prefix) = tree();
    // A prefix given through a symlink and with `..` is canonicalised first.
    std::os::unix::fs::symlink(&prefix, top.path().join("link")).unwrap();
    let via = top.path().join("link/../p");
    let c = config("h1", &via);
    let h = Store::start_single(c.clone()).await.unwrap();
    h.put(b"k", b"v").await.unwrap();
    h.shutdown().await;
    let dir = c.data_dir().unwrap();
    assert_eq!(dir, prefix.canonicalize().unwrap().join("h1"));
    assert!(mgmt_store::stored_member_id(&dir).is_some());
    assert_eq!(c.discard_data_dir().unwrap(), dir);
    assert!(!dir.exists());
    assert!(prefix.exists(), "the prefix itself is never removed");
    intact(top.path(), &prefix);
}

/// A directory of the host's name that is not store state (`--prefix /home
/// --hostname alice`) is never discarded.
#[tokio::test]
async fn a_directory_without_store_state_is_not_discarded() {
    let (top, prefix) = tree();
    std::fs::create_dir_all(prefix.join("alice")).unwrap();
    std::fs::write(prefix.join("alice/thesis.tex"), "years of work").unwrap();
    let c = config("alice", &prefix);
    assert!(matches!(
        c.discard_data_dir(),
        Err(StoreError::UnsafeDataDir { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(prefix.join("alice/thesis.tex")).unwrap(),
        "years of work"
    );
    intact(top.path(), &prefix);
    // An empty one (a start that stopped at once) may go.
    std::fs::create_dir_all(prefix.join("bob")).unwrap();
    config("bob", &prefix).discard_data_dir().unwrap();
    assert!(!prefix.join("bob").exists());
}
