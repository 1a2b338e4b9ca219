//! Typed resources: what the compiler produces and every other layer consumes.
//!
//! A resource is identified by `Kind[name]`. Its parameters are validated when the
//! graph is compiled, so the I/O side never sees an invalid value.

use std::fmt;

/// The kinds of resource this build knows. A new kind is added here, in the
/// compiler's YAML schema, and in `mgmt-io`'s resource table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Exec,
    File,
    Noop,
    Pkg,
    Svc,
    Timer,
    Msg,
    User,
    Group,
    Line,
    Sysctl,
    Mount,
    Hostname,
}

impl Kind {
    /// The lowercase name used in YAML and in the `kind` field of `mgmt graph`.
    pub fn yaml_name(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::File => "file",
            Kind::Noop => "noop",
            Kind::Pkg => "pkg",
            Kind::Svc => "svc",
            Kind::Timer => "timer",
            Kind::Msg => "msg",
            Kind::User => "user",
            Kind::Group => "group",
            Kind::Line => "line",
            Kind::Sysctl => "sysctl",
            Kind::Mount => "mount",
            Kind::Hostname => "hostname",
        }
    }

    /// Parses the YAML name (`file`) or the display name (`File`).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "exec" => Some(Kind::Exec),
            "file" => Some(Kind::File),
            "noop" => Some(Kind::Noop),
            "pkg" => Some(Kind::Pkg),
            "svc" => Some(Kind::Svc),
            "timer" => Some(Kind::Timer),
            "msg" => Some(Kind::Msg),
            "user" => Some(Kind::User),
            "group" => Some(Kind::Group),
            "line" => Some(Kind::Line),
            "sysctl" => Some(Kind::Sysctl),
            "mount" => Some(Kind::Mount),
            "hostname" => Some(Kind::Hostname),
            _ => None,
        }
    }

    pub const ALL: [Kind; 13] = [
        Kind::Exec,
        Kind::File,
        Kind::Noop,
        Kind::Pkg,
        Kind::Svc,
        Kind::Timer,
        Kind::Msg,
        Kind::User,
        Kind::Group,
        Kind::Line,
        Kind::Sysctl,
        Kind::Mount,
        Kind::Hostname,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Exec => "Exec",
            Kind::File => "File",
            Kind::Noop => "Noop",
            Kind::Pkg => "Pkg",
            Kind::Svc => "Svc",
            Kind::Timer => "Timer",
            Kind::Msg => "Msg",
            Kind::User => "User",
            Kind::Group => "Group",
            Kind::Line => "Line",
            Kind::Sysctl => "Sysctl",
            Kind::Mount => "Mount",
            Kind::Hostname => "Hostname",
        })
    }
}

/// `Kind[name]`, the identity of a resource. Ordered by kind, then name: every
/// deterministic tie-break in the core uses this order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceId {
    pub kind: Kind,
    pub name: String,
}

impl ResourceId {
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        ResourceId {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.kind, self.name)
    }
}

/// Retry policy for a failing Watch or CheckApply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retry {
    /// Retry this many times, then fail permanently.
    Times(u32),
    /// Retry forever (`retry: -1`).
    Forever,
}

/// Meta parameters, common to every kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Meta {
    pub autoedge: bool,
    pub autogroup: bool,
    /// Check only, never change.
    pub noop: bool,
    pub retry: Retry,
    /// Milliseconds between retries.
    pub delay_ms: u64,
    /// Seconds between checks; 0 means event-driven (a watch).
    pub poll_s: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            autoedge: true,
            autogroup: true,
            noop: false,
            retry: Retry::Times(0),
            delay_ms: 0,
            poll_s: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileState {
    Exists,
    Absent,
}

/// A user or group, by name or numeric id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Principal {
    Name(String),
    Id(u32),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Name(n) => f.write_str(n),
            Principal::Id(id) => write!(f, "{id}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileParams {
    /// Absolute path; a trailing `/` means a directory.
    pub path: String,
    /// `None`: content is not managed.
    pub content: Option<String>,
    /// A file or directory whose content the target takes (exclusive with
    /// `content`); clean and absolute, a directory ends in `/` if so written.
    pub source: Option<String>,
    /// With a directory `source`: keep the whole tree in sync (files added,
    /// changed and, where the source has none, removed).
    pub recurse: bool,
    /// Replace a directory by a file, or a file by a directory, when the
    /// graph wants the other.
    pub force: bool,
    pub state: FileState,
    /// Permission bits (`0o7777` at most).
    pub mode: Option<u32>,
    pub owner: Option<Principal>,
    pub group: Option<Principal>,
}

