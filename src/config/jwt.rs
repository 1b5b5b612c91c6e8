//! JWT-SVID issuance and the OIDC discovery server: their flags, checked and resolved into
//! settings. Both are off unless `--jwt-enabled` (and `--oidc-enabled`) says otherwise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sigil_pki::jose::Algorithm as JwsAlgorithm;

use super::duration::parse_duration;
use super::flags::{Mode, ServeArgs};
use crate::store::names::{is_valid_data_key, KEY_CA, KEY_ISSUER_CERT, KEY_ISSUER_KEY};
use crate::Error;

/// JWT-SVID issuance settings.
#[derive(Clone, Debug)]
pub struct JwtSettings {
    /// The signing key file.
    pub key_path: PathBuf,
    /// The published JWKS file.
    pub jwks_path: PathBuf,
    /// `iss` claim.
    pub issuer: Option<String>,
    /// Algorithm; `None` means "from the key", and RS256 for a generated key.
    pub algorithm: Option<JwsAlgorithm>,
    /// Fixed `kid`; `None` means the thumbprint.
    pub key_id: Option<String>,
    /// Token lifetime.
    pub ttl: Duration,
    /// How long a new key is published before it signs (`None`: the default rule).
    pub publish_delay: Option<Duration>,
}

/// OIDC discovery server settings.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Certificate chain and key files; `None` serves plain HTTP.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Path prefix: empty, or `/segment...` without a trailing slash.
    pub path_prefix: String,
    /// Fixed JWKS URI for the discovery document.
    pub jwks_uri: Option<String>,
    /// Allowed Host names (lower case, no port); empty allows any.
    pub allowed_hosts: Vec<String>,
}

impl ServeArgs {
    /// Refuses a JWT or OIDC flag given while its feature is off: a flag that is silently
    /// ignored would leave a user believing it is in force.
    pub(super) fn check_jwt_and_oidc_flags(&self) -> Result<(), Error> {
        let jwt_flags = [
            ("--jwt-key-filename", self.jwt_key_filename.is_some()),
            ("--jwks-filename", self.jwks_filename.is_some()),
            ("--jwt-issuer", self.jwt_issuer.is_some()),
            (
                "--jwt-signing-algorithm",
                self.jwt_signing_algorithm.is_some(),
            ),
            ("--jwt-key-id", self.jwt_key_id.is_some()),
            ("--jwt-ttl", self.jwt_ttl.is_some()),
            (
                "--jwt-key-publish-delay",
                self.jwt_key_publish_delay.is_some(),
            ),
            ("--oidc-enabled", self.oidc_enabled),
        ];
        if !self.jwt_enabled {
            if let Some((flag, _)) = jwt_flags.iter().find(|(_, given)| *given) {
                return Err(Error::Config(format!(
                    "{flag} was given but JWT issuance is off (--jwt-enabled is not set)"
                )));
            }
        }
        let oidc_flags = [
            (
                "--oidc-server-listen-port",
                self.oidc_server_listen_port.is_some(),
            ),
            (
                "--oidc-server-listen-address",
                self.oidc_server_listen_address.is_some(),
            ),
            (
                "--oidc-server-tls-enabled",
                self.oidc_server_tls_enabled.is_some(),
            ),
            (
                "--oidc-server-tls-cert-file",
                self.oidc_server_tls_cert_file.is_some(),
            ),
            (
                "--oidc-server-tls-key-file",
                self.oidc_server_tls_key_file.is_some(),
            ),
            ("--oidc-jwks-uri", self.oidc_jwks_uri.is_some()),
            ("--oidc-path-prefix", self.oidc_path_prefix.is_some()),
            ("--oidc-allowed-hosts", self.oidc_allowed_hosts.is_some()),
        ];
        if !self.oidc_enabled {
            if let Some((flag, _)) = oidc_flags.iter().find(|(_, given)| *given) {
                return Err(Error::Config(format!(
                    "{flag} was given but the OIDC server is off (--oidc-enabled is not set)"
                )));
            }
        }
        Ok(())
    }

    /// JWT-SVID issuance, when `--jwt-enabled`; relative file names are inside
    /// `credentials_dir`.
    pub(super) fn jwt(&self, credentials_dir: &Path) -> Result<Option<JwtSettings>, Error> {
        if !self.jwt_enabled {
            return Ok(None);
        }
        if self.mode == Mode::Kubernetes {
            // The names become keys of the dapr-trust-bundle Secret and ConfigMap.
            for (flag, name) in [
                ("--jwt-key-filename", &self.jwt_key_filename),
                ("--jwks-filename", &self.jwks_filename),
            ] {
                if let Some(name) = name {
                    if !is_valid_data_key(name) {
                        return Err(Error::Config(format!(
                            "{flag} names a key of the Secret dapr-trust-bundle in kubernetes mode and must match [-._a-zA-Z0-9]+, got {name:?}"
                        )));
                    }
                }
            }
        }
        self.jwt_settings(credentials_dir).map(Some)
    }

