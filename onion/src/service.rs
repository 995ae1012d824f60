//! The ed25519 identity key of a v3 onion service (rend-spec-v3 `KP_hs_id` /
//! `KS_hs_id`), and tor's `hs_ed25519_secret_key` file that holds one.
//!
//! A key has one of two forms:
//!
//! - **Seed**, for a key made here: the 32-byte ed25519 seed (RFC 8032's
//!   "private key"), from which everything else derives (the public key, the
//!   onion address, the expanded key tor wants).
//! - **Expanded**, for a key tor made (imported from its
//!   `hs_ed25519_secret_key`): tor keeps only the 64-byte expanded key, and no
//!   seed can be recovered from that, so the expanded key is what is kept.
//!
//! Both give the same public key, address, `ADD_ONION` blob and key file: the
//! form matters only to storage. The storage form,
//! [`ServiceKey::to_storage`], is the seed (32 bytes) or the expanded key (64
//! bytes); its length tells which.
//!
//! Tor's form, `ADD_ONION ED25519-V3:<base64>` and the body of
//! `hs_ed25519_secret_key`: the 64-byte expanded secret key, i.e. `SHA-512(seed)`
//! with its first half clamped as RFC 8032 section 5.1.5 says (the secret
//! scalar, little endian, not reduced) followed by its second half unchanged
//! (the PRF secret, "hash prefix"). control-spec: "the Base64 encoding of the
//! concatenation of the 32-byte ed25519 secret scalar in little-endian and the
//! 32-byte ed25519 PRF secret".
//!
//! Tor's file: a 32-byte header, `== ed25519v1-secret: type0 ==` padded with
//! NUL bytes, then those 64 bytes; 96 in all (tor's
//! `src/lib/crypt_ops/crypto_format.c`, `crypto_write_tagged_contents_to_file`).

use std::fmt;

use curve25519_dalek::EdwardsPoint;
use data_encoding::BASE64;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::{random_secret, KeyError, OnionAddress};

/// The header of tor's `hs_ed25519_secret_key` ("tag" `type0`).
const SECRET_KEY_FILE_HEADER: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";
/// How the header of the service's public key file, `hs_ed25519_public_key`,
/// begins (then `type0 ==`, NULs and the 32-byte public key).
const PUBLIC_KEY_FILE_TAG: &[u8] = b"== ed25519v1-public:";
/// What the error messages about a file call it.
const NOT_A_SECRET_KEY_FILE: &str = "not a tor v3 onion service secret key (hs_ed25519_secret_key)";

/// Why bytes are not an onion service key: a tor `hs_ed25519_secret_key`
/// file ([`ServiceKey::from_tor_secret_key_file`]) or the storage form
/// ([`ServiceKey::from_storage`]). Each shows as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    /// The file is the service's public key, `hs_ed25519_public_key`, which
    /// tor writes beside the secret one.
    #[error(
        "{NOT_A_SECRET_KEY_FILE}: this is the public key file (hs_ed25519_public_key); \
         give the hs_ed25519_secret_key file beside it"
    )]
    PublicKeyFile,
    /// The file is not 96 bytes long.
    #[error("{NOT_A_SECRET_KEY_FILE}: it has {0} bytes, tor's file has 96")]
    FileLength(usize),
    /// The file does not begin with tor's header for this key type.
    #[error("{NOT_A_SECRET_KEY_FILE}: it does not begin with \"== ed25519v1-secret: type0 ==\"")]
    FileHeader,
    /// The file has the right shape, but its key is not one tor makes.
    #[error("{NOT_A_SECRET_KEY_FILE}: {0}")]
    FileKey(ExpandedKeyError),
    /// The storage form is neither 32 bytes (a seed) nor 64 (expanded).
    #[error(
        "a stored onion service key has 32 bytes (a seed) or 64 (tor's expanded key), not {0}"
    )]
    StorageLength(usize),
    /// The stored expanded key is not one tor makes.
    #[error("the stored onion service key is damaged: {0}")]
    StoredKey(ExpandedKeyError),
}

