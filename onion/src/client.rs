//! x25519 client-authorization keys of v3 onion services (rend-spec-v3
//! `[CLIENT-AUTH]`, `[CLIENT-AUTH-MGMT]`).
//!
//! The service side (tor hosting the service) knows only the public half:
//! `ADD_ONION … ClientAuthV3=<base32 public key>` or one line
//! `descriptor:x25519:<base32 public key>` per file in the service's
//! `authorized_clients/` directory. The person visiting gets the private half
//! as one line, `<address without .onion>:descriptor:x25519:<base32 private
//! key>`, for a file `*.auth_private` in tor's `ClientOnionAuthDir`, or pastes
//! the key into Tor Browser's prompt.
//!
//! Base32 here is RFC 4648 without padding (52 characters for 32 bytes), in
//! lower case as tor writes it (`base32_encode`); tor reads either case.
//!
//! A client may also bring a key pair of their own and give only its public
//! half, [`ClientPublicKey`]: the host then never holds their private key.
//!
//! Storage form: the 32 secret bytes as given (x25519 clamps them when they are
//! used, both here and in tor, so they are stored unclamped); of a public key
//! alone, its 32 bytes.

use std::fmt;
use std::str::FromStr;

use curve25519_dalek::MontgomeryPoint;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{base32_lower, random_secret, KeyError, OnionAddress, BASE32};

/// The key-type part shared by both auth lines.
const AUTH_TYPE: &str = "descriptor:x25519:";
/// Length of 32 bytes in unpadded base32.
const BASE32_KEY_LEN: usize = 52;
/// Length of an address without `.onion`.
const ADDRESS_LEN: usize = 56;

/// One client's x25519 authorization key pair. Zeroized on drop (by
/// `x25519_dalek::StaticSecret`); `Debug` shows only the public half.
#[derive(Clone)]
pub struct ClientKey {
    secret: StaticSecret,
}

impl ClientKey {
    /// Length of the storage form, [`to_bytes`](Self::to_bytes).
    pub const SECRET_LEN: usize = 32;

    /// A new key pair from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let secret = random_secret()?;
        Ok(Self::from_bytes(&secret))
    }

    /// The key pair of 32 secret bytes, as [`to_bytes`](Self::to_bytes) gave
    /// them. Every 32-byte value is a valid x25519 secret.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self {
            secret: StaticSecret::from(*secret),
        }
    }

    /// The 32 secret bytes: the storage form. Secret.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The x25519 public key.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// The public half, all that the service side needs.
    pub fn public_key(&self) -> ClientPublicKey {
        // The clamped secret (a multiple of 8 below 2^255, so not one of
        // the prime l) times the base point (of order l): never of small
        // order.
        ClientPublicKey {
            public: self.public(),
        }
    }

    /// The public key in base32 (52 characters): the value of `ADD_ONION`'s
    /// `ClientAuthV3=`.
    pub fn public_base32(&self) -> String {
        self.public_key().public_base32()
    }

    /// The private key in base32 (52 characters): what Tor Browser's
    /// client-authorization prompt takes. Secret.
    pub fn private_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32_lower(self.to_bytes().as_slice()))
    }

    /// `descriptor:x25519:<base32 public key>`: the one line of a file
    /// `<name>.auth` in a service's `authorized_clients/` directory.
    pub fn auth_public_line(&self) -> String {
        self.public_key().auth_public_line()
    }

    /// `<56-character address>:descriptor:x25519:<base32 private key>`: the one
    /// line of a file `<name>.auth_private` in a tor client's
    /// `ClientOnionAuthDir`, for the service at `address`. Secret.
    pub fn auth_private_line(&self, address: &OnionAddress) -> Zeroizing<String> {
        let private = self.private_base32();
        let mut line = Zeroizing::new(String::with_capacity(
            ADDRESS_LEN + 1 + AUTH_TYPE.len() + BASE32_KEY_LEN,
        ));
        line.push_str(&address.without_suffix());
        line.push(':');
        line.push_str(AUTH_TYPE);
        line.push_str(&private);
        line
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("public", &self.public_base32())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a text is not a client's x25519 public key. Each shows as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientPublicKeyError {
    /// The text has the shape of a `*.auth_private` line, which holds the
    /// client's private key.
    #[error(
        "this looks like a private key line (<address>:descriptor:x25519:<private key>): \
         give only the client's public key, descriptor:x25519:<52 characters> or the 52 \
         characters alone, and let the private key stay with the client"
    )]
    PrivateLine,
    /// Some other `…:…` line.
    #[error(
        "not a client's x25519 public key: give descriptor:x25519:<52 base32 characters>, \
         or the 52 characters alone"
    )]
    Format,
    /// The key is not 52 characters long.
    #[error("a client's x25519 public key has 52 base32 characters, not {0}")]
    Length(usize),
    /// The key is not the base32 of 32 bytes.
    #[error(
        "a client's x25519 public key is base32 (letters a-z and digits 2-7) of 32 bytes: \
         these 52 characters are not"
    )]
    Base32,
    /// The key is a point of small order (all zeros, for one), which no key
    /// pair yields and which would leave the client's credential worthless.
    #[error(
        "this x25519 public key is a point of small order (such as all zeros), not a client's key"
    )]
    SmallOrder,
}

