//! Certificates for a secure cluster (rcgen): one CA, a certificate and key
//! per host (server and client use, for both links), and one for the
//! operator's etcdctl. `mgmt tls init DIR --hosts h1,h2` writes them; tests
//! make odd ones (expired, wrongly named, from another CA) with the same code.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The certificate the operator's etcdctl presents; its common name is the
/// user etcd's `--client-cert-auth` maps it to.
pub const OPERATOR: &str = "root";
/// The organizational unit of the agents' certificates: with auth on, the
/// store takes a client certificate of this unit (from its trusted CA) as an
/// agent's, which may write the clustering keys.
pub const AGENT_UNIT: &str = "mgmt-agent";
/// Names given to a host certificate besides the host's own, so that agents
/// on one machine reach each other on loopback.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: exists; nothing was written (remove it, or choose another directory)", path.display())]
    Exists { path: PathBuf },
    #[error("{name:?}: not a name a certificate can carry")]
    BadName { name: String },
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clocks differ a little) for `days`.
    pub fn days(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(days),
        }
    }

    /// Ended yesterday.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
        }
    }
}

/// A certificate and its private key, PEM.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate authority that signs hosts' and users' certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert: Issued,
}

impl Authority {
    pub fn new(name: &str, validity: Validity) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert,
        })
    }

    /// A certificate for `common_name`, valid for the names and addresses in
    /// `sans` (none: a client-only certificate), for both server and client
    /// use when it has names.
    pub fn issue(
        &self,
        common_name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        self.issue_as(dn(common_name), sans, validity)
    }

    /// An agent's certificate for `host` ([`AGENT_UNIT`]): what
    /// `mgmt tls init` gives every host.
    pub fn issue_agent(
        &self,
        host: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut name = dn(host);
        name.push(DnType::OrganizationalUnitName, AGENT_UNIT);
        self.issue_as(name, sans, validity)
    }

    fn issue_as(
        &self,
        subject: DistinguishedName,
        sans: &[String],
        validity: Validity,
    ) -> Result<Issued, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| CertError::BadName { name: s.clone() }),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = if sans.is_empty() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// What [`init_dir`] wrote.
#[derive(Debug)]
pub struct Written {
    pub files: Vec<PathBuf>,
}

/// `mgmt tls init`: in `dir` (created if missing), `ca.crt` and `ca.key`,
/// `HOST.crt` and `HOST.key` for each host (named for the host and for
/// `extra_names`), and `root.crt`/`root.key` for the operator. Keys are
/// written mode 0600. Refuses, writing nothing, when any of the files exists:
/// a CA key must never be replaced under a running cluster.
pub fn init_dir(
    dir: &Path,
    hosts: &[String],
    extra_names: &[String],
) -> Result<Written, CertError> {
    let mut names: Vec<String> = vec!["ca".into()];
    names.extend(hosts.iter().cloned());
    names.push(OPERATOR.into());
    for name in &names {
        for ext in ["crt", "key"] {
            let path = dir.join(format!("{name}.{ext}"));
            if path.exists() {
                return Err(CertError::Exists { path });
            }
        }
    }
    // Ten years: a CA outlives its hosts' certificates.
    let ca = Authority::new("mgmt CA", Validity::days(3650))?;
    let mut issued = vec![("ca".to_string(), ca.cert.clone())];
    for host in hosts {
        let mut sans = vec![host.clone()];
        sans.extend(extra_names.iter().filter(|n| *n != host).cloned());
        issued.push((
            host.clone(),
            ca.issue_agent(host, &sans, Validity::days(825))?,
        ));
    }
    issued.push((
        OPERATOR.into(),
        ca.issue(OPERATOR, &[], Validity::days(825))?,
    ));
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for (name, pem) in issued {
        let cert = dir.join(format!("{name}.crt"));
        write_new(&cert, pem.cert_pem.as_bytes(), 0o644)?;
        let key = dir.join(format!("{name}.key"));
        write_new(&key, pem.key_pem.as_bytes(), 0o600)?;
        files.extend([cert, key]);
    }
    Ok(Written { files })
}

/// Writes a file that must not exist yet, with `mode` from its creation.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Who a client certificate says its holder is: an agent, or the user its
/// common name names.
pub fn identity_of_certificate(der: &[u8]) -> Option<mgmt_core::kv::auth::Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    if subject
        .iter_organizational_unit()
        .any(|ou| ou.as_str().ok() == Some(AGENT_UNIT))
    {
        return Some(mgmt_core::kv::auth::Identity::Agent);
    }
    let cn = subject.iter_common_name().next()?.as_str().ok()?;
    Some(mgmt_core::kv::auth::Identity::User(cn.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_every_file_once_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["h1".to_string(), "h2".to_string()];
        let extra: Vec<String> = LOOPBACK_NAMES.iter().map(|s| s.to_string()).collect();
        let written = init_dir(dir.path(), &hosts, &extra).unwrap();
        assert_eq!(written.files.len(), 8);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("h1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let before = std::fs::read(dir.path().join("ca.key")).unwrap();
        let again = init_dir(dir.path(), &["h3".to_string()], &extra);
        assert!(matches!(again, Err(CertError::Exists { .. })), "{again:?}");
        assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), before);
        assert!(!dir.path().join("h3.crt").exists());
    }

    #[test]
    fn a_certificate_names_an_agent_or_a_user() {
        let ca = Authority::new("t", Validity::days(1)).unwrap();
        let der = |pem: &str| {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .to_vec()
        };
        let host = ca
            .issue_agent("h1", &["127.0.0.1".into()], Validity::days(1))
            .unwrap();
        assert_eq!(
            identity_of_certificate(&der(&host.cert_pem)),
            Some(mgmt_core::kv::auth::Identity::Agent)
        );
        let root = ca.issue("root", &[], Validity::days(1)).unwrap();
        assert_eq!(
            identity_of_certificate(&der(&root.cert_pem)),
            Some(mgmt_core::kv::auth::Identity::User("root".into()))
        );
    }
}
