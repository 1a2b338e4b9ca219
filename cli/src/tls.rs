//! TLS flags (etcd's names) and `mgmt tls init`: which files go with which
//! link, checked before anything runs (a mismatch exits 2).

use std::path::PathBuf;

use crate::args::{TlsArgs, TlsCommand, TlsSubcommand};
use mgmt_store::tls::{LinkTls, Links, TlsFiles};

impl TlsArgs {
    /// Only the client link's files: a client of the cluster (`mgmt deploy`).
    pub fn client_only(
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
        trusted_ca_file: Option<PathBuf>,
    ) -> TlsArgs {
        TlsArgs {
            cert_file,
            key_file,
            trusted_ca_file,
            ..TlsArgs::default()
        }
    }

    fn client(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth,
        }
    }

    fn peer(&self) -> TlsFiles {
        TlsFiles {
            cert_file: self.peer_cert_file.clone(),
            key_file: self.peer_key_file.clone(),
            trusted_ca_file: self.peer_trusted_ca_file.clone(),
            client_cert_auth: self.peer_client_cert_auth,
        }
    }
}

/// Every URL of one list `http://`, or every one `https://`.
fn one_scheme(flag: &str, urls: &[String]) -> Result<bool, String> {
    let https = urls.iter().filter(|u| u.starts_with("https://")).count();
    if https != 0 && https != urls.len() {
        return Err(format!(
            "{flag} mixes http:// and https:// URLs: give every URL of it the same scheme"
        ));
    }
    Ok(https != 0 && https == urls.len())
}

/// The TLS of both links, from the flags and the URLs that use them.
/// `serving`: this host runs a store server (its client and peer URLs are
/// listened on).
pub fn links(
    args: &TlsArgs,
    serving: bool,
    client_urls: &[String],
    peer_urls: &[String],
    seeds: &[String],
) -> Result<Links, String> {
    let clients_https = one_scheme("--client-urls", client_urls)? && serving;
    let peers_https = one_scheme("--server-urls", peer_urls)? && serving;
    let seeds_https = one_scheme("--seeds", seeds)?;
    let client = args.client();
    let peer = args.peer();
    let mut links = Links::default();

    if clients_https || seeds_https {
        if clients_https && (client.cert_file.is_none() || client.key_file.is_none()) {
            return Err(
                "https:// client URLs need --cert-file and --key-file: the certificate \
                 this host serves them with"
                    .into(),
            );
        }
        if client.trusted_ca_file.is_none() {
            return Err(format!(
                "{} need --trusted-ca-file: the CA this host checks the members' \
                 certificates against when it dials them",
                if clients_https {
                    "https:// client URLs"
                } else {
                    "https:// seeds"
                }
            ));
        }
        let config = LinkTls::client(&client).map_err(|e| format!("client TLS: {e}"))?;
        links.client = Some(config);
    } else if !client.is_empty() {
        return Err(
            "--cert-file, --key-file, --trusted-ca-file and --client-cert-auth apply to \
             https:// client URLs and seeds, and none is given"
                .into(),
        );
    }

    if peers_https {
        let config = LinkTls::peer(&peer).map_err(|e| format!("peer TLS: {e}"))?;
        links.peer = Some(config);
    } else if !peer.is_empty() {
        return Err(
            "--peer-cert-file, --peer-key-file, --peer-trusted-ca-file and \
             --peer-client-cert-auth apply to https:// --server-urls of a host that \
             serves, and none is given"
                .into(),
        );
    }
    Ok(links)
}

/// Runs `mgmt tls ...`; an error is the operator's (exit 2).
pub fn command(cmd: TlsCommand) -> Result<String, String> {
    match cmd.command {
        TlsSubcommand::Init(args) => {
            let sans: Vec<String> = if args.sans.is_empty() {
                mgmt_store::certs::LOOPBACK_NAMES
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                args.sans
            };
            let hosts: Vec<String> = args
                .hosts
                .iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
            if hosts.is_empty() {
                return Err("--hosts needs at least one host name".into());
            }
            let written =
                mgmt_store::certs::init_dir(&args.dir, &hosts, &sans).map_err(|e| e.to_string())?;
            Ok(format!(
                "wrote {} files in {} (keys mode 0600): ca.crt, {}, and root.crt/root.key \
                 for etcdctl",
                written.files.len(),
                args.dir.display(),
                hosts
                    .iter()
                    .map(|h| format!("{h}.crt/{h}.key"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}
