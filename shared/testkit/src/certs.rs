use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files for TLS tests, made with the `openssl` CLI: a CA, a server
/// certificate for 127.0.0.1 and localhost and a client certificate, both
/// signed by that CA, and a second, unrelated CA (`other_ca`) whose trust
/// must not let anything in. Keys are unencrypted PKCS#8.
#[derive(Debug, Clone)]
pub struct TestCerts {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (is it installed?)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A self-signed CA: `<name>.pem` and `<name>.key`.
fn ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            &format!("/CN=contexten test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

/// A leaf `<name>.pem`/`<name>.key` signed by the CA `ca`, with `ext` as its
/// extensions.
fn leaf(dir: &Path, name: &str, serial: u32, cn: &str, ext: &str) -> anyhow::Result<()> {
    std::fs::write(dir.join(format!("{name}.ext")), ext)?;
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
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
            "-set_serial",
            &serial.to_string(),
            "-days",
            "3650",
            "-sha256",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

impl TestCerts {
    /// Writes the files into `dir` (which must exist).
    pub fn generate(dir: &Path) -> anyhow::Result<TestCerts> {
        ca(dir, "ca")?;
        ca(dir, "other-ca")?;
        leaf(
            dir,
            "server",
            1001,
            "localhost",
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )?;
        leaf(
            dir,
            "client",
            1002,
            "contexten-test-client",
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        )?;
        // The servers read the keys as another user in some set-ups.
        for key in ["server.key", "client.key"] {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(TestCerts {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_are_pkcs8_and_chain_to_their_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let certs = TestCerts::generate(dir.path()).unwrap();
        for key in [&certs.server_key, &certs.client_key] {
            let pem = std::fs::read_to_string(key).unwrap();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
        }
        let verify = |ca: &Path, cert: &Path| {
            Command::new("openssl")
                .arg("verify")
                .arg("-CAfile")
                .arg(ca)
                .arg(cert)
                .output()
                .unwrap()
                .status
                .success()
        };
        assert!(verify(&certs.ca, &certs.server_cert));
        assert!(verify(&certs.ca, &certs.client_cert));
        assert!(!verify(&certs.other_ca, &certs.server_cert));
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&certs.server_cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("IP Address:127.0.0.1") && text.contains("DNS:localhost"),
            "{text}"
        );
    }
}
