//! The `user` and `group` kinds: checked by reading `/etc/passwd`,
//! `/etc/group` and `/etc/shadow`, repaired with the shadow tools (the
//! command is decided by `mgmt_core::accounts`), and watched through `/etc`
//! (the tools replace those files by rename, which the directory watch sees).

use std::io;

use mgmt_core::accounts::{self, Accounts, Plan};
use mgmt_core::resource::{GroupParams, UserParams};

#[derive(Debug, thiserror::Error)]
pub enum AccountIoError {
    #[error("{path}: {source}")]
    Read {
        path: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Plan(#[from] accounts::AccountError),
    #[error(transparent)]
    Tool(#[from] crate::tool::ToolError),
    #[error("after `{command}`, the account still differs: {left}")]
    NotRepaired { command: String, left: String },
}

/// The files a `user` resource is checked against; a change to any is drift.
pub fn user_files(p: &UserParams) -> Vec<&'static str> {
    let mut files = vec![accounts::PASSWD, accounts::GROUP];
    if p.password.is_some() {
        files.push(accounts::SHADOW);
    }
    files
}

async fn read_accounts(shadow: bool) -> Result<Accounts, AccountIoError> {
    let read = |path: &'static str| async move {
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| AccountIoError::Read { path, source })
    };
    let passwd = read(accounts::PASSWD).await?;
    let group = read(accounts::GROUP).await?;
    let shadow = match shadow {
        // Unreadable (not root): a managed password then says so.
        true => read(accounts::SHADOW).await.ok(),
        false => None,
    };
    Ok(Accounts::parse(&passwd, &group, shadow.as_deref()))
}

/// A command as logs show it: a password hash is a secret.
fn shown(cmd: &[String]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(cmd.len());
    for (i, arg) in cmd.iter().enumerate() {
        let secret = i > 0 && cmd[i - 1] == "--password";
        out.push(if secret { "<hash>" } else { arg });
    }
    out.join(" ")
}

/// Runs a shadow tool; its stderr is the error.
async fn run(cmd: &[String]) -> Result<(), AccountIoError> {
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    Ok(crate::tool::run(&args, shown(cmd)).await?)
}

/// Checks, and with `apply` repairs, through `plan`; after a repair the
/// account is read again and must match (a tool that exits 0 without doing
/// what was asked is an error, not a silent loop).
async fn check_apply(
    apply: bool,
    shadow: bool,
    plan: impl Fn(&Accounts) -> Result<Plan, accounts::AccountError>,
) -> Result<Vec<String>, AccountIoError> {
    let before = plan(&read_accounts(shadow).await?)?;
    let Some(cmd) = before.command.filter(|_| apply) else {
        return Ok(before.changes);
    };
    run(&cmd).await?;
    let after = plan(&read_accounts(shadow).await?)?;
    if after.command.is_some() {
        return Err(AccountIoError::NotRepaired {
            command: shown(&cmd),
            left: after.changes.join(", "),
        });
    }
    Ok(before.changes)
}

pub async fn check_apply_user(p: &UserParams, apply: bool) -> Result<Vec<String>, AccountIoError> {
    check_apply(apply, p.password.is_some(), |a| accounts::plan_user(p, a)).await
}

pub async fn check_apply_group(
    p: &GroupParams,
    apply: bool,
) -> Result<Vec<String>, AccountIoError> {
    check_apply(apply, false, |a| Ok(accounts::plan_group(p, a))).await
}
