//! `sigil ca`: create, import, inspect CA material and issue offline.

use sigil_pki::clock::to_time;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sigil_pki::authority::CertSummary;
use sigil_pki::issue::LeafExtras;
use sigil_pki::{Authority, CaFiles, CaParams, IssuePolicy, KeyType, SpiffeId, ValidatedCsr};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::config::duration::parse_duration;
use crate::store::atomic::write_file as write_atomic;
use crate::store::file::{FileNames, FileStore};
use crate::Error;

/// `sigil ca ...`
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Generate a new root and issuer (as Dapr Sentry does) into a directory.
    Init(InitArgs),
    /// Check user-provided root/issuer PEMs and copy them into a directory.
    Import(ImportArgs),
    /// Show what a credentials directory holds and whether it is healthy.
    Inspect(InspectArgs),
    /// Sign a CSR offline with the issuer in a directory.
    Issue(IssueArgs),
    /// Replace the issuer with a new one under the same root (needs the root key).
    Rotate(RotateArgs),
    /// Add or remove trust anchors (roots) in ca.crt, for a root rotation.
    #[command(subcommand)]
    Bundle(BundleCommand),
}

/// `sigil ca rotate`
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Credentials directory whose issuer is replaced.
    #[arg(long)]
    pub dir: PathBuf,
    /// The root certificate to issue under (must be one of the anchors in ca.crt).
    #[arg(long)]
    pub root_cert: PathBuf,
    /// That root's private key.
    #[arg(long)]
    pub root_key: PathBuf,
    /// Trust domain for the issuer's subject.
    #[arg(long, default_value = "localhost")]
    pub trust_domain: String,
    /// Namespace for the issuer's subject.
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Key algorithm of the new issuer.
    #[arg(long, default_value = "ed25519")]
    pub key_type: KeyType,
    /// Issuer lifetime (capped at the root's expiry).
    #[arg(long, value_parser = parse_duration, default_value = "365d")]
    pub issuer_ttl: std::time::Duration,
}

/// `sigil ca bundle ...`
#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Add the root(s) in a PEM file to DIR/ca.crt.
    Add {
        /// Credentials directory.
        #[arg(long)]
        dir: PathBuf,
        /// PEM file with one or more root certificates.
        #[arg(long)]
        root: PathBuf,
    },
    /// Remove the root(s) in a PEM file from DIR/ca.crt. Refused if the issuer would no longer
    /// chain to a remaining root.
    Remove {
        /// Credentials directory.
        #[arg(long)]
        dir: PathBuf,
        /// PEM file with the root certificate(s) to remove.
        #[arg(long)]
        root: PathBuf,
    },
}

/// `sigil ca init`
#[derive(Args, Debug)]
pub struct InitArgs {
    /// Directory to write ca.crt, issuer.crt and issuer.key into.
    #[arg(long)]
    pub out: PathBuf,
    /// Trust domain (the root's organisation).
    #[arg(long, default_value = "localhost")]
    pub trust_domain: String,
    /// Namespace of the CA (part of the issuer's subject).
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Key algorithm: ed25519, p256 or p384.
    #[arg(long, default_value = "ed25519")]
    pub key_type: KeyType,
    /// Root lifetime.
    #[arg(long, value_parser = parse_duration, default_value = "365d")]
    pub root_ttl: std::time::Duration,
    /// Issuer lifetime.
    #[arg(long, value_parser = parse_duration, default_value = "365d")]
    pub issuer_ttl: std::time::Duration,
    /// Replace existing material.
    #[arg(long)]
    pub force: bool,
    /// Also write the root's private key here (mode 0600), to rotate issuers later with
    /// `sigil ca rotate`. Keep it offline. By default the root key is discarded, as in Dapr.
    #[arg(long)]
    pub root_key_out: Option<PathBuf>,
}

/// `sigil ca import`
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Trust anchors PEM (one or more roots).
    #[arg(long)]
    pub ca: PathBuf,
    /// Issuer certificate PEM (issuer first, then intermediates; a trailing root is fine).
    #[arg(long)]
    pub issuer_cert: PathBuf,
    /// Issuer private key PEM (PKCS#8, SEC1 or PKCS#1).
    #[arg(long)]
    pub issuer_key: PathBuf,
    /// Directory to write into.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace existing material.
    #[arg(long)]
    pub force: bool,
}

/// `sigil ca inspect`
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Credentials directory.
    pub dir: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `sigil ca issue`
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Credentials directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// CSR file (PEM or DER).
    #[arg(long)]
    pub csr: PathBuf,
    /// SPIFFE ID to issue for.
    #[arg(long)]
    pub spiffe_id: String,
    /// Lifetime.
    #[arg(long, value_parser = parse_duration, default_value = "24h")]
    pub ttl: std::time::Duration,
    /// DNS SANs to add.
    #[arg(long = "dns")]
    pub dns_names: Vec<String>,
    /// Write the chain here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn refuse_overwrite(store: &FileStore, force: bool) -> Result<(), Error> {
    let exists = [
        store.ca_path(),
        store.issuer_cert_path(),
        store.issuer_key_path(),
    ]
    .iter()
    .any(|p| p.exists());
    if exists && !force {
        return Err(Error::Config(format!(
            "{} already holds CA material; refusing to overwrite it (use --force to replace it)",
            store.ca_path().parent().unwrap_or(Path::new(".")).display()
        )));
    }
    Ok(())
}

