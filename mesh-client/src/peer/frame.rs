//! Frames: how peer messages are delimited on the encrypted stream.
//!
//! A frame is a 4-byte big-endian length `n` and `n` bytes: a 4-byte big-endian length `j`,
//! `j` bytes of JSON (the message), and `n − 4 − j` bytes of binary body (a blob pack, or
//! nothing). The reader refuses a length over its limit before reading anything more, and
//! grows its buffer only as bytes arrive.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::peer::PeerError;

/// The largest frame during the handshake (a certificate and a signature fit in 2 KiB).
pub(crate) const MAX_HANDSHAKE_FRAME: u32 = 16 * 1024;

/// The largest frame once authenticated: one blob object at its largest, its JSON, and slack.
pub(crate) const MAX_FRAME: u32 = (mesh_core::blob::MAX_OBJECT + (1 << 20)) as u32;

/// Writes one frame: `message` as JSON, then `body`.
pub(crate) async fn write<W, M>(w: &mut W, message: &M, body: &[u8]) -> Result<(), PeerError>
where
    W: AsyncWrite + Unpin,
    M: Serialize,
{
    let json = serde_json::to_vec(message).map_err(|e| PeerError::Protocol(e.to_string()))?;
    let total = 4 + json.len() + body.len();
    let total = u32::try_from(total)
        .ok()
        .filter(|t| *t <= MAX_FRAME)
        .ok_or(PeerError::FrameTooLarge {
            len: total as u64,
            max: MAX_FRAME as u64,
        })?;
    let mut head = Vec::with_capacity(8 + json.len());
    head.extend_from_slice(&total.to_be_bytes());
    head.extend_from_slice(&(json.len() as u32).to_be_bytes());
    head.extend_from_slice(&json);
    w.write_all(&head).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame of at most `max` bytes. `first_byte` bounds the wait for the frame to
/// start (`None`: wait as long as the caller does); `rest` bounds the wait for the rest of it
/// once it started. `Ok(None)`: the stream ended cleanly before a frame.
pub(crate) async fn read<R, M>(
    r: &mut R,
    max: u32,
    first_byte: Option<Duration>,
    rest: Duration,
) -> Result<Option<(M, Vec<u8>)>, PeerError>
where
    R: AsyncRead + Unpin,
    M: DeserializeOwned,
{
    let mut len = [0u8; 4];
    let first = async {
        match r.read(&mut len[..1]).await {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(PeerError::from(e)),
        }
    };
    let started = match first_byte {
        Some(d) => tokio::time::timeout(d, first)
            .await
            .map_err(|_| PeerError::Timeout)??,
        None => first.await?,
    };
    if !started {
        return Ok(None);
    }
    let body = async {
        r.read_exact(&mut len[1..]).await?;
        let n = u32::from_be_bytes(len);
        if n > max {
            return Err(PeerError::FrameTooLarge {
                len: n as u64,
                max: max as u64,
            });
        }
        if n < 4 {
            return Err(PeerError::Protocol(format!("a frame of {n} bytes")));
        }
        let mut j = [0u8; 4];
        r.read_exact(&mut j).await?;
        let j = u32::from_be_bytes(j);
        if j > n - 4 {
            return Err(PeerError::Protocol(format!(
                "a message of {j} bytes in a frame of {n}"
            )));
        }
        let mut json = Vec::new();
        (&mut *r).take(j as u64).read_to_end(&mut json).await?;
        let mut bin = Vec::new();
        (&mut *r)
            .take((n - 4 - j) as u64)
            .read_to_end(&mut bin)
            .await?;
        if json.len() != j as usize || bin.len() != (n - 4 - j) as usize {
            return Err(PeerError::Io(
                "the peer closed the connection mid-frame".into(),
            ));
        }
        Ok((json, bin))
    };
    let (json, bin) = tokio::time::timeout(rest, body)
        .await
        .map_err(|_| PeerError::Timeout)??;
    let message = serde_json::from_slice(&json)
        .map_err(|e| PeerError::Protocol(format!("malformed message: {e}")))?;
    Ok(Some((message, bin)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(&mut a, &serde_json::json!({"op": "x"}), b"body")
            .await
            .unwrap();
        let (m, body): (serde_json::Value, _) =
            read(&mut b, MAX_FRAME, None, T).await.unwrap().unwrap();
        assert_eq!(m["op"], "x");
        assert_eq!(body, b"body");
        // A peer announcing 1 GiB is refused before anything is read or allocated.
        a.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
        let e = read::<_, serde_json::Value>(&mut b, MAX_FRAME, None, T)
            .await
            .unwrap_err();
        assert!(matches!(e, PeerError::FrameTooLarge { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn a_truncated_or_inconsistent_frame_is_a_typed_error() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        // The JSON length claims more than the frame holds.
        a.write_all(&8u32.to_be_bytes()).await.unwrap();
        a.write_all(&100u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{}{}").await.unwrap();
        let e = read::<_, serde_json::Value>(&mut b, MAX_FRAME, None, T)
            .await
            .unwrap_err();
        assert!(matches!(e, PeerError::Protocol(_)), "{e:?}");
        // Closed in the middle of a frame.
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        a.write_all(&64u32.to_be_bytes()).await.unwrap();
        a.write_all(&2u32.to_be_bytes()).await.unwrap();
        drop(a);
        let e = read::<_, serde_json::Value>(&mut b, MAX_FRAME, None, T)
            .await
            .unwrap_err();
        assert!(matches!(e, PeerError::Io(_)), "{e:?}");
        // Clean end before a frame.
        let (a, mut b) = tokio::io::duplex(16);
        drop(a);
        assert!(read::<_, serde_json::Value>(&mut b, MAX_FRAME, None, T)
            .await
            .unwrap()
            .is_none());
    }
}
