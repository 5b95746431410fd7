//! What a peer's bytes meet first: the session layer that checks each message's tag (or
//! decrypts it), and the message decoder. On arbitrary input neither may panic, nor allocate
//! more than its input (a length field claiming gigabytes must fail, not allocate). The input
//! is cut into frames at 0xFF bytes, so multi-frame messages (payload frames) are exercised too.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parl_core::protocol::{decode, encode, MAGIC, PROTOCOL_VERSION};
use parl_core::session::{Opener, Protection, Sealer};

const KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Bytes> = data.split(|&b| b == 0xff).map(Bytes::copy_from_slice).collect();
    let _ = decode(frames.clone());
    for protection in [Protection::Mac, Protection::Encrypt] {
        // Made-up frames never pass a session's check.
        let forged = Opener::new(protection, &KEY).open(frames.clone());
        assert!(forged.is_err(), "{protection:?}: forged frames passed");
        // Sealed frames open to themselves, and fail once any byte is changed.
        let sealed = Sealer::new(protection, &KEY).seal(frames.clone()).expect("seals");
        assert_eq!(Opener::new(protection, &KEY).open(sealed.clone()).expect("opens"), frames);
        if let Some(index) = data.first().map(|&b| b as usize % sealed.len()) {
            let mut changed = sealed.clone();
            let mut frame = changed[index].to_vec();
            match frame.first_mut() {
                Some(byte) => *byte ^= 1,
                None => frame.push(0),
            }
            changed[index] = Bytes::from(frame);
            assert!(
                Opener::new(protection, &KEY).open(changed).is_err(),
                "{protection:?}: a changed byte passed"
            );
        }
    }
    // Also with a valid header, so that the body decoder is reached most of the time.
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    head.extend_from_slice(data);
    if let Ok(envelope) = decode(vec![Bytes::from(head)]) {
        // Whatever decodes must encode and decode to the same message: compared as encoded
        // bytes, since a float that is NaN (a worker's load) is not equal to itself.
        let encoded = encode(&envelope.message, envelope.payload.clone());
        let again = decode(encoded.clone()).expect("re-decodes");
        assert_eq!(encode(&again.message, again.payload), encoded);
    }
});
