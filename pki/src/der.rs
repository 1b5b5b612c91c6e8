//! The few DER encodings this crate writes by hand: wrapping legacy SEC1 (`EC PRIVATE KEY`)
//! and PKCS#1 (`RSA PRIVATE KEY`) keys into PKCS#8 so one loader handles every format
//! Dapr accepts, and the OCTET STRING of a certificate extension's value.

use zeroize::Zeroizing;

/// OID 1.2.840.10045.2.1 (id-ecPublicKey), DER body.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// OID 1.2.840.10045.3.1.7 (prime256v1).
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// OID 1.3.132.0.34 (secp384r1).
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// OID 1.2.840.113549.1.1.1 (rsaEncryption).
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn tlv(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    push_len(out, body.len());
    out.extend_from_slice(body);
}

/// DER OCTET STRING holding `content`.
pub(crate) fn octet_string(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    tlv(&mut out, 0x04, content);
    out
}

fn pkcs8(algorithm: &[u8], private_key: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(Vec::with_capacity(private_key.len() + 40));
    tlv(&mut body, 0x02, &[0x00]); // version 0
    tlv(&mut body, 0x30, algorithm);
    tlv(&mut body, 0x04, private_key);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 4));
    tlv(&mut out, 0x30, &body);
    out
}

/// PKCS#8 holding an SEC1 EC key on the curve named by `curve_oid`.
pub(crate) fn pkcs8_from_sec1(sec1: &[u8], curve_oid: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut alg = Vec::new();
    tlv(&mut alg, 0x06, OID_EC_PUBLIC_KEY);
    tlv(&mut alg, 0x06, curve_oid);
    pkcs8(&alg, sec1)
}

/// PKCS#8 holding a PKCS#1 RSA key.
pub(crate) fn pkcs8_from_pkcs1(pkcs1: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut alg = Vec::new();
    tlv(&mut alg, 0x06, OID_RSA);
    tlv(&mut alg, 0x05, &[]);
    pkcs8(&alg, pkcs1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_encoded_in_long_form() {
        let mut out = Vec::new();
        tlv(&mut out, 0x04, &[0u8; 300]);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut short = Vec::new();
        tlv(&mut short, 0x04, &[1, 2]);
        assert_eq!(short, vec![0x04, 0x02, 1, 2]);
    }
}
