//! parl_rs patch: large frame bodies are read into buffers of their own.

use super::*;

/// Reads at most `limit` bytes per call.
struct ShortReader {
    input: Cursor<Vec<u8>>,
    limit: usize,
}

impl FrameableRead for ShortReader {}

impl AsyncRead for ShortReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let count = buffer.len().min(self.limit);
        Pin::new(&mut self.input).poll_read(cx, &mut buffer[..count])
    }
}

async fn read_messages(input: Vec<u8>, limit: usize) -> Vec<crate::ZmqMessage> {
    let source = ShortReader {
        input: Cursor::new(input),
        limit,
    };
    let mut reader = ZmqFramedRead::new(Box::new(source), Arc::new(SocketOptions::default()));
    let mut messages = Vec::new();
    while let Some(item) = reader.next().await {
        if let Message::Message(message) = item.unwrap() {
            messages.push(message);
        }
    }
    messages
}

#[async_rt::test]
async fn large_bodies_are_uniquely_owned_and_frames_around_them_intact() {
    use asynchronous_codec::Encoder;
    let large = crate::codec::zmq_codec::LARGE_BODY_MIN;
    let sizes = [3, large - 1, large, 3 * large + 7, 0, 1 << 20];
    let mut expected = crate::ZmqMessage::from(Bytes::from_static(b"head"));
    for (i, size) in sizes.into_iter().enumerate() {
        expected.push_back(Bytes::from(vec![i as u8; size]));
    }
    let mut wire = BytesMut::from(ZmqGreeting::default());
    for _ in 0..2 {
        ZmqCodec::new()
            .encode(Message::Message(expected.clone()), &mut wire)
            .unwrap();
    }
    // Whole stream in one read (bodies already buffered), and bodies split over many reads.
    for limit in [usize::MAX, 1 << 20, 5000, 7] {
        let messages = read_messages(wire.to_vec(), limit).await;
        assert_eq!(messages.len(), 2, "limit {limit}");
        for message in messages {
            assert!(message.iter().eq(expected.iter()), "limit {limit}");
            for frame in message.iter().filter(|frame| frame.len() >= large) {
                assert!(frame.is_unique(), "limit {limit}, {} bytes", frame.len());
            }
        }
    }
}

#[async_rt::test]
async fn a_stream_ending_inside_a_large_body_is_an_error() {
    let mut input = encoded_stream(&[&vec![7; 1 << 20]]);
    input.truncate(input.len() - 1);
    let mut reader = ZmqFramedRead::new(
        Box::new(Cursor::new(input)),
        Arc::new(SocketOptions::default()),
    );
    assert!(matches!(
        reader.next().await,
        Some(Ok(Message::Greeting(_)))
    ));
    assert!(matches!(
        reader.next().await,
        Some(Err(CodecError::Io(error))) if error.kind() == ErrorKind::UnexpectedEof
    ));
}

#[async_rt::test]
async fn an_oversized_message_is_refused_before_its_body_is_allocated() {
    let mut options = SocketOptions::default();
    options.max_message_size(1 << 20);
    let mut input = BytesMut::from(ZmqGreeting::default()).to_vec();
    input.push(0b0000_0010);
    input.extend_from_slice(&(1u64 << 62).to_be_bytes());
    let mut reader = ZmqFramedRead::new(Box::new(Cursor::new(input)), Arc::new(options));
    assert!(matches!(
        reader.next().await,
        Some(Ok(Message::Greeting(_)))
    ));
    assert!(matches!(
        reader.next().await,
        Some(Err(CodecError::Decode(_)))
    ));
    assert!(reader.large_body.is_none());
}
