//! The kinds that manage a host's own configuration: `user`, `group` and
//! `line`. Every value a shadow tool or the line editor takes is checked
//! here, so io never passes one that a tool would read as something else.

use std::collections::BTreeMap;

use super::yaml::{
    GroupYaml, HostnameYaml, LineYaml, Location, MountYaml, Spanned, SysctlYaml, UserYaml,
};
use super::{Ctx, meta, named, path_or_name, path_problem, principal};
use crate::resource::{
    GroupParams, Kind, LineParams, MountParams, MountState, Params, Presence, Principal, Resource,
    ResourceId, SysctlParams, UserParams,
};

/// The largest uid or gid: `(uid_t) -1` means "none" to the kernel.
const MAX_ID: i64 = u32::MAX as i64 - 1;

/// A user or group name the shadow tools accept on every distribution:
/// letters, digits, `_`, `.` and `-` (not first), an optional final `$`
/// (machine accounts), at most 32 characters, and not all digits (it would
/// read as an id).
fn valid_account_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 32
        && !body.starts_with('-')
        && !body.bytes().all(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

fn check_account_name(ctx: &mut Ctx<'_>, id: &ResourceId, loc: Location, what: &str) {
    if !valid_account_name(&id.name) {
        ctx.err(
            Some(loc),
            Some(id),
            format!(
                "{:?} is not a {what} name (letters, digits, '_', '.', '-' not first, at most 32)",
                id.name
            ),
        );
    }
}

fn presence(ctx: &mut Ctx<'_>, id: &ResourceId, y: &Option<Spanned<String>>) -> Presence {
    match y.as_ref().map(|s| s.value.as_str()) {
        None | Some("present") => Presence::Present,
        Some("absent") => Presence::Absent,
        Some(other) => {
            let loc = y.as_ref().map(|s| s.referenced);
            ctx.err(
                loc,
                Some(id),
                format!("state must be \"present\" or \"absent\", not {other:?}"),
            );
            Presence::Present
        }
    }
}

fn account_id(ctx: &mut Ctx<'_>, id: &ResourceId, what: &str, v: &Spanned<i64>) -> Option<u32> {
    if (0..=MAX_ID).contains(&v.value) {
        Some(v.value as u32)
    } else {
        ctx.err(
            Some(v.referenced),
            Some(id),
            format!("{what} {} is out of range (0 to {MAX_ID})", v.value),
        );
        None
    }
}

/// A field of `/etc/passwd` or `/etc/shadow`: one line, no `:`.
fn field(ctx: &mut Ctx<'_>, id: &ResourceId, what: &str, v: &Spanned<String>) -> Option<String> {
    if v.value.contains([':', '\n', '\0']) {
        ctx.err(
            Some(v.referenced),
            Some(id),
            format!("{what} must not contain ':', a newline or NUL"),
        );
        return None;
    }
    Some(v.value.clone())
}

/// A path field of `/etc/passwd`: absolute, and a field.
fn passwd_path(
    ctx: &mut Ctx<'_>,
    id: &ResourceId,
    what: &str,
    v: &Spanned<String>,
) -> Option<String> {
    if !v.value.starts_with('/') {
        ctx.err(
            Some(v.referenced),
            Some(id),
            format!("{what} {:?} must be an absolute path", v.value),
        );
        return None;
    }
    field(ctx, id, what, v)
}

pub(super) fn user(ctx: &mut Ctx<'_>, y: UserYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::User, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    check_account_name(ctx, &id, y.name.referenced, "user");
    let state = presence(ctx, &id, &y.state);
    let uid = y.uid.as_ref().and_then(|u| account_id(ctx, &id, "uid", u));
    if let (Some(_), Some(g)) = (&y.group, &y.gid) {
        ctx.err(
            Some(g.referenced),
            Some(&id),
            "give the primary group as `group` or `gid`, not both",
        );
    }
    let group = y
        .group
        .as_ref()
        .or(y.gid.as_ref())
        .and_then(|g| principal(ctx, &id, "group", g));
    if let Some(Principal::Id(gid)) = group
        && i64::from(gid) > MAX_ID
    {
        let loc = y.group.as_ref().or(y.gid.as_ref()).map(|g| g.referenced);
        ctx.err(
            loc,
            Some(&id),
            format!("gid {gid} is out of range (0 to {MAX_ID})"),
        );
    }
    let groups = y.groups.as_ref().map(|gs| {
        let mut names = gs.value.clone();
        for name in &names {
            if !valid_account_name(name) {
                ctx.err(
                    Some(gs.referenced),
                    Some(&id),
                    format!("groups: {name:?} is not a group name"),
                );
            }
        }
        names.sort();
        names.dedup();
        names
    });
    let home = y
        .home
        .as_ref()
        .and_then(|h| passwd_path(ctx, &id, "home", h));
    let shell = y
        .shell
        .as_ref()
        .and_then(|s| passwd_path(ctx, &id, "shell", s));
    let comment = y
        .comment
        .as_ref()
        .and_then(|c| field(ctx, &id, "comment", c));
    let password = y
        .password
        .as_ref()
        .and_then(|p| field(ctx, &id, "password", p));
    let params = UserParams {
        name: id.name.clone(),
        state,
        uid,
        group,
        groups,
        home,
        managehome: y.managehome.unwrap_or(false),
        shell,
        comment,
        password,
        system: y.system.unwrap_or(false),
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::User(params),
            exported,
        },
        y.name.referenced,
    ))
}

