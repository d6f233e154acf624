//! A private certificate authority for a test, made with the `openssl` CLI in a temp dir: a CA,
//! a server certificate for `127.0.0.1`/`localhost` and a client certificate it signed, so a
//! nats-server can serve TLS (and ask for client certificates) on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use tempfile::TempDir;

use crate::process::harness_tempdir;

/// The files of a test PKI; removed with it.
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Makes a CA named `name` with a server and a client certificate (P-256 keys, valid a day).
    pub fn generate(name: &str) -> anyhow::Result<TestPki> {
        let pki = TestPki {
            dir: harness_tempdir("pki-")?,
        };
        let dir = pki.dir.path();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        pki.issue(
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        pki.issue("client", "extendedKeyUsage=clientAuth\n")?;
        Ok(pki)
    }

    /// `<name>.key` and `<name>.pem` signed by the CA, with the given X.509 v3 extensions.
    fn issue(&self, name: &str, extensions: &str) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let ext = format!("{name}.ext");
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{extensions}"),
        )?;
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        )?;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "1",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &ext,
            ],
        )
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// A nats-server `tls { }` block serving the server certificate; with `verify`, clients
    /// must present a certificate the CA signed (mutual TLS).
    pub fn server_tls_block(&self, verify: bool) -> String {
        let quoted = |path: PathBuf| serde_json::to_string(&path.to_string_lossy()).unwrap();
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {verify}\n  timeout: 5\n}}\n",
            quoted(self.server_cert()),
            quoted(self.server_key()),
            quoted(self.ca()),
        )
    }
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (needed for TLS tests)")?;
    if !output.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