/// The public half of a client's x25519 authorization key: what the service
/// side needs, and all the host holds of a client who made their key pair
/// themselves. Not secret; `Debug` shows it in base32.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientPublicKey {
    public: [u8; 32],
}

impl ClientPublicKey {
    /// Length of the storage form, [`to_bytes`](Self::to_bytes).
    pub const LEN: usize = 32;

    /// The key of its 32 bytes, as [`to_bytes`](Self::to_bytes) gave them.
    /// Fails only for a point of small order.
    pub fn from_bytes(public: &[u8; 32]) -> Result<Self, ClientPublicKeyError> {
        if is_small_order(public) {
            return Err(ClientPublicKeyError::SmallOrder);
        }
        Ok(Self { public: *public })
    }

    /// Parses what a person would paste: the 52-character base32 public key
    /// (either case), or the line `descriptor:x25519:<key>` of an
    /// `authorized_clients/*.auth` file; white space around it is ignored.
    /// A private key line (`<address>:descriptor:x25519:<key>`) is refused as
    /// such. (A private key pasted alone cannot be told from a public one:
    /// every 32 bytes are both.)
    pub fn parse(text: &str) -> Result<Self, ClientPublicKeyError> {
        let text = text.trim();
        let key = if !text.contains(':') {
            text
        } else if let Some(key) = strip_prefix_ignore_case(text, AUTH_TYPE) {
            key
        } else if contains_ignore_case(text, PRIVATE_LINE_MARK) {
            return Err(ClientPublicKeyError::PrivateLine);
        } else {
            return Err(ClientPublicKeyError::Format);
        };
        let length = key.chars().count();
        if length != BASE32_KEY_LEN {
            return Err(ClientPublicKeyError::Length(length));
        }
        let decoded = BASE32
            .decode(key.to_ascii_uppercase().as_bytes())
            .map_err(|_| ClientPublicKeyError::Base32)?;
        let public =
            <[u8; 32]>::try_from(decoded.as_slice()).map_err(|_| ClientPublicKeyError::Base32)?;
        Self::from_bytes(&public)
    }

    /// The 32 bytes of the x25519 public key: the storage form.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.public
    }

    /// The key in base32, lower case (52 characters): the value of
    /// `ADD_ONION`'s `ClientAuthV3=`.
    pub fn public_base32(&self) -> String {
        base32_lower(&self.public)
    }

    /// `descriptor:x25519:<base32 public key>`: the one line of a file
    /// `<name>.auth` in a service's `authorized_clients/` directory.
    pub fn auth_public_line(&self) -> String {
        format!("{AUTH_TYPE}{}", self.public_base32())
    }
}

impl fmt::Debug for ClientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientPublicKey({})", self.public_base32())
    }
}

impl FromStr for ClientPublicKey {
    type Err = ClientPublicKeyError;

    fn from_str(text: &str) -> Result<Self, ClientPublicKeyError> {
        Self::parse(text)
    }
}

/// What the middle of an `*.auth_private` line looks like.
const PRIVATE_LINE_MARK: &str = ":descriptor:x25519:";

/// Whether `8 * P` is the neutral element, i.e. P (on the curve or its
/// twist, which x25519 does not tell apart) has an order dividing 8: the
/// all-zero key, 1, the points of order 2, 4 and 8 and their non-canonical
/// spellings. A shared secret with such a key is all zeros whatever the
/// other side's secret.
fn is_small_order(public: &[u8; 32]) -> bool {
    // 8 is 0b1000, most significant bit first.
    let eight = [true, false, false, false];
    MontgomeryPoint(*public).mul_bits_be(eight.into_iter()) == MontgomeryPoint([0; 32])
}