impl FileParams {
    pub fn is_dir(&self) -> bool {
        self.path.ends_with('/')
    }
}

/// How to run a command: split on whitespace and exec it, or hand it to a shell.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Command {
    pub cmd: String,
    /// `None`: split `cmd` on whitespace and exec directly.
    pub shell: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExecParams {
    pub cmd: Command,
    /// Seconds; `None` = no timeout.
    pub timeout_s: Option<u64>,
    /// A long-running command; each line it prints is an event.
    pub watch: Option<Command>,
    /// Run `cmd` only when this exits 0.
    pub ifcmd: Option<Command>,
}

/// What a package should be.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PkgState {
    /// Installed, any version.
    Installed,
    Uninstalled,
    /// Installed, and no newer version available.
    Newest,
    /// Installed at exactly this version.
    Version(String),
}

impl fmt::Display for PkgState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkgState::Installed => f.write_str("installed"),
            PkgState::Uninstalled => f.write_str("uninstalled"),
            PkgState::Newest => f.write_str("newest"),
            PkgState::Version(v) => write!(f, "version {v}"),
        }
    }
}

/// A package, managed through the system's package manager (PackageKit).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PkgParams {
    /// The package name (the resource's name).
    pub name: String,
    pub state: PkgState,
    /// Install packages from repositories that are not signed.
    pub allow_untrusted: bool,
    /// Install packages that are not free software.
    pub allow_nonfree: bool,
    /// Install packages the distribution does not support.
    pub allow_unsupported: bool,
}

/// Whether a service should run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvcState {
    Running,
    Stopped,
}

/// Whether a service should start at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SvcStartup {
    Enabled,
    Disabled,
}

/// A systemd service, `<name>.service`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SvcParams {
    /// The unit name without `.service`.
    pub name: String,
    /// `None`: whether it runs is not managed.
    pub state: Option<SvcState>,
    /// `None`: whether it is enabled is not managed.
    pub startup: Option<SvcStartup>,
    /// The user's service manager rather than the system's.
    pub session: bool,
}

impl SvcParams {
    /// The unit's full name, `<name>.service`.
    pub fn unit(&self) -> String {
        format!("{}.service", self.name)
    }
}

/// `msg`'s severity, syslog's eight levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Emerg,
    Alert,
    Crit,
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

impl Priority {
    /// The syslog/journal number (0 = emerg ... 7 = debug).
    pub fn level(self) -> u8 {
        self as u8
    }

    pub const ALL: [Priority; 8] = [
        Priority::Emerg,
        Priority::Alert,
        Priority::Crit,
        Priority::Err,
        Priority::Warning,
        Priority::Notice,
        Priority::Info,
        Priority::Debug,
    ];

    /// The original's spelling (`Info`), any case.
    pub fn parse(s: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|p| format!("{p:?}").eq_ignore_ascii_case(s))
    }
}

/// A message to log each time the resource runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MsgParams {
    pub body: String,
    pub priority: Priority,
    /// Extra journal fields: upper-case names, as the journal wants them.
    pub fields: std::collections::BTreeMap<String, String>,
    /// Also send it to the systemd journal.
    pub journal: bool,
    /// Also send it to syslog (`/dev/log`).
    pub syslog: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Params {
    Noop {
        comment: Option<String>,
    },
    File(FileParams),
    Exec(ExecParams),
    Pkg(PkgParams),
    Svc(SvcParams),
    /// Refreshes its children every `interval_s` seconds.
    Timer {
        interval_s: u64,
    },
    Msg(MsgParams),
    User(UserParams),
    Group(GroupParams),
    Line(LineParams),
    Sysctl(SysctlParams),
    Mount(MountParams),
    /// The host's static name (`/etc/hostname`) and the kernel's.
    Hostname {
        hostname: String,
    },
}

/// What a `mount` resource wants (Ansible's states).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MountState {
    /// Mounted now, and in `/etc/fstab`.
    Mounted,
    /// Not mounted now; `/etc/fstab` left as it is.
    Unmounted,
    /// In `/etc/fstab`; whether it is mounted now is left as it is.
    Present,
    /// Neither mounted nor in `/etc/fstab`.
    Absent,
}

