//! The message decoder on arbitrary input: it must never panic, and never allocate more than
//! its input (a length field claiming gigabytes must fail, not allocate). The input is cut into
//! frames at 0xFF bytes, so multi-frame messages (payload frames) are exercised too.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use parl_core::protocol::{decode, encode, MAGIC, PROTOCOL_VERSION};

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Bytes> = data.split(|&b| b == 0xff).map(Bytes::copy_from_slice).collect();
    let _ = decode(frames.clone());
    // Also with a valid header, so that the body decoder is reached most of the time.
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    head.extend_from_slice(data);
    if let Ok(envelope) = decode(vec![Bytes::from(head)]) {
        // Whatever decodes must encode and decode to the same message.
        let again = decode(encode(&envelope.message, envelope.payload.clone())).expect("re-decodes");
        assert_eq!(again, envelope);
    }
});
