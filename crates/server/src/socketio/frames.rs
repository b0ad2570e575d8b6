//! Several Engine.IO packets as WebSocket text frames in one buffer, for one write.
//!
//! When several replies finish together (32 requests in flight on one connection), writing
//! each as its own message costs a `write` per reply: tungstenite writes every message at
//! once, because its write buffer is set to 0 so that no idle connection keeps one (a
//! tungstenite buffer keeps its capacity for the connection's life). Framing them here
//! instead puts them all in one buffer that lives only for the write.

use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// `packets` as unmasked (server-to-client) final text frames, in order, in one buffer.
pub(crate) fn text_frames(packets: &[String]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    // 10 bytes: the largest header without a mask (1 + 1 + 8-byte length).
    let size = packets.iter().map(|p| p.len() + 10).sum();
    let mut buf = Vec::with_capacity(size);
    for packet in packets {
        // Writing to a Vec cannot fail.
        let _ = header.format(packet.len() as u64, &mut buf);
        buf.extend_from_slice(packet.as_bytes());
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};

    /// What a client's WebSocket reads from the buffer.
    fn read_all(buf: Vec<u8>) -> Vec<Message> {
        let mut client = WebSocket::from_raw_socket(Cursor::new(buf), Role::Client, None);
        let mut got = Vec::new();
        while let Ok(m) = client.read() {
            got.push(m);
        }
        got
    }

    #[test]
    fn frames_read_back_as_the_same_messages_in_order() {
        // One of each header length: 7-bit, 16-bit and 64-bit.
        let packets = vec![
            "430[{\"a\":1}]".to_owned(),
            "4".repeat(126),
            "x".repeat(300),
            "é".repeat(40_000),
            String::new(),
        ];
        let got = read_all(text_frames(&packets));
        let want: Vec<Message> = packets.iter().map(|p| Message::text(p.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_buffer_holds_nothing_but_the_frames() {
        let packets = vec!["2".to_owned(), "3probe".to_owned()];
        assert_eq!(text_frames(&packets), b"\x81\x012\x81\x063probe");
    }
}