impl MountState {
    pub fn as_str(self) -> &'static str {
        match self {
            MountState::Mounted => "mounted",
            MountState::Unmounted => "unmounted",
            MountState::Present => "present",
            MountState::Absent => "absent",
        }
    }
}

/// A file system mounted at a path, and its `/etc/fstab` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MountParams {
    /// The mount point, absolute, without a trailing `/`.
    pub path: String,
    /// What is mounted: a device, `UUID=`/`LABEL=`, an image file (mounted
    /// through a loop device), or a name such as `tmpfs`.
    pub device: String,
    pub fstype: String,
    /// Mount options (`defaults` if none given).
    pub options: Vec<String>,
    /// fstab's fifth and sixth fields.
    pub dump: u32,
    pub pass: u32,
    pub state: MountState,
}

impl Params {
    /// Seconds between checks of a state the kernel sends no event for,
    /// made besides the kind's watch (`meta: {poll}` replaces the watch
    /// instead).
    pub fn live_check_s(&self) -> Option<u64> {
        match self {
            Params::Sysctl(s) => Some(s.interval_s),
            _ => None,
        }
    }
}

/// A kernel parameter under `/proc/sys`, and the file that sets it at boot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SysctlParams {
    /// The key as `sysctl` spells it: `net.ipv4.ip_forward` (or with `/`).
    pub key: String,
    /// The value; compared with runs of whitespace as one space.
    pub value: String,
    /// The file in `/etc/sysctl.d/` that sets it at boot; `None`: live only.
    pub persist: Option<String>,
    /// Seconds between checks of the live value: `/proc/sys` gives no events.
    pub interval_s: u64,
}

impl SysctlParams {
    /// A value as values are compared: runs of whitespace as one space (the
    /// kernel separates fields with tabs; users write spaces).
    pub fn normal(value: &str) -> String {
        value.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The file under `/proc/sys` (a key with `/` keeps its dots: `eth0.1`).
    pub fn proc_path(&self) -> String {
        if self.key.contains('/') {
            format!("/proc/sys/{}", self.key)
        } else {
            format!("/proc/sys/{}", self.key.replace('.', "/"))
        }
    }
}

/// Whether a thing (an account, a line) should be there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Presence {
    Present,
    Absent,
}

impl Presence {
    pub fn as_str(self) -> &'static str {
        match self {
            Presence::Present => "present",
            Presence::Absent => "absent",
        }
    }
}

/// A local user account, managed with the shadow tools (`useradd`,
/// `usermod`, `userdel`). Every `None` is left as the system has it (or, for
/// a new account, as `useradd` chooses).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserParams {
    /// The login name (the resource's name).
    pub name: String,
    pub state: Presence,
    pub uid: Option<u32>,
    /// The primary group, by name or gid.
    pub group: Option<Principal>,
    /// Supplementary groups, exactly (sorted, no duplicates); `None`: not managed.
    pub groups: Option<Vec<String>>,
    pub home: Option<String>,
    /// Create the home directory with the account (and move it when `home`
    /// changes); remove it with the account.
    pub managehome: bool,
    pub shell: Option<String>,
    /// The GECOS field.
    pub comment: Option<String>,
    /// The password hash, as `/etc/shadow` holds it (`crypt(5)`).
    pub password: Option<String>,
    /// A system account (`useradd --system`): only when it is created.
    pub system: bool,
}

/// A local group, managed with `groupadd`, `groupmod` and `groupdel`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GroupParams {
    /// The group name (the resource's name).
    pub name: String,
    pub state: Presence,
    pub gid: Option<u32>,
    /// A system group (`groupadd --system`): only when it is created.
    pub system: bool,
}

/// One line of a text file (Ansible's `lineinfile`, Puppet's `file_line`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LineParams {
    /// The file, absolute.
    pub path: String,
    /// The line, without its newline. Required when present.
    pub line: String,
    /// A regular expression: when present, the last line it matches is
    /// replaced by `line`; when absent, every line it matches is removed.
    pub matches: Option<String>,
    pub state: Presence,
    /// Where a new line goes: after the last line this regex matches ...
    pub after: Option<String>,
    /// ... or before the first line this one matches; else at the end.
    pub before: Option<String>,
    /// Create the file (empty, mode 0644) when it does not exist.
    pub create: bool,
}

/// A compiled, validated resource.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    pub id: ResourceId,
    pub meta: Meta,
    pub params: Params,
    /// The name started with `@@`: exported to other hosts rather than run here.
    pub exported: bool,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        self.id.kind
    }
}
