//! Property tests: addresses round-trip through text, a typo in the checksum
//! is always caught, parsing never panics, and the auth lines always have
//! tor's shape and carry the right keys.

use data_encoding::BASE32_NOPAD;
use proptest::prelude::*;
use tails_onion::{AddressError, ClientKey, OnionAddress, ServiceKey};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";

fn is_base32_lower(text: &str) -> bool {
    text.bytes().all(|b| ALPHABET.contains(&b))
}

fn base32_decode(text: &str) -> Vec<u8> {
    BASE32_NOPAD
        .decode(text.to_ascii_uppercase().as_bytes())
        .unwrap()
}

proptest! {
    #[test]
    fn an_address_round_trips_through_its_text(seed in any::<[u8; 32]>()) {
        let key = ServiceKey::from_bytes(&seed);
        let address = key.onion_address();
        let text = address.to_string();
        prop_assert_eq!(text.len(), 62);
        prop_assert!(text.ends_with(".onion"));
        let bare = address.without_suffix();
        prop_assert_eq!(&text[..56], bare.as_str());
        prop_assert!(is_base32_lower(&bare));
        prop_assert_eq!(OnionAddress::parse(&text), Ok(address));
        prop_assert_eq!(OnionAddress::parse(&bare), Ok(address));
        prop_assert_eq!(OnionAddress::parse(&text.to_uppercase()), Ok(address));
        prop_assert_eq!(OnionAddress::from_public_key(&key.public()), Ok(address));
        prop_assert_eq!(address.public_key(), key.public());
        // The storage form gives the same service back.
        prop_assert_eq!(ServiceKey::from_bytes(&key.to_bytes()).onion_address(), address);
    }

    /// Characters 52 and 53 (bits 260..270) lie wholly in the two checksum
    /// bytes (bits 256..272): changing one is always a checksum error.
    #[test]
    fn a_typo_in_the_checksum_is_caught(
        seed in any::<[u8; 32]>(),
        position in 52usize..54,
        replacement in proptest::sample::select(ALPHABET.to_vec()),
    ) {
        let bare = ServiceKey::from_bytes(&seed).onion_address().without_suffix();
        prop_assume!(bare.as_bytes()[position] != replacement);
        let mut typo = bare.into_bytes();
        typo[position] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        prop_assert_eq!(OnionAddress::parse(&typo), Err(AddressError::Checksum));
    }

    /// Any one-character change is refused, or (rarely: 16 checksum bits) is
    /// another valid address that prints back as exactly that text.
    #[test]
    fn a_typo_anywhere_is_refused_or_another_address(
        seed in any::<[u8; 32]>(),
        position in 0usize..56,
        replacement in proptest::sample::select(ALPHABET.to_vec()),
    ) {
        let bare = ServiceKey::from_bytes(&seed).onion_address().without_suffix();
        prop_assume!(bare.as_bytes()[position] != replacement);
        let mut typo = bare.clone().into_bytes();
        typo[position] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        if let Ok(other) = OnionAddress::parse(&typo) {
            prop_assert_eq!(other.without_suffix(), typo);
        }
    }

    /// Parsing 35 arbitrary bytes, encoded, succeeds exactly when the version
    /// is 3 and the checksum matches (and the key is valid).
    #[test]
    fn parsing_checks_version_and_checksum(raw in any::<[u8; 35]>()) {
        let text = BASE32_NOPAD.encode(&raw).to_lowercase();
        match OnionAddress::parse(&text) {
            Ok(address) => {
                prop_assert_eq!(raw[34], 3);
                prop_assert_eq!(address.without_suffix(), text);
            }
            Err(AddressError::Version(v)) => prop_assert_eq!(v, raw[34]),
            Err(AddressError::Checksum) | Err(AddressError::PublicKey) => {
                prop_assert_eq!(raw[34], 3)
            }
            Err(other) => prop_assert!(false, "{other:?}"),
        }
    }

    #[test]
    fn parsing_any_text_never_panics(text in "\\PC{0,80}") {
        let _ = OnionAddress::parse(&text);
        let _ = OnionAddress::parse(&format!("{text}.onion"));
    }

    #[test]
    fn the_auth_lines_have_tors_shape_and_the_right_keys(
        service_seed in any::<[u8; 32]>(),
        client_secret in any::<[u8; 32]>(),
    ) {
        let address = ServiceKey::from_bytes(&service_seed).onion_address();
        let client = ClientKey::from_bytes(&client_secret);

        let line = client.auth_private_line(&address);
        let fields: Vec<&str> = line.split(':').collect();
        prop_assert_eq!(fields.len(), 4);
        prop_assert_eq!(fields[0], address.without_suffix());
        prop_assert_eq!(fields[1], "descriptor");
        prop_assert_eq!(fields[2], "x25519");
        prop_assert_eq!(fields[3].len(), 52);
        prop_assert!(is_base32_lower(fields[3]));
        prop_assert_eq!(base32_decode(fields[3]), client_secret.to_vec());
        let private = client.private_base32();
        prop_assert_eq!(fields[3], private.as_str());

        let public_line = client.auth_public_line();
        let key = public_line.strip_prefix("descriptor:x25519:").unwrap();
        prop_assert_eq!(key, client.public_base32());
        prop_assert_eq!(key.len(), 52);
        prop_assert!(is_base32_lower(key));
        prop_assert_eq!(base32_decode(key), client.public().to_vec());

        prop_assert_eq!(ClientKey::from_bytes(&client.to_bytes()).public(), client.public());
    }
}
