//! etcd's authentication and roles as replicated state, with etcd's rules and
//! error texts: users (their bcrypt hashes made by the server before it
//! proposes, so applying stays cheap and deterministic), roles holding
//! key-range permissions, the enabled flag, and the secret servers sign
//! tokens with. Every check is a pure function of this state.
//!
//! One rule is mgmt's own: with auth on, keys under the clustering prefix
//! (`/_mgmt/`) are written only by `root` and by the agents (a client
//! certificate marked as an agent's, see [`Identity::Agent`]), whatever roles
//! grant: a write there reshapes the cluster. Deploys (`/_mgmt/deploy/`)
//! are the exception both ways: written by `root` and by users whose roles
//! grant that prefix, never by an agent (one host must not reprogram the
//! fleet).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::prefix_end;

/// The user and the role with every right.
pub const ROOT: &str = "root";
/// Keys only `root` and the agents write while auth is on.
pub const RESERVED_PREFIX: &[u8] = crate::keyspace::RESERVED.as_bytes();
/// Under the reserved prefix, but written by root and granted users only.
pub const DEPLOY_PREFIX: &[u8] = crate::keyspace::DEPLOYS.as_bytes();

/// Who sent a request, as the server established it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Identity {
    /// No token and no client certificate.
    Anonymous,
    /// A user, by token or by a client certificate's common name.
    User(String),
    /// An agent, by a client certificate the cluster's CA issued to one: it
    /// reads and writes the clustering keys and nothing else.
    Agent,
}

/// etcd's permission types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PermKind {
    Read,
    Write,
    ReadWrite,
}

impl PermKind {
    fn allows(self, need: PermKind) -> bool {
        self == PermKind::ReadWrite || self == need
    }
}

/// A permission on one key (`range_end` empty), a range `[key, range_end)`,
/// or every key from `key` on (`range_end` is `"\0"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub kind: PermKind,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// bcrypt; `None` for a user without a password (certificate only).
    pub password_hash: Option<String>,
    pub roles: BTreeSet<String>,
    /// Bumped when the password changes: tokens minted before are void.
    pub epoch: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Sorted by key, then range end, as etcd keeps them.
    pub perms: Vec<Permission>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    enabled: bool,
    /// Grows with every change, as etcd's auth revision.
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    #[serde(with = "serde_bytes")]
    token_secret: Vec<u8>,
}

/// A change to the auth state (etcd's auth RPCs that write).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthCommand {
    /// `token_secret`: fresh random bytes from the proposing server.
    Enable {
        #[serde(with = "serde_bytes")]
        token_secret: Vec<u8>,
    },
    Disable,
    UserAdd {
        name: String,
        password_hash: Option<String>,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        password_hash: Option<String>,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        user: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        name: String,
    },
    RoleGrantPermission {
        role: String,
        perm: Permission,
    },
    RoleRevokePermission {
        role: String,
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        range_end: Vec<u8>,
    },
}

/// etcd's auth errors, with its texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AuthError {
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
}

/// The end of a one-key range, as a half-open interval: the key followed by
/// a zero byte.
fn one_key_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    end.push(0);
    end
}

/// `[start, end)` with `None` for no end.
type Span = (Vec<u8>, Option<Vec<u8>>);

fn span(key: &[u8], range_end: &[u8]) -> Span {
    match range_end {
        [] => (key.to_vec(), Some(one_key_end(key))),
        [0] => (key.to_vec(), None),
        end => (key.to_vec(), Some(end.to_vec())),
    }
}

/// Do `spans` together cover `want`?
fn covered(want: &Span, mut spans: Vec<Span>) -> bool {
    spans.sort();
    let mut reached = want.0.clone();
    for (start, end) in spans {
        if start > reached {
            break;
        }
        match end {
            None => return true,
            Some(end) if end > reached => reached = end,
            Some(_) => {}
        }
        if want.1.as_ref().is_some_and(|w| reached >= *w) {
            return true;
        }
    }
    false
}

/// Does `[key, range_end)` touch the keys under `prefix`?
fn touches(key: &[u8], range_end: &[u8], prefix: &[u8]) -> bool {
    let (start, end) = span(key, range_end);
    let prefix_end = prefix_end(prefix);
    start.as_slice() < prefix_end.as_slice() && end.is_none_or(|e| e.as_slice() > prefix)
}

/// Is `[key, range_end)` wholly under `prefix`?
fn within(key: &[u8], range_end: &[u8], prefix: &[u8]) -> bool {
    covered(
        &span(key, range_end),
        vec![(prefix.to_vec(), Some(prefix_end(prefix)))],
    )
}

