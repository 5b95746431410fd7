//! Authenticated sessions: after the key handshake ([`crate::auth`]), every message on a
//! connection carries a tag under a key that only the two ends of that handshake know.
//!
//! The handshake proves that both ends hold the cluster key, but a proof alone proves nothing
//! about the messages that follow: a peer without the key that sits between a key holder and
//! a server (it took over a port, or a user pointed a client at it) could relay the handshake
//! and then send messages of its own. So the handshake also yields session keys, and from then
//! on a message counts only if its tag checks.
//!
//! # The construction
//! - **Transcript** (`auth::Transcript`): a label with the protocol version, the service the
//!   connecting peer meant to reach (master, worker, job), the protection both sides asked
//!   for, and both nonces. Both proofs (HMAC-SHA256 under the cluster key) cover it.
//! - **Keys**: HKDF-SHA256 with the cluster key as input keying material and the transcript
//!   as salt, expanded with one label per direction into two 32-byte keys: one for messages
//!   from the connecting peer to the server, one for the other way.
//! - **Tag per message** ([`Protection::Mac`]): keyed BLAKE3 under the direction's key over
//!   the message's sequence number (counted from 0 per direction, never sent), its number
//!   of frames, and each frame's length and bytes; a frame of [`DIGESTED_FRAME_MIN`] bytes
//!   or more enters as its (unkeyed, collision-resistant) BLAKE3 hash instead of its bytes,
//!   so that large payloads can be hashed while they are written and while they arrive. The
//!   32-byte tag travels as an extra last frame, and may be written after the frames it
//!   covers ([`Sealer::tag`]).
//! - **Encryption** ([`Protection::Encrypt`], `xparl start --encrypt`): each frame is sealed
//!   with ChaCha20-Poly1305 under the direction's key, with the nonce made of the sequence
//!   number and the frame's index, and the number of frames as associated data.
//!
//! # What it resists
//! - **Relay**: a relay without the cluster key can forward the handshake, but cannot derive
//!   the session keys, so every message it makes up fails its tag. Forwarding messages
//!   unchanged is all it can do, which gives it nothing it could not get from a TCP proxy.
//!   The service is bound too: a worker's handshake with a master cannot be relayed to a job.
//! - **Replay and reordering**: the sequence number is implicit; a message replayed,
//!   dropped or moved is checked under a number it was not tagged with, and fails.
//! - **Truncation**: the frame count and every frame's length are tagged, so a message cut
//!   short (or one with frames added) fails.
//! - **Reflection**: the two directions have different keys, so a message sent back to its
//!   sender fails.
//! - **Across connections**: fresh nonces on both sides make every session's keys new.
//!
//! A message that fails is never decoded: the connection is closed and the event logged.
//! Nothing is unpickled before its tag checks.

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, Tag};
use thiserror::Error;

/// A 32-byte key for one direction of one session.
pub type DirectionKey = [u8; 32];

const MAC_LEN: usize = 32;
/// Frames at least this large enter a tag as their BLAKE3 hash (see the module docs).
pub const DIGESTED_FRAME_MIN: usize = 64 * 1024;
const AEAD_TAG_LEN: usize = 16;

/// How a session protects its messages; the stronger of what the two ends asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protection {
    /// Every message authenticated (keyed BLAKE3); contents readable on the network.
    Mac,
    /// Every frame encrypted and authenticated (ChaCha20-Poly1305).
    Encrypt,
}

impl Protection {
    pub fn from_encrypt(encrypt: bool) -> Protection {
        if encrypt {
            Protection::Encrypt
        } else {
            Protection::Mac
        }
    }
}

/// Why a message was not accepted in a session.
#[derive(Debug, Error, PartialEq)]
pub enum SessionError {
    #[error("message {seq} has no authentication tag")]
    MissingTag { seq: u64 },
    #[error("message {seq} failed authentication (forged, replayed, reordered or cut short)")]
    BadTag { seq: u64 },
    #[error("the session has run out of sequence numbers")]
    Exhausted,
    #[error("a frame of {bytes} bytes is too large to encrypt")]
    TooLargeToEncrypt { bytes: usize },
}

enum Cipher {
    Mac(DirectionKey),
    Encrypt(Box<ChaCha20Poly1305>),
}