/// The text after `prefix`, compared without regard to ASCII case.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        text.get(prefix.len()..)
    } else {
        None
    }
}

/// Whether `needle` occurs in `text`, without regard to ASCII case (and
/// without a lower-cased copy of the text, which may hold a private key).
fn contains_ignore_case(text: &str, needle: &str) -> bool {
    text.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServiceKey;

    /// RFC 7748 section 6.1: Alice's private and public keys.
    const ALICE_PRIVATE: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex32(text: &str) -> [u8; 32] {
        let bytes = data_encoding::HEXLOWER.decode(text.as_bytes()).unwrap();
        bytes.try_into().unwrap()
    }

    fn alice() -> ClientKey {
        ClientKey::from_bytes(&hex32(ALICE_PRIVATE))
    }

    #[test]
    fn rfc7748_private_key_gives_its_public_key() {
        assert_eq!(alice().public(), hex32(ALICE_PUBLIC));
    }

    #[test]
    fn base32_is_rfc4648_unpadded_lower_case() {
        // Computed independently: Python base64.b32encode, padding cut, lowered.
        assert_eq!(
            alice().private_base32().as_str(),
            "o4dw2cttdcsx2pawyfzfdmtgixpuyl4h5pajskvro752khnzfqva"
        );
        let public = alice().public_base32();
        assert_eq!(public.len(), 52);
        assert_eq!(
            data_encoding::BASE32_NOPAD
                .decode(public.to_uppercase().as_bytes())
                .unwrap(),
            hex32(ALICE_PUBLIC)
        );
    }

    #[test]
    fn the_auth_lines_have_tors_format() {
        let client = alice();
        let service = ServiceKey::from_bytes(&[7u8; 32]).onion_address();
        assert_eq!(
            client.auth_public_line(),
            format!("descriptor:x25519:{}", client.public_base32())
        );
        let line = client.auth_private_line(&service);
        assert_eq!(
            line.as_str(),
            format!(
                "{}:descriptor:x25519:o4dw2cttdcsx2pawyfzfdmtgixpuyl4h5pajskvro752khnzfqva",
                service.without_suffix()
            )
        );
        assert_eq!(line.len(), line.capacity());
    }

    #[test]
    fn storage_round_trips_unclamped() {
        let secret = [0xffu8; 32];
        assert_eq!(*ClientKey::from_bytes(&secret).to_bytes(), secret);
        let a = ClientKey::generate().unwrap();
        let b = ClientKey::generate().unwrap();
        assert_ne!(a.public(), b.public());
        assert_eq!(ClientKey::from_bytes(&a.to_bytes()).public(), a.public());
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?}", alice());
        assert!(shown.contains(&alice().public_base32()), "{shown}");
        assert!(!shown.contains("o4dw2ctt"), "{shown}");
        assert!(!shown.contains("77076d"), "{shown}");
        assert!(!shown.contains("119, 7, 109"), "{shown}");
    }

    fn alice_public() -> ClientPublicKey {
        alice().public_key()
    }

    /// A text's error, after checking that it shows as one line.
    fn parse_error(text: &str) -> ClientPublicKeyError {
        let err = ClientPublicKey::parse(text).unwrap_err();
        assert!(!err.to_string().contains('\n'), "{err}");
        err
    }

    #[test]
    fn the_public_key_is_the_key_pairs_and_has_the_same_lines() {
        let public = alice_public();
        assert_eq!(public.to_bytes(), hex32(ALICE_PUBLIC));
        assert_eq!(public.public_base32(), alice().public_base32());
        assert_eq!(public.auth_public_line(), alice().auth_public_line());
        assert_eq!(
            format!("{public:?}"),
            format!("ClientPublicKey({})", alice().public_base32())
        );
        assert_eq!(ClientPublicKey::from_bytes(&public.to_bytes()), Ok(public));
    }

    #[test]
    fn what_a_person_pastes_is_read() {
        let public = alice_public();
        let base32 = public.public_base32();
        let line = public.auth_public_line();
        for text in [
            base32.clone(),
            base32.to_uppercase(),
            format!("  {base32}\n"),
            line.clone(),
            format!("{line}\n"),
            format!("\t{line}\r\n"),
            line.to_uppercase(),
        ] {
            assert_eq!(ClientPublicKey::parse(&text), Ok(public), "{text:?}");
            assert_eq!(text.parse::<ClientPublicKey>(), Ok(public), "{text:?}");
        }
    }

    #[test]
    fn a_private_key_line_is_refused_as_such() {
        let service = ServiceKey::from_bytes(&[7u8; 32]).onion_address();
        let line = alice().auth_private_line(&service);
        for text in [
            line.to_string(),
            format!("{}\n", line.as_str()),
            line.to_uppercase(),
            // With the .onion that tor does not write but a person may.
            line.replacen(':', ".onion:", 1),
        ] {
            let err = parse_error(&text);
            assert_eq!(err, ClientPublicKeyError::PrivateLine, "{text}");
            let shown = err.to_string();
            assert!(shown.contains("private key line"), "{shown}");
            assert!(shown.contains("only the client's public key"), "{shown}");
            // The message never repeats the secret it was given.
            assert!(!shown.contains(alice().private_base32().as_str()));
        }
    }

    #[test]
    fn other_lines_lengths_and_alphabets_are_refused() {
        let base32 = alice_public().public_base32();
        for text in [
            format!("descriptor:ed25519:{base32}"),
            format!("x25519:{base32}"),
            format!("{base32}:"),
            format!("ClientAuthV3={base32}").replace('=', ":"),
        ] {
            assert_eq!(parse_error(&text), ClientPublicKeyError::Format, "{text}");
        }
        for (text, length) in [
            (String::new(), 0),
            ("   ".to_string(), 0),
            (base32[..51].to_string(), 51),
            (format!("{base32}a"), 53),
            (format!("{}====", base32.to_uppercase()), 56),
            (format!("descriptor:x25519:{}", &base32[1..]), 51),
            ("descriptor:x25519:".to_string(), 0),
            // 52 bytes, but 51 characters: é is two bytes.
            (format!("{}é", &base32[..50]), 51),
        ] {
            assert_eq!(
                parse_error(&text),
                ClientPublicKeyError::Length(length),
                "{text:?}"
            );
        }
        assert!(parse_error(&base32[..51]).to_string().contains("not 51"));
        for bad in ['1', '8', '0', '=', ' ', 'é'] {
            let mut text = base32[..51].to_string();
            text.insert(20, bad);
            assert_eq!(parse_error(&text), ClientPublicKeyError::Base32, "{text}");
        }
        // 52 base32 characters carry 260 bits: the last 4 must be zero.
        let mut trailing = base32[..51].to_string();
        trailing.push('7');
        assert_ne!(trailing, base32);
        assert_eq!(parse_error(&trailing), ClientPublicKeyError::Base32);
        // A ServiceID: an onion address is 56 characters.
        let address = ServiceKey::from_bytes(&[7u8; 32])
            .onion_address()
            .without_suffix();
        assert_eq!(parse_error(&address), ClientPublicKeyError::Length(56));
    }

    /// The u-coordinates of small order that libsodium refuses
    /// (crypto_scalarmult/curve25519/ref10/x25519_ref10.c, `has_small_order`),
    /// little endian: 0, 1, the two points of order 8, p - 1, p, p + 1.
    const SMALL_ORDER: [&str; 7] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    #[test]
    fn points_of_small_order_are_refused() {
        for hex in SMALL_ORDER {
            let bytes = hex32(hex);
            assert_eq!(
                ClientPublicKey::from_bytes(&bytes),
                Err(ClientPublicKeyError::SmallOrder),
                "{hex}"
            );
            let text = base32_lower(&bytes);
            assert_eq!(parse_error(&text), ClientPublicKeyError::SmallOrder);
            assert_eq!(
                parse_error(&format!("descriptor:x25519:{text}")),
                ClientPublicKeyError::SmallOrder
            );
        }
        // A shared secret with such a point is zero whatever the secret:
        // that is what makes them worthless.
        let point = PublicKey::from(hex32(SMALL_ORDER[2]));
        assert_eq!(alice().secret.diffie_hellman(&point).to_bytes(), [0; 32]);
        // Real keys pass: RFC 7748's, and random ones.
        assert!(ClientPublicKey::from_bytes(&hex32(ALICE_PUBLIC)).is_ok());
        for _ in 0..32 {
            let public = ClientKey::generate().unwrap().public();
            assert!(ClientPublicKey::from_bytes(&public).is_ok());
        }
    }
}
