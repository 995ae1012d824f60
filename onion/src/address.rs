//! v3 onion addresses (rend-spec-v3 `[ONIONADDRESS]`).
//!
//! ```text
//! onion_address = base32(PUBKEY | CHECKSUM | VERSION) + ".onion"
//! CHECKSUM      = SHA3-256(".onion checksum" | PUBKEY | VERSION)[..2]
//! VERSION       = 0x03
//! ```
//!
//! 32 + 2 + 1 = 35 bytes are exactly 56 base32 characters, with no padding and
//! no spare bits, so every address has one spelling (tor writes it in lower
//! case; parsing here also reads upper case).
//!
//! Parsing checks what tor's `hs_address_is_valid()` checks (length, base32,
//! checksum, a public key that is a curve point without a torsion component and
//! not of small order) and, stricter than tor, the version byte (tor only
//! hashes it into the checksum) and that the key is canonically encoded.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;
use sha3::{Digest, Sha3_256};

use crate::{base32_lower, BASE32};

/// The suffix of every onion address.
pub const ONION_SUFFIX: &str = ".onion";
/// The only onion-service version this crate knows (v3).
const VERSION: u8 = 0x03;
/// The constant string hashed into the checksum.
const CHECKSUM_PREFIX: &[u8] = b".onion checksum";
/// Length of the address without its suffix, in base32 characters.
const ENCODED_LEN: usize = 56;
/// Length of the decoded address: public key, checksum, version.
const DECODED_LEN: usize = 35;

/// Why a text is not a v3 onion address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not 56 characters (after an optional `.onion`).
    #[error("a v3 onion address has 56 base32 characters before \".onion\", not {0}")]
    Length(usize),
    /// A character outside the base32 alphabet (`a-z`, `2-7`).
    #[error("an onion address is base32 (a-z, 2-7)")]
    Base32,
    /// The version byte is not 3.
    #[error("onion address version {0}, only version 3 is known")]
    Version(u8),
    /// The two checksum bytes do not match the key and version (a typo).
    #[error("the onion address's checksum does not match: a character is wrong")]
    Checksum,
    /// The key is not a usable ed25519 public key (tor rejects these too).
    #[error("the onion address's key is not a valid ed25519 public key")]
    PublicKey,
}

/// A valid v3 onion address: the 32-byte ed25519 identity public key of a
/// service. Shown (`Display`, `Debug`) as `<56 lower-case base32>.onion`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OnionAddress {
    public: [u8; 32],
}

impl OnionAddress {
    /// The address of an ed25519 identity public key. Fails when the bytes are
    /// not a canonically encoded curve point of prime order, as every key that
    /// [`ServiceKey`](crate::ServiceKey) makes is.
    pub fn from_public_key(public: &[u8; 32]) -> Result<Self, AddressError> {
        if !is_valid_public_key(public) {
            return Err(AddressError::PublicKey);
        }
        Ok(Self { public: *public })
    }

    /// The address of a public key derived from a secret key on this host,
    /// which is valid by construction (the caller states why).
    pub(crate) fn from_derived_public_key(public: [u8; 32]) -> Self {
        debug_assert!(is_valid_public_key(&public));
        Self { public }
    }

    /// Parses `<56 base32>.onion` or the bare `<56 base32>` that tor's control
    /// port calls a ServiceID; either case is read. Nothing else is accepted:
    /// no sub-domain, no trailing dot, no white space.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let bare = strip_suffix(text);
        if bare.len() != ENCODED_LEN {
            return Err(AddressError::Length(bare.chars().count()));
        }
        let upper = bare.to_ascii_uppercase();
        let decoded = BASE32
            .decode(upper.as_bytes())
            .map_err(|_| AddressError::Base32)?;
        let decoded: [u8; DECODED_LEN] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| AddressError::Base32)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&decoded[..32]);
        let checksum = [decoded[32], decoded[33]];
        let version = decoded[34];
        if version != VERSION {
            return Err(AddressError::Version(version));
        }
        if checksum != address_checksum(&public, version) {
            return Err(AddressError::Checksum);
        }
        Self::from_public_key(&public)
    }

    /// The service's ed25519 identity public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The 56 lower-case base32 characters, without `.onion`: tor's ServiceID
    /// (`ADD_ONION`'s `250-ServiceID=`, `DEL_ONION`'s argument) and the first
    /// field of an `*.auth_private` line.
    pub fn without_suffix(&self) -> String {
        let mut raw = [0u8; DECODED_LEN];
        raw[..32].copy_from_slice(&self.public);
        raw[32..34].copy_from_slice(&address_checksum(&self.public, VERSION));
        raw[34] = VERSION;
        base32_lower(&raw)
    }
}

