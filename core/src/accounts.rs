//! Local accounts, pure: the parse of `/etc/passwd`, `/etc/group` and
//! `/etc/shadow`, and what a `user` or `group` resource needs done to them,
//! as the argument list of a shadow tool (`useradd`, `usermod`, `userdel`,
//! `groupadd`, `groupmod`, `groupdel`; Puppet's providers use the same). io
//! reads the files, runs the command, and reads them again.

use std::collections::{BTreeMap, BTreeSet};

use crate::resource::{GroupParams, Presence, Principal, UserParams};

/// The files a `user` resource is checked against (and watched through).
pub const PASSWD: &str = "/etc/passwd";
pub const GROUP: &str = "/etc/group";
pub const SHADOW: &str = "/etc/shadow";

/// One line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswdEntry {
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// One line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupEntry {
    pub gid: u32,
    pub members: Vec<String>,
}

/// The accounts of a host, as its files say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accounts {
    pub users: BTreeMap<String, PasswdEntry>,
    pub groups: BTreeMap<String, GroupEntry>,
    /// Password hashes by user; `None` when `/etc/shadow` was not read.
    pub shadow: Option<BTreeMap<String, String>>,
}

impl Accounts {
    /// Parses the three files (`shadow`: `None` if it was not read). Lines
    /// that are not entries (comments, NIS `+` lines, malformed ones) are
    /// skipped: the tools own these files, mgmt only reads them.
    pub fn parse(passwd: &str, group: &str, shadow: Option<&str>) -> Accounts {
        let entries = |text: &str, min_fields: usize| -> Vec<Vec<String>> {
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
                .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
                .filter(|f| f.len() >= min_fields && !f[0].is_empty())
                .collect()
        };
        let users = entries(passwd, 7)
            .into_iter()
            .filter_map(|f| {
                let entry = PasswdEntry {
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    gecos: f[4].clone(),
                    home: f[5].clone(),
                    shell: f[6].clone(),
                };
                Some((f[0].clone(), entry))
            })
            .collect();
        let groups = entries(group, 4)
            .into_iter()
            .filter_map(|f| {
                let entry = GroupEntry {
                    gid: f[2].parse().ok()?,
                    members: f[3]
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                };
                Some((f[0].clone(), entry))
            })
            .collect();
        let shadow = shadow.map(|text| {
            entries(text, 2)
                .into_iter()
                .map(|f| (f[0].clone(), f[1].clone()))
                .collect()
        });
        Accounts {
            users,
            groups,
            shadow,
        }
    }

    fn gid_of(&self, group: &Principal) -> Option<u32> {
        match group {
            Principal::Id(gid) => Some(*gid),
            Principal::Name(name) => self.groups.get(name).map(|g| g.gid),
        }
    }

    /// The groups that list `user` as a member (its supplementary groups).
    pub fn supplementary(&self, user: &str) -> BTreeSet<&str> {
        self.groups
            .iter()
            .filter(|(_, g)| g.members.iter().any(|m| m == user))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// What a resource needs: what differs, in words, and the command that
/// repairs it (a program and its arguments), if anything differs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<String>,
    pub command: Option<Vec<String>>,
}

/// Why an account cannot be checked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the password is managed, but /etc/shadow could not be read")]
    NoShadow,
}

fn command(program: &str, args: Vec<String>, name: &str) -> Option<Vec<String>> {
    let mut cmd = vec![program.to_string()];
    cmd.extend(args);
    cmd.push(name.to_string());
    Some(cmd)
}

/// What a `user` resource needs done to `accounts`.
pub fn plan_user(p: &UserParams, accounts: &Accounts) -> Result<Plan, AccountError> {
    let current = accounts.users.get(&p.name);
    match (p.state, current) {
        (Presence::Absent, None) => Ok(Plan::default()),
        (Presence::Absent, Some(_)) => {
            let args = if p.managehome {
                vec!["--remove".to_string()]
            } else {
                Vec::new()
            };
            Ok(Plan {
                changes: vec!["removed".to_string()],
                command: command("userdel", args, &p.name),
            })
        }
        (Presence::Present, None) => {
            let mut args = Vec::new();
            if p.system {
                args.push("--system".to_string());
            }
            // The settings below, as usermod spells them, are useradd's too.
            args.extend(user_settings(p, None, accounts)?.1);
            args.push(if p.managehome {
                "--create-home".to_string()
            } else {
                "--no-create-home".to_string()
            });
            Ok(Plan {
                changes: vec!["created".to_string()],
                command: command("useradd", args, &p.name),
            })
        }
        (Presence::Present, Some(cur)) => {
            let (changes, mut args) = user_settings(p, Some(cur), accounts)?;
            if args.is_empty() {
                return Ok(Plan::default());
            }
            if p.managehome && args.iter().any(|a| a == "--home") {
                args.push("--move-home".to_string());
            }
            Ok(Plan {
                changes,
                command: command("usermod", args, &p.name),
            })
        }
    }
}