    /// The OIDC discovery server, when `--oidc-enabled`.
    pub(super) fn oidc(&self) -> Result<Option<OidcSettings>, Error> {
        if !self.oidc_enabled {
            return Ok(None);
        }
        let oidc = self.oidc_settings()?;
        // In a cluster the OIDC port is reached through Services and ingresses, where any
        // client picks the Host header: without a fixed issuer or an allow-list, the
        // issuer in the discovery document would be whatever a caller (or a cache in
        // front) made it.
        if self.mode == Mode::Kubernetes
            && oidc.allowed_hosts.is_empty()
            && self.jwt_issuer.is_none()
        {
            return Err(Error::Config(
                "--oidc-enabled in kubernetes mode needs --jwt-issuer (a fixed issuer URL) or --oidc-allowed-hosts (the host names the OIDC endpoint answers for); without either, the issuer would follow the request's Host header".into(),
            ));
        }
        Ok(Some(oidc))
    }

    fn jwt_settings(&self, credentials_dir: &Path) -> Result<JwtSettings, Error> {
        let path = |flag: &str, given: &Option<String>, default: &str| {
            let name = given.as_deref().unwrap_or(default);
            if name.is_empty() {
                return Err(Error::Config(format!("{flag} must not be empty")));
            }
            // Dapr ignores relative names; Sigil resolves them inside the credentials dir.
            Ok(credentials_dir.join(name))
        };
        let key_path = path("--jwt-key-filename", &self.jwt_key_filename, "jwt.key")?;
        let jwks_path = path("--jwks-filename", &self.jwks_filename, "jwks.json")?;
        if key_path == jwks_path {
            return Err(Error::Config(
                "--jwt-key-filename and --jwks-filename name the same file".into(),
            ));
        }
        // Writing a JWT file over a CA file would destroy the CA (in files, and in kubernetes
        // mode as a key of the same Secret, whose CA keys are Dapr's fixed names).
        let ca_names = [
            self.issuer_ca_filename.as_str(),
            self.issuer_certificate_filename.as_str(),
            self.issuer_key_filename.as_str(),
            KEY_CA,
            KEY_ISSUER_CERT,
            KEY_ISSUER_KEY,
        ];
        for (flag, p) in [
            ("--jwt-key-filename", &key_path),
            ("--jwks-filename", &jwks_path),
        ] {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let same_file = ca_names.iter().any(|c| credentials_dir.join(c) == *p);
            if same_file || ca_names.contains(&name) {
                return Err(Error::Config(format!(
                    "{flag} {name:?} collides with a CA file name (ca.crt, issuer.crt, issuer.key or the --issuer-*-filename values); pick another name"
                )));
            }
        }
        let algorithm = self
            .jwt_signing_algorithm
            .as_deref()
            .map(|a| {
                a.parse::<JwsAlgorithm>()
                    .map_err(|e| Error::Config(format!("--jwt-signing-algorithm: {e}")))
            })
            .transpose()?;
        let ttl = match &self.jwt_ttl {
            Some(t) => parse_duration(t).map_err(|e| Error::Config(format!("--jwt-ttl: {e}")))?,
            None => Duration::from_secs(24 * 3600),
        };
        if ttl.is_zero() {
            return Err(Error::Config("--jwt-ttl must be positive".into()));
        }
        for (flag, v) in [
            ("--jwt-issuer", &self.jwt_issuer),
            ("--jwt-key-id", &self.jwt_key_id),
        ] {
            if let Some(v) = v {
                if v.trim().is_empty() || v.chars().any(char::is_control) || v.len() > 512 {
                    return Err(Error::Config(format!(
                        "{flag} must be a non-empty printable string of at most 512 bytes"
                    )));
                }
            }
        }
        Ok(JwtSettings {
            key_path,
            jwks_path,
            issuer: self.jwt_issuer.clone(),
            algorithm,
            key_id: self.jwt_key_id.clone(),
            ttl,
            publish_delay: self.jwt_key_publish_delay,
        })
    }