impl fmt::Display for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{ONION_SUFFIX}", self.without_suffix())
    }
}

impl fmt::Debug for OnionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddress({self})")
    }
}

impl FromStr for OnionAddress {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, AddressError> {
        Self::parse(text)
    }
}

/// The text without a final `.onion` (either case), if it has one.
fn strip_suffix(text: &str) -> &str {
    let cut = text.len().saturating_sub(ONION_SUFFIX.len());
    match (text.get(..cut), text.get(cut..)) {
        (Some(bare), Some(suffix)) if suffix.eq_ignore_ascii_case(ONION_SUFFIX) => bare,
        _ => text,
    }
}

/// `SHA3-256(".onion checksum" | PUBKEY | VERSION)[..2]`.
fn address_checksum(public: &[u8; 32], version: u8) -> [u8; 2] {
    let digest = Sha3_256::new()
        .chain_update(CHECKSUM_PREFIX)
        .chain_update(public)
        .chain_update([version])
        .finalize();
    [digest[0], digest[1]]
}

/// A curve point, canonically encoded, neither of small order nor with a
/// torsion component: tor's `ed25519_validate_pubkey()` (no identity element,
/// `l * P` is the identity) plus the canonical encoding.
fn is_valid_public_key(public: &[u8; 32]) -> bool {
    let compressed = CompressedEdwardsY(*public);
    match compressed.decompress() {
        Some(point) => {
            point.compress() == compressed && !point.is_small_order() && point.is_torsion_free()
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tor's own test vector (src/test/test_hs_common.c, `test_build_address`,
    /// made by src/test/hs_build_address.py): the public key of RFC 8032's
    /// test 1.
    const RFC8032_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC8032_ADDRESS: &str = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid";

    fn hex32(text: &str) -> [u8; 32] {
        let bytes = data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap();
        bytes.try_into().unwrap()
    }

    #[test]
    fn the_address_of_tors_test_key_is_tors() {
        let address = OnionAddress::from_public_key(&hex32(RFC8032_PUBLIC)).unwrap();
        assert_eq!(address.without_suffix(), RFC8032_ADDRESS);
        assert_eq!(address.to_string(), format!("{RFC8032_ADDRESS}.onion"));
        assert_eq!(OnionAddress::parse(RFC8032_ADDRESS).unwrap(), address);
    }

    /// tor's old vector (the key 0x42 × 32, before tor checked keys): the
    /// checksum and encoding still agree; the key is not a curve point of
    /// prime order, so tor ≥ 0.3.5 and this crate refuse the address.
    #[test]
    fn tors_old_vector_has_the_right_checksum_and_a_refused_key() {
        let public = [0x42u8; 32];
        let mut raw = [0u8; DECODED_LEN];
        raw[..32].copy_from_slice(&public);
        raw[32..34].copy_from_slice(&address_checksum(&public, VERSION));
        raw[34] = VERSION;
        assert_eq!(
            base32_lower(&raw),
            "ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezhid"
        );
        assert_eq!(
            OnionAddress::parse("ijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbeeqscijbezhid"),
            Err(AddressError::PublicKey)
        );
    }

    /// The example addresses of rend-spec-v3 `[ONIONADDRESS]`.
    #[test]
    fn the_specs_examples_parse_and_print_back() {
        for text in [
            "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd.onion",
            "sp3k262uwy4r2k3ycr5awluarykdpag6a7y33jxop4cs2lu5uz5sseqd.onion",
            "xa4r2iadxm55fbnqgwwi5mymqdcofiu3w6rpbtqn7b2dyn7mgwj64jyd.onion",
        ] {
            let address = OnionAddress::parse(text).unwrap();
            assert_eq!(address.to_string(), text);
            assert_eq!(format!("{address:?}"), format!("OnionAddress({text})"));
        }
    }

    /// tor's `test_validate_address`: two addresses with bad checksums.
    #[test]
    fn tors_bad_checksums_are_refused() {
        for text in [
            "l5satjgud6gucryazcyvyvhuxhr74u6ygigiuyixe3a6ysis67ororad",
            "btojiu7nu5y5iwut64eufevogqdw4wmqzugnoluw232r4t3ecsfv37ad",
        ] {
            assert_eq!(OnionAddress::parse(text), Err(AddressError::Checksum));
        }
    }

    #[test]
    fn one_changed_character_is_a_bad_checksum() {
        let mut text = RFC8032_ADDRESS.to_string();
        text.replace_range(10..11, "a");
        assert_ne!(text, RFC8032_ADDRESS);
        assert_eq!(OnionAddress::parse(&text), Err(AddressError::Checksum));
    }

    #[test]
    fn upper_case_is_read_and_lower_case_written() {
        let upper = format!("{}.ONION", RFC8032_ADDRESS.to_ascii_uppercase());
        let address = OnionAddress::parse(&upper).unwrap();
        assert_eq!(address.to_string(), format!("{RFC8032_ADDRESS}.onion"));
    }

    #[test]
    fn lengths_and_alphabet_are_checked() {
        assert_eq!(OnionAddress::parse(""), Err(AddressError::Length(0)));
        assert_eq!(OnionAddress::parse(".onion"), Err(AddressError::Length(0)));
        assert_eq!(
            OnionAddress::parse(&RFC8032_ADDRESS[1..]),
            Err(AddressError::Length(55))
        );
        assert_eq!(
            OnionAddress::parse(&format!("{RFC8032_ADDRESS}a")),
            Err(AddressError::Length(57))
        );
        // A v2 address (16 characters).
        assert_eq!(
            OnionAddress::parse("expyuzz4wqqyqhjn.onion"),
            Err(AddressError::Length(16))
        );
        for bad in [
            format!("www.{RFC8032_ADDRESS}.onion"),
            format!("{RFC8032_ADDRESS}.onion."),
            format!(" {RFC8032_ADDRESS}"),
        ] {
            assert!(OnionAddress::parse(&bad).is_err(), "{bad}");
        }
        // '1', '8', '0' and '=' are not in the base32 alphabet.
        for bad in ['1', '8', '0', '=', 'é'] {
            let mut text: String = RFC8032_ADDRESS.chars().take(55).collect();
            text.push(bad);
            let err = OnionAddress::parse(&text).unwrap_err();
            assert!(
                matches!(err, AddressError::Base32 | AddressError::Length(_)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn other_versions_are_refused_even_with_a_right_checksum() {
        let public = hex32(RFC8032_PUBLIC);
        for version in [0u8, 2, 4, 0xff] {
            let mut raw = [0u8; DECODED_LEN];
            raw[..32].copy_from_slice(&public);
            raw[32..34].copy_from_slice(&address_checksum(&public, version));
            raw[34] = version;
            assert_eq!(
                OnionAddress::parse(&base32_lower(&raw)),
                Err(AddressError::Version(version))
            );
        }
    }

    #[test]
    fn small_order_and_torsion_keys_are_refused() {
        // The identity element (y = 1).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            OnionAddress::from_public_key(&identity),
            Err(AddressError::PublicKey)
        );
        // A valid key plus a point of order 8: on the curve, not torsion free.
        let point = CompressedEdwardsY(hex32(RFC8032_PUBLIC))
            .decompress()
            .unwrap();
        let torsion = curve25519_dalek::constants::EIGHT_TORSION[1];
        let mixed = (point + torsion).compress().0;
        assert_eq!(
            OnionAddress::from_public_key(&mixed),
            Err(AddressError::PublicKey)
        );
        // Not on the curve at all (y = 2 has no x).
        let mut off = [0u8; 32];
        off[0] = 2;
        assert_eq!(
            OnionAddress::from_public_key(&off),
            Err(AddressError::PublicKey)
        );
    }
}