/// The settings of `p` that differ from `cur` (all of them for a new
/// account): what differs, and the options that set them.
fn user_settings(
    p: &UserParams,
    cur: Option<&PasswdEntry>,
    accounts: &Accounts,
) -> Result<(Vec<String>, Vec<String>), AccountError> {
    let mut changes = Vec::new();
    let mut args = Vec::new();
    let mut set = |what: &str, option: &str, want: String, have: Option<String>, shown: bool| {
        if have.as_ref() == Some(&want) {
            return;
        }
        if let Some(have) = have {
            changes.push(if shown {
                format!("{what} {have:?} -> {want:?}")
            } else {
                format!("{what} changed")
            });
        }
        args.push(option.to_string());
        args.push(want);
    };
    if let Some(uid) = p.uid {
        set(
            "uid",
            "--uid",
            uid.to_string(),
            cur.map(|c| c.uid.to_string()),
            true,
        );
    }
    if let Some(group) = &p.group {
        // The same gid is the same group, however it is named.
        let same = cur.is_some_and(|c| accounts.gid_of(group) == Some(c.gid));
        if !same {
            set(
                "primary group",
                "--gid",
                group.to_string(),
                cur.map(|c| c.gid.to_string()),
                true,
            );
        }
    }
    if let Some(groups) = &p.groups {
        let have = cur.map(|_| {
            accounts
                .supplementary(&p.name)
                .into_iter()
                .collect::<Vec<_>>()
                .join(",")
        });
        set("groups", "--groups", groups.join(","), have, true);
    }
    if let Some(home) = &p.home {
        set(
            "home",
            "--home",
            home.clone(),
            cur.map(|c| c.home.clone()),
            true,
        );
    }
    if let Some(shell) = &p.shell {
        set(
            "shell",
            "--shell",
            shell.clone(),
            cur.map(|c| c.shell.clone()),
            true,
        );
    }
    if let Some(comment) = &p.comment {
        set(
            "comment",
            "--comment",
            comment.clone(),
            cur.map(|c| c.gecos.clone()),
            true,
        );
    }
    if let Some(password) = &p.password {
        let have = match (cur, &accounts.shadow) {
            (None, _) => None,
            (Some(_), None) => return Err(AccountError::NoShadow),
            (Some(_), Some(shadow)) => Some(shadow.get(&p.name).cloned().unwrap_or_default()),
        };
        // A hash is a secret: say that it changed, not what it is.
        set("password", "--password", password.clone(), have, false);
    }
    Ok((changes, args))
}

