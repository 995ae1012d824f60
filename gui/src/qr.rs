//! QR codes of what a person passes on (the address, the key line), as
//! textures GTK can show: the onion crate's modules (black on white, with
//! the quiet zone), drawn at a fixed scale so that GTK shows them pixel
//! for pixel.

use gtk::prelude::Cast;
use gtk::{gdk, glib};

/// Pixels per module.
const SCALE: usize = 6;

/// `text` as a QR code image, or `None` if it does not fit in one.
pub fn texture(text: &str) -> Option<gdk::Texture> {
    let (side, grey) = tails_onion::qr_grey(text, SCALE).ok()?;
    // GTK 4.8 has no 8-bit grey memory format: each pixel as RGB.
    let rgb: Vec<u8> = grey.iter().flat_map(|g| [*g; 3]).collect();
    let side_i32 = i32::try_from(side).ok()?;
    let tex = gdk::MemoryTexture::new(
        side_i32,
        side_i32,
        gdk::MemoryFormat::R8g8b8,
        &glib::Bytes::from_owned(rgb),
        side * 3,
    );
    Some(tex.upcast())
}
