//! The one encoder and decoder of [`Message`], used by every socket on both ends.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::{Message, MAGIC, PROTOCOL_VERSION};

const HEADER_LEN: usize = MAGIC.len() + 2;

/// A decoded message with its payload frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub message: Message,
    pub payload: Vec<Bytes>,
}

/// Why frames are not a message. Decoding never panics and never allocates more than the
/// input's size, whatever the input claims.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("frame 0 is {0} bytes, too short for the parl_rs header")]
    Truncated(usize),
    #[error("not a parl_rs message (bad magic bytes)")]
    BadMagic,
    #[error("peer speaks parl_rs protocol version {got}, this side speaks version {ours}")]
    Version { got: u16, ours: u16 },
    #[error("malformed message body: {0}")]
    Body(String),
}

/// Encodes a message and its payload into frames.
pub fn encode(message: &Message, payload: Vec<Bytes>) -> Vec<Bytes> {
    let mut head = BytesMut::with_capacity(64);
    head.put_slice(&MAGIC);
    head.put_u16_le(PROTOCOL_VERSION);
    let mut writer = head.writer();
    // Serializing our own enum into memory cannot fail: every field type is supported.
    postcard::to_io(message, &mut writer).expect("postcard encodes every Message");
    let mut frames = Vec::with_capacity(1 + payload.len());
    frames.push(writer.into_inner().freeze());
    frames.extend(payload);
    frames
}

/// Decodes frames into a message; the frames after frame 0 become the payload untouched.
pub fn decode(mut frames: Vec<Bytes>) -> Result<Envelope, DecodeError> {
    if frames.is_empty() {
        return Err(DecodeError::Empty);
    }
    let head = frames.remove(0);
    if head.len() < HEADER_LEN {
        return Err(if head.starts_with(&MAGIC[..head.len().min(4)]) && !head.is_empty() {
            DecodeError::Truncated(head.len())
        } else {
            DecodeError::BadMagic
        });
    }
    if head[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16::from_le_bytes([head[4], head[5]]);
    if version != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: version, ours: PROTOCOL_VERSION });
    }
    let message = postcard::from_bytes(&head[HEADER_LEN..]).map_err(|e| DecodeError::Body(e.to_string()))?;
    Ok(Envelope { message, payload: frames })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::*;

    fn samples() -> Vec<Message> {
        vec![
            Message::Heartbeat,
            Message::RegisterWorker(WorkerHello {
                worker_id: "w1".into(),
                hostname: "h".into(),
                pid: 7,
                cpu_num: 0,
                gpus: vec!["0".into(), "1".into()],
                version: "0.1.0".into(),
                python_version: "3.11".into(),
                log_address: "127.0.0.1:2".into(),
                hwm: 4,
            }),
            Message::JobGranted(JobGrant {
                request_id: 9,
                job_id: "j".into(),
                address: "tcp://127.0.0.1:1".into(),
                pid: 1,
                worker_id: "w".into(),
                hostname: "h".into(),
                gpus: vec!["3".into()],
                log_address: "127.0.0.1:2".into(),
            }),
            Message::ActorRequest(ActorRequest {
                request_id: u64::MAX,
                kind: CallKind::Init(InitSpec {
                    bundle: "ab12".into(),
                    log_to_driver: true,
                    resources: ActorResources { gpus: vec!["0".into()], max_memory: Some(200 << 20) },
                    options: ActorOptions::default(),
                }),
                name: "Counter".into(),
                encoding: Encoding::Portable,
            }),
            Message::ActorReply(ActorReply {
                request_id: 3,
                outcome: Outcome::Failed(RemoteFailure {
                    kind: FailureKind::User,
                    exc_type: "builtins.ValueError".into(),
                    message: "bad".into(),
                    traceback: "Traceback...".into(),
                }),
            }),
            Message::Release,
            Message::NeedFiles { hash: "ab12".into() },
            Message::ShipFiles(FileBundle::new(vec![ShippedFile {
                path: "a.py".into(),
                data: b"x=1".to_vec(),
            }])),
            Message::JobOutput { data: b"hello\n".to_vec() },
            Message::MemoryLimit(MemoryLimit { job_id: "j".into(), max_bytes: 1 << 30 }),
            Message::ActorStarted { job_id: "j".into() },
        ]
    }

    #[test]
    fn every_sample_round_trips_with_its_payload() {
        for message in samples() {
            let payload = vec![Bytes::from_static(b"p1"), Bytes::from(vec![0u8; 1000])];
            let env = decode(encode(&message, payload.clone())).unwrap();
            assert_eq!(env, Envelope { message, payload });
        }
    }

    #[test]
    fn payload_frames_are_passed_through_without_copying() {
        let big = Bytes::from(vec![7u8; 1 << 20]);
        let ptr = big.as_ptr();
        let env = decode(encode(&Message::Release, vec![big])).unwrap();
        assert_eq!(env.payload[0].as_ptr(), ptr);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert_eq!(decode(vec![]), Err(DecodeError::Empty));
        assert_eq!(decode(vec![Bytes::from_static(b"hello world")]), Err(DecodeError::BadMagic));
        assert_eq!(decode(vec![Bytes::from_static(b"XPR")]), Err(DecodeError::Truncated(3)));
        assert_eq!(decode(vec![Bytes::new()]), Err(DecodeError::BadMagic));
        let mut wrong_version = encode(&Message::Heartbeat, vec![])[0].to_vec();
        wrong_version[4] = 99;
        assert_eq!(
            decode(vec![Bytes::from(wrong_version)]),
            Err(DecodeError::Version { got: 99, ours: PROTOCOL_VERSION })
        );
        let mut unknown_variant = encode(&Message::Heartbeat, vec![])[0].to_vec();
        unknown_variant[6] = 0x7f;
        assert!(matches!(decode(vec![Bytes::from(unknown_variant)]), Err(DecodeError::Body(_))));
    }

    #[test]
    fn truncated_bodies_fail_cleanly() {
        for message in samples() {
            let head = encode(&message, vec![]).remove(0);
            for cut in HEADER_LEN..head.len() {
                let _ = decode(vec![head.slice(..cut)]);
            }
        }
    }

    #[test]
    fn a_huge_length_claim_does_not_allocate() {
        // A String claiming u32::MAX bytes inside a tiny frame must fail, not allocate 4 GiB.
        let mut head = encode(&Message::Heartbeat, vec![])[0].to_vec();
        head.truncate(HEADER_LEN);
        head.push(18); // RequestFailed
        head.push(1); // request_id
        head.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // varint u32::MAX length
        assert!(decode(vec![Bytes::from(head)]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut frame: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.7) && frame.len() >= HEADER_LEN {
                frame[..4].copy_from_slice(&MAGIC);
                frame[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            }
            let _ = decode(vec![Bytes::from(frame)]);
        }
    }
}