/// What a `group` resource needs done to `accounts`.
pub fn plan_group(p: &GroupParams, accounts: &Accounts) -> Plan {
    let current = accounts.groups.get(&p.name);
    match (p.state, current) {
        (Presence::Absent, None) => Plan::default(),
        (Presence::Absent, Some(_)) => Plan {
            changes: vec!["removed".to_string()],
            command: command("groupdel", Vec::new(), &p.name),
        },
        (Presence::Present, None) => {
            let mut args = Vec::new();
            if p.system {
                args.push("--system".to_string());
            }
            if let Some(gid) = p.gid {
                args.extend(["--gid".to_string(), gid.to_string()]);
            }
            Plan {
                changes: vec!["created".to_string()],
                command: command("groupadd", args, &p.name),
            }
        }
        (Presence::Present, Some(cur)) => match p.gid {
            Some(gid) if gid != cur.gid => Plan {
                changes: vec![format!("gid {} -> {gid}", cur.gid)],
                command: command(
                    "groupmod",
                    vec!["--gid".to_string(), gid.to_string()],
                    &p.name,
                ),
            },
            _ => Plan::default(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD_TEXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
        alice:x:1500:1500:Alice:/home/alice:/bin/sh\n\
        # a comment\n\
        +nis\n";
    const GROUP_TEXT: &str = "root:x:0:\nalice:x:1500:\nadm:x:4:alice\nstaff:x:50:bob,alice\n";
    const SHADOW_TEXT: &str = "root:*:19000:0:99999:7:::\nalice:$6$abc:19000:0:99999:7:::\n";

    fn accounts() -> Accounts {
        Accounts::parse(PASSWD_TEXT, GROUP_TEXT, Some(SHADOW_TEXT))
    }

    fn alice() -> UserParams {
        UserParams {
            name: "alice".into(),
            state: Presence::Present,
            uid: None,
            group: None,
            groups: None,
            home: None,
            managehome: false,
            shell: None,
            comment: None,
            password: None,
            system: false,
        }
    }

    #[test]
    fn the_files_parse_into_accounts() {
        let a = accounts();
        assert_eq!(a.users.len(), 2);
        assert_eq!(a.users["alice"].shell, "/bin/sh");
        assert_eq!(a.groups["staff"].members, vec!["bob", "alice"]);
        assert_eq!(
            a.supplementary("alice").into_iter().collect::<Vec<_>>(),
            vec!["adm", "staff"]
        );
        assert_eq!(a.shadow.unwrap()["alice"], "$6$abc");
    }

    #[test]
    fn a_user_that_matches_needs_nothing() {
        let mut p = alice();
        p.uid = Some(1500);
        p.group = Some(Principal::Name("alice".into()));
        p.groups = Some(vec!["adm".into(), "staff".into()]);
        p.shell = Some("/bin/sh".into());
        p.home = Some("/home/alice".into());
        p.comment = Some("Alice".into());
        p.password = Some("$6$abc".into());
        assert_eq!(plan_user(&p, &accounts()).unwrap(), Plan::default());
    }

    #[test]
    fn a_drifted_user_is_modified_with_only_what_differs() {
        let mut p = alice();
        p.shell = Some("/bin/bash".into());
        p.groups = Some(vec!["adm".into()]);
        p.password = Some("$6$new".into());
        let plan = plan_user(&p, &accounts()).unwrap();
        assert_eq!(
            plan.command.unwrap(),
            [
                "usermod",
                "--groups",
                "adm",
                "--shell",
                "/bin/bash",
                "--password",
                "$6$new",
                "alice"
            ]
        );
        assert_eq!(plan.changes.len(), 3);
        assert!(plan.changes.iter().all(|c| !c.contains("$6$")));
    }

    #[test]
    fn a_missing_user_is_created_and_an_unwanted_one_removed() {
        let mut p = alice();
        p.name = "carol".into();
        p.uid = Some(1600);
        p.system = true;
        p.managehome = true;
        let plan = plan_user(&p, &accounts()).unwrap();
        assert_eq!(
            plan.command.unwrap(),
            [
                "useradd",
                "--system",
                "--uid",
                "1600",
                "--create-home",
                "carol"
            ]
        );
        let mut gone = alice();
        gone.state = Presence::Absent;
        assert_eq!(
            plan_user(&gone, &accounts()).unwrap().command.unwrap(),
            ["userdel", "alice"]
        );
        gone.name = "nobody-here".into();
        assert_eq!(plan_user(&gone, &accounts()).unwrap(), Plan::default());
    }

    #[test]
    fn a_managed_password_needs_the_shadow_file() {
        let mut p = alice();
        p.password = Some("x".into());
        let a = Accounts::parse(PASSWD_TEXT, GROUP_TEXT, None);
        assert_eq!(plan_user(&p, &a), Err(AccountError::NoShadow));
    }

    #[test]
    fn groups_are_created_renumbered_and_removed() {
        let mut g = GroupParams {
            name: "staff".into(),
            state: Presence::Present,
            gid: Some(50),
            system: false,
        };
        assert_eq!(plan_group(&g, &accounts()), Plan::default());
        g.gid = Some(51);
        assert_eq!(
            plan_group(&g, &accounts()).command.unwrap(),
            ["groupmod", "--gid", "51", "staff"]
        );
        g.name = "web".into();
        assert_eq!(
            plan_group(&g, &accounts()).command.unwrap(),
            ["groupadd", "--gid", "51", "web"]
        );
        g.state = Presence::Absent;
        assert_eq!(plan_group(&g, &accounts()), Plan::default());
    }
}
