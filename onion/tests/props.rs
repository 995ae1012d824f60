//! Property tests: addresses round-trip through text, a typo in the checksum
//! is always caught, parsing never panics, the auth lines always have tor's
//! shape and carry the right keys, and service keys of both forms round-trip
//! through storage and tor's key file.

use data_encoding::BASE32_NOPAD;
use proptest::prelude::*;
use tails_onion::{
    AddressError, ClientKey, ClientPublicKey, ExpandedKeyError, KeyFileError, OnionAddress,
    ServiceKey,
};

/// tor's `hs_ed25519_secret_key` header.
const SECRET_KEY_FILE_HEADER: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";

fn is_clamped(expanded: &[u8; 64]) -> bool {
    expanded[0] & 7 == 0 && expanded[31] & 0xc0 == 0x40
}

fn clamp(mut expanded: [u8; 64]) -> [u8; 64] {
    expanded[0] &= 248;
    expanded[31] &= 127;
    expanded[31] |= 64;
    expanded
}

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
        prop_assert_eq!(ServiceKey::from_storage(&key.to_storage()).unwrap().onion_address(), address);
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

    /// A key made here, through tor's file, is the same service in the
    /// expanded form: same address, same ADD_ONION blob, same file again;
    /// and each form reads back from its storage form.
    #[test]
    fn a_seed_key_round_trips_through_tors_file_and_storage(seed in any::<[u8; 32]>()) {
        let key = ServiceKey::from_bytes(&seed);
        let file = key.to_tor_secret_key_file();
        prop_assert_eq!(file.len(), ServiceKey::TOR_SECRET_KEY_FILE_LEN);
        prop_assert_eq!(&file[..32], SECRET_KEY_FILE_HEADER);
        let imported = ServiceKey::from_tor_secret_key_file(&file).unwrap();
        prop_assert_eq!(imported.onion_address(), key.onion_address());
        prop_assert_eq!(imported.tor_add_onion_key(), key.tor_add_onion_key());
        prop_assert_eq!(&imported.to_tor_secret_key_file(), &file);
        prop_assert_eq!(&**key.to_storage(), &seed[..]);
        prop_assert_eq!(&**imported.to_storage(), &file[32..]);
        for form in [&key, &imported] {
            let stored = form.to_storage();
            let again = ServiceKey::from_storage(&stored).unwrap();
            prop_assert_eq!(again.onion_address(), key.onion_address());
            prop_assert_eq!(again.to_storage(), stored);
        }
    }

    /// Any 64 bytes with a clamped scalar are a key tor could hold (its PRF
    /// half is free): they import, and export back unchanged. Unclamped
    /// ones are refused, from a file and from storage alike.
    #[test]
    fn an_expanded_key_imports_exactly_when_clamped(
        raw in proptest::collection::vec(any::<u8>(), 64),
        force_clamp in any::<bool>(),
    ) {
        let raw: [u8; 64] = raw.try_into().unwrap();
        let expanded = if force_clamp { clamp(raw) } else { raw };
        let mut file = SECRET_KEY_FILE_HEADER.to_vec();
        file.extend_from_slice(&expanded);
        let from_file = ServiceKey::from_tor_secret_key_file(&file);
        let from_storage = ServiceKey::from_storage(&expanded);
        if is_clamped(&expanded) {
            let key = from_file.unwrap();
            prop_assert_eq!(&**key.to_tor_secret_key_file(), &file[..]);
            prop_assert_eq!(&*key.tor_expanded_secret_key(), &expanded);
            prop_assert_eq!(from_storage.unwrap().onion_address(), key.onion_address());
        } else {
            prop_assert_eq!(
                from_file.unwrap_err(),
                KeyFileError::FileKey(ExpandedKeyError::Clamping)
            );
            prop_assert_eq!(
                from_storage.unwrap_err(),
                KeyFileError::StoredKey(ExpandedKeyError::Clamping)
            );
        }
    }

    #[test]
    fn reading_any_bytes_as_a_key_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = ServiceKey::from_tor_secret_key_file(&bytes);
        let _ = ServiceKey::from_storage(&bytes);
        let mut file = SECRET_KEY_FILE_HEADER.to_vec();
        file.extend_from_slice(&bytes);
        if let Err(err) = ServiceKey::from_tor_secret_key_file(&file) {
            prop_assert!(!err.to_string().contains('\n'));
        }
    }

    /// A client's public key reads back from each spelling of it that a
    /// person might paste.
    #[test]
    fn a_client_public_key_is_read_back_from_what_we_print(
        secret in any::<[u8; 32]>(),
        upper in any::<bool>(),
        before in "[ \t\n]{0,3}",
        after in "[ \t\r\n]{0,3}",
    ) {
        let public = ClientKey::from_bytes(&secret).public_key();
        for text in [public.public_base32(), public.auth_public_line()] {
            let text = if upper { text.to_uppercase() } else { text };
            let pasted = format!("{before}{text}{after}");
            prop_assert_eq!(ClientPublicKey::parse(&pasted), Ok(public));
        }
        prop_assert_eq!(ClientPublicKey::from_bytes(&public.to_bytes()), Ok(public));
        prop_assert_eq!(base32_decode(&public.public_base32()), public.to_bytes().to_vec());
    }

    #[test]
    fn parsing_any_text_as_a_client_key_never_panics(text in "\\PC{0,80}") {
        let _ = ClientPublicKey::parse(&text);
        let _ = ClientPublicKey::parse(&format!("descriptor:x25519:{text}"));
    }
}
