//! Streaming a job's output to its client (`log_to_driver`): the job's stdout and stderr go
//! to its log file (C-level output included); this task follows the file and sends each
//! complete line to the client.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use crate::connection::Outbox;
use crate::protocol::Message;
use crate::transport::PeerId;

const POLL: Duration = Duration::from_millis(100);
/// At most this much output per message; a longer line is sent in pieces.
const MAX_CHUNK: usize = 64 * 1024;

/// Follows `log_file` from its current end and sends new lines to `peer` until the socket
/// task is gone.
pub fn stream(log_file: PathBuf, outbox: Outbox, peer: PeerId) {
    tokio::spawn(async move {
        let Ok(mut file) = std::fs::File::open(&log_file) else { return };
        let _ = file.seek(SeekFrom::End(0));
        let mut pending = Vec::new();
        let mut buf = vec![0u8; MAX_CHUNK];
        while !outbox.is_closed() {
            tokio::time::sleep(POLL).await;
            while let Ok(n @ 1..) = file.read(&mut buf) {
                pending.extend_from_slice(&buf[..n]);
            }
            let cut = match pending.iter().rposition(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None if pending.len() >= MAX_CHUNK => pending.len(),
                None => continue,
            };
            let data: Vec<u8> = pending.drain(..cut).collect();
            if !outbox.reply(&peer, &Message::JobOutput { data }) {
                return;
            }
        }
    });
}
