//! Turning the command's output bytes into text: streamed standard output and the tail of standard error.

/// Decodes a byte stream as UTF-8 chunk by chunk, never splitting a character between two chunks.
#[derive(Debug, Default)]
pub(crate) struct Utf8Decoder {
    /// The start of a character whose remaining bytes have not been read yet.
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// Decodes `bytes` after whatever was held back, holding back an unfinished character at the end.
    /// Invalid bytes become U+FFFD.
    pub(crate) fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let complete = self.pending.len() - truncated_suffix_len(&self.pending);
        let text = String::from_utf8_lossy(&self.pending[..complete]).into_owned();
        self.pending.drain(..complete);
        text
    }

    /// Decodes what was held back once the stream has ended: a character that never finished is U+FFFD.
    pub(crate) fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

/// How many bytes at the end of `bytes` are the start of a character that may still be completed.
fn truncated_suffix_len(bytes: &[u8]) -> usize {
    // The invalid part of the last chunk ends the input; it is an unfinished character exactly when
    // decoding it on its own fails for want of more bytes rather than on a bad byte.
    let Some(last) = bytes.utf8_chunks().last() else {
        return 0;
    };
    match std::str::from_utf8(last.invalid()) {
        Err(err) if err.error_len().is_none() => last.invalid().len(),
        _ => 0,
    }
}

/// The last bytes of a stream, up to a limit.
#[derive(Debug)]
pub(crate) struct Tail {
    bytes: Vec<u8>,
    limit: usize,
}

impl Tail {
    /// An empty tail that keeps at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
        }
    }

    /// Appends `chunk`, forgetting the oldest bytes beyond the limit.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        let chunk = &chunk[chunk.len().saturating_sub(self.limit)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.bytes.extend_from_slice(chunk);
    }

    /// The tail as trimmed text.
    pub(crate) fn text(&self) -> String {
        // The cut may have fallen inside a character: drop its orphaned continuation bytes rather than
        // open the message with U+FFFD.
        let start = self
            .bytes
            .iter()
            .take(3)
            .take_while(|&&b| b & 0xC0 == 0x80)
            .count();
        String::from_utf8_lossy(&self.bytes[start..])
            .trim()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_between_reads_come_out_whole() {
        let mut decoder = Utf8Decoder::default();
        let bytes = "a€b😀".as_bytes();
        let mut text = String::new();
        for byte in bytes {
            text.push_str(&decoder.decode(std::slice::from_ref(byte)));
            assert!(!text.contains('\u{FFFD}'), "{text:?}");
        }
        text.push_str(&decoder.finish());
        assert_eq!(text, "a€b😀");
    }

    #[test]
    fn invalid_and_unfinished_bytes_become_replacement_characters() {
        let mut decoder = Utf8Decoder::default();
        assert_eq!(decoder.decode(b"a\xffb\xe2\x82"), "a\u{FFFD}b");
        assert_eq!(decoder.decode(b"\xac\xe2"), "€");
        assert_eq!(decoder.finish(), "\u{FFFD}");
        assert_eq!(decoder.finish(), "");
    }

    #[test]
    fn tail_keeps_the_last_bytes_without_a_broken_first_character() {
        let mut tail = Tail::new(5);
        tail.push(b"hello ");
        tail.push("wé".as_bytes());
        tail.push(b"!\n");
        assert_eq!(tail.text(), "wé!");
        // The last three bytes of "é!\n" start with the second byte of "é".
        let mut tail = Tail::new(3);
        tail.push("é!\n".as_bytes());
        assert_eq!(tail.text(), "!");
        assert_eq!(Tail::new(0).text(), "");
    }
}
