//! QR codes of what a person passes on (the address, the key line), as
//! textures GTK can show: black modules on white, with the quiet zone.

use gtk::{gdk, glib};

/// Pixels per module.
const SCALE: usize = 6;
/// Modules of white around the code (the standard's quiet zone).
const QUIET: usize = 4;

/// `text` as a QR code image, or `None` if it does not fit in one.
pub fn texture(text: &str) -> Option<gdk::Texture> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let n = code.width();
    let colors = code.to_colors();
    let side = (n + 2 * QUIET) * SCALE;
    let mut rgb = vec![0xffu8; side * side * 3];
    for (i, c) in colors.iter().enumerate() {
        if *c != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (i % n + QUIET, i / n + QUIET);
        for y in my * SCALE..(my + 1) * SCALE {
            let row = y * side * 3;
            rgb[row + mx * SCALE * 3..row + (mx + 1) * SCALE * 3].fill(0);
        }
    }
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

use gtk::prelude::Cast;

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_line_fits_and_its_modules_are_drawn() {
        let line = format!(
            "{}.onion:descriptor:x25519:{}",
            "a".repeat(56),
            "B".repeat(52)
        );
        let code = qrcode::QrCode::new(line.as_bytes()).expect("fits");
        let dark = code
            .to_colors()
            .iter()
            .filter(|c| **c == qrcode::Color::Dark)
            .count();
        assert!(dark > 100, "{dark} dark modules");
    }
}
