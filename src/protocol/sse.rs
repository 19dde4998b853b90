//! A Server-Sent Events parser: bytes in (in whatever chunks the network gives), messages out.
//! Used by the load tool as a client, and by a node relaying another node's stream.

/// One dispatched SSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// The block's last comment line, without the `:` (the relay's timestamp rides there).
    pub comment: Option<String>,
}

/// Incremental parser; keeps an incomplete message between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Feeds a chunk and returns the messages it completed. Comments (`: keep-alive`) and blocks
    /// without `data` are skipped.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.buf.extend(chunk.iter().copied().filter(|&b| b != b'\r'));
        let mut out = Vec::new();
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = self.buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block[..end]);
            let mut msg = SseMessage { id: None, event: None, data: String::new(), comment: None };
            let mut has_data = false;
            for line in text.split('\n') {
                if let Some(comment) = line.strip_prefix(':') {
                    msg.comment = Some(comment.trim().to_string());
                    continue;
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line, ""),
                };
                match field {
                    "id" => msg.id = Some(value.to_string()),
                    "event" => msg.event = Some(value.to_string()),
                    "data" => {
                        if has_data {
                            msg.data.push('\n');
                        }
                        msg.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                out.push(msg);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_split_across_chunks_are_reassembled() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nid: 3\nevent: ma").is_empty());
        let out = p.feed(b"tch\ndata: {\"id\":3}\n\n: t=17\nid: 4\r\ndata: a\r\ndata: b\r\n\r\n");
        assert_eq!(
            out,
            vec![
                SseMessage {
                    id: Some("3".into()),
                    event: Some("match".into()),
                    data: "{\"id\":3}".into(),
                    comment: None
                },
                SseMessage { id: Some("4".into()), event: None, data: "a\nb".into(), comment: Some("t=17".into()) },
            ]
        );
    }
}
