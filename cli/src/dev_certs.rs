//! `sluice dev-certs DIR`: what a local cluster needs to run with TLS, mTLS and tokens — a CA,
//! the controller's certificate (server), a worker certificate (client), and a token file with
//! one token per role, each also in a file of its own for `--token-file`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The files written, in DIR.
const FILES: &[&str] = &[
    "ca.pem",
    "ca.key",
    "controller.pem",
    "controller.key",
    "worker.pem",
    "worker.key",
    "tokens",
    "admin.token",
    "viewer.token",
    "worker.token",
];

/// Writes `name` in `dir`: readable by its owner only when `secret`.
fn write(dir: &Path, name: &str, text: &str, secret: bool) -> anyhow::Result<()> {
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)
        .with_context(|| format!("write {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("write {}", path.display()))
}

fn token() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes the files; `hosts` are more names or addresses for the controller's certificate
/// (localhost, 127.0.0.1 and ::1 are always in it). Refuses to overwrite unless `force`.
pub fn run(dir: &Path, hosts: &[String], force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if !force {
        if let Some(existing) = FILES.iter().find(|f| dir.join(f).exists()) {
            anyhow::bail!(
                "{} exists; give --force to replace the files of {}",
                dir.join(existing).display(),
                dir.display()
            );
        }
    }
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Sluice development CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca, ca_key)?;

    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    names.extend(hosts.iter().cloned());
    let mut controller = CertificateParams::new(names)?;
    controller
        .distinguished_name
        .push(DnType::CommonName, "sluice-controller");
    controller.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let controller_key = KeyPair::generate()?;
    let controller_cert = controller.signed_by(&controller_key, &ca)?;

    let mut worker = CertificateParams::new(vec!["sluice-worker".to_string()])?;
    worker
        .distinguished_name
        .push(DnType::CommonName, "sluice-worker");
    worker.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let worker_key = KeyPair::generate()?;
    let worker_cert = worker.signed_by(&worker_key, &ca)?;

    let (admin, viewer, worker_token) = (token(), token(), token());
    write(dir, "ca.pem", &ca.pem(), false)?;
    write(dir, "ca.key", &ca_key_pem, true)?;
    write(dir, "controller.pem", &controller_cert.pem(), false)?;
    write(dir, "controller.key", &controller_key.serialize_pem(), true)?;
    write(dir, "worker.pem", &worker_cert.pem(), false)?;
    write(dir, "worker.key", &worker_key.serialize_pem(), true)?;
    write(
        dir,
        "tokens",
        &format!(
            "# NAME ROLE TOKEN (sluice controller --tokens)\n\
             admin admin {admin}\nviewer viewer {viewer}\nworker worker {worker_token}\n"
        ),
        true,
    )?;
    write(dir, "admin.token", &format!("{admin}\n"), true)?;
    write(dir, "viewer.token", &format!("{viewer}\n"), true)?;
    write(dir, "worker.token", &format!("{worker_token}\n"), true)?;
    let d = dir.display();
    println!(
        "wrote {} files in {d} (tokens and keys readable by you only)",
        FILES.len()
    );
    println!(
        "controller: sluice controller --tls-cert {d}/controller.pem --tls-key {d}/controller.key \
         --tls-client-ca {d}/ca.pem --tokens {d}/tokens ..."
    );
    println!(
        "worker:     sluice worker --controller https://localhost:9083 --tls-ca {d}/ca.pem \
         --tls-cert {d}/worker.pem --tls-key {d}/worker.key ..."
    );
    println!(
        "client:     sluice connectors list --controller https://localhost:9083 --tls-ca {d}/ca.pem \
         --token-file {d}/admin.token"
    );
    Ok(())
}
