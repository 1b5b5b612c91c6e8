//! A set of trust anchors (root certificates). During a root rotation it holds the old and
//! the new root, so workloads trust both while certificates from either are in use.

use x509_parser::prelude::*;

use crate::inspect::{self_signed_check, subject_of};
use crate::pem_bundle;
use crate::Error;

/// One or more self-signed CA certificates, without duplicates, in a stable order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<Vec<u8>>,
}

impl TrustBundle {
    /// Reads and checks a PEM bundle: every block a self-signed CA certificate. Duplicates
    /// are dropped.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self, Error> {
        let ders = pem_bundle::parse_certificates("trust anchors (ca.crt)", pem_text)?;
        let mut bundle = Self { roots: Vec::new() };
        for der in ders {
            bundle.add(der)?;
        }
        Ok(bundle)
    }

    /// Adds a root; a root already present is not added twice. Returns whether it was new.
    pub fn add(&mut self, der: Vec<u8>) -> Result<bool, Error> {
        let (_, cert) =
            X509Certificate::from_der(&der).map_err(|e| Error::CertificateMalformed {
                what: "trust anchor",
                index: self.roots.len() + 1,
                reason: e.to_string(),
            })?;
        self_signed_check(&cert)?;
        if self.roots.contains(&der) {
            return Ok(false);
        }
        self.roots.push(der);
        Ok(true)
    }

    /// Removes the root with this DER encoding. Refuses to remove the last root.
    pub fn remove(&mut self, der: &[u8]) -> Result<(), Error> {
        let pos = self
            .roots
            .iter()
            .position(|r| r == der)
            .ok_or_else(|| Error::Bundle("that root is not in the bundle".into()))?;
        if self.roots.len() == 1 {
            return Err(Error::Bundle(
                "refusing to remove the last root: nothing would be trusted".into(),
            ));
        }
        self.roots.remove(pos);
        Ok(())
    }

    /// The roots, DER-encoded.
    pub fn roots(&self) -> &[Vec<u8>] {
        &self.roots
    }

    /// Subjects of the roots, for messages.
    pub fn subjects(&self) -> Vec<String> {
        self.roots
            .iter()
            .filter_map(|d| {
                X509Certificate::from_der(d)
                    .ok()
                    .map(|(_, c)| subject_of(&c))
            })
            .collect()
    }

    /// Whether `other` holds one of these roots, or a re-issue of one: a certificate with
    /// the same subject and public key verifies exactly the chains the original does (a
    /// workload that trusts either accepts certificates from an issuer under the other).
    /// `dapr mtls renew-certificate --private-key` renews a root so.
    pub fn shares_a_root_with(&self, other: &TrustBundle) -> bool {
        let mine: Vec<_> = self.roots.iter().filter_map(|d| root_identity(d)).collect();
        other
            .roots
            .iter()
            .filter_map(|d| root_identity(d))
            .any(|id| mine.contains(&id))
    }

    /// The bundle as one PEM blob (what Dapr calls the trust chain / `ca.crt`).
    pub fn to_pem(&self) -> String {
        pem_bundle::to_pem(&self.roots)
    }
}

/// What makes a root the same trust anchor for chain building: subject and public key
/// (both DER, as encoded). The roots were parsed once when added.
fn root_identity(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    Some((
        cert.subject().as_raw().to_vec(),
        cert.public_key().raw.to_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authority::tests::generated;

    #[test]
    fn add_remove_and_pem_round_trip() {
        let (a, _) = generated();
        let (b, _) = generated();
        let mut bundle = TrustBundle::from_pem(a.ca_crt.as_slice()).unwrap();
        let root_b = TrustBundle::from_pem(&b.ca_crt).unwrap().roots()[0].clone();
        assert!(bundle.add(root_b.clone()).unwrap());
        assert!(!bundle.add(root_b.clone()).unwrap(), "duplicate added");
        assert_eq!(bundle.roots().len(), 2);
        let again = TrustBundle::from_pem(bundle.to_pem().as_bytes()).unwrap();
        assert_eq!(again, bundle);
        bundle.remove(&root_b).unwrap();
        assert_eq!(bundle.roots().len(), 1);
        let last = bundle.roots()[0].clone();
        assert!(matches!(bundle.remove(&last), Err(Error::Bundle(_))));
        assert!(matches!(bundle.remove(&root_b), Err(Error::Bundle(_))));
    }

    /// A self-signed CA certificate for `org` with `key`, DER.
    fn root(org: &str, key: &rcgen::KeyPair) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, org);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.serial_number = Some(crate::authority::serial().unwrap());
        params.self_signed(key).unwrap().der().to_vec()
    }

    fn bundle(ders: &[&[u8]]) -> TrustBundle {
        let mut b = TrustBundle { roots: Vec::new() };
        for d in ders {
            b.add(d.to_vec()).unwrap();
        }
        b
    }

    #[test]
    fn a_root_reissued_with_its_key_and_subject_is_shared_and_nothing_else_is() {
        let key = rcgen::KeyPair::generate().unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let original = root("cluster.local", &key);
        let reissued = root("cluster.local", &key);
        assert_ne!(original, reissued, "a new serial, a new certificate");
        let current = bundle(&[&original]);
        assert!(current.shares_a_root_with(&bundle(&[&original])));
        assert!(current.shares_a_root_with(&bundle(&[&reissued])));
        // Same key, another subject; same subject, another key: other anchors.
        assert!(!current.shares_a_root_with(&bundle(&[&root("elsewhere", &key)])));
        assert!(!current.shares_a_root_with(&bundle(&[&root("cluster.local", &other_key)])));
        // During a rotation, one shared root is enough.
        let rotation = bundle(&[&root("cluster.local", &other_key), &reissued]);
        assert!(current.shares_a_root_with(&rotation));
    }

    #[test]
    fn refuses_non_roots() {
        let (a, _) = generated();
        let e = TrustBundle::from_pem(&a.issuer_crt).unwrap_err();
        assert!(matches!(e, Error::AnchorNotSelfSigned { .. }), "{e}");
    }
}
