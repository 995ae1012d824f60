//! QR codes of onion addresses and keys, for a person to carry them to a
//! phone: for a terminal (Unicode half blocks), as SVG, and as PNG.
//!
//! Error correction is level M (15 %), the usual choice for text shown on a
//! screen. Every rendering has the standard quiet zone of 4 modules.
//!
//! The terminal rendering packs two module rows into one text row with the
//! half blocks `▀`, `▄`, `█` and the space. It draws the *light* modules (and
//! the quiet zone) as blocks, in the terminal's text colour, and leaves the dark
//! ones as background: right for the usual light-on-dark terminal, and the
//! quiet zone shows where the code ends. On a dark-on-light terminal the code
//! comes out inverted, which many but not all phone readers accept; prefer the
//! SVG or PNG there.
//!
//! PNG is written with the `png` crate directly (8-bit grey), which is far
//! lighter than qrcode's `image` feature.

use qrcode::{Color, QrCode};

/// The quiet zone around every code, in modules (ISO/IEC 18004: 4).
const QUIET_ZONE: usize = 4;
/// PNG pixels per module.
const PNG_MODULE_PX: usize = 8;

/// Why a QR code could not be made.
#[derive(Debug, thiserror::Error)]
pub enum QrError {
    /// The text does not fit in a QR code (over about 2,300 bytes at level M).
    #[error("the text does not fit in a QR code: {0}")]
    Encode(#[from] qrcode::types::QrError),
    /// The PNG encoder failed.
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
}

/// The code's modules with the quiet zone around them: `(side, dark?)`.
fn modules(text: &str) -> Result<(usize, Vec<bool>), QrError> {
    let code = QrCode::new(text.as_bytes())?;
    let width = code.width();
    let colors = code.to_colors();
    let side = width + 2 * QUIET_ZONE;
    let mut dark = vec![false; side * side];
    for (i, color) in colors.iter().enumerate() {
        let (x, y) = (i % width, i / width);
        dark[(y + QUIET_ZONE) * side + x + QUIET_ZONE] = *color == Color::Dark;
    }
    Ok((side, dark))
}

/// The QR code of `text` for a terminal: one line per two module rows, each
/// line ending in `\n`. See the module documentation for the colours.
pub fn qr_terminal(text: &str) -> Result<String, QrError> {
    let (side, dark) = modules(text)?;
    let light = |x: usize, y: usize| y < side && !dark[y * side + x];
    let mut out = String::with_capacity((side + 1) * side.div_ceil(2) * 3);
    for y in (0..side).step_by(2) {
        for x in 0..side {
            out.push(match (light(x, y), light(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// The QR code of `text` as an SVG document (black on white, at least 256 px).
pub fn qr_svg(text: &str) -> Result<String, QrError> {
    let code = QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}

/// The QR code of `text` as 8-bit grey pixels, black (0) on white (255),
/// `px_per_module` pixels per module, quiet zone included: `(side in pixels,
/// row-major pixels)`. For a program that draws the image itself (the GUI).
/// A scale of 0 counts as 1.
pub fn qr_grey(text: &str, px_per_module: usize) -> Result<(usize, Vec<u8>), QrError> {
    let (side, dark) = modules(text)?;
    let px_per_module = px_per_module.max(1);
    let px = side * px_per_module;
    let mut pixels = Vec::with_capacity(px * px);
    for y in 0..px {
        let row = (y / px_per_module) * side;
        pixels.extend((0..px).map(|x| {
            if dark[row + x / px_per_module] {
                0u8
            } else {
                255
            }
        }));
    }
    Ok((px, pixels))
}

/// The QR code of `text` as a PNG image: 8-bit grey, black on white, 8 pixels
/// per module.
pub fn qr_png(text: &str) -> Result<Vec<u8>, QrError> {
    let (px, pixels) = qr_grey(text, PNG_MODULE_PX)?;
    // At most (177 + 8) modules of 8 pixels: `px` fits a u32 easily.
    let px32 = u32::try_from(px).unwrap_or(u32::MAX);
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, px32, px32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid:descriptor:x25519:o4dw2cttdcsx2pawyfzfdmtgixpuyl4h5pajskvro752khnzfqva";

    /// Decodes a module grid (true = dark) with rqrr, an independent reader.
    fn decode_grid(side: usize, dark: impl Fn(usize, usize) -> bool) -> String {
        let scale = 4;
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(side * scale, side * scale, |x, y| {
                if dark(x / scale, y / scale) {
                    0
                } else {
                    255
                }
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code expected");
        let (_meta, content) = grids[0].decode().unwrap();
        content
    }

    #[test]
    fn the_terminal_rendering_reads_back() {
        let shown = qr_terminal(TEXT).unwrap();
        let rows: Vec<Vec<char>> = shown.lines().map(|l| l.chars().collect()).collect();
        let side = rows[0].len();
        assert!(rows.iter().all(|r| r.len() == side));
        assert_eq!(rows.len(), side.div_ceil(2));
        // Blocks are light modules: undo the half blocks into a grid.
        let light = |x: usize, y: usize| -> bool {
            let c = rows[y / 2][x];
            if y.is_multiple_of(2) {
                matches!(c, '█' | '▀')
            } else {
                matches!(c, '█' | '▄')
            }
        };
        // The quiet zone is all light (all blocks in the first rows).
        assert!(rows[0].iter().all(|c| *c == '█'));
        assert_eq!(decode_grid(side, |x, y| !light(x, y)), TEXT);
    }

    #[test]
    fn the_png_reads_back() {
        let bytes = qr_png(TEXT).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Grayscale);
        let w = info.width as usize;
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(w, info.height as usize, |x, y| {
                buf[y * w + x]
            });
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1);
        assert_eq!(grids[0].decode().unwrap().1, TEXT);
    }

    #[test]
    fn the_grey_pixels_read_back_at_any_scale() {
        for scale in [0, 1, 3, 6] {
            let (px, pixels) = qr_grey(TEXT, scale).unwrap();
            assert_eq!(pixels.len(), px * px);
            assert!(pixels.iter().all(|p| *p == 0 || *p == 255));
            // The quiet zone: the first row is white.
            assert!(pixels[..px].iter().all(|p| *p == 255));
            let mut img =
                rqrr::PreparedImage::prepare_from_greyscale(px, px, |x, y| pixels[y * px + x]);
            let grids = img.detect_grids();
            assert_eq!(grids.len(), 1, "scale {scale}");
            assert_eq!(grids[0].decode().unwrap().1, TEXT);
        }
    }

    #[test]
    fn the_svg_is_an_svg_of_the_code() {
        let svg = qr_svg(TEXT).unwrap();
        assert!(svg.starts_with("<?xml"), "{}", &svg[..40]);
        assert!(svg.contains("<svg"));
        assert!(svg.contains("<path"));
    }

    #[test]
    fn too_long_a_text_is_an_error() {
        let long = "a".repeat(5000);
        assert!(matches!(qr_terminal(&long), Err(QrError::Encode(_))));
        assert!(matches!(qr_svg(&long), Err(QrError::Encode(_))));
        assert!(matches!(qr_png(&long), Err(QrError::Encode(_))));
    }
}
