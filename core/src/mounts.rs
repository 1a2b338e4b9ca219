//! The `mount` kind, pure: the parse of `/proc/self/mountinfo` and of
//! `/etc/fstab`, and the steps a `mount` resource needs (mount, unmount,
//! remount with other options, rewrite the fstab). io observes (which
//! device a mount really is needs the disk: loop backing files, UUIDs),
//! then carries the steps out.

use crate::resource::{MountParams, MountState};

/// The mount table of the calling process's mount namespace.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
pub const FSTAB: &str = "/etc/fstab";

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: String,
    /// The per-mount options (`rw,nosuid,relatime`).
    pub options: Vec<String>,
    pub fstype: String,
    /// What is mounted, as the kernel names it (`/dev/loop0`, `tmpfs`).
    pub source: String,
}

/// `\040` and the other octal escapes of mountinfo and fstab fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A field as fstab spells it: whitespace and `\` escaped.
fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Parses mountinfo; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 6 || r.len() < 2 {
                return None;
            }
            Some(MountEntry {
                mount_point: unescape(l[4]),
                options: l[5].split(',').map(str::to_string).collect(),
                fstype: r[0].to_string(),
                source: unescape(r[1]),
            })
        })
        .collect()
}

/// What is mounted at `path` now: the last (topmost) mount there.
pub fn mounted_at<'a>(entries: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == path)
}

/// The VFS flags a mount's options can set, and their opposites: the ones
/// compared with what is mounted (file-system options such as tmpfs's
/// `size=` are the kernel's to print as it likes; they are set at mount
/// time and kept in the fstab).
const FLAGS: [(&str, &str); 5] = [
    ("ro", "rw"),
    ("nosuid", "suid"),
    ("nodev", "dev"),
    ("noexec", "exec"),
    ("noatime", ""),
];

/// The flag options `want` asks for that `entry` lacks, as words.
pub fn flags_differ(want: &[String], entry: &MountEntry) -> Vec<String> {
    let has = |o: &str| entry.options.iter().any(|x| x == o);
    let mut differ = Vec::new();
    for o in want {
        let o = o.as_str();
        if o == "defaults" {
            for (flag, _) in &FLAGS[..4] {
                if has(flag) {
                    differ.push(format!("{flag} is set"));
                }
            }
            continue;
        }
        for (on, off) in FLAGS {
            if o == on && !has(on) {
                differ.push(format!("{on} is not set"));
            }
            if !off.is_empty() && o == off && has(on) {
                differ.push(format!("{on} is set"));
            }
        }
    }
    differ
}

/// The fstab line of a resource.
pub fn fstab_line(p: &MountParams) -> String {
    format!(
        "{} {} {} {} {} {}",
        escape(&p.device),
        escape(&p.path),
        p.fstype,
        p.options.join(","),
        p.dump,
        p.pass
    )
}

/// The fstab text with `p`'s entry as its state wants it (the entry for
/// its path replaced, added or removed), or `None` if it is so already.
pub fn edit_fstab(text: &str, p: &MountParams) -> Option<String> {
    let ours = |l: &str| {
        let t = l.trim_start();
        !t.starts_with('#') && t.split_whitespace().nth(1).map(unescape).as_deref() == Some(&p.path)
    };
    let want = fstab_line(p);
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let keep = matches!(p.state, MountState::Mounted | MountState::Present);
    match lines.iter().position(|l| ours(l)) {
        Some(i) if keep => {
            let same = lines[i].split_whitespace().eq(want.split_whitespace());
            let only = lines.iter().filter(|l| ours(l)).count() == 1;
            if same && only {
                return None;
            }
            lines[i] = want;
            let mut first = true;
            lines.retain(|l| {
                if !ours(l) {
                    return true;
                }
                std::mem::replace(&mut first, false)
            });
        }
        Some(_) => lines.retain(|l| !ours(l)),
        None if keep => lines.push(want),
        None => return None,
    }
    let mut out = lines.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    Some(out)
}

/// One thing to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create the mount point if missing, then `mount -t fstype -o options device path`.
    Mount,
    Unmount,
    /// `mount -o remount,options path`.
    Remount,
    /// Write this fstab text.
    WriteFstab(String),
}

/// What io saw: what is mounted at the path, whether it is the resource's
/// device and file system, and the fstab's text.
#[derive(Clone, Debug)]
pub struct Observed<'a> {
    pub mounted: Option<&'a MountEntry>,
    pub same_device: bool,
    pub fstab: &'a str,
}