impl AuthState {
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn token_secret(&self) -> &[u8] {
        &self.token_secret
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The user of `who`, where auth is on: `Anonymous` has none (etcd's
    /// "user name is empty"), an unknown user no rights.
    fn known_user<'a>(&'a self, who: &'a Identity) -> Result<Option<&'a User>, AuthError> {
        match who {
            Identity::Anonymous => Err(AuthError::UserEmpty),
            Identity::Agent => Ok(None),
            Identity::User(name) => self
                .users
                .get(name)
                .map(Some)
                .ok_or(AuthError::PermissionDenied),
        }
    }

    fn is_root(user: &User) -> bool {
        user.roles.contains(ROOT)
    }

    /// May `who` run an administrative operation (auth changes, compaction,
    /// alarms, snapshots, leader moves)? Anyone may while auth is off.
    pub fn check_admin(&self, who: &Identity) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        match self.known_user(who)? {
            Some(user) if Self::is_root(user) => Ok(()),
            _ => Err(AuthError::PermissionDenied),
        }
    }

    /// May `who` read `[key, range_end)` (etcd's range conventions)?
    pub fn check_read(
        &self,
        who: &Identity,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.check(who, PermKind::Read, key, range_end)
    }

    /// May `who` write `[key, range_end)`?
    pub fn check_write(
        &self,
        who: &Identity,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.check(who, PermKind::Write, key, range_end)
    }

    fn check(
        &self,
        who: &Identity,
        need: PermKind,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let want = span(key, range_end);
        let Some(user) = self.known_user(who)? else {
            // An agent: the clustering keys only, and no deploy.
            if need == PermKind::Write && touches(key, range_end, DEPLOY_PREFIX) {
                return Err(AuthError::PermissionDenied);
            }
            let reserved = (RESERVED_PREFIX.to_vec(), Some(prefix_end(RESERVED_PREFIX)));
            return covered(&want, vec![reserved])
                .then_some(())
                .ok_or(AuthError::PermissionDenied);
        };
        if Self::is_root(user) {
            return Ok(());
        }
        if need == PermKind::Write
            && touches(key, range_end, RESERVED_PREFIX)
            && !within(key, range_end, DEPLOY_PREFIX)
        {
            return Err(AuthError::PermissionDenied);
        }
        let spans = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| &r.perms)
            .filter(|p| p.kind.allows(need))
            .map(|p| span(&p.key, &p.range_end))
            .collect();
        covered(&want, spans)
            .then_some(())
            .ok_or(AuthError::PermissionDenied)
    }

    /// Applies a change (the caller checked [`AuthState::check_admin`]).
    pub fn apply(&mut self, cmd: &AuthCommand) -> Result<(), AuthError> {
        let changed = self.apply_change(cmd)?;
        if changed {
            self.revision += 1;
        }
        Ok(())
    }

