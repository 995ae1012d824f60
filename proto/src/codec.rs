//! Length-prefixed frames with a size limit, a deadline and strict JSON decoding.

use serde::{de::DeserializeOwned, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The two bytes that open every frame.
pub const MAGIC: [u8; 2] = *b"TS";
/// The protocol version this build speaks; a frame with another version is refused.
pub const VERSION: u16 = 1;
/// Header size: magic (2) + version (2) + length (4).
pub const HEADER_LEN: usize = 8;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("bad magic {0:02x?}: the peer does not speak this protocol")]
    BadMagic([u8; 2]),
    #[error("protocol version {got}, expected {VERSION}: upgrade the images (`tails-server image build`)")]
    BadVersion { got: u16 },
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame not received within {0:?}")]
    Timeout(Duration),
    #[error("malformed message")]
    Malformed(#[from] serde_json::Error),
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}

/// Encode `msg` as one frame. Fails with [`FrameError::TooLarge`] rather than
/// sending a frame the peer would refuse.
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let payload = serde_json::to_vec(msg)?;
    if payload.len() > max {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len(),
        max,
    })?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Parse a header, returning the payload length it announces.
pub fn decode_header(h: &[u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let magic = [h[0], h[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = u16::from_be_bytes([h[2], h[3]]);
    if version != VERSION {
        return Err(FrameError::BadVersion { got: version });
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decode a payload strictly: the whole buffer must be exactly one value.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let v = T::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Decode a complete frame held in memory (header + payload, nothing more).
pub fn decode<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<T, FrameError> {
    let header: &[u8; HEADER_LEN] = frame
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(FrameError::Closed)?;
    let len = decode_header(header, max)?;
    let payload = &frame[HEADER_LEN..];
    if payload.len() != len {
        return Err(FrameError::Malformed(serde::de::Error::custom(format!(
            "frame announces {len} bytes but holds {}",
            payload.len()
        ))));
    }
    decode_payload(payload)
}

/// Read one frame within `deadline`. The limit is checked before the payload
/// buffer is allocated, so a hostile length cannot exhaust memory, and a peer
/// that trickles bytes cannot hold the reader past the deadline.
pub async fn read_frame<R, T>(r: &mut R, max: usize, deadline: Duration) -> Result<T, FrameError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let fut = async {
        let mut header = [0u8; HEADER_LEN];
        match r.read_exact(&mut header).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let len = decode_header(&header, max)?;
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                FrameError::Closed
            } else {
                e.into()
            }
        })?;
        decode_payload(&payload)
    };
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| FrameError::Timeout(deadline))?
}

/// Write one frame and flush it, within `deadline`.
pub async fn write_frame<W, T>(
    w: &mut W,
    msg: &T,
    max: usize,
    deadline: Duration,
) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let buf = encode(msg, max)?;
    let fut = async {
        w.write_all(&buf).await?;
        w.flush().await?;
        Ok(())
    };
    tokio::time::timeout(deadline, fut)
        .await
        .map_err(|_| FrameError::Timeout(deadline))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{GuestMsg, HostMsg, MAX_GUEST_FRAME};
    use proptest::prelude::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn roundtrip() {
        let m = HostMsg::Ping;
        let f = encode(&m, 1024).unwrap();
        assert_eq!(decode::<HostMsg>(&f, 1024).unwrap(), m);
    }

    #[test]
    fn refuses_bad_magic_version_and_size() {
        let mut f = encode(&HostMsg::Ping, 1024).unwrap();
        f[0] = b'X';
        assert!(matches!(
            decode::<HostMsg>(&f, 1024),
            Err(FrameError::BadMagic(_))
        ));
        let mut f = encode(&HostMsg::Ping, 1024).unwrap();
        f[3] = 9;
        assert!(matches!(
            decode::<HostMsg>(&f, 1024),
            Err(FrameError::BadVersion { got: 9 })
        ));
        let mut f = encode(&HostMsg::Ping, 1024).unwrap();
        f[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode::<HostMsg>(&f, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_unknown_fields_and_trailing_bytes() {
        let payload = br#"{"Hello":{"role":"torvm","agent_version":"1","extra":1}}"#;
        assert!(decode_payload::<GuestMsg>(payload).is_err());
        let payload = br#""Ping" "Ping""#;
        assert!(decode_payload::<HostMsg>(payload).is_err());
    }

    #[test]
    fn encode_refuses_oversized() {
        let big = GuestMsg::Error {
            message: "x".repeat(200),
        };
        assert!(matches!(
            encode(&big, 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_peer_times_out() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Send a header announcing 10 bytes, then nothing.
        let mut h = Vec::new();
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&VERSION.to_be_bytes());
        h.extend_from_slice(&10u32.to_be_bytes());
        tokio::io::AsyncWriteExt::write_all(&mut a, &h)
            .await
            .unwrap();
        let r = read_frame::<_, GuestMsg>(&mut b, MAX_GUEST_FRAME, T).await;
        assert!(matches!(r, Err(FrameError::Timeout(_))), "{r:?}");
    }

    #[tokio::test]
    async fn stream_roundtrip_and_eof() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write_frame(&mut a, &HostMsg::PowerOff, 1024, T)
            .await
            .unwrap();
        drop(a);
        let m: HostMsg = read_frame(&mut b, 1024, T).await.unwrap();
        assert_eq!(m, HostMsg::PowerOff);
        let r = read_frame::<_, HostMsg>(&mut b, 1024, T).await;
        assert!(matches!(r, Err(FrameError::Closed)));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode::<GuestMsg>(&data, MAX_GUEST_FRAME);
            let _ = decode_payload::<GuestMsg>(&data);
        }

        #[test]
        fn garbage_after_valid_header_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut f = Vec::new();
            f.extend_from_slice(&MAGIC);
            f.extend_from_slice(&VERSION.to_be_bytes());
            f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            f.extend_from_slice(&payload);
            let _ = decode::<GuestMsg>(&f, MAX_GUEST_FRAME);
        }

        #[test]
        fn exec_output_roundtrips(out in proptest::collection::vec(any::<u8>(), 0..512), code in any::<i32>()) {
            let m = GuestMsg::Exec(crate::msg::ExecOutput {
                exit_code: Some(code), signal: None,
                stdout: out.clone(), stderr: vec![], truncated: false, timed_out: false,
            });
            let f = encode(&m, MAX_GUEST_FRAME).unwrap();
            prop_assert_eq!(decode::<GuestMsg>(&f, MAX_GUEST_FRAME).unwrap(), m);
        }
    }
}