/// What a `mount` resource needs: what differs, in words, and the steps.
pub fn plan(p: &MountParams, seen: &Observed<'_>) -> (Vec<String>, Vec<Step>) {
    let mut changes = Vec::new();
    let mut steps = Vec::new();
    match (p.state, seen.mounted) {
        (MountState::Mounted, None) => {
            changes.push("mounted".to_string());
            steps.push(Step::Mount);
        }
        (MountState::Mounted, Some(e)) if !seen.same_device => {
            changes.push(format!(
                "{} ({}) was mounted there: mounted {} ({}) instead",
                e.source, e.fstype, p.device, p.fstype
            ));
            steps.extend([Step::Unmount, Step::Mount]);
        }
        (MountState::Mounted, Some(e)) => {
            let differ = flags_differ(&p.options, e);
            if !differ.is_empty() {
                changes.push(format!("remounted ({})", differ.join(", ")));
                steps.push(Step::Remount);
            }
        }
        (MountState::Unmounted | MountState::Absent, Some(_)) => {
            changes.push("unmounted".to_string());
            steps.push(Step::Unmount);
        }
        (MountState::Unmounted | MountState::Absent | MountState::Present, _) => {}
    }
    if p.state != MountState::Unmounted
        && let Some(text) = edit_fstab(seen.fstab, p)
    {
        changes.push(match p.state {
            MountState::Absent => format!("removed from {FSTAB}"),
            _ => format!("entry in {FSTAB}"),
        });
        steps.push(Step::WriteFstab(text));
    }
    (changes, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
        40 27 7:0 / /mnt/my\\040data rw,nosuid,relatime shared:1 - ext4 /dev/loop0 rw\n\
        41 27 0:50 / /mnt/t rw,relatime - tmpfs tmpfs rw,size=1024k\n\
        42 27 0:51 / /mnt/t ro,nodev,relatime - tmpfs other rw\n";

    fn params(state: MountState) -> MountParams {
        MountParams {
            path: "/mnt/t".into(),
            device: "tmpfs".into(),
            fstype: "tmpfs".into(),
            options: vec!["nodev".into(), "size=1m".into()],
            dump: 0,
            pass: 0,
            state,
        }
    }

    #[test]
    fn mountinfo_parses_with_escapes_and_the_top_mount_wins() {
        let e = parse_mountinfo(INFO);
        assert_eq!(e.len(), 4);
        assert_eq!(e[1].mount_point, "/mnt/my data");
        assert_eq!(e[1].source, "/dev/loop0");
        let top = mounted_at(&e, "/mnt/t").unwrap();
        assert_eq!(top.source, "other");
        assert_eq!(flags_differ(&["rw".to_string()], top), ["ro is set"]);
        assert!(flags_differ(&["nodev".to_string()], top).is_empty());
        assert_eq!(
            flags_differ(&["defaults".to_string()], &e[1]),
            ["nosuid is set"]
        );
    }

    #[test]
    fn fstab_entries_are_added_replaced_and_removed() {
        let p = params(MountState::Mounted);
        let text = "# static\nproc /proc proc defaults 0 0\n";
        let added = edit_fstab(text, &p).unwrap();
        assert_eq!(
            added,
            format!("{text}tmpfs /mnt/t tmpfs nodev,size=1m 0 0\n")
        );
        assert_eq!(edit_fstab(&added, &p), None);
        let stale = "tmpfs  /mnt/t  tmpfs  defaults  0  0\nx /mnt/t tmpfs ro 0 0\n";
        assert_eq!(
            edit_fstab(stale, &p).unwrap(),
            "tmpfs /mnt/t tmpfs nodev,size=1m 0 0\n"
        );
        let gone = edit_fstab(&added, &params(MountState::Absent)).unwrap();
        assert_eq!(gone, text);
        assert_eq!(edit_fstab(text, &params(MountState::Unmounted)), None);
    }

    #[test]
    fn plans_follow_the_state() {
        let e = parse_mountinfo(INFO);
        let fstab = format!("{}\n", fstab_line(&params(MountState::Mounted)));
        let seen = |mounted, same_device| Observed {
            mounted,
            same_device,
            fstab: &fstab,
        };
        let p = params(MountState::Mounted);
        assert_eq!(plan(&p, &seen(None, false)).1, [Step::Mount]);
        assert_eq!(
            plan(&p, &seen(mounted_at(&e, "/mnt/t"), false)).1,
            [Step::Unmount, Step::Mount]
        );
        assert!(plan(&p, &seen(mounted_at(&e, "/mnt/t"), true)).1.is_empty());
        let mut ro = params(MountState::Mounted);
        ro.options = vec!["rw".into(), "nodev".into(), "size=1m".into()];
        let (changes, steps) = plan(&ro, &seen(mounted_at(&e, "/mnt/t"), true));
        assert_eq!(steps[0], Step::Remount);
        assert!(changes[0].contains("ro is set"), "{changes:?}");
        assert_eq!(
            plan(
                &params(MountState::Unmounted),
                &seen(mounted_at(&e, "/mnt/t"), true)
            )
            .1,
            [Step::Unmount]
        );
        let (_, steps) = plan(&params(MountState::Absent), &seen(None, false));
        assert!(matches!(&steps[..], [Step::WriteFstab(t)] if t.is_empty()));
    }
}
