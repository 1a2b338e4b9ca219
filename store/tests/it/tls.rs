//! TLS on both links, with certificates from `mgmt_store::certs`: stock
//! etcdctl with the right certificate works; plaintext, no certificate, one
//! from another CA, an expired one, and a server certificate for another name
//! are refused, on the client port and on the peer port, and nothing is
//! served to them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mgmt_store::certs::{Authority, Validity};
use mgmt_store::client::{ClientConfig, EtcdClient};
use mgmt_store::tls::{LinkTls, Links, TlsFiles};
use mgmt_store::{Env, Store, StoreHandle};

use crate::common::*;

/// A CA's files and certificates it issued, in a directory.
struct Pki {
    dir: PathBuf,
    ca: Authority,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Authority::new(name, Validity::days(1)).unwrap();
        std::fs::write(dir.join("ca.crt"), &ca.cert.cert_pem).unwrap();
        Pki { dir, ca }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `NAME.crt` and `NAME.key`, valid for `sans`.
    fn issue(&self, name: &str, sans: &[&str], validity: Validity) -> (PathBuf, PathBuf) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let issued = self.ca.issue(name, &sans, validity).unwrap();
        let (cert, key) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, issued.cert_pem).unwrap();
        std::fs::write(&key, issued.key_pem).unwrap();
        (cert, key)
    }

    fn files(&self, (cert, key): (PathBuf, PathBuf), client_cert_auth: bool) -> TlsFiles {
        TlsFiles {
            cert_file: Some(cert),
            key_file: Some(key),
            trusted_ca_file: Some(self.ca()),
            client_cert_auth,
        }
    }
}

/// A single store with TLS on both links, asking clients for certificates.
async fn tls_store(pki: &Pki, prefix: &Path, server_names: &[&str]) -> StoreHandle {
    init_tracing();
    let host = pki.issue("h1", server_names, Validity::days(1));
    let links = Links {
        client: Some(LinkTls::client(&pki.files(host.clone(), true)).unwrap()),
        peer: Some(LinkTls::peer(&pki.files(host, true)).unwrap()),
    };
    let mut c = config("h1", prefix);
    c.client_urls = vec!["https://127.0.0.1:0".into()];
    c.peer_urls = vec!["https://127.0.0.1:0".into()];
    c.env = Env::tokio().with_tls(links);
    let h = Store::start_single(c).await.expect("store starts");
    h.wait_for_leader(Duration::from_secs(10))
        .await
        .expect("leader");
    h
}

fn tls_args<'a>(ca: &'a str, cert: Option<(&'a str, &'a str)>) -> Vec<&'a str> {
    let mut v = vec!["--cacert", ca];
    if let Some((c, k)) = cert {
        v.extend(["--cert", c, "--key", k]);
    }
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_over_tls_works_and_every_other_client_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "pki");
    let other = Pki::new(dir.path(), "other");
    let h = tls_store(&pki, &dir.path().join("prefix"), &["127.0.0.1"]).await;
    let url = h.client_urls()[0].clone();
    assert!(url.starts_with("https://"), "{url}");
    let peer_url = h.peer_urls()[0].clone();
    let ca = pki.ca();
    let root = pki.issue("root", &[], Validity::days(1));
    let (root_cert, root_key) = (s(&root.0), s(&root.1));

    let mut args = tls_args(s(&ca), Some((root_cert, root_key)));
    args.extend(["put", "/k", "by-root"]);
    assert_eq!(etcdctl_ok(&url, &args).await.trim(), "OK");

    let stranger = other.issue("root", &[], Validity::days(1));
    let expired = pki.issue("old", &[], Validity::expired());
    let plain_url = url.replacen("https://", "http://", 1);
    let refused: [(&str, String, Vec<&str>); 4] = [
        ("plaintext", plain_url, vec![]),
        ("no certificate", url.clone(), tls_args(s(&ca), None)),
        (
            "another CA's certificate",
            url.clone(),
            tls_args(s(&ca), Some((s(&stranger.0), s(&stranger.1)))),
        ),
        (
            "an expired certificate",
            url.clone(),
            tls_args(s(&ca), Some((s(&expired.0), s(&expired.1)))),
        ),
    ];
    for (what, endpoint, mut args) in refused {
        args.extend(["--command-timeout=3s", "put", "/k", "stolen"]);
        let out = etcdctl(&endpoint, &args, None).await;
        assert!(!out.ok, "{what}: etcdctl succeeded: {}", out.stdout);
    }

    // The peer port: plaintext, and a client with another CA's certificate.
    let peer_plain = peer_url.replacen("https://", "http://", 1);
    let out = etcdctl(&peer_plain, &["--command-timeout=3s", "get", "/k"], None).await;
    assert!(!out.ok, "plaintext on the peer port: {}", out.stdout);
    let mut args = tls_args(s(&ca), Some((s(&stranger.0), s(&stranger.1))));
    args.extend(["--command-timeout=3s", "get", "/k"]);
    let out = etcdctl(&peer_url, &args, None).await;
    assert!(!out.ok, "another CA on the peer port: {}", out.stdout);
    // A peer RPC presenting another CA's certificate (while trusting ours)
    // is refused at the handshake; the same RPC with one of our CA's reaches
    // the service, which answers that the empty message is not a vote.
    let probe = |cert: (PathBuf, PathBuf)| {
        let files = TlsFiles {
            cert_file: Some(cert.0),
            key_file: Some(cert.1),
            trusted_ca_file: Some(ca.clone()),
            client_cert_auth: true,
        };
        let env = Env::tokio().with_tls(Links {
            client: None,
            peer: Some(LinkTls::peer(&files).unwrap()),
        });
        let channel = env.peer_channel(&peer_url).unwrap();
        async move {
            let mut peer = mgmt_store::pb::mgmtpeer::peer_client::PeerClient::new(channel);
            let vote = peer.vote(mgmt_store::pb::mgmtpeer::Blob { data: vec![] });
            tokio::time::timeout(Duration::from_secs(10), vote)
                .await
                .expect("answered or refused in time")
                .expect_err("an empty vote is never accepted")
        }
    };
    let ours = probe(pki.issue("h8", &["127.0.0.1"], Validity::days(1))).await;
    assert_eq!(ours.code(), tonic::Code::InvalidArgument, "{ours}");
    let theirs = probe(other.issue("h9", &["127.0.0.1"], Validity::days(1))).await;
    assert_ne!(
        theirs.code(),
        tonic::Code::InvalidArgument,
        "a peer of another CA reached the service: {theirs}"
    );

    // Nothing the refused clients sent took effect.
    let mut args = tls_args(s(&ca), Some((root_cert, root_key)));
    args.extend(["get", "/k", "--print-value-only"]);
    assert_eq!(etcdctl_ok(&url, &args).await.trim(), "by-root");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_server_certificate_for_another_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "pki");
    // Valid for 127.0.0.9 only, served on 127.0.0.1.
    let h = tls_store(&pki, &dir.path().join("prefix"), &["127.0.0.9"]).await;
    let me = pki.issue("me", &[], Validity::days(1));
    let env = Env::tokio().with_tls(Links {
        client: Some(LinkTls::client(&pki.files(me, false)).unwrap()),
        peer: None,
    });
    let mut cc = ClientConfig::new(vec![h.client_urls()[0].clone()]);
    cc.env = env;
    cc.request_timeout = Duration::from_secs(3);
    let client = EtcdClient::new(cc).unwrap();
    let err = client.put(b"/k", b"v", 0).await.unwrap_err().to_string();
    assert!(err.contains("another name"), "{err}");
    h.shutdown().await;
}