/// Why 64 bytes are not an expanded ed25519 key as tor makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpandedKeyError {
    /// The secret scalar is not clamped (low 3 bits clear, top bit clear,
    /// second-highest bit set), as every key tor generates is.
    #[error("its secret scalar is not clamped as every ed25519 key that tor makes is")]
    Clamping,
    /// The public key is not one an onion address may hold. (For a clamped
    /// scalar this cannot happen: `scalar * B` is then never the identity;
    /// it is checked all the same, since the address must never be wrong.)
    #[error("its public key is not valid for an onion address")]
    PublicKey,
}

/// The ed25519 identity of one onion service. Zeroized on drop;
/// `Debug` shows only the onion address and the form of the key.
#[derive(Clone)]
pub struct ServiceKey {
    secret: Secret,
}

/// The two forms of a key (see the module doc).
#[derive(Clone)]
enum Secret {
    /// A key made here. Zeroized on drop by `ed25519_dalek::SigningKey`.
    Seed(SigningKey),
    /// A key tor made: its expanded secret key, and the public key derived
    /// from it once.
    Expanded {
        expanded: Zeroizing<[u8; 64]>,
        public: [u8; 32],
    },
}

impl ServiceKey {
    /// Length of the storage form of a key made here, a seed
    /// ([`from_bytes`](Self::from_bytes)).
    pub const SEED_LEN: usize = 32;
    /// Length of tor's expanded key, and of the storage form of a key tor
    /// made.
    pub const EXPANDED_LEN: usize = 64;
    /// Length of tor's `hs_ed25519_secret_key` file.
    pub const TOR_SECRET_KEY_FILE_LEN: usize = 96;

    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let seed = random_secret()?;
        Ok(Self::from_bytes(&seed))
    }

    /// The key of a 32-byte ed25519 seed. Every 32-byte value is a valid
    /// seed.
    pub fn from_bytes(seed: &[u8; 32]) -> Self {
        Self {
            secret: Secret::Seed(SigningKey::from_bytes(seed)),
        }
    }

    /// The storage form: the 32-byte seed of a key made here, the 64-byte
    /// expanded key of a key tor made. Secret. This is
    /// [`to_storage`](Self::to_storage), under the name it had when every
    /// key was a seed: for a key made here it is the same 32 bytes.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        self.to_storage()
    }

    /// The storage form: the 32-byte seed of a key made here, the 64-byte
    /// expanded key of a key tor made; [`from_storage`](Self::from_storage)
    /// reads either back. Secret.
    pub fn to_storage(&self) -> Zeroizing<Vec<u8>> {
        match &self.secret {
            Secret::Seed(signing) => Zeroizing::new(signing.as_bytes().to_vec()),
            Secret::Expanded { expanded, .. } => Zeroizing::new(expanded.to_vec()),
        }
    }

    /// The key of its storage form, as [`to_storage`](Self::to_storage) gave
    /// it: 32 bytes are a seed, 64 an expanded key (whose scalar must be
    /// clamped); any other length is refused.
    pub fn from_storage(bytes: &[u8]) -> Result<Self, KeyFileError> {
        if let Ok(seed) = <&[u8; 32]>::try_from(bytes) {
            return Ok(Self::from_bytes(seed));
        }
        let expanded =
            <&[u8; 64]>::try_from(bytes).map_err(|_| KeyFileError::StorageLength(bytes.len()))?;
        Self::from_expanded(expanded).map_err(KeyFileError::StoredKey)
    }

    /// The key in tor's `hs_ed25519_secret_key` file, as tor writes it in a
    /// `HiddenServiceDir`: the 32-byte header `== ed25519v1-secret: type0 ==`
    /// (NUL padded) and the 64-byte expanded key, nothing more. The key keeps
    /// the address tor computed from the file.
    pub fn from_tor_secret_key_file(bytes: &[u8]) -> Result<Self, KeyFileError> {
        if bytes.starts_with(PUBLIC_KEY_FILE_TAG) {
            return Err(KeyFileError::PublicKeyFile);
        }
        let length = || KeyFileError::FileLength(bytes.len());
        let (header, expanded) = bytes.split_first_chunk::<32>().ok_or_else(length)?;
        let expanded = <&[u8; 64]>::try_from(expanded).map_err(|_| length())?;
        if header != SECRET_KEY_FILE_HEADER {
            return Err(KeyFileError::FileHeader);
        }
        Self::from_expanded(expanded).map_err(KeyFileError::FileKey)
    }

    /// Tor's `hs_ed25519_secret_key` file of this key (96 bytes), which tor
    /// reads from a `HiddenServiceDir`. Secret: write it mode 0600.
    pub fn to_tor_secret_key_file(&self) -> Zeroizing<Vec<u8>> {
        let mut file = Zeroizing::new(Vec::with_capacity(Self::TOR_SECRET_KEY_FILE_LEN));
        file.extend_from_slice(SECRET_KEY_FILE_HEADER);
        file.extend_from_slice(self.tor_expanded_secret_key().as_slice());
        file
    }

    /// The key of a 64-byte expanded key, once its scalar is found clamped.
    fn from_expanded(bytes: &[u8; 64]) -> Result<Self, ExpandedKeyError> {
        let clamped = bytes[0] & 0b0000_0111 == 0 && bytes[31] & 0b1100_0000 == 0b0100_0000;
        if !clamped {
            return Err(ExpandedKeyError::Clamping);
        }
        let mut expanded = Zeroizing::new([0u8; 64]);
        expanded.copy_from_slice(bytes);
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar.copy_from_slice(&bytes[..32]);
        // What tor does (ed25519_donna_pubkey): the scalar times the base
        // point. Clamping it again changes nothing. (The multiplication works
        // on copies of the scalar that the library does not wipe.)
        let public = EdwardsPoint::mul_base_clamped(*scalar)
            .compress()
            .to_bytes();
        OnionAddress::from_public_key(&public).map_err(|_| ExpandedKeyError::PublicKey)?;
        Ok(Self {
            secret: Secret::Expanded { expanded, public },
        })
    }

    /// The ed25519 identity public key (what the onion address encodes).
    pub fn public(&self) -> [u8; 32] {
        match &self.secret {
            Secret::Seed(signing) => signing.verifying_key().to_bytes(),
            Secret::Expanded { public, .. } => *public,
        }
    }

    /// The onion address, computed from the key.
    pub fn onion_address(&self) -> OnionAddress {
        // An ed25519 public key is `scalar * B`, B the prime-order base point,
        // compressed by the library: a canonically encoded point of prime
        // order, which is what OnionAddress::from_public_key checks for (and
        // checked for an imported key in from_expanded).
        OnionAddress::from_derived_public_key(self.public())
    }

    /// The 64-byte expanded secret key that tor keeps and that `ADD_ONION`
    /// takes: clamped `SHA-512(seed)[..32]` then `SHA-512(seed)[32..]` for a
    /// key made here, the imported bytes for a key tor made. Secret.
    pub fn tor_expanded_secret_key(&self) -> Zeroizing<[u8; 64]> {
        let mut expanded = Zeroizing::new([0u8; 64]);
        match &self.secret {
            Secret::Seed(signing) => {
                let mut hasher = Sha512::new();
                hasher.update(signing.as_bytes());
                // Straight into the zeroizing buffer, no copy on the stack;
                // the buffer is 64 bytes, SHA-512's output, so
                // from_mut_slice's length check holds. (sha2 0.10 does not
                // wipe the hasher's own block buffer when it is dropped.)
                hasher.finalize_into(sha2::digest::generic_array::GenericArray::from_mut_slice(
                    &mut expanded[..],
                ));
                expanded[0] &= 248;
                expanded[31] &= 63;
                expanded[31] |= 64;
            }
            Secret::Expanded { expanded: ours, .. } => expanded.copy_from_slice(&ours[..]),
        }
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
        let form = match self.secret {
            Secret::Seed(_) => "seed",
            Secret::Expanded { .. } => "expanded",
        };
        f.debug_struct("ServiceKey")
            .field("onion_address", &self.onion_address().to_string())
            .field("form", &form)
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

    fn rfc_expanded() -> [u8; 64] {
        BASE64
            .decode(RFC8032_EXPANDED_B64.as_bytes())
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// tor's file of the RFC 8032 key, built by hand from the header.
    fn rfc_file() -> Vec<u8> {
        let mut file = b"== ed25519v1-secret: type0 ==".to_vec();
        file.resize(32, 0);
        file.extend_from_slice(&rfc_expanded());
        file
    }

    /// The RFC 8032 key as tor would hold it: expanded only.
    fn rfc_imported() -> ServiceKey {
        ServiceKey::from_tor_secret_key_file(&rfc_file()).unwrap()
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
        assert_ne!(*a.to_storage(), *b.to_storage());
        let again = ServiceKey::from_storage(&a.to_storage()).unwrap();
        assert_eq!(again.onion_address(), a.onion_address());
        assert_eq!(*again.to_storage(), *a.to_storage());
    }

    #[test]
    fn a_seed_is_stored_as_its_32_bytes_as_before() {
        let key = rfc_key();
        assert_eq!(*key.to_storage(), hex32(RFC8032_SEED));
        assert_eq!(*key.to_bytes(), *key.to_storage());
        let seed: [u8; 32] = key.to_bytes().as_slice().try_into().unwrap();
        assert_eq!(ServiceKey::from_bytes(&seed).public(), key.public());
    }

    #[test]
    fn a_key_tor_made_is_stored_as_its_64_bytes_and_read_back() {
        let key = rfc_imported();
        assert_eq!(*key.to_storage(), rfc_expanded());
        let again = ServiceKey::from_storage(&key.to_storage()).unwrap();
        assert_eq!(again.onion_address().to_string(), RFC8032_ADDRESS);
        assert_eq!(*again.to_storage(), rfc_expanded());
        assert_eq!(*again.tor_expanded_secret_key(), rfc_expanded());
    }

    #[test]
    fn the_key_file_is_tors_header_then_the_expanded_key() {
        let file = rfc_key().to_tor_secret_key_file();
        assert_eq!(file.len(), ServiceKey::TOR_SECRET_KEY_FILE_LEN);
        assert_eq!(*file, rfc_file());
        assert_eq!(&file[..29], b"== ed25519v1-secret: type0 ==");
        assert_eq!(&file[29..32], &[0, 0, 0]);
        assert_eq!(file.len(), file.capacity());
    }

    #[test]
    fn an_imported_file_gives_the_same_address_blob_and_file() {
        let imported = rfc_imported();
        assert_eq!(imported.public(), hex32(RFC8032_PUBLIC));
        assert_eq!(imported.onion_address().to_string(), RFC8032_ADDRESS);
        assert_eq!(
            *imported.tor_add_onion_key(),
            *rfc_key().tor_add_onion_key()
        );
        assert_eq!(*imported.to_tor_secret_key_file(), rfc_file());
        assert!(format!("{imported:?}").contains("expanded"));
        assert!(format!("{:?}", rfc_key()).contains("seed"));
    }

    /// A file's error, after checking that it shows as one line that says
    /// which file was expected.
    fn file_error(bytes: &[u8]) -> KeyFileError {
        let err = ServiceKey::from_tor_secret_key_file(bytes).unwrap_err();
        let shown = err.to_string();
        assert!(
            shown.starts_with("not a tor v3 onion service secret key (hs_ed25519_secret_key): "),
            "{shown}"
        );
        assert!(!shown.contains('\n'), "{shown}");
        err
    }

    #[test]
    fn a_file_of_another_length_is_refused() {
        let file = rfc_file();
        for length in [0, 1, 31, 32, 64, 95] {
            assert_eq!(
                file_error(&file[..length]),
                KeyFileError::FileLength(length)
            );
        }
        let mut long = file.clone();
        long.push(b'\n');
        assert_eq!(file_error(&long), KeyFileError::FileLength(97));
        // The hostname file that tor writes beside the key.
        let hostname = format!("{RFC8032_ADDRESS}\n");
        assert_eq!(
            file_error(hostname.as_bytes()),
            KeyFileError::FileLength(63)
        );
        assert!(file_error(&[]).to_string().contains("0 bytes"));
    }

    #[test]
    fn the_public_key_file_is_named_as_such() {
        // tor's hs_ed25519_public_key: its header, then the public key.
        let mut public = b"== ed25519v1-public: type0 ==".to_vec();
        public.resize(32, 0);
        public.extend_from_slice(&hex32(RFC8032_PUBLIC));
        let err = file_error(&public);
        assert_eq!(err, KeyFileError::PublicKeyFile);
        assert!(err.to_string().contains("hs_ed25519_public_key"), "{err}");
    }

    #[test]
    fn a_file_with_another_header_is_refused() {
        let good = rfc_file();
        let mut headers: Vec<Vec<u8>> = [
            "== ed25519v1-secret: type1 ==",
            "== ed25519v1-secret: type0 =",
            "== curve25519v1-secret: type0 ==",
            "== ED25519V1-SECRET: TYPE0 ==",
        ]
        .iter()
        .map(|h| h.as_bytes().to_vec())
        .collect();
        // Spaces instead of the NUL padding, and all NULs.
        headers.push(b"== ed25519v1-secret: type0 ==   ".to_vec());
        headers.push(vec![0; 32]);
        for mut header in headers {
            header.resize(32, 0);
            header.truncate(32);
            let mut file = header.clone();
            file.extend_from_slice(&good[32..]);
            assert_eq!(
                file_error(&file),
                KeyFileError::FileHeader,
                "{:?}",
                String::from_utf8_lossy(&header)
            );
        }
    }

    /// Expanded keys whose scalar breaks one clamping rule.
    fn badly_clamped() -> Vec<[u8; 64]> {
        let good = rfc_expanded();
        let mut bad = Vec::new();
        for (byte, flip) in [(0, 1u8), (0, 2), (0, 4), (31, 0x80), (31, 0x40)] {
            let mut key = good;
            key[byte] ^= flip;
            bad.push(key);
        }
        bad.push([0; 64]);
        bad
    }

    #[test]
    fn a_badly_clamped_key_file_is_refused() {
        for expanded in badly_clamped() {
            let mut file = rfc_file();
            file[32..].copy_from_slice(&expanded);
            let err = file_error(&file);
            assert_eq!(err, KeyFileError::FileKey(ExpandedKeyError::Clamping));
            assert!(err.to_string().contains("clamped"), "{err}");
        }
    }

    #[test]
    fn bad_storage_is_refused_with_one_line() {
        let seed = hex32(RFC8032_SEED);
        let file = rfc_file();
        for bytes in [
            &[][..],
            &seed[..31],
            &file[..33],
            &file[..63],
            &file[..65],
            &file,
        ] {
            let err = ServiceKey::from_storage(bytes).unwrap_err();
            assert_eq!(err, KeyFileError::StorageLength(bytes.len()));
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        for expanded in badly_clamped() {
            let err = ServiceKey::from_storage(&expanded).unwrap_err();
            assert_eq!(err, KeyFileError::StoredKey(ExpandedKeyError::Clamping));
            assert!(err
                .to_string()
                .starts_with("the stored onion service key is damaged: "));
        }
    }

    #[test]
    fn debug_shows_no_secret_of_either_form() {
        let hex = data_encoding::HEXLOWER.encode(&rfc_expanded());
        // The seed, and the first bytes of the scalar (48, 124, 131) and of
        // the PRF secret (155, 79, 10): in hex, base64 and as Debug prints
        // bytes. The seed key holds its expanded key too, derived.
        let secrets = [
            RFC8032_SEED.to_string(),
            RFC8032_SEED.to_uppercase(),
            "9d61".to_string(),
            "157, 97".to_string(),
            hex[..8].to_string(),
            hex[64..72].to_string(),
            RFC8032_EXPANDED_B64[..12].to_string(),
            RFC8032_EXPANDED_B64[44..56].to_string(),
            "48, 124".to_string(),
            "155, 79".to_string(),
        ];
        for key in [rfc_key(), rfc_imported()] {
            let shown = format!("{key:?}");
            assert!(shown.contains(RFC8032_ADDRESS), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
            for secret in &secrets {
                assert!(!shown.contains(secret.as_str()), "{secret}: {shown}");
            }
        }
    }
}
