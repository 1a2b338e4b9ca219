//! etcd's Auth service on the embedded store, and who a request comes from.
//!
//! The rules live in `mgmt_core::kv::auth` (replicated, checked when a
//! command applies); this module is the server's side: passwords hashed with
//! bcrypt before a change is proposed (so applying stays cheap), tokens, and
//! identities.
//!
//! - **Tokens** are signed, not stored: `USER.EPOCH.EXPIRY.MAC`, an
//!   HMAC-SHA256 under the secret the cluster drew when auth was enabled, so
//!   any member accepts a token another minted. One lasts five minutes
//!   (etcd's `--auth-token-ttl`); a password change voids the user's tokens.
//! - **Certificates**: under `--client-cert-auth` a request without a token
//!   is from the user its client certificate names (etcd's CN mapping); a
//!   certificate of the agents' unit ([`crate::certs::AGENT_UNIT`]) is an
//!   agent's, which may write the clustering keys.

use hmac::{Hmac, Mac};
use mgmt_core::kv::auth::{AuthCommand, AuthError, AuthState, Identity, PermKind, Permission};
use mgmt_core::kv::{Command, Output};
use sha2::Sha256;
use tonic::{Request, Response, Status};

use crate::pb::etcdserverpb as pb;
use crate::server::{Etcd, auth_status, status};

/// etcd's default `--auth-token-ttl`.
pub const TOKEN_TTL_MS: u64 = 300_000;
/// etcd's default `--bcrypt-cost`.
const BCRYPT_COST: u32 = 10;

fn mac(secret: &[u8], body: &str) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    m.update(body.as_bytes());
    hex(&m.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A token for `user` valid until `expiry_ms`.
pub fn mint(auth: &AuthState, user: &str, now_ms: u64) -> Option<String> {
    let epoch = auth.user(user)?.epoch;
    let body = format!("{}.{epoch}.{}", hex(user.as_bytes()), now_ms + TOKEN_TTL_MS);
    let sig = mac(auth.token_secret(), &body);
    Some(format!("{body}.{sig}"))
}

/// The user a token was minted for, if it is still good.
pub fn verify(auth: &AuthState, token: &str, now_ms: u64) -> Result<String, AuthError> {
    let bad = AuthError::InvalidAuthToken;
    let (body, sig) = token.rsplit_once('.').ok_or(bad)?;
    let mut parts = body.split('.');
    let (Some(user), Some(epoch), Some(expiry), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    let expected = mac(auth.token_secret(), body);
    // Compared whole, in constant time.
    let same = expected.len() == sig.len()
        && expected
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(bad);
    }
    let user = String::from_utf8(unhex(user).ok_or(bad)?).map_err(|_| bad)?;
    let epoch: u64 = epoch.parse().map_err(|_| bad)?;
    let expiry: u64 = expiry.parse().map_err(|_| bad)?;
    match auth.user(&user) {
        Some(u) if u.epoch == epoch && now_ms < expiry => Ok(user),
        _ => Err(bad),
    }
}

impl Etcd {
    /// Who sent `req`: by its token, else by its verified client certificate,
    /// else no one. A bad token is refused only while auth is on.
    pub(crate) fn who<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        let now = self.node.env.now_ms();
        if let Some(token) = req.metadata().get("token") {
            let g = self.node.sm.lock();
            let auth = g.data.kv.auth();
            if !auth.enabled() {
                return Ok(Identity::Anonymous);
            }
            let token = token
                .to_str()
                .map_err(|_| auth_status(AuthError::InvalidAuthToken))?;
            return verify(auth, token, now)
                .map(Identity::User)
                .map_err(auth_status);
        }
        Ok(req
            .extensions()
            .get::<crate::conn::ConnInfo>()
            .and_then(|i| i.client.clone())
            .unwrap_or(Identity::Anonymous))
    }

    /// Refuses `who` unless it may administer (while auth is on), by this
    /// member's view; the apply checks again.
    pub(crate) fn check_admin(&self, who: &Identity) -> Result<(), Status> {
        self.node
            .sm
            .lock()
            .data
            .kv
            .auth()
            .check_admin(who)
            .map_err(auth_status)
    }

    async fn change(
        &self,
        who: Identity,
        change: AuthCommand,
    ) -> Result<pb::ResponseHeader, Status> {
        let (out, header) = self.write_as(who, Command::Auth(change)).await?;
        match out {
            Output::Auth => Ok(header),
            _ => Err(Status::internal("unexpected output")),
        }
    }

    /// A linearizable look at the auth state, for `who` an administrator.
    async fn read_auth<R>(
        &self,
        who: &Identity,
        read: impl FnOnce(&AuthState) -> Result<R, AuthError>,
    ) -> Result<(R, pb::ResponseHeader), Status> {
        self.node.read_barrier().await.map_err(status)?;
        self.check_admin(who)?;
        let r = read(self.node.sm.lock().data.kv.auth()).map_err(auth_status)?;
        Ok((r, self.current_header()))
    }
}