impl Cipher {
    fn new(protection: Protection, key: &DirectionKey) -> Cipher {
        match protection {
            Protection::Mac => Cipher::Mac(*key),
            Protection::Encrypt => Cipher::Encrypt(Box::new(ChaCha20Poly1305::new(key.into()))),
        }
    }
}

/// The hash a large frame enters a tag as (computed by the transport as the frame arrives,
/// if it can; see [`Opener::open_digested`]).
pub fn frame_digest(frame: &[u8]) -> blake3::Hash {
    blake3::hash(frame)
}

/// The tag of one message: keyed BLAKE3 over the sequence number, the frame count, and
/// every frame's length and bytes, or hash for a large frame (the length says which, so
/// the encoding stays injective). `digests[i]`, when given, is frame i's hash.
fn mac(key: &DirectionKey, seq: u64, frames: &[Bytes], digests: &[Option<[u8; 32]>]) -> blake3::Hash {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(&seq.to_le_bytes());
    hasher.update(&(frames.len() as u64).to_le_bytes());
    for (index, frame) in frames.iter().enumerate() {
        hasher.update(&(frame.len() as u64).to_le_bytes());
        if frame.len() >= DIGESTED_FRAME_MIN {
            let digest =
                digests.get(index).copied().flatten().unwrap_or_else(|| *frame_digest(frame).as_bytes());
            hasher.update(&digest);
        } else {
            hasher.update(frame);
        }
    }
    hasher.finalize()
}

/// The AEAD nonce of frame `index` of message `seq`: unique per direction key.
fn nonce(seq: u64, index: usize) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&seq.to_le_bytes());
    nonce[8..].copy_from_slice(&(index as u32).to_le_bytes());
    nonce.into()
}

fn associated_data(frames: usize) -> [u8; 8] {
    (frames as u64).to_le_bytes()
}

/// The sending half of a session: tags (or encrypts) each message in order.
pub struct Sealer {
    cipher: Cipher,
    next: u64,
}

impl Sealer {
    pub fn new(protection: Protection, key: &DirectionKey) -> Sealer {
        Sealer { cipher: Cipher::new(protection, key), next: 0 }
    }

    /// The message as it goes on the wire. Messages must be sent in the order they were
    /// sealed: the peer checks each under the next sequence number.
    pub fn seal(&mut self, mut frames: Vec<Bytes>) -> Result<Vec<Bytes>, SessionError> {
        match &self.cipher {
            Cipher::Mac(_) => {
                let tag = self.tag(&frames)?;
                frames.push(tag);
                Ok(frames)
            }
            Cipher::Encrypt(aead) => {
                let seq = self.next;
                self.next = seq.checked_add(1).ok_or(SessionError::Exhausted)?;
                let aad = associated_data(frames.len());
                let mut sealed = Vec::with_capacity(frames.len());
                for (index, frame) in frames.into_iter().enumerate() {
                    // The caller's buffer (a lent numpy array) is never written to.
                    let mut buffer = BytesMut::with_capacity(frame.len() + AEAD_TAG_LEN);
                    buffer.extend_from_slice(&frame);
                    let tag = aead
                        .encrypt_in_place_detached(&nonce(seq, index), &aad, &mut buffer)
                        .map_err(|_| SessionError::TooLargeToEncrypt { bytes: frame.len() })?;
                    buffer.extend_from_slice(&tag);
                    sealed.push(buffer.freeze());
                }
                Ok(sealed)
            }
        }
    }
}

impl Sealer {
    /// Whether messages leave as they are, with a tag frame of their own after them (not
    /// when they are encrypted).
    pub fn tags_apart(&self) -> bool {
        matches!(self.cipher, Cipher::Mac(_))
    }

    /// Takes back the sequence number of the last message sealed, which was never sent (the
    /// transport dropped it before writing any of it): the next message takes its place.
    pub fn forget_last(&mut self) {
        self.next = self.next.saturating_sub(1);
    }

    /// The tag frame of the next message, `frames`, to be sent right after them: a caller
    /// that writes the frames first lets the transfer overlap this hashing.
    pub fn tag(&mut self, frames: &[Bytes]) -> Result<Bytes, SessionError> {
        let Cipher::Mac(key) = &self.cipher else { unreachable!("only tags_apart() sealers tag apart") };
        let seq = self.next;
        self.next = seq.checked_add(1).ok_or(SessionError::Exhausted)?;
        Ok(Bytes::copy_from_slice(mac(key, seq, frames, &[]).as_bytes()))
    }
}