pub(super) fn group(ctx: &mut Ctx<'_>, y: GroupYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Group, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    check_account_name(ctx, &id, y.name.referenced, "group");
    let state = presence(ctx, &id, &y.state);
    let gid = y.gid.as_ref().and_then(|g| account_id(ctx, &id, "gid", g));
    let params = GroupParams {
        name: id.name.clone(),
        state,
        gid,
        system: y.system.unwrap_or(false),
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Group(params),
            exported,
        },
        y.name.referenced,
    ))
}

fn pattern(ctx: &mut Ctx<'_>, id: &ResourceId, what: &str, v: &Spanned<String>) -> Option<String> {
    match regex::Regex::new(&v.value) {
        Ok(_) => Some(v.value.clone()),
        Err(e) => {
            // The regex crate's message spans lines (a caret under the spot).
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("invalid").trim();
            let why = why.strip_prefix("error: ").unwrap_or(why);
            ctx.err(
                Some(v.referenced),
                Some(id),
                format!("{what}: invalid regular expression {:?}: {why}", v.value),
            );
            None
        }
    }
}

pub(super) fn line(ctx: &mut Ctx<'_>, y: LineYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Line, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    if let Some(problem) = path_problem(&y.path.value) {
        ctx.err(Some(y.path.referenced), Some(&id), problem);
    } else if y.path.value.ends_with('/') {
        ctx.err(
            Some(y.path.referenced),
            Some(&id),
            format!(
                "path {:?} is a directory; a line lives in a file",
                y.path.value
            ),
        );
    }
    let state = presence(ctx, &id, &y.state);
    let matches = y
        .matches
        .as_ref()
        .and_then(|m| pattern(ctx, &id, "match", m));
    let after = y
        .after
        .as_ref()
        .filter(|a| a.value != crate::line::EOF)
        .and_then(|a| pattern(ctx, &id, "after", a));
    let insert_before = y.before.as_ref().and_then(|b| match b.value.as_str() {
        crate::line::BOF => Some(b.value.clone()),
        _ => pattern(ctx, &id, "before", b),
    });
    if let (Some(_), Some(b)) = (&y.after, &y.before) {
        ctx.err(
            Some(b.referenced),
            Some(&id),
            "give `after` or `before`, not both",
        );
    }
    let text = y.line.as_ref().map(|l| l.value.clone());
    if let Some(l) = &y.line
        && l.value.contains(['\n', '\r', '\0'])
    {
        ctx.err(
            Some(l.referenced),
            Some(&id),
            "line must be one line (no newline, CR or NUL)",
        );
    }
    match (state, &text, &y.matches) {
        (Presence::Present, None, _) => ctx.err(
            Some(y.name.referenced),
            Some(&id),
            "line is required when state is present",
        ),
        (Presence::Absent, None, None) => ctx.err(
            Some(y.name.referenced),
            Some(&id),
            "an absent line needs `line` or `match`",
        ),
        _ => {}
    }
    let params = LineParams {
        path: y.path.value.clone(),
        line: text.unwrap_or_default(),
        matches,
        state,
        after,
        before: insert_before,
        create: y.create.unwrap_or(false),
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Line(params),
            exported,
        },
        y.name.referenced,
    ))
}