/// bcrypt, off the async threads: a hash takes tens of milliseconds.
async fn hash_password(password: String) -> Result<String, Status> {
    tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
}

fn perm_kind(t: i32) -> PermKind {
    match pb::permission::Type::try_from(t) {
        Ok(pb::permission::Type::Write) => PermKind::Write,
        Ok(pb::permission::Type::Readwrite) => PermKind::ReadWrite,
        _ => PermKind::Read,
    }
}

fn perm_type(k: PermKind) -> i32 {
    (match k {
        PermKind::Read => pb::permission::Type::Read,
        PermKind::Write => pb::permission::Type::Write,
        PermKind::ReadWrite => pb::permission::Type::Readwrite,
    }) as i32
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Etcd {
    async fn auth_enable(
        &self,
        req: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let who = self.who(&req)?;
        let token_secret: Vec<u8> = (0..32).map(|_| rand::random::<u8>()).collect();
        let header = self
            .change(who, AuthCommand::Enable { token_secret })
            .await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        req: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let who = self.who(&req)?;
        let header = self.change(who, AuthCommand::Disable).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let r = req.into_inner();
        self.node.read_barrier().await.map_err(status)?;
        let hash = {
            let g = self.node.sm.lock();
            let auth = g.data.kv.auth();
            if !auth.enabled() {
                return Err(auth_status(AuthError::AuthNotEnabled));
            }
            auth.user(&r.name).and_then(|u| u.password_hash.clone())
        };
        let Some(hash) = hash else {
            return Err(auth_status(AuthError::AuthFailed));
        };
        let password = r.password;
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or(false);
        if !ok {
            return Err(auth_status(AuthError::AuthFailed));
        }
        let now = self.node.env.now_ms();
        let token = mint(self.node.sm.lock().data.kv.auth(), &r.name, now)
            .ok_or_else(|| auth_status(AuthError::AuthFailed))?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: Some(self.current_header()),
            token,
        }))
    }

    async fn user_add(
        &self,
        req: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let who = self.who(&req)?;
        // Before the costly hash: a caller without the right learns it at once.
        self.check_admin(&who)?;
        let r = req.into_inner();
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password_hash = match no_password {
            true => None,
            false => Some(hash_password(r.password).await?),
        };
        let change = AuthCommand::UserAdd {
            name: r.name,
            password_hash,
        };
        let header = self.change(who, change).await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        req: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let who = self.who(&req)?;
        let name = req.into_inner().name;
        let (roles, header) = self
            .read_auth(&who, |a| {
                let u = a.user(&name).ok_or(AuthError::UserNotFound)?;
                Ok(u.roles.iter().cloned().collect())
            })
            .await?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(header),
            roles,
        }))
    }

    async fn user_list(
        &self,
        req: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let who = self.who(&req)?;
        let (users, header) = self
            .read_auth(&who, |a| Ok(a.users().map(String::from).collect()))
            .await?;
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(header),
            users,
        }))
    }

    async fn user_delete(
        &self,
        req: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let who = self.who(&req)?;
        let name = req.into_inner().name;
        let header = self.change(who, AuthCommand::UserDelete { name }).await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        req: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let who = self.who(&req)?;
        self.check_admin(&who)?;
        let r = req.into_inner();
        let password_hash = Some(hash_password(r.password).await?);
        let change = AuthCommand::UserChangePassword {
            name: r.name,
            password_hash,
        };
        let header = self.change(who, change).await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        req: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let who = self.who(&req)?;
        let r = req.into_inner();
        let change = AuthCommand::UserGrantRole {
            user: r.user,
            role: r.role,
        };
        let header = self.change(who, change).await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        req: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let who = self.who(&req)?;
        let r = req.into_inner();
        let change = AuthCommand::UserRevokeRole {
            user: r.name,
            role: r.role,
        };
        let header = self.change(who, change).await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        req: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let who = self.who(&req)?;
        let name = req.into_inner().name;
        let header = self.change(who, AuthCommand::RoleAdd { name }).await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        req: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let who = self.who(&req)?;
        let name = req.into_inner().role;
        let (perm, header) = self
            .read_auth(&who, |a| {
                let role = a.role(&name).ok_or(AuthError::RoleNotFound)?;
                Ok(role
                    .perms
                    .iter()
                    .map(|p| pb::Permission {
                        perm_type: perm_type(p.kind),
                        key: p.key.clone(),
                        range_end: p.range_end.clone(),
                    })
                    .collect())
            })
            .await?;
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(header),
            perm,
        }))
    }

    async fn role_list(
        &self,
        req: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let who = self.who(&req)?;
        let (roles, header) = self
            .read_auth(&who, |a| Ok(a.roles().map(String::from).collect()))
            .await?;
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(header),
            roles,
        }))
    }

    async fn role_delete(
        &self,
        req: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let who = self.who(&req)?;
        let name = req.into_inner().role;
        let header = self.change(who, AuthCommand::RoleDelete { name }).await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        req: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let who = self.who(&req)?;
        let r = req.into_inner();
        let p = r
            .perm
            .ok_or_else(|| Status::invalid_argument("etcdserver: permission is missing"))?;
        let change = AuthCommand::RoleGrantPermission {
            role: r.name,
            perm: Permission {
                kind: perm_kind(p.perm_type),
                key: p.key,
                range_end: p.range_end,
            },
        };
        let header = self.change(who, change).await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        req: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let who = self.who(&req)?;
        let r = req.into_inner();
        let change = AuthCommand::RoleRevokePermission {
            role: r.role,
            key: r.key,
            range_end: r.range_end,
        };
        let header = self.change(who, change).await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_alice() -> AuthState {
        let mut a = AuthState::default();
        for c in [
            AuthCommand::UserAdd {
                name: "root".into(),
                password_hash: None,
            },
            AuthCommand::UserGrantRole {
                user: "root".into(),
                role: "root".into(),
            },
            AuthCommand::UserAdd {
                name: "alice".into(),
                password_hash: None,
            },
            AuthCommand::Enable {
                token_secret: vec![7; 32],
            },
        ] {
            a.apply(&c).unwrap();
        }
        a
    }

    #[test]
    fn a_token_names_its_user_until_it_expires_or_the_password_changes() {
        let mut a = state_with_alice();
        let t = mint(&a, "alice", 1_000).unwrap();
        assert_eq!(verify(&a, &t, 1_000), Ok("alice".into()));
        assert_eq!(
            verify(&a, &t, 1_000 + TOKEN_TTL_MS),
            Err(AuthError::InvalidAuthToken)
        );
        // Tampered: another user's name under alice's signature.
        let forged = t.replacen(&hex(b"alice"), &hex(b"root"), 1);
        assert_eq!(verify(&a, &forged, 1_000), Err(AuthError::InvalidAuthToken));
        assert_eq!(
            verify(&a, "garbage", 1_000),
            Err(AuthError::InvalidAuthToken)
        );
        a.apply(&AuthCommand::UserChangePassword {
            name: "alice".into(),
            password_hash: None,
        })
        .unwrap();
        assert_eq!(verify(&a, &t, 1_000), Err(AuthError::InvalidAuthToken));
    }
}
