//! Test certificates made with the `openssl` command: a CA per test, and
//! server certificates it signs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `openssl ARGS` in `dir`, failing the test on an error.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA in `dir`: `<name>-ca.pem` (its certificate) and `<name>-ca.key`.
pub fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (key, pem) = (format!("{name}-ca.key"), format!("{name}-ca.pem"));
    let subject = format!("/CN={name} test CA");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject, "-keyout",
            &key, "-out", &pem,
        ],
    );
    dir.join(pem)
}

/// A server certificate `<name>.pem` for the names in `san` (e.g.
/// `IP:127.0.0.1,DNS:localhost`), signed by CA `ca` (see [`make_ca`]), and
/// its key `<name>.key` (PKCS#8, unencrypted). Returns (certificate, key).
pub fn make_server_cert(dir: &Path, ca: &str, name: &str, san: &str) -> (PathBuf, PathBuf) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), format!("subjectAltName={san}\n")).unwrap();
    let (raw_key, csr, pem, key) =
        (format!("{name}.rawkey"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &raw_key,
            "-out",
            &csr,
        ],
    );
    let (ca_pem, ca_key) = (format!("{ca}-ca.pem"), format!("{ca}-ca.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
    );
    openssl(dir, &["pkcs8", "-topk8", "-nocrypt", "-in", &raw_key, "-out", &key]);
    (dir.join(pem), dir.join(key))
}
