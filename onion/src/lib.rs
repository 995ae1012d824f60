//! The host-held keys of onion services.
//!
//! The host agent generates and keeps every onion-service secret; a guest never
//! chooses one, and the onion address is always computed here, on the host,
//! from the key the host holds. This crate is the small, dependency-light core
//! of that:
//!
//! - [`ServiceKey`]: the ed25519 identity of a v3 onion service, its
//!   [`OnionAddress`], and the `ED25519-V3:` key blob that tor's control-port
//!   `ADD_ONION` takes. A key is made here (a seed) or imported from the
//!   `hs_ed25519_secret_key` file of a service that tor made, to keep its
//!   address; either exports to that file again ([`KeyFileError`] says why a
//!   file or a stored key is refused).
//! - [`OnionAddress`]: a checked v3 address (length, base32, checksum, version,
//!   and a public key that is a point of the curve without torsion, as tor
//!   checks).
//! - [`ClientKey`]: an x25519 client-authorization key pair, with the
//!   `ClientAuthV3=` value for `ADD_ONION`, the `authorized_clients/*.auth`
//!   line and the `*.auth_private` line that tor's `ClientOnionAuthDir` and Tor
//!   Browser take.
//! - [`ClientPublicKey`]: the public half alone, for a client who made their
//!   key pair themselves and gives only that: the host then never holds the
//!   client's private key ([`ClientPublicKeyError`] says why a pasted key is
//!   refused).
//! - [`qr_terminal`], [`qr_svg`], [`qr_png`]: QR codes of such text, for a
//!   person to carry an address or a key to a phone.
//!
//! Secrets zeroize on drop, never show in `Debug`, and the functions that hand
//! out secret bytes or text return them in [`Zeroizing`] wrappers.
//!
//! References: tor's rend-spec-v3 (`[ONIONADDRESS]`, `[CLIENT-AUTH-MGMT]`) and
//! control-spec (`ADD_ONION`).

mod address;
mod client;
mod qr;
mod service;

pub use address::{AddressError, OnionAddress, ONION_SUFFIX};
pub use client::{ClientKey, ClientPublicKey, ClientPublicKeyError};
pub use qr::{qr_grey, qr_png, qr_svg, qr_terminal, QrError};
pub use service::{ExpandedKeyError, KeyFileError, ServiceKey};
pub use zeroize::Zeroizing;

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source (getrandom(2)) failed.
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
}

/// Fills a fresh 32-byte secret from the operating system's random source.
fn random_secret() -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut_slice()).map_err(KeyError::Random)?;
    Ok(secret)
}

/// RFC 4648 base32, upper case, no padding: the decoder of everything tor
/// writes in base32 (input is upper-cased first, so either case is read).
const BASE32: data_encoding::Encoding = data_encoding::BASE32_NOPAD;

/// Base32 without padding, lower case: what tor itself writes (its
/// `base32_encode` alphabet is `a-z2-7`) in onion addresses and key files.
/// The text is lowered in place, so a caller that wraps the result in
/// [`Zeroizing`] leaves no copy of a secret behind.
fn base32_lower(bytes: &[u8]) -> String {
    let mut text = BASE32.encode(bytes);
    text.make_ascii_lowercase();
    text
}
