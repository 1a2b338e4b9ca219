//! What a host knows of itself, for templates (`{{ host.name }}`) and for the
//! fleet's status. Gathered by `mgmt-io` (`io::facts`), handed to the pure
//! render as a value; the parsers of the files they come from live here.

use serde::{Deserialize, Serialize};

/// One host's facts, as templates see them under `host` and as the fleet
/// status publishes them. Field names are the template's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The host name mgmt runs as (`--hostname`, else the machine's).
    pub name: String,
    /// os-release `ID` (`debian`), and `VERSION_ID` (`12`).
    pub os: String,
    pub os_version: String,
    /// os-release `ID_LIKE`, split (`[]` on Debian, `["debian"]` on Ubuntu).
    #[serde(default)]
    pub os_family: Vec<String>,
    /// os-release `VERSION_CODENAME` (`bookworm`).
    #[serde(default)]
    pub os_codename: String,
    /// The machine, as `uname -m` says it (`x86_64`).
    pub arch: String,
    /// The kernel release (`uname -r`).
    #[serde(default)]
    pub kernel: String,
    /// CPUs this process may run on.
    pub cpus: u32,
    /// Physical memory, in MiB (`MemTotal`).
    pub memory_mb: u64,
    /// Addresses of the host's interfaces (loopback last), without prefix length.
    pub ips: Vec<String>,
    /// The machine's own name (`uname -n`), which `name` may differ from.
    #[serde(default)]
    pub machine_name: String,
    /// systemd's machine ID, when there is one.
    #[serde(default)]
    pub machine_id: String,
}

/// What os-release says: `(ID, VERSION_ID, ID_LIKE, VERSION_CODENAME)`.
/// Values may be quoted (`"12"`); a file without `ID` is Linux, as
/// os-release(5) says.
pub fn parse_os_release(text: &str) -> (String, String, Vec<String>, String) {
    let mut id = "linux".to_string();
    let (mut version, mut like, mut codename) = (String::new(), Vec::new(), String::new());
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim() {
            "ID" => id = value,
            "VERSION_ID" => version = value,
            "ID_LIKE" => like = value.split_whitespace().map(str::to_string).collect(),
            "VERSION_CODENAME" => codename = value,
            _ => {}
        }
    }
    (id, version, like, codename)
}

fn unquote(v: &str) -> String {
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    // os-release allows shell escapes of `"`, `\`, `$` and `` ` `` in quotes.
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(n)) if matches!(n, '"' | '\\' | '$' | '`') => {
                out.push(n);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
pub fn parse_meminfo_total_mb(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_of_debian_and_ubuntu() {
        let debian = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                      VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(
            parse_os_release(debian),
            ("debian".into(), "12".into(), vec![], "bookworm".into())
        );
        let ubuntu = "ID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n# a comment\n\n";
        assert_eq!(
            parse_os_release(ubuntu),
            (
                "ubuntu".into(),
                "24.04".into(),
                vec!["debian".into()],
                String::new()
            )
        );
        assert_eq!(parse_os_release("").0, "linux");
        assert_eq!(unquote(r#""a \"b\" \$c""#), r#"a "b" $c"#);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24561788 kB\nMemFree:         1234 kB\n";
        assert_eq!(parse_meminfo_total_mb(text), Some(23986));
        assert_eq!(parse_meminfo_total_mb("nothing"), None);
    }
}