/// The receiving half of a session: checks (or decrypts) each message in order.
pub struct Opener {
    cipher: Cipher,
    next: u64,
}

impl Opener {
    pub fn new(protection: Protection, key: &DirectionKey) -> Opener {
        Opener { cipher: Cipher::new(protection, key), next: 0 }
    }

    /// The message's frames if its tag checks under the next sequence number. After an
    /// error the session is broken: the caller closes the connection.
    pub fn open(&mut self, frames: Vec<Bytes>) -> Result<Vec<Bytes>, SessionError> {
        self.open_digested(frames, &[])
    }

    /// [`Opener::open`], with the hashes of large frames the transport computed while they
    /// arrived (`digests[i]` for frame i, if any): those frames are not read again.
    pub fn open_digested(
        &mut self,
        mut frames: Vec<Bytes>,
        digests: &[Option<[u8; 32]>],
    ) -> Result<Vec<Bytes>, SessionError> {
        let seq = self.next;
        self.next = seq.checked_add(1).ok_or(SessionError::Exhausted)?;
        match &self.cipher {
            Cipher::Mac(key) => {
                let tag = frames
                    .pop()
                    .filter(|tag| tag.len() == MAC_LEN)
                    .ok_or(SessionError::MissingTag { seq })?;
                let tag: [u8; MAC_LEN] = tag[..].try_into().expect("length checked");
                // `blake3::Hash` compares in constant time.
                if mac(key, seq, &frames, digests) != blake3::Hash::from(tag) {
                    return Err(SessionError::BadTag { seq });
                }
                Ok(frames)
            }
            // Every message has a frame 0; an empty one would have nothing to check.
            Cipher::Encrypt(_) if frames.is_empty() => Err(SessionError::MissingTag { seq }),
            Cipher::Encrypt(aead) => {
                let aad = associated_data(frames.len());
                frames
                    .into_iter()
                    .enumerate()
                    .map(|(index, frame)| {
                        let split =
                            frame.len().checked_sub(AEAD_TAG_LEN).ok_or(SessionError::MissingTag { seq })?;
                        // A received large frame is uniquely owned: decrypted where it lies.
                        let mut buffer =
                            frame.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                        let tag = Tag::clone_from_slice(&buffer.split_off(split));
                        aead.decrypt_in_place_detached(&nonce(seq, index), &aad, &mut buffer, &tag)
                            .map_err(|_| SessionError::BadTag { seq })?;
                        Ok(buffer.freeze())
                    })
                    .collect()
            }
        }
    }
}

/// Both halves of one end of a session.
pub struct Session {
    pub sealer: Sealer,
    pub opener: Opener,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        write!(f, "Session(sent {}, received {})", self.sealer.next, self.opener.next)
    }
}

