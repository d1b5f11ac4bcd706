//! Server-Sent Events, read from a blocking byte stream: the `data:` payloads of a streamed
//! OpenAI response, one per event.
//!
//! The parsing rules are the WHATWG HTML standard's "event stream interpretation": lines end in
//! LF, CRLF or CR; a line starting with `:` is a comment; `field: value` drops one space after
//! the colon; `data` lines of one event join with LF; a blank line dispatches the event; an
//! event without data is dropped. The maintained SSE crates (eventsource-stream, sse-codec,
//! eventsource-client) are async; dcoder's client is blocking `ureq`, so this is the few lines
//! of the standard it needs.

use std::io::BufRead;

use anyhow::{bail, Context, Result};

/// Longest line accepted: a diffusing chunk carries a whole canvas with per-position data, far
/// below this; a server that sends more is broken or hostile.
const MAX_LINE: u64 = 16 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when the server named the event type.
    pub event: Option<String>,
    pub data: String,
}

/// The events of a stream, in order; ends when the stream does.
pub struct Events<R> {
    reader: R,
    line: Vec<u8>,
    /// The previous line ended in CR: an LF starting this one belongs to it.
    after_cr: bool,
}

impl<R: BufRead> Events<R> {
    pub fn new(reader: R) -> Self {
        Events {
            reader,
            line: Vec::new(),
            after_cr: false,
        }
    }

    /// The next line without its terminator; `None` at the end of the stream.
    fn next_line(&mut self) -> Result<Option<String>> {
        self.line.clear();
        loop {
            let buf = self.reader.fill_buf().context("reading the event stream")?;
            if buf.is_empty() {
                if self.line.is_empty() {
                    return Ok(None);
                }
                break;
            }
            if std::mem::take(&mut self.after_cr) && buf[0] == b'\n' {
                self.reader.consume(1);
                continue;
            }
            match buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.after_cr = buf[i] == b'\r';
                    self.line.extend_from_slice(&buf[..i]);
                    self.reader.consume(i + 1);
                    break;
                }
                None => {
                    let n = buf.len();
                    self.line.extend_from_slice(buf);
                    self.reader.consume(n);
                }
            }
            if self.line.len() as u64 > MAX_LINE {
                bail!("the event stream sent a line over {} MiB", MAX_LINE >> 20);
            }
        }
        let line = std::mem::take(&mut self.line);
        String::from_utf8(line)
            .map(Some)
            .context("the event stream is not UTF-8")
    }
}

impl<R: BufRead> Iterator for Events<R> {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        let mut data: Option<String> = None;
        let mut event = None;
        loop {
            let line = match self.next_line() {
                Ok(Some(line)) => line,
                // The stream ended: an event not yet dispatched by a blank line is dropped,
                // as the standard says.
                Ok(None) => return None,
                Err(e) => return Some(Err(e)),
            };
            if line.is_empty() {
                match data.take() {
                    Some(data) => return Some(Ok(Event { event, data })),
                    None => {
                        event = None;
                        continue;
                    }
                }
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_string()),
                },
                "event" => event = Some(value.to_string()),
                // `id` and `retry` matter to reconnecting browsers, not to one response.
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &[u8]) -> Vec<Event> {
        Events::new(text)
            .collect::<Result<Vec<_>>>()
            .expect("parses")
    }

    fn data(d: &str) -> Event {
        Event {
            event: None,
            data: d.into(),
        }
    }

    #[test]
    fn data_lines_join_and_blank_lines_dispatch() {
        let got = events(
            b": keep-alive\n\ndata: {\"a\":1}\n\ndata: one\ndata:two\n\nevent: x\ndata: [DONE]\n\n",
        );
        assert_eq!(
            got,
            vec![
                data("{\"a\":1}"),
                data("one\ntwo"),
                Event {
                    event: Some("x".into()),
                    data: "[DONE]".into()
                }
            ]
        );
    }

    #[test]
    fn crlf_and_lone_cr_end_lines_and_an_unfinished_event_is_dropped() {
        assert_eq!(
            events(b"data: a\r\n\r\ndata: b\r\rdata: c"),
            vec![data("a"), data("b")]
        );
    }

    #[test]
    fn a_line_split_across_reads_is_one_line() {
        // A one-byte buffer: every line arrives in pieces, CR and LF in separate reads.
        let text: &[u8] = b"data: hello world\r\n\r\n";
        let reader = std::io::BufReader::with_capacity(1, text);
        let got: Vec<Event> = Events::new(reader).collect::<Result<_>>().expect("parses");
        assert_eq!(got, vec![data("hello world")]);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let got: Vec<Result<Event>> = Events::new(&b"data: \xff\n\n"[..]).collect();
        assert!(got[0].is_err());
    }
}
