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
//! Storage form: the 32 secret bytes as given (x25519 clamps them when they are
//! used, both here and in tor, so they are stored unclamped).

use std::fmt;

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{base32_lower, random_secret, KeyError, OnionAddress};

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

    /// The public key in base32 (52 characters): the value of `ADD_ONION`'s
    /// `ClientAuthV3=`.
    pub fn public_base32(&self) -> String {
        base32_lower(&self.public())
    }

    /// The private key in base32 (52 characters): what Tor Browser's
    /// client-authorization prompt takes. Secret.
    pub fn private_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32_lower(self.to_bytes().as_slice()))
    }

    /// `descriptor:x25519:<base32 public key>`: the one line of a file
    /// `<name>.auth` in a service's `authorized_clients/` directory.
    pub fn auth_public_line(&self) -> String {
        format!("{AUTH_TYPE}{}", self.public_base32())
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
}