/// Where a persisted kernel parameter goes by default: read by
/// systemd-sysctl and `sysctl --system` at boot, after the distribution's.
pub const SYSCTL_DIR: &str = "/etc/sysctl.d/";

/// Seconds between checks of a live kernel parameter, unless `interval` says.
pub const SYSCTL_INTERVAL_S: u64 = 10;

/// A sysctl key: components of letters, digits, `_`, `-` (and `.` when the
/// separator is `/`), no empty one, no `..`.
fn valid_sysctl_key(key: &str) -> bool {
    let sep = if key.contains('/') { '/' } else { '.' };
    !key.is_empty()
        && key.split(sep).all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.chars().all(|ch| {
                    ch.is_ascii_alphanumeric() || "_-".contains(ch) || (ch == '.' && sep == '/')
                })
        })
}

pub(super) fn sysctl(ctx: &mut Ctx<'_>, y: SysctlYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Sysctl, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    if !valid_sysctl_key(&id.name) {
        ctx.err(
            Some(y.name.referenced),
            Some(&id),
            format!(
                "{:?} is not a sysctl key (like net.ipv4.ip_forward: letters, digits, '_', '-')",
                id.name
            ),
        );
    }
    let value = y.value.value.as_text();
    if value.trim().is_empty() || value.contains(['\n', '\0']) {
        ctx.err(
            Some(y.value.referenced),
            Some(&id),
            "value must be one line, not empty",
        );
    }
    let persist = match (y.persist.unwrap_or(true), &y.file) {
        (false, Some(f)) => {
            ctx.err(
                Some(f.referenced),
                Some(&id),
                "`file` is where a persisted value goes; it needs `persist: true`",
            );
            None
        }
        (false, None) => None,
        (true, None) => Some(format!(
            "{SYSCTL_DIR}99-mgmt-{}.conf",
            id.name.replace('/', ".")
        )),
        (true, Some(f)) => {
            if let Some(problem) = path_problem(&f.value) {
                ctx.err(Some(f.referenced), Some(&id), problem);
            }
            Some(f.value.clone())
        }
    };
    let interval_s = match &y.interval {
        None => SYSCTL_INTERVAL_S,
        Some(i) if i.value > 0 => i.value as u64,
        Some(i) => {
            ctx.err(
                Some(i.referenced),
                Some(&id),
                format!("interval must be a number of seconds > 0, not {}", i.value),
            );
            SYSCTL_INTERVAL_S
        }
    };
    let params = SysctlParams {
        key: id.name.clone(),
        value: SysctlParams::normal(&value),
        persist,
        interval_s,
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Sysctl(params),
            exported,
        },
        y.name.referenced,
    ))
}

/// The file systems a `mount` may name: Linux's own, and FUSE's
/// `fuse.<name>` (`auto` lets mount(8) probe; `none` with `bind` options).
const FSTYPES: [&str; 44] = [
    "auto",
    "none",
    "bind",
    "ext2",
    "ext3",
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "msdos",
    "exfat",
    "ntfs",
    "ntfs3",
    "f2fs",
    "jfs",
    "reiserfs",
    "hfsplus",
    "iso9660",
    "udf",
    "squashfs",
    "erofs",
    "tmpfs",
    "ramfs",
    "overlay",
    "fuse",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "9p",
    "virtiofs",
    "zfs",
    "proc",
    "sysfs",
    "devtmpfs",
    "devpts",
    "cgroup2",
    "debugfs",
    "tracefs",
    "securityfs",
    "hugetlbfs",
    "mqueue",
    "autofs",
    "swap",
];

