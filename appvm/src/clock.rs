//! Boot clock randomization: the App VM's clock is moved, once per boot and
//! before any service starts, by a random offset in the window of
//! [`tails_proto::CLOCK_OFFSET_MIN_MS`]..[`tails_proto::CLOCK_OFFSET_MAX_MS`]
//! either way (Whonix moves its clock by 0 to 180 s with nanoseconds; the
//! half second kept out here lets a test tell a moved clock from one that
//! was not, and is below what a remote client can resolve through a
//! service's timestamps). A remote client that reads a service's clock then
//! learns nothing exact of the host's. The offset itself is never logged.

use tails_proto::{CLOCK_OFFSET_MAX_MS, CLOCK_OFFSET_MIN_MS};

/// A random offset in nanoseconds, either sign, from 8 random bytes.
pub fn offset_ns(random: u64) -> i64 {
    let min = CLOCK_OFFSET_MIN_MS * 1_000_000;
    let span = (CLOCK_OFFSET_MAX_MS - CLOCK_OFFSET_MIN_MS) * 1_000_000;
    // The low bit is the sign; the rest picks the magnitude (the modulo
    // bias over a 63-bit draw is below 2^-25).
    let magnitude = min + (random >> 1) % span;
    let magnitude = i64::try_from(magnitude).unwrap_or(i64::MAX);
    if random & 1 == 1 {
        -magnitude
    } else {
        magnitude
    }
}

fn random_u64() -> Result<u64, String> {
    let mut buf = [0u8; 8];
    // Blocks only until the kernel's generator is seeded (virtio-rng feeds it).
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        return Err(format!("getrandom: {}", std::io::Error::last_os_error()));
    }
    Ok(u64::from_ne_bytes(buf))
}

/// Move the clock. An error powers the VM off (no service may run with the
/// host's exact time).
pub fn randomize() -> Result<(), String> {
    let off = offset_ns(random_u64()?);
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) } != 0 {
        return Err(format!(
            "clock_gettime: {}",
            std::io::Error::last_os_error()
        ));
    }
    let total = i128::from(now.tv_sec) * 1_000_000_000 + i128::from(now.tv_nsec) + i128::from(off);
    let new = libc::timespec {
        tv_sec: (total.div_euclid(1_000_000_000)) as libc::time_t,
        tv_nsec: (total.rem_euclid(1_000_000_000)) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we pass.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &new) } != 0 {
        return Err(format!(
            "clock_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_stay_in_the_window_with_both_signs() {
        let (min, max) = (
            (CLOCK_OFFSET_MIN_MS * 1_000_000) as i64,
            (CLOCK_OFFSET_MAX_MS * 1_000_000) as i64,
        );
        let mut seen_neg = false;
        let mut seen_pos = false;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..10_000 {
            // xorshift: a spread of inputs.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let o = offset_ns(x);
            assert!(o.abs() >= min && o.abs() < max, "{o}");
            seen_neg |= o < 0;
            seen_pos |= o > 0;
        }
        assert!(seen_neg && seen_pos);
        assert_eq!(offset_ns(0), min);
        assert_eq!(offset_ns(1), -min);
        assert!(offset_ns(u64::MAX).abs() < max);
    }
}