    /// Applies `cmd`; whether it changed anything.
    fn apply_change(&mut self, cmd: &AuthCommand) -> Result<bool, AuthError> {
        use AuthCommand as C;
        match cmd {
            C::Enable { token_secret } => {
                if self.enabled {
                    return Ok(false);
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !Self::is_root(root) {
                    return Err(AuthError::RootRoleNotExist);
                }
                self.enabled = true;
                self.token_secret = token_secret.clone();
                Ok(true)
            }
            C::Disable => Ok(std::mem::replace(&mut self.enabled, false)),
            C::UserAdd {
                name,
                password_hash,
            } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                self.users.insert(
                    name.clone(),
                    User {
                        password_hash: password_hash.clone(),
                        ..User::default()
                    },
                );
                Ok(true)
            }
            C::UserDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.users.remove(name).ok_or(AuthError::UserNotFound)?;
                Ok(true)
            }
            C::UserChangePassword {
                name,
                password_hash,
            } => {
                let user = self.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
                user.password_hash = password_hash.clone();
                user.epoch += 1;
                Ok(true)
            }
            C::UserGrantRole { user, role } => {
                if !self.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                if role != ROOT && !self.roles.contains_key(role) {
                    return Err(AuthError::RoleNotFound);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                Ok(u.roles.insert(role.clone()))
            }
            C::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let u = self.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
                if !u.roles.remove(role) {
                    return Err(AuthError::RoleNotGranted);
                }
                Ok(true)
            }
            C::RoleAdd { name } => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                self.roles.insert(name.clone(), Role::default());
                Ok(true)
            }
            C::RoleDelete { name } => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                self.roles.remove(name).ok_or(AuthError::RoleNotFound)?;
                for user in self.users.values_mut() {
                    user.roles.remove(name);
                }
                Ok(true)
            }
            C::RoleGrantPermission { role, perm } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let at = r.perms.binary_search_by(|p| {
                    (&p.key, &p.range_end).cmp(&(&perm.key, &perm.range_end))
                });
                match at {
                    Ok(i) => r.perms[i].kind = perm.kind,
                    Err(i) => r.perms.insert(i, perm.clone()),
                }
                Ok(true)
            }
            C::RoleRevokePermission {
                role,
                key,
                range_end,
            } => {
                let r = self.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
                let at = r
                    .perms
                    .iter()
                    .position(|p| p.key == *key && p.range_end == *range_end)
                    .ok_or(AuthError::PermissionNotGranted)?;
                r.perms.remove(at);
                Ok(true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Identity {
        Identity::User(name.into())
    }

    fn enable(a: &mut AuthState) {
        let on = AuthCommand::Enable {
            token_secret: vec![1],
        };
        change(a, &Identity::Anonymous, &on).unwrap();
    }

    /// As the store applies a client's change: checked, then applied.
    fn change(a: &mut AuthState, who: &Identity, cmd: &AuthCommand) -> Result<(), AuthError> {
        a.check_admin(who)?;
        a.apply(cmd)
    }

    /// root (with the root role), and alice with a role reading `/foo` and
    /// writing under `/app/`.
    fn guide() -> AuthState {
        let mut a = AuthState::default();
        let anyone = Identity::Anonymous;
        for cmd in [
            AuthCommand::UserAdd {
                name: ROOT.into(),
                password_hash: None,
            },
            AuthCommand::RoleAdd { name: ROOT.into() },
            AuthCommand::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            AuthCommand::RoleAdd { name: "app".into() },
            AuthCommand::RoleGrantPermission {
                role: "app".into(),
                perm: Permission {
                    kind: PermKind::Read,
                    key: b"/foo".to_vec(),
                    range_end: vec![],
                },
            },
            AuthCommand::RoleGrantPermission {
                role: "app".into(),
                perm: Permission {
                    kind: PermKind::ReadWrite,
                    key: b"/app/".to_vec(),
                    range_end: prefix_end(b"/app/"),
                },
            },
            AuthCommand::UserAdd {
                name: "alice".into(),
                password_hash: None,
            },
            AuthCommand::UserGrantRole {
                user: "alice".into(),
                role: "app".into(),
            },
        ] {
            change(&mut a, &anyone, &cmd).unwrap();
        }
        a
    }

    #[test]
    fn everything_is_allowed_while_auth_is_off() {
        let a = guide();
        assert_eq!(
            a.check_write(&Identity::Anonymous, b"/_mgmt/x", b""),
            Ok(())
        );
        assert_eq!(a.check_admin(&Identity::Anonymous), Ok(()));
    }

    #[test]
    fn enabling_needs_root_with_the_root_role() {
        let mut a = AuthState::default();
        let enable = AuthCommand::Enable {
            token_secret: vec![1],
        };
        assert_eq!(
            change(&mut a, &Identity::Anonymous, &enable),
            Err(AuthError::RootUserNotExist)
        );
        change(
            &mut a,
            &Identity::Anonymous,
            &AuthCommand::UserAdd {
                name: ROOT.into(),
                password_hash: None,
            },
        )
        .unwrap();
        assert_eq!(
            change(&mut a, &Identity::Anonymous, &enable),
            Err(AuthError::RootRoleNotExist)
        );
        let mut a = guide();
        let before = a.revision();
        change(&mut a, &Identity::Anonymous, &enable).unwrap();
        assert!(a.enabled());
        assert_eq!(a.revision(), before + 1);
        // Now only root changes auth.
        let add = AuthCommand::RoleAdd { name: "x".into() };
        assert_eq!(
            change(&mut a, &user("alice"), &add),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            change(&mut a, &Identity::Anonymous, &add),
            Err(AuthError::UserEmpty)
        );
        change(&mut a, &user(ROOT), &add).unwrap();
        assert_eq!(
            change(
                &mut a,
                &user(ROOT),
                &AuthCommand::UserDelete { name: ROOT.into() }
            ),
            Err(AuthError::InvalidAuthMgmt)
        );
    }

    #[test]
    fn ranges_are_allowed_only_where_roles_cover_them() {
        let mut a = guide();
        enable(&mut a);
        let alice = user("alice");
        assert_eq!(a.check_read(&alice, b"/foo", b""), Ok(()));
        assert_eq!(
            a.check_write(&alice, b"/foo", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_read(&alice, b"/foo2", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(a.check_write(&alice, b"/app/x", b""), Ok(()));
        assert_eq!(
            a.check_read(&alice, b"/app/", &prefix_end(b"/app/")),
            Ok(())
        );
        assert_eq!(
            a.check_read(&alice, b"/", &prefix_end(b"/")),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_read(&Identity::Anonymous, b"/foo", b""),
            Err(AuthError::UserEmpty)
        );
        assert_eq!(
            a.check_read(&user("nobody"), b"/foo", b""),
            Err(AuthError::PermissionDenied)
        );
        // root may do anything; an agent only the clustering keys.
        assert_eq!(a.check_write(&user(ROOT), b"/", &[0]), Ok(()));
        assert_eq!(
            a.check_write(&Identity::Agent, b"/_mgmt/idealClusterSize", b""),
            Ok(())
        );
        assert_eq!(
            a.check_write(&Identity::Agent, b"/app/x", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_admin(&Identity::Agent),
            Err(AuthError::PermissionDenied)
        );
    }

    #[test]
    fn no_role_grants_writes_to_the_clustering_keys() {
        let mut a = guide();
        change(
            &mut a,
            &Identity::Anonymous,
            &AuthCommand::RoleGrantPermission {
                role: "app".into(),
                perm: Permission {
                    kind: PermKind::ReadWrite,
                    key: b"/".to_vec(),
                    range_end: vec![0],
                },
            },
        )
        .unwrap();
        enable(&mut a);
        let alice = user("alice");
        assert_eq!(
            a.check_read(&alice, b"/_mgmt/", &prefix_end(b"/_mgmt/")),
            Ok(())
        );
        assert_eq!(
            a.check_write(&alice, b"/_mgmt/idealClusterSize", b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_write(&alice, b"/", &prefix_end(b"/")),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(a.check_write(&alice, b"/other", b""), Ok(()));
    }

    #[test]
    fn deploys_are_written_by_root_and_granted_roles_never_by_agents() {
        let mut a = guide();
        let deploy = crate::deploy::key(1);
        let deploys = (DEPLOY_PREFIX.to_vec(), prefix_end(DEPLOY_PREFIX));
        change(
            &mut a,
            &Identity::Anonymous,
            &AuthCommand::RoleGrantPermission {
                role: "app".into(),
                perm: Permission {
                    kind: PermKind::ReadWrite,
                    key: deploys.0.clone(),
                    range_end: deploys.1.clone(),
                },
            },
        )
        .unwrap();
        enable(&mut a);
        let alice = user("alice");
        assert_eq!(a.check_write(&user(ROOT), deploy.as_bytes(), b""), Ok(()));
        assert_eq!(a.check_write(&alice, deploy.as_bytes(), b""), Ok(()));
        assert_eq!(a.check_write(&alice, &deploys.0, &deploys.1), Ok(()));
        // The grant reaches no further into /_mgmt/.
        assert_eq!(
            a.check_write(&alice, b"/_mgmt/", &prefix_end(b"/_mgmt/")),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_write(&user("nobody"), deploy.as_bytes(), b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_write(&Identity::Agent, deploy.as_bytes(), b""),
            Err(AuthError::PermissionDenied)
        );
        assert_eq!(
            a.check_write(&Identity::Agent, b"/_mgmt/", &prefix_end(b"/_mgmt/")),
            Err(AuthError::PermissionDenied)
        );
        // Agents still read deploys and write their status.
        assert_eq!(
            a.check_read(&Identity::Agent, &deploys.0, &deploys.1),
            Ok(())
        );
        assert_eq!(
            a.check_write(&Identity::Agent, b"/_mgmt/fleet/h1", b""),
            Ok(())
        );
    }

    #[test]
    fn permissions_stay_sorted_and_a_grant_of_the_same_range_replaces_its_type() {
        let mut a = guide();
        let grant = |kind, key: &[u8]| AuthCommand::RoleGrantPermission {
            role: "app".into(),
            perm: Permission {
                kind,
                key: key.to_vec(),
                range_end: vec![],
            },
        };
        change(&mut a, &Identity::Anonymous, &grant(PermKind::Write, b"/a")).unwrap();
        change(
            &mut a,
            &Identity::Anonymous,
            &grant(PermKind::ReadWrite, b"/foo"),
        )
        .unwrap();
        let keys: Vec<(&[u8], PermKind)> = a
            .role("app")
            .unwrap()
            .perms
            .iter()
            .map(|p| (p.key.as_slice(), p.kind))
            .collect();
        assert_eq!(
            keys,
            [
                (&b"/a"[..], PermKind::Write),
                (b"/app/", PermKind::ReadWrite),
                (b"/foo", PermKind::ReadWrite)
            ]
        );
        let revoke = AuthCommand::RoleRevokePermission {
            role: "app".into(),
            key: b"/nope".to_vec(),
            range_end: vec![],
        };
        assert_eq!(
            change(&mut a, &Identity::Anonymous, &revoke),
            Err(AuthError::PermissionNotGranted)
        );
    }
}
