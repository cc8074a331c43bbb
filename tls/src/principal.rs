//! The Kafka principal of a client certificate.
//!
//! Kafka's default principal builder names an SSL client `User:` followed by the subject's
//! distinguished name in RFC 2253 form (Java's `X500Principal.getName()`): relative names from
//! the most specific (the last in the certificate) to the least, joined by `,`, with the short
//! keywords CN, OU, O, L, ST, C, STREET, DC and UID, and any other attribute as its dotted OID
//! with `#` and the hex of its DER value. ACLs written for a Kafka cluster
//! (`User:CN=app,OU=team,O=example`) then match the same clients here.

use std::fmt::Write as _;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

/// Why a certificate's subject could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the client certificate cannot be parsed: {0}")]
pub struct BadCertificate(String);

/// `User:<subject DN>` of a DER certificate.
pub fn of_certificate(cert: &CertificateDer<'_>) -> Result<String, BadCertificate> {
    let (_, parsed) =
        X509Certificate::from_der(cert.as_ref()).map_err(|e| BadCertificate(e.to_string()))?;
    Ok(format!("User:{}", rfc2253(parsed.subject())))
}

/// The RFC 2253 string of a name, as Java writes it.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let mut rdns: Vec<_> = name.iter().collect();
    rdns.reverse();
    let rdns: Vec<String> = rdns
        .into_iter()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type().to_id_string();
                    match (short_name(&oid), attr.as_str()) {
                        (Some(key), Ok(value)) => format!("{key}={}", escape(value)),
                        _ => format!("{oid}=#{}", hex(&der_of(attr.attr_value()))),
                    }
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.join(",")
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.11" => "OU",
        "2.5.4.10" => "O",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253 section 2.4: `,+"\<>;` escaped, and a leading `#` or space and a trailing space.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The DER encoding (identifier, length, contents) of a value with a low tag number.
fn der_of(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Vec<u8> {
    let header = &value.header;
    let class = (header.class() as u8) << 6;
    let constructed = if header.is_constructed() { 0x20 } else { 0 };
    let tag = u8::try_from(header.tag().0).unwrap_or(0x1f).min(0x1e);
    let mut out = vec![class | constructed | tag];
    let len = value.data.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value.data);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_principal_is_the_subject_in_kafkas_form() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/client.pem");
        let pem = std::fs::read(&path).expect("client.pem");
        let cert = &crate::pem::certificates(&path, &pem).expect("cert")[0];
        // As Java's X500Principal.getName() writes it (and `openssl x509 -nameopt RFC2253`,
        // except for the e-mail address, which Java writes as OID=#DER).
        assert_eq!(
            of_certificate(cert).expect("principal"),
            "User:1.2.840.113549.1.9.1=#160f617070406578616d706c652e636f6d,\
             CN=app,OU=team,O=Example\\, Inc.,C=DE"
        );
    }

    #[test]
    fn special_characters_are_escaped() {
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape("#x "), "\\#x\\ ");
        assert_eq!(escape(" "), "\\ ");
        assert_eq!(escape(""), "");
        assert_eq!(escape("<\"é\";>"), "\\<\\\"é\\\"\\;\\>");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage = CertificateDer::from(vec![0x30, 0x82, 0xff, 0xff, 1, 2, 3]);
        assert!(of_certificate(&garbage).is_err());
        assert!(of_certificate(&CertificateDer::from(Vec::new())).is_err());
    }
}
