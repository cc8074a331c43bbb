//! The SCRAM primitives of RFC 5802 section 2.2 (`H`, `HMAC`, `Hi`, XOR) over the mechanism's
//! hash. `Hi` is PBKDF2 with HMAC and a single block, written out here rather than taken from
//! a crate: it is a few lines over `hmac`, which the tree already has.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::ScramMechanism;

/// `H(data)`.
pub(crate) fn hash(mechanism: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// `HMAC(key, data)`.
pub(crate) fn hmac(mechanism: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => hmac_with::<Hmac<Sha256>>(key, data),
        ScramMechanism::Sha512 => hmac_with::<Hmac<Sha512>>(key, data),
    }
}

fn hmac_with<M: Mac + hmac::digest::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// `Hi(password, salt, iterations)`: the SaltedPassword.
pub(crate) fn hi(
    mechanism: ScramMechanism,
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    match mechanism {
        ScramMechanism::Sha256 => hi_with::<Hmac<Sha256>>(password, salt, iterations),
        ScramMechanism::Sha512 => hi_with::<Hmac<Sha512>>(password, salt, iterations),
    }
}

fn hi_with<M: Mac + hmac::digest::KeyInit + Clone>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Vec<u8> {
    let keyed = <M as hmac::digest::KeyInit>::new_from_slice(password)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    let mut mac = keyed.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = mac.finalize().into_bytes();
    let mut result = u.clone();
    for _ in 1..iterations {
        let mut mac = keyed.clone();
        mac.update(&u);
        u = mac.finalize().into_bytes();
        for (r, x) in result.iter_mut().zip(u.iter()) {
            *r ^= x;
        }
    }
    result.to_vec()
}

/// `a XOR b` (equal lengths; callers check).
pub(crate) fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

/// ClientKey, StoredKey and ServerKey of a SaltedPassword.
pub(crate) fn keys_of_salted_password(
    mechanism: ScramMechanism,
    salted_password: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let client_key = hmac(mechanism, salted_password, b"Client Key");
    let stored_key = hash(mechanism, &client_key);
    let server_key = hmac(mechanism, salted_password, b"Server Key");
    (stored_key, server_key)
}

/// Equality of two secrets in time independent of their contents.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