impl Session {
    /// One end's session from the two direction keys (`send` for what this end sends).
    pub fn new(protection: Protection, send: &DirectionKey, receive: &DirectionKey) -> Session {
        Session { sealer: Sealer::new(protection, send), opener: Opener::new(protection, receive) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(protection: Protection) -> (Session, Session) {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        (Session::new(protection, &a, &b), Session::new(protection, &b, &a))
    }

    fn frames(parts: &[&'static [u8]]) -> Vec<Bytes> {
        parts.iter().map(|part| Bytes::from_static(part)).collect()
    }

    fn each_protection(test: impl Fn(Protection)) {
        test(Protection::Mac);
        test(Protection::Encrypt);
    }

    #[test]
    fn messages_in_order_open_to_what_was_sent() {
        each_protection(|protection| {
            let (mut client, mut server) = pair(protection);
            for message in [
                frames(&[b"head"]),
                frames(&[b"head", b"", b"payload"]),
                frames(&[b"x", b"y", b"z", b"w", b"v"]),
            ] {
                let sealed = client.sealer.seal(message.clone()).unwrap();
                assert_eq!(server.opener.open(sealed).unwrap(), message);
                let back = server.sealer.seal(message.clone()).unwrap();
                assert_eq!(client.opener.open(back).unwrap(), message);
            }
        });
    }

    #[test]
    fn encryption_hides_the_contents() {
        let (mut client, _) = pair(Protection::Encrypt);
        let sealed = client.sealer.seal(frames(&[b"secret pickle"])).unwrap();
        assert!(!sealed[0].windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn forged_replayed_reordered_truncated_and_reflected_messages_fail() {
        each_protection(|protection| {
            let bad = |result: Result<Vec<Bytes>, SessionError>| {
                assert!(matches!(result, Err(SessionError::BadTag { .. } | SessionError::MissingTag { .. })))
            };
            // Forged: a byte changed.
            let (mut client, mut server) = pair(protection);
            let mut sealed = client.sealer.seal(frames(&[b"head", b"payload"])).unwrap();
            let mut changed = sealed[1].to_vec();
            changed[0] ^= 1;
            sealed[1] = changed.into();
            bad(server.opener.open(sealed));
            // Replayed.
            let (mut client, mut server) = pair(protection);
            let first = client.sealer.seal(frames(&[b"one"])).unwrap();
            server.opener.open(first.clone()).unwrap();
            bad(server.opener.open(first));
            // Reordered.
            let (mut client, mut server) = pair(protection);
            let _first = client.sealer.seal(frames(&[b"one"])).unwrap();
            let second = client.sealer.seal(frames(&[b"two"])).unwrap();
            bad(server.opener.open(second));
            // Truncated: a frame dropped, or the tag missing.
            let (mut client, mut server) = pair(protection);
            let mut sealed = client.sealer.seal(frames(&[b"head", b"a", b"b"])).unwrap();
            sealed.remove(1);
            bad(server.opener.open(sealed));
            let (mut client, mut server) = pair(protection);
            bad(server.opener.open(client.sealer.seal(frames(&[b"head"])).unwrap()[..0].to_vec()));
            // Reflected back to its sender.
            let (mut client, _) = pair(protection);
            let sealed = client.sealer.seal(frames(&[b"head"])).unwrap();
            bad(client.opener.open(sealed));
            // Made up without the key.
            let (_, mut server) = pair(protection);
            bad(server.opener.open(frames(&[b"head", &[0u8; 32]])));
        });
    }

    #[test]
    fn a_message_the_transport_dropped_gives_its_number_to_the_next() {
        each_protection(|protection| {
            let (mut client, mut server) = pair(protection);
            let _dropped = client.sealer.seal(frames(&[b"never sent"])).unwrap();
            client.sealer.forget_last();
            let sealed = client.sealer.seal(frames(&[b"sent"])).unwrap();
            assert_eq!(server.opener.open(sealed).unwrap(), frames(&[b"sent"]));
        });
    }

    #[test]
    fn large_frames_hashed_on_arrival_check_like_the_rest() {
        let big = Bytes::from(vec![3u8; DIGESTED_FRAME_MIN + 1]);
        let message = vec![Bytes::from_static(b"head"), big.clone()];
        let digests = [None, Some(*frame_digest(&big).as_bytes())];
        // Tagged apart (the frames sent first), then checked with the transport's hash.
        let (mut client, mut server) = pair(Protection::Mac);
        let mut sealed = message.clone();
        sealed.push(client.sealer.tag(&message).unwrap());
        assert_eq!(server.opener.open_digested(sealed, &digests).unwrap(), message);
        // A hash that does not match the frame fails.
        let sealed = client.sealer.seal(message.clone()).unwrap();
        assert!(server.opener.open_digested(sealed, &[None, Some([0; 32])]).is_err());
    }

    #[test]
    fn a_received_large_frame_is_decrypted_in_place() {
        let (mut client, mut server) = pair(Protection::Encrypt);
        let sealed = client.sealer.seal(vec![Bytes::from(vec![7u8; 1 << 20])]).unwrap();
        // What the transport hands over is uniquely owned, like this copy.
        let received: Vec<Bytes> = sealed.iter().map(|frame| Bytes::from(frame.to_vec())).collect();
        let address = received[0].as_ptr();
        let opened = server.opener.open(received).unwrap();
        assert_eq!(opened[0].as_ptr(), address);
        assert_eq!(opened[0].len(), 1 << 20);
    }
}
