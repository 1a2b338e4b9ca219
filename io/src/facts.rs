//! Gathers this host's [`Facts`] from the machine: os-release, `uname`,
//! the CPUs this process may use, `/proc/meminfo`, the interfaces'
//! addresses and systemd's machine ID. Cheap (a few files and syscalls),
//! read once when an agent starts.

use mgmt_core::facts::{self, Facts};

/// The facts of this machine, running as `name`. What cannot be read is
/// left empty (or 0) rather than failing: a template that needs it says so.
pub fn gather(name: &str) -> Facts {
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let (os, os_version, os_family, os_codename) = facts::parse_os_release(&os_release);
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    Facts {
        name: name.to_string(),
        os,
        os_version,
        os_family,
        os_codename,
        arch: field(|u| u.machine()),
        kernel: field(|u| u.release()),
        cpus: u32::try_from(crate::cores()).unwrap_or(u32::MAX),
        memory_mb: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| facts::parse_meminfo_total_mb(&t))
            .unwrap_or(0),
        ips: addresses(),
        machine_name: field(|u| u.nodename()),
        machine_id: std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Every interface's IPv4 and IPv6 address, loopback ones last, each once.
fn addresses() -> Vec<String> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<std::net::IpAddr> = Vec::new();
    for a in ifaddrs {
        let Some(addr) = a.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            std::net::IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            std::net::IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    out.into_iter().map(|ip| ip.to_string()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_machine_has_facts() {
        let f = super::gather("h1");
        assert_eq!(f.name, "h1");
        assert!(!f.os.is_empty() && !f.arch.is_empty());
        assert!(f.cpus >= 1 && f.memory_mb > 0);
        assert!(f.ips.iter().any(|ip| ip == "127.0.0.1"), "{:?}", f.ips);
    }
}
