//! The ed25519 identity key of a v3 onion service (rend-spec-v3 `KP_hs_id` /
//! `KS_hs_id`).
//!
//! Storage form: the 32-byte ed25519 seed (RFC 8032's "private key"), chosen
//! over tor's 64-byte expanded key because everything else is derived from it
//! (the public key, the onion address, the expanded key tor wants) and it is
//! what ed25519 libraries take. The price: a key that exists only in tor's
//! expanded form (a `hs_ed25519_secret_key` file that tor generated) cannot be
//! imported, since the seed cannot be recovered from it; the host generates
//! its keys itself, so it never needs to.
//!
//! Tor's form, `ADD_ONION ED25519-V3:<base64>` and the body of
//! `hs_ed25519_secret_key`: the 64-byte expanded secret key, i.e. `SHA-512(seed)`
//! with its first half clamped as RFC 8032 section 5.1.5 says (the secret
//! scalar, little endian, not reduced) followed by its second half unchanged
//! (the PRF secret, "hash prefix"). control-spec: "the Base64 encoding of the
//! concatenation of the 32-byte ed25519 secret scalar in little-endian and the
//! 32-byte ed25519 PRF secret".

use std::fmt;

use data_encoding::BASE64;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::{random_secret, KeyError, OnionAddress};

/// The ed25519 identity of one onion service. Zeroized on drop (by
/// `ed25519_dalek::SigningKey`); `Debug` shows only the onion address.
#[derive(Clone)]
pub struct ServiceKey {
    signing: SigningKey,
}

impl ServiceKey {
    /// Length of the storage form, [`to_bytes`](Self::to_bytes).
    pub const SEED_LEN: usize = 32;

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = random_secret()?;
        Ok(Self::from_bytes(&seed))
    }

    /// The key of a 32-byte ed25519 seed, as [`to_bytes`](Self::to_bytes)
    /// gave it. Every 32-byte value is a valid seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte ed25519 seed: the storage form. Secret.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The ed25519 identity public key (what the onion address encodes).
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The onion address, computed from the key.
    pub fn onion_address(&self) -> OnionAddress {
        // An ed25519 public key is `scalar * B`, B the prime-order base point,
        // compressed by the library: a canonically encoded point of prime
        // order, which is what OnionAddress::from_public_key checks for.
        OnionAddress::from_derived_public_key(self.public())
    }

    /// The 64-byte expanded secret key that tor keeps and that `ADD_ONION`
    /// takes: clamped `SHA-512(seed)[..32]` then `SHA-512(seed)[32..]`. Secret.
    pub fn tor_expanded_secret_key(&self) -> Zeroizing<[u8; 64]> {
        let seed = self.to_bytes();
        let mut expanded = Zeroizing::new([0u8; 64]);
        let mut hasher = Sha512::new();
        hasher.update(seed.as_slice());
        // Straight into the zeroizing buffer, no copy on the stack; the buffer
        // is 64 bytes, SHA-512's output, so from_mut_slice's length check
        // holds. (sha2 0.10 does not wipe the hasher's own block buffer when
        // it is dropped.)
        hasher.finalize_into(sha2::digest::generic_array::GenericArray::from_mut_slice(
            &mut expanded[..],
        ));
        expanded[0] &= 248;
        expanded[31] &= 63;
        expanded[31] |= 64;
        expanded
    }

    /// The key argument of tor's control-port `ADD_ONION`:
    /// `ED25519-V3:<base64 of the expanded secret key>` (88 base64 characters,
    /// padded). Secret: send it only to the tor that hosts the service.
    pub fn tor_add_onion_key(&self) -> Zeroizing<String> {
        const PREFIX: &str = "ED25519-V3:";
        let expanded = self.tor_expanded_secret_key();
        let mut blob = Zeroizing::new(String::with_capacity(
            PREFIX.len() + BASE64.encode_len(expanded.len()),
        ));
        blob.push_str(PREFIX);
        BASE64.encode_append(expanded.as_slice(), &mut blob);
        blob
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKey")
            .field("onion_address", &self.onion_address().to_string())
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 section 7.1, test 1: secret key (seed) and public key.
    const RFC8032_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    /// tor's test vector for that public key (src/test/test_hs_common.c).
    const RFC8032_ADDRESS: &str = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid.onion";
    /// Computed independently (Python: hashlib.sha512 of the seed, then
    /// h[0] &= 248, h[31] &= 127, h[31] |= 64, base64).
    const RFC8032_EXPANDED_B64: &str =
        "MHyDhk8oM8tCei7xwAoBPP3/J2jZgMCjpSDwBpBN6U+bTwr+KAt0aneGhOdUQlAgV7dHOgPwj5b1o46Sh+Afjw==";

    fn hex32(text: &str) -> [u8; 32] {
        let bytes = data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap();
        bytes.try_into().unwrap()
    }

    fn rfc_key() -> ServiceKey {
        ServiceKey::from_bytes(&hex32(RFC8032_SEED))
    }

    #[test]
    fn rfc8032_seed_gives_its_public_key_and_tors_address() {
        let key = rfc_key();
        assert_eq!(key.public(), hex32(RFC8032_PUBLIC));
        assert_eq!(key.onion_address().to_string(), RFC8032_ADDRESS);
    }

    #[test]
    fn the_add_onion_blob_is_the_independently_computed_expanded_key() {
        let key = rfc_key();
        assert_eq!(
            key.tor_add_onion_key().as_str(),
            format!("ED25519-V3:{RFC8032_EXPANDED_B64}")
        );
        let expanded = key.tor_expanded_secret_key();
        assert_eq!(expanded[0] & 7, 0);
        assert_eq!(expanded[31] & 0xc0, 0x40);
    }

    #[test]
    fn the_expanded_scalar_gives_the_public_key() {
        // Tor recomputes the public key from the scalar half: so must we.
        let key = ServiceKey::generate().unwrap();
        let expanded = key.tor_expanded_secret_key();
        let mut scalar = [0u8; 32];
        scalar.copy_from_slice(&expanded[..32]);
        let public = curve25519_dalek::EdwardsPoint::mul_base_clamped(scalar).compress();
        assert_eq!(public.0, key.public());
    }

    #[test]
    fn storage_round_trips_and_generate_differs() {
        let a = ServiceKey::generate().unwrap();
        let b = ServiceKey::generate().unwrap();
        assert_ne!(*a.to_bytes(), *b.to_bytes());
        let again = ServiceKey::from_bytes(&a.to_bytes());
        assert_eq!(again.onion_address(), a.onion_address());
        assert_eq!(*again.to_bytes(), *a.to_bytes());
    }

    #[test]
    fn debug_shows_no_secret() {
        let key = rfc_key();
        let shown = format!("{key:?}");
        assert!(shown.contains(RFC8032_ADDRESS), "{shown}");
        assert!(shown.contains("redacted"));
        let expanded = key.tor_add_onion_key();
        let blob = expanded.trim_start_matches("ED25519-V3:");
        for secret in [RFC8032_SEED, &blob[..20], &RFC8032_SEED.to_uppercase()] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(!shown.contains("9d61"), "{shown}");
        assert!(!shown.contains("157, 97"), "{shown}");
    }
}