fn fstype_known(t: &str) -> bool {
    FSTYPES.contains(&t)
        || t.strip_prefix("fuse.").is_some_and(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        })
}

pub(super) fn mount(ctx: &mut Ctx<'_>, y: MountYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Mount, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    let (path, path_loc) = path_or_name(&y.path, &id, &y.name);
    if let Some(problem) = path_problem(&path) {
        ctx.err(Some(path_loc), Some(&id), problem);
    } else if path.contains(['\n', '\t', ' ']) {
        ctx.err(
            Some(path_loc),
            Some(&id),
            format!("path {path:?} must not contain whitespace"),
        );
    }
    let state = match y.state.as_ref().map(|s| s.value.as_str()) {
        None | Some("mounted") => MountState::Mounted,
        Some("unmounted") => MountState::Unmounted,
        Some("present") => MountState::Present,
        Some("absent") => MountState::Absent,
        Some(other) => {
            let loc = y.state.as_ref().map(|s| s.referenced);
            ctx.err(
                loc,
                Some(&id),
                format!("state must be mounted, unmounted, present or absent, not {other:?}"),
            );
            MountState::Mounted
        }
    };
    let needs_source = matches!(state, MountState::Mounted | MountState::Present);
    let device = match &y.device {
        Some(d)
            if d.value.is_empty()
                || d.value.starts_with('-')
                || d.value.contains(char::is_whitespace)
                || d.value.contains('\0') =>
        {
            ctx.err(
                Some(d.referenced),
                Some(&id),
                format!(
                    "device {:?} must be non-empty, without whitespace, not starting with '-'",
                    d.value
                ),
            );
            String::new()
        }
        Some(d) => d.value.clone(),
        None => {
            if needs_source {
                ctx.err(
                    Some(y.name.referenced),
                    Some(&id),
                    format!("device is required when state is {}", state.as_str()),
                );
            }
            String::new()
        }
    };
    let fstype = match &y.fstype {
        Some(t) if !fstype_known(&t.value) => {
            ctx.err(
                Some(t.referenced),
                Some(&id),
                format!("unknown fstype {:?} (a Linux file system such as ext4, xfs, tmpfs, or fuse.<name>)", t.value),
            );
            String::new()
        }
        Some(t) => t.value.clone(),
        None => {
            if needs_source {
                ctx.err(
                    Some(y.name.referenced),
                    Some(&id),
                    format!("fstype is required when state is {}", state.as_str()),
                );
            }
            String::new()
        }
    };
    let options = match &y.options {
        None => vec!["defaults".to_string()],
        Some(o) => {
            let opts: Vec<String> = o.value.split(',').map(str::to_string).collect();
            if opts
                .iter()
                .any(|x| x.is_empty() || x.contains(char::is_whitespace))
            {
                ctx.err(
                    Some(o.referenced),
                    Some(&id),
                    format!(
                        "options {:?} must be comma-separated, without spaces or empty ones",
                        o.value
                    ),
                );
            }
            opts
        }
    };
    let mut small = |v: &Option<Spanned<i64>>, what: &str| match v {
        None => 0,
        Some(n) if (0..=9).contains(&n.value) => n.value as u32,
        Some(n) => {
            ctx.err(
                Some(n.referenced),
                Some(&id),
                format!("{what} must be 0 to 9, not {}", n.value),
            );
            0
        }
    };
    let dump = small(&y.dump, "dump");
    let pass = small(&y.pass, "pass");
    let params = MountParams {
        path: match path.trim_end_matches('/') {
            "" => path.clone(),
            p => p.to_string(),
        },
        device,
        fstype,
        options,
        dump,
        pass,
        state,
    };
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Mount(params),
            exported,
        },
        y.name.referenced,
    ))
}

/// The kernel's limit on a host name (`HOST_NAME_MAX`).
const MAX_KERNEL_HOSTNAME: usize = 64;

