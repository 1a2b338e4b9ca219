//! Host names. A host's name picks its store directory (`PREFIX/HOSTNAME/`,
//! which is removed when the host stops being a member) and goes into
//! `/_mgmt/<kind>/<host>` keys, so it is checked once, here, before anything
//! uses it: RFC 1123 labels (letters, digits and `-`, not first or last, 1 to
//! 63 bytes) joined by single dots, at most 253 bytes. No `/`, no `..`, no
//! empty name can get through.

use std::fmt;

/// A validated host name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hostname(String);

/// Why a string is not a host name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid host name {name:?}: {reason}")]
pub struct HostnameError {
    /// The rejected text, cut to 80 characters.
    pub name: String,
    pub reason: &'static str,
}

/// At most this many bytes in a name (RFC 1123 with DNS's limit).
pub const MAX_HOSTNAME_BYTES: usize = 253;
/// At most this many bytes between two dots.
pub const MAX_LABEL_BYTES: usize = 63;

impl Hostname {
    pub fn parse(name: &str) -> Result<Hostname, HostnameError> {
        let fail = |reason| HostnameError {
            name: name.chars().take(80).collect(),
            reason,
        };
        if name.is_empty() {
            return Err(fail("it is empty"));
        }
        if name.len() > MAX_HOSTNAME_BYTES {
            return Err(fail("longer than 253 bytes"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(fail("empty label (a leading, trailing or double dot)"));
            }
            if label.len() > MAX_LABEL_BYTES {
                return Err(fail("a label is longer than 63 bytes"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(fail(
                    "only letters, digits, '-' and dots between labels are allowed",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(fail("a label starts or ends with '-'"));
            }
        }
        Ok(Hostname(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Hostname {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_names() {
        for ok in [
            "h1",
            "a",
            "web-01.example.org",
            "A1",
            "1",
            "x".repeat(63).as_str(),
        ] {
            assert!(Hostname::parse(ok).is_ok(), "{ok:?}");
        }
        let long = ["a".repeat(63).as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(Hostname::parse(&long[2..]).is_ok());
    }

    #[test]
    fn refuses_paths_and_junk() {
        let long = "a".repeat(256);
        let label = "a".repeat(64);
        for bad in [
            "", ".", "..", "a/b", "/etc", "../x", "a..b", ".a", "a.", "-a", "a-", "a_b", "a b",
            "a\0b", "é", &long, &label,
        ] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?}");
        }
    }
}