/// Runs a `sigil ca` command.
pub fn run(cmd: CaCommand) -> Result<ExitCode, Error> {
    let now = OffsetDateTime::now_utc();
    match cmd {
        CaCommand::Init(a) => {
            let store = FileStore::new(&a.out, FileNames::default());
            refuse_overwrite(&store, a.force)?;
            let mut params = CaParams::new(
                a.trust_domain
                    .parse()
                    .map_err(|e| Error::Config(format!("--trust-domain: {e}")))?,
                a.namespace
                    .parse()
                    .map_err(|e| Error::Config(format!("--namespace: {e}")))?,
            );
            params.key_type = a.key_type;
            params.root_ttl = to_time(a.root_ttl);
            params.issuer_ttl = to_time(a.issuer_ttl);
            let (files, root_key) = Authority::generate_keeping_root(&params, now)?;
            let authority = Authority::load(&files, now)?;
            if let Some(path) = &a.root_key_out {
                if path.exists() && !a.force {
                    return Err(Error::Config(format!(
                        "{} exists; refusing to overwrite it (use --force)",
                        path.display()
                    )));
                }
                write_atomic(path, root_key.as_bytes(), 0o600)?;
                eprintln!(
                    "wrote the root key to {} (mode 0600): keep it offline",
                    path.display()
                );
            }
            drop(root_key);
            store.write_sync(&files)?;
            println!(
                "wrote {}, {} and {} (issuer {:?}, {} keys, valid until {})",
                store.ca_path().display(),
                store.issuer_cert_path().display(),
                store.issuer_key_path().display(),
                authority.issuer_subject(),
                a.key_type,
                authority.valid_until()
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Import(a) => {
            let files = CaFiles {
                ca_crt: read(&a.ca)?,
                issuer_crt: read(&a.issuer_cert)?,
                issuer_key: Zeroizing::new(read(&a.issuer_key)?),
            };
            let authority = Authority::load(&files, now)?;
            let store = FileStore::new(&a.out, FileNames::default());
            refuse_overwrite(&store, a.force)?;
            store.write_sync(&files)?;
            for w in authority.expiry_warnings(now) {
                eprintln!("warning: {w}");
            }
            println!(
                "imported issuer {:?} ({} key, {} trust anchor(s)) into {}",
                authority.issuer_subject(),
                authority.key_type(),
                authority.trust_bundle().roots().len(),
                a.out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Inspect(a) => inspect(&a.dir, a.json, now),
        CaCommand::Rotate(a) => {
            let store = FileStore::new(&a.dir, FileNames::default());
            let current = store.load_sync()?.ok_or_else(|| {
                Error::Config(format!("{} holds no CA material", a.dir.display()))
            })?;
            let root_key = sigil_pki::PrivateKey::from_pem(&Zeroizing::new(read(&a.root_key)?))?;
            let mut params = CaParams::new(
                a.trust_domain
                    .parse()
                    .map_err(|e| Error::Config(format!("--trust-domain: {e}")))?,
                a.namespace
                    .parse()
                    .map_err(|e| Error::Config(format!("--namespace: {e}")))?,
            );
            params.key_type = a.key_type;
            params.issuer_ttl = to_time(a.issuer_ttl);
            let (issuer_crt, issuer_key) =
                Authority::new_issuer(&read(&a.root_cert)?, &root_key, &params, now)?;
            let rotated = CaFiles {
                ca_crt: current.ca_crt.clone(),
                issuer_crt,
                issuer_key,
            };
            // The new issuer must chain to the anchors already served, or clients would break.
            let authority = Authority::load(&rotated, now)?;
            write_atomic(&store.issuer_key_path(), &rotated.issuer_key, 0o600)?;
            write_atomic(&store.issuer_cert_path(), &rotated.issuer_crt, 0o644)?;
            println!(
                "new issuer {:?} valid until {}; a running server picks it up within seconds",
                authority.issuer_subject(),
                authority.valid_until()
            );
            Ok(ExitCode::SUCCESS)
        }
        CaCommand::Bundle(cmd) => bundle(cmd, now),
        CaCommand::Issue(a) => {
            let store = FileStore::new(&a.dir, FileNames::default());
            let files = store.load_sync()?.ok_or_else(|| {
                Error::Config(format!("{} holds no CA material", a.dir.display()))
            })?;
            let authority = Authority::load(&files, now)?;
            let csr = ValidatedCsr::parse(&read(&a.csr)?)?;
            let id = SpiffeId::parse(&a.spiffe_id)?;
            let policy = IssuePolicy {
                ttl: to_time(a.ttl),
                ..IssuePolicy::default()
            };
            let extras = LeafExtras {
                dns_names: a.dns_names,
                container_images_json: None,
            };
            let issued = authority.issue(&csr, &id, &extras, &policy, now)?;
            match a.out {
                Some(path) => {
                    write_atomic(&path, issued.chain_pem.as_bytes(), 0o644)?;
                    eprintln!(
                        "wrote {} (serial {}, valid until {})",
                        path.display(),
                        issued.serial_hex,
                        issued.not_after
                    );
                }
                None => print!("{}", issued.chain_pem),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn bundle(cmd: BundleCommand, now: OffsetDateTime) -> Result<ExitCode, Error> {
    let (dir, root, adding) = match cmd {
        BundleCommand::Add { dir, root } => (dir, root, true),
        BundleCommand::Remove { dir, root } => (dir, root, false),
    };
    let store = FileStore::new(&dir, FileNames::default());
    let current = store
        .load_sync()?
        .ok_or_else(|| Error::Config(format!("{} holds no CA material", dir.display())))?;
    let mut anchors = sigil_pki::TrustBundle::from_pem(&current.ca_crt)?;
    for der in sigil_pki::pem_bundle::parse_certificates("root file", &read(&root)?)? {
        if adding {
            anchors.add(der)?;
        } else {
            anchors.remove(&der)?;
        }
    }
    let updated = CaFiles {
        ca_crt: anchors.to_pem().into_bytes(),
        ..current
    };
    // Never leave a bundle the issuer no longer chains to.
    Authority::load(&updated, now)?;
    write_atomic(&store.ca_path(), &updated.ca_crt, 0o644)?;
    println!("ca.crt now holds {} root(s):", anchors.roots().len());
    for s in anchors.subjects() {
        println!("  {s}");
    }
    Ok(ExitCode::SUCCESS)
}

fn summary_json(role: &str, s: &CertSummary, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "role": role,
        "subject": s.subject,
        "issuer": s.issuer,
        "serial": s.serial,
        "key_type": s.key_type,
        "uris": s.uris,
        "dns_names": s.dns_names,
        "is_ca": s.is_ca,
        "self_signed": s.self_signed,
        "not_before": s.not_before.unix_timestamp(),
        "not_after": s.not_after.unix_timestamp(),
        "days_left": (s.not_after - now).whole_days(),
    })
}

fn inspect(dir: &Path, json: bool, now: OffsetDateTime) -> Result<ExitCode, Error> {
    let store = FileStore::new(dir, FileNames::default());
    let files = store
        .load_sync()?
        .ok_or_else(|| Error::Config(format!("{} holds no CA material", dir.display())))?;
    let mut certs = Vec::new();
    for (role, bytes) in [("root", &files.ca_crt), ("issuer-chain", &files.issuer_crt)] {
        match sigil_pki::pem_bundle::parse_certificates(
            if role == "root" {
                "ca.crt"
            } else {
                "issuer.crt"
            },
            bytes,
        ) {
            Ok(ders) => {
                for (i, der) in ders.iter().enumerate() {
                    let role = match (role, i) {
                        ("root", _) => "root",
                        (_, 0) => "issuer",
                        _ => "intermediate",
                    };
                    certs.push((role, CertSummary::from_der(der)?));
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
            }
        }
    }
    let status = Authority::load(&files, now);
    let warnings = status
        .as_ref()
        .map(|a| a.expiry_warnings(now))
        .unwrap_or_default();
    if json {
        let out = serde_json::json!({
            "directory": dir.display().to_string(),
            "healthy": status.is_ok(),
            "error": status.as_ref().err().map(|e| e.to_string()),
            "warnings": warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
            "certificates": certs.iter().map(|(r, s)| summary_json(r, s, now)).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for (role, s) in &certs {
            println!("{role}:");
            println!("  subject:    {}", s.subject);
            println!("  issuer:     {}", s.issuer);
            println!("  serial:     {}", s.serial);
            println!("  key:        {}", s.key_type);
            for u in &s.uris {
                println!("  uri:        {u}");
            }
            for d in &s.dns_names {
                println!("  dns:        {d}");
            }
            println!("  valid:      {} .. {}", s.not_before, s.not_after);
            println!("  days left:  {}", (s.not_after - now).whole_days());
        }
        match &status {
            Ok(a) => println!(
                "chain: OK (issuer {:?} -> trusted root; signing possible until {})",
                a.issuer_subject(),
                a.valid_until()
            ),
            Err(e) => println!("chain: BROKEN: {e}"),
        }
        for w in &warnings {
            println!("warning: {w}");
        }
    }
    Ok(if status.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