    fn oidc_settings(&self) -> Result<OidcSettings, Error> {
        let listen = SocketAddr::new(
            self.oidc_server_listen_address
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            self.oidc_server_listen_port.unwrap_or(9080),
        );
        let tls = if self.oidc_server_tls_enabled.unwrap_or(true) {
            match (&self.oidc_server_tls_cert_file, &self.oidc_server_tls_key_file) {
                (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                _ => return Err(Error::Config(
                    "the OIDC server serves TLS by default: give --oidc-server-tls-cert-file and --oidc-server-tls-key-file, or --oidc-server-tls-enabled=false to serve plain HTTP (e.g. behind a TLS-terminating proxy)".into(),
                )),
            }
        } else {
            if self.oidc_server_tls_cert_file.is_some() || self.oidc_server_tls_key_file.is_some() {
                return Err(Error::Config(
                    "--oidc-server-tls-cert-file/--oidc-server-tls-key-file were given with --oidc-server-tls-enabled=false".into(),
                ));
            }
            None
        };
        let path_prefix = match self.oidc_path_prefix.as_deref().map(str::trim) {
            None | Some("") | Some("/") => String::new(),
            Some(p) => {
                let p = format!("/{}", p.trim_matches('/'));
                let ok = p.split('/').skip(1).all(|seg| {
                    !seg.is_empty()
                        && seg != "."
                        && seg != ".."
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c))
                });
                if !ok {
                    return Err(Error::Config(format!(
                        "--oidc-path-prefix {p:?}: use path segments of letters, digits, '-', '.', '_' or '~'"
                    )));
                }
                p
            }
        };
        if let Some(uri) = &self.oidc_jwks_uri {
            if !(uri.starts_with("https://") || uri.starts_with("http://"))
                || uri.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::Config(format!(
                    "--oidc-jwks-uri {uri:?} must be an absolute http(s) URL"
                )));
            }
        }
        let allowed_hosts = self
            .oidc_allowed_hosts
            .iter()
            .flatten()
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Ok(OidcSettings {
            listen,
            tls,
            path_prefix,
            jwks_uri: self.oidc_jwks_uri.clone(),
            allowed_hosts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::flags::parse_for_test as args;
    use crate::config::DaprConfiguration;

    #[test]
    fn jwt_and_oidc_flags_without_their_feature_fail_loudly() {
        for (flags, names) in [
            (&["--jwt-issuer", "x"][..], "--jwt-issuer"),
            (&["--jwt-key-filename", "k"][..], "--jwt-key-filename"),
            (&["--jwks-filename", "k"][..], "--jwks-filename"),
            (
                &["--jwt-signing-algorithm", "RS256"][..],
                "--jwt-signing-algorithm",
            ),
            (&["--jwt-key-id", "k"][..], "--jwt-key-id"),
            (&["--jwt-ttl", "1h"][..], "--jwt-ttl"),
            (&["--oidc-enabled"][..], "--oidc-enabled"),
        ] {
            let e = args(flags).into_config(None).unwrap_err().to_string();
            assert!(e.contains(names) && e.contains("--jwt-enabled"), "{e}");
        }
        for (flags, name) in [
            (
                &["--oidc-server-listen-port", "1"][..],
                "--oidc-server-listen-port",
            ),
            (
                &["--oidc-server-listen-address", "127.0.0.1"][..],
                "--oidc-server-listen-address",
            ),
            (
                &["--oidc-server-tls-enabled=false"][..],
                "--oidc-server-tls-enabled",
            ),
            (
                &["--oidc-server-tls-cert-file", "c"][..],
                "--oidc-server-tls-cert-file",
            ),
            (
                &["--oidc-server-tls-key-file", "k"][..],
                "--oidc-server-tls-key-file",
            ),
            (&["--oidc-jwks-uri", "https://x/j"][..], "--oidc-jwks-uri"),
            (&["--oidc-path-prefix", "/p"][..], "--oidc-path-prefix"),
            (&["--oidc-allowed-hosts", "a,b"][..], "--oidc-allowed-hosts"),
        ] {
            let mut v = vec!["--jwt-enabled"];
            v.extend_from_slice(flags);
            let e = args(&v).into_config(None).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("--oidc-enabled"), "{e}");
        }
    }

    #[test]
    fn jwt_and_oidc_settings() {
        let c = args(&[
            "--config",
            "/nonexistent",
            "--issuer-credentials",
            "/creds",
            "--jwt-enabled",
        ])
        .into_config(None)
        .unwrap();
        let j = c.jwt.unwrap();
        assert_eq!(j.key_path, PathBuf::from("/creds/jwt.key"));
        assert_eq!(j.jwks_path, PathBuf::from("/creds/jwks.json"));
        assert_eq!(j.ttl, Duration::from_secs(86400));
        assert_eq!(j.algorithm, None);
        assert!(c.oidc.is_none());
        let c = args(&[
            "--config",
            "/nonexistent",
            "--issuer-credentials",
            "/creds",
            "--jwt-enabled",
            "--jwt-key-filename",
            "/abs/k.pem",
            "--jwks-filename",
            "sub/keys.json",
            "--jwt-signing-algorithm",
            "es256",
            "--jwt-ttl",
            "1h",
            "--oidc-enabled",
            "--oidc-server-tls-enabled=false",
            "--oidc-path-prefix",
            "sentry/",
            "--oidc-allowed-hosts",
            "Issuer.Example, other.example",
        ])
        .into_config(None)
        .unwrap();
        let j = c.jwt.unwrap();
        assert_eq!(j.key_path, PathBuf::from("/abs/k.pem"));
        assert_eq!(j.jwks_path, PathBuf::from("/creds/sub/keys.json"));
        assert_eq!(j.algorithm, Some(JwsAlgorithm::Es256));
        assert_eq!(j.ttl, Duration::from_secs(3600));
        let o = c.oidc.unwrap();
        assert_eq!(o.listen, "127.0.0.1:9080".parse().unwrap());
        assert!(o.tls.is_none());
        assert_eq!(o.path_prefix, "/sentry");
        assert_eq!(o.allowed_hosts, vec!["issuer.example", "other.example"]);

        // A JWT file may not take a CA file's name.
        for (flag, name) in [
            ("--jwt-key-filename", "issuer.key"),
            ("--jwks-filename", "ca.crt"),
            ("--jwks-filename", "/elsewhere/issuer.crt"),
            ("--jwt-key-filename", "mine.pem"),
        ] {
            let e = args(&[
                "--config",
                "/nonexistent",
                "--issuer-credentials",
                "/creds",
                "--issuer-key-filename",
                "mine.pem",
                "--jwt-enabled",
                flag,
                name,
            ])
            .into_config(None)
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("collides with a CA file name"),
                "{flag} {name}: {e}"
            );
        }

        // TLS is on by default and needs its files.
        let e = args(&["--jwt-enabled", "--oidc-enabled"])
            .into_config(None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--oidc-server-tls-cert-file"), "{e}");
        let c = args(&[
            "--config",
            "/nonexistent",
            "--jwt-enabled",
            "--oidc-enabled",
            "--oidc-server-tls-enabled",
            "--oidc-server-tls-cert-file",
            "/c.pem",
            "--oidc-server-tls-key-file",
            "/k.pem",
        ])
        .into_config(None)
        .unwrap();
        assert!(c.oidc.unwrap().tls.is_some());
        // Kubernetes mode: the names are Secret keys, so they must be plain key names.
        let c = args(&["--mode", "kubernetes", "--jwt-enabled"])
            .into_config(Some(DaprConfiguration::default()))
            .unwrap();
        assert!(c.jwt.unwrap().key_path.ends_with("jwt.key"));
        let e = args(&[
            "--mode",
            "kubernetes",
            "--jwt-enabled",
            "--jwks-filename",
            "a/jwks.json",
        ])
        .into_config(Some(DaprConfiguration::default()))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--jwks-filename") && e.contains("kubernetes mode"),
            "{e}"
        );
        for bad in [
            &["--jwt-signing-algorithm", "HS256"][..],
            &["--jwt-ttl", "0"][..],
            &["--jwt-key-id", ""][..],
            &["--jwks-filename", "jwt.key"][..],
        ] {
            let mut v = vec!["--jwt-enabled"];
            v.extend_from_slice(bad);
            assert!(args(&v).into_config(None).is_err(), "{bad:?}");
        }
        // Kubernetes mode: OIDC needs a fixed issuer or an allow-list.
        let kube_oidc = |extra: &[&str]| {
            let mut v = vec![
                "--mode",
                "kubernetes",
                "--jwt-enabled",
                "--oidc-enabled",
                "--oidc-server-tls-enabled=false",
            ];
            v.extend_from_slice(extra);
            args(&v).into_config(Some(DaprConfiguration::default()))
        };
        let e = kube_oidc(&[]).unwrap_err().to_string();
        assert!(
            e.contains("--jwt-issuer") && e.contains("--oidc-allowed-hosts"),
            "{e}"
        );
        assert!(kube_oidc(&["--jwt-issuer", "https://issuer.example"]).is_ok());
        assert!(kube_oidc(&["--oidc-allowed-hosts", "issuer.example"]).is_ok());
        for bad in [
            &["--oidc-path-prefix", "/a/../b"][..],
            &["--oidc-jwks-uri", "ftp://x"][..],
        ] {
            let mut v = vec![
                "--jwt-enabled",
                "--oidc-enabled",
                "--oidc-server-tls-enabled=false",
            ];
            v.extend_from_slice(bad);
            assert!(args(&v).into_config(None).is_err(), "{bad:?}");
        }
    }
}
