//! IRC lines on the wire: the line codec for reading, and message text cut to fit the
//! 512-byte line limit.
//!
//! A line the server relays carries our full source (`:nick!user@host `) in front of the
//! command, and the 512 bytes include it and the CRLF; so the text budget of a PRIVMSG is
//! what remains after both. Text is cut on UTF-8 character boundaries (preferring a space),
//! and a multi-line message becomes one line per non-empty text line, so CR and LF never
//! reach the wire inside a parameter.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// RFC 1459's line limit, CRLF included (tags excluded: they have their own budget).
pub const MAX_LINE: usize = 512;
/// Longest line read, tags included (IRCv3 allows 8191 bytes of tags).
const MAX_READ: usize = 8191 + MAX_LINE;
/// Assumed `user@host` length until the server shows us our real one.
pub const UNKNOWN_MASK: usize = 10 + 1 + 63;

/// Splits the byte stream into lines (CRLF or LF), decoding UTF-8 leniently: IRC has no
/// enforced encoding, and one Latin-1 line must not end the connection. An over-long line
/// is dropped, not buffered without bound.
#[derive(Default)]
pub struct LineCodec {
    discarding: bool,
}

impl Decoder for LineCodec {
    type Item = String;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        loop {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                if buf.len() > MAX_READ {
                    self.discarding = true;
                    buf.clear();
                }
                return Ok(None);
            };
            let line = buf.split_to(end + 1);
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            let mut text = &line[..end];
            if text.last() == Some(&b'\r') {
                text = &text[..text.len() - 1];
            }
            if text.is_empty() {
                continue;
            }
            return Ok(Some(String::from_utf8_lossy(text).into_owned()));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        let line = self.decode(buf)?;
        buf.advance(buf.len());
        Ok(line)
    }
}

/// Bytes of text that fit in one relayed `COMMAND target :text` line from `nick` whose
/// `user@host` is `mask_len` bytes, with `wrap` extra bytes around the text (CTCP).
pub fn text_budget(command: &str, target: &str, nick: &str, mask_len: usize, wrap: usize) -> usize {
    // ":" nick "!" mask " " command " " target " :" text "\r\n"
    let overhead = 1 + nick.len() + 1 + mask_len + 1 + command.len() + 1 + target.len() + 2 + 2;
    MAX_LINE.saturating_sub(overhead + wrap).max(1)
}

/// The text lines of a message: split at line breaks, empty lines dropped, each cut into
/// pieces of at most `budget` bytes.
pub fn message_lines(content: &str, budget: usize) -> Vec<&str> {
    content
        .split(['\n', '\r'])
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| split(l, budget))
        .collect()
}

/// Cut `text` into pieces of at most `budget` bytes on character boundaries, breaking
/// after the last space of a piece when there is one.
pub fn split(mut text: &str, budget: usize) -> Vec<&str> {
    let mut out = Vec::new();
    while text.len() > budget {
        let mut cut = budget;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // One character wider than the budget (cannot happen with a sane budget):
            // send it whole rather than loop.
            cut = text.chars().next().map_or(text.len(), char::len_utf8);
        } else if let Some(space) = text[..cut].rfind(' ').filter(|&i| i > 0) {
            cut = space + 1;
        }
        out.push(&text[..cut]);
        text = &text[cut..];
    }
    if !text.is_empty() {
        out.push(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_splits_lines_and_survives_bad_bytes() {
        let mut c = LineCodec::default();
        let mut b = BytesMut::from(&b"PING :a\r\n:x PRIVMSG #c :caf\xe9\n\r\nPART"[..]);
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "PING :a");
        assert_eq!(
            c.decode(&mut b).unwrap().unwrap(),
            ":x PRIVMSG #c :caf\u{fffd}"
        );
        assert_eq!(c.decode(&mut b).unwrap(), None);
        b.extend_from_slice(b" #c\r\n");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "PART #c");
    }

    #[test]
    fn codec_drops_overlong_lines() {
        let mut c = LineCodec::default();
        let mut b = BytesMut::from(&vec![b'a'; MAX_READ + 10][..]);
        assert_eq!(c.decode(&mut b).unwrap(), None);
        b.extend_from_slice(b"tail of it\r\nPING :x\r\n");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "PING :x");
    }

    #[test]
    fn splits_on_char_boundaries_within_budget() {
        let text = "é".repeat(300); // 600 bytes of 2-byte characters
        let parts = split(&text, 101);
        assert!(parts.iter().all(|p| p.len() <= 101));
        assert_eq!(parts.concat(), text);
        let words = "word ".repeat(50);
        let parts = split(words.trim_end(), 22);
        assert_eq!(parts[0], "word word word word ");
        assert_eq!(parts.concat(), words.trim_end());
    }

    #[test]
    fn multi_line_content_becomes_lines() {
        assert_eq!(
            message_lines("one\r\ntwo\n\nQUIT :x\r", 400),
            vec!["one", "two", "QUIT :x"]
        );
        assert!(message_lines("\r\n \n", 400).is_empty());
    }

    #[test]
    fn budget_leaves_room_for_the_relayed_source() {
        let b = text_budget("PRIVMSG", "#chan", "nick", UNKNOWN_MASK, 0);
        let line = format!(
            ":nick!{} PRIVMSG #chan :{}\r\n",
            "u".repeat(UNKNOWN_MASK),
            "x".repeat(b)
        );
        assert_eq!(line.len(), MAX_LINE);
    }
}