pub(super) fn hostname(ctx: &mut Ctx<'_>, y: HostnameYaml) -> Option<(Resource, Location)> {
    let (id, exported) = named(ctx, Kind::Hostname, &y.name)?;
    let before = ctx.diags.len();
    let meta = meta(ctx, &id, y.meta);
    let (name, loc) = match &y.hostname {
        Some(h) => (h.value.clone(), h.referenced),
        None => (id.name.clone(), y.name.referenced),
    };
    if let Err(e) = crate::hostname::Hostname::parse(&name) {
        ctx.err(Some(loc), Some(&id), e.to_string());
    } else if name.len() > MAX_KERNEL_HOSTNAME {
        ctx.err(
            Some(loc),
            Some(&id),
            format!("host name {name:?} is longer than the kernel's {MAX_KERNEL_HOSTNAME} bytes"),
        );
    }
    (ctx.diags.len() == before).then_some((
        Resource {
            id,
            meta,
            params: Params::Hostname { hostname: name },
            exported,
        },
        y.name.referenced,
    ))
}

/// Refuses resources that would be undone by another on every run: a `line`
/// in a file whose whole content a `file` resource writes, or beside a line
/// of that file that wants the opposite; a `sysctl` persisted in a file
/// another resource writes.
pub(super) fn check_lines(ctx: &mut Ctx<'_>, resources: &[Resource]) {
    let mut content_of: BTreeMap<&str, &Resource> = BTreeMap::new();
    for r in resources {
        if let Params::File(f) = &r.params
            && (f.content.is_some() || f.source.is_some())
        {
            content_of.insert(f.path.as_str(), r);
        }
    }
    let mut mounts: BTreeMap<&str, &Resource> = BTreeMap::new();
    for r in resources {
        let Params::Mount(m) = &r.params else {
            continue;
        };
        if let Some(other) = mounts.insert(&m.path, r) {
            let msg = format!(
                "{} also mounts {:?}: one would undo the other",
                other.id, m.path
            );
            ctx.err(None, Some(&r.id), msg);
        }
    }
    let mut named_host: Option<&Resource> = None;
    for r in resources {
        if let Params::Hostname { .. } = &r.params
            && let Some(other) = named_host.replace(r)
        {
            let msg = format!(
                "{} also names this host: one would undo the other",
                other.id
            );
            ctx.err(None, Some(&r.id), msg);
        }
    }
    let mut persisted: BTreeMap<&str, &Resource> = BTreeMap::new();
    for r in resources {
        let Params::Sysctl(p) = &r.params else {
            continue;
        };
        let Some(file) = &p.persist else { continue };
        let clash = content_of
            .get(file.as_str())
            .or(persisted.get(file.as_str()));
        if let Some(other) = clash {
            let msg = format!(
                "{} also writes {file:?}: one would undo the other",
                other.id
            );
            ctx.err(None, Some(&r.id), msg);
        }
        persisted.insert(file, r);
    }
    // Per path: (match, line) -> the first present line seen; line -> state.
    let mut by_match: BTreeMap<(&str, &str), &Resource> = BTreeMap::new();
    let mut by_text: BTreeMap<(&str, &str), (&Resource, Presence)> = BTreeMap::new();
    for r in resources {
        let Params::Line(l) = &r.params else { continue };
        if let Some(file) = content_of.get(l.path.as_str()) {
            let msg = format!(
                "{} writes the whole of {:?}: a line in it would be undone on every run",
                file.id, l.path
            );
            ctx.err(None, Some(&r.id), msg);
        }
        if l.state == Presence::Present
            && let Some(m) = &l.matches
            && let Some(other) = by_match.insert((&l.path, m), r)
            && let Params::Line(o) = &other.params
            && o.line != l.line
        {
            let msg = format!(
                "{} puts {:?} where this puts {:?} (same path and match): one would undo the other",
                other.id, o.line, l.line
            );
            ctx.err(None, Some(&r.id), msg);
        }
        if l.matches.is_none()
            && let Some((other, state)) = by_text.insert((&l.path, &l.line), (r, l.state))
            && state != l.state
        {
            let msg = format!(
                "{} wants the same line {}: one would undo the other",
                other.id,
                state.as_str()
            );
            ctx.err(None, Some(&r.id), msg);
        }
    }
}
