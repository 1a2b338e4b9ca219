//! Accepts any `:authority` a client sends on the etcd API.
//!
//! etcdctl 3.4 given an endpoint with its scheme (`--endpoints
//! http://127.0.0.1:2379`, and every advertised URL it dials for `--cluster`)
//! sends that whole URL as the HTTP/2 `:authority`. etcd's Go server takes
//! it; `h2` refuses it as malformed and resets the stream (`RST_STREAM ...
//! PROTOCOL_ERROR`), and offers no way to relax that. So the client side of
//! each accepted connection passes through [`LenientAuthority`]: it decodes
//! the first request's header block, and if its authority is not one `h2`
//! accepts, rewrites every header block of that connection (the authority cut
//! to its `host:port`) as literals without indexing, so the server's HPACK
//! table stays empty and in step. A connection whose first authority is fine
//! is passed through untouched from then on, and so is a connection that
//! does not open with HTTP/2's preface (HTTP/1.1, for the HTTP face).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::conn::Incoming;

/// What every HTTP/2 connection starts with (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PREFACE_LEN: usize = H2_PREFACE.len();
const FRAME_HEADER_LEN: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// HTTP/2's default `SETTINGS_MAX_FRAME_SIZE`, which `h2`'s server keeps.
const MAX_FRAME: usize = 16_384;

/// Every connection of `incoming` with a lenient `:authority`.
pub(crate) fn lenient(incoming: Incoming) -> Incoming {
    use futures::StreamExt;
    Box::pin(incoming.map(|r| r.map(|io| io.layered(LenientAuthority::new))))
}

enum Mode {
    /// No header block seen yet.
    Inspect,
    /// Header blocks are decoded and written again.
    Rewrite,
    /// Bytes go through as they are.
    Pass,
}

/// A header block being gathered: HEADERS, then CONTINUATIONs.
struct Block {
    stream: u32,
    end_stream: bool,
    fragment: Vec<u8>,
    /// The frames as received, for a connection that turns out to need nothing.
    original: Vec<u8>,
}

pub(crate) struct LenientAuthority<S> {
    io: S,
    mode: Mode,
    decoder: loona_hpack::Decoder<'static>,
    preface_left: usize,
    /// Received, not yet parsed.
    raw: Vec<u8>,
    /// Ready for the server.
    out: Vec<u8>,
    out_at: usize,
    block: Option<Block>,
    eof: bool,
}

impl<S> LenientAuthority<S> {
    fn new(io: S) -> Self {
        LenientAuthority {
            io,
            mode: Mode::Inspect,
            decoder: loona_hpack::Decoder::new(),
            preface_left: PREFACE_LEN,
            raw: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            block: None,
            eof: false,
        }
    }

    /// Moves whatever can be decided from `raw` to `out`.
    fn process(&mut self) -> io::Result<()> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.raw.len());
            let at = PREFACE_LEN - self.preface_left;
            if self.raw[..n] != H2_PREFACE[at..at + n] {
                // Not HTTP/2 (an HTTP/1.1 request for the HTTP face): nothing
                // to rewrite on this connection.
                self.preface_left = 0;
                self.mode = Mode::Pass;
            } else {
                self.out.extend(self.raw.drain(..n));
                self.preface_left -= n;
            }
        }
        while self.preface_left == 0 && !matches!(self.mode, Mode::Pass) {
            let Some(header) = self.raw.get(..FRAME_HEADER_LEN) else {
                return Ok(());
            };
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (kind, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            if self.raw.len() < FRAME_HEADER_LEN + len {
                return Ok(());
            }
            let frame: Vec<u8> = self.raw.drain(..FRAME_HEADER_LEN + len).collect();
            let payload = &frame[FRAME_HEADER_LEN..];
            match (kind, self.block.as_mut()) {
                (HEADERS, None) => {
                    let fragment = headers_fragment(payload, flags).ok_or_else(malformed)?;
                    self.block = Some(Block {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        fragment: fragment.to_vec(),
                        original: frame.clone(),
                    });
                }
                (CONTINUATION, Some(b)) if b.stream == stream => {
                    b.fragment.extend_from_slice(payload);
                    b.original.extend_from_slice(&frame);
                }
                // Anything else inside a header block is a protocol error the
                // server reports itself.
                _ => {
                    self.out.extend_from_slice(&frame);
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                let block = self.block.take().expect("a block is open");
                self.finish(block)?;
            }
        }
        if matches!(self.mode, Mode::Pass) && self.block.is_none() {
            self.out.append(&mut self.raw);
        }
        Ok(())
    }

    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {e}")))?;
        let authority = headers.iter_mut().find(|(n, _)| n == b":authority");
        let bad = authority
            .as_ref()
            .is_some_and(|(_, v)| http::uri::Authority::try_from(v.as_slice()).is_err());
        if matches!(self.mode, Mode::Inspect) && !bad {
            self.mode = Mode::Pass;
            self.out.extend_from_slice(&block.original);
            return Ok(());
        }
        self.mode = Mode::Rewrite;
        if let Some((_, v)) = authority {
            *v = host_port(v);
        }
        let encoded = encode_literals(&headers);
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let mut flags = if last { END_HEADERS } else { 0 };
            if first && block.end_stream {
                flags |= END_STREAM;
            }
            let kind = if first { HEADERS } else { CONTINUATION };
            frame_header(&mut self.out, chunk.len(), kind, flags, block.stream);
            self.out.extend_from_slice(chunk);
            first = false;
        }
        if encoded.is_empty() {
            let flags = END_HEADERS | if block.end_stream { END_STREAM } else { 0 };
            frame_header(&mut self.out, 0, HEADERS, flags, block.stream);
        }
        Ok(())
    }
}

fn malformed() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame")
}

/// The header block fragment of a HEADERS payload: padding and priority cut.
fn headers_fragment(payload: &[u8], flags: u8) -> Option<&[u8]> {
    let (pad, mut rest) = if flags & PADDED != 0 {
        (usize::from(*payload.first()?), payload.get(1..)?)
    } else {
        (0, payload)
    };
    if flags & PRIORITY != 0 {
        rest = rest.get(5..)?;
    }
    rest.get(..rest.len().checked_sub(pad)?)
}

/// `http://host:port/path` -> `host:port`.
fn host_port(v: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(v);
    let s = s.split_once("://").map_or(&*s, |(_, rest)| rest);
    let s = s.split(['/', '?', '#']).next().unwrap_or_default();
    s.as_bytes().to_vec()
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

/// HPACK "literal header field without indexing, new name" for each header.
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0);
        for s in [name, value] {
            integer(&mut out, s.len(), 7, 0);
            out.extend_from_slice(s);
        }
    }
    out
}

/// An HPACK integer with an `n`-bit prefix after `first`'s high bits.
fn integer(out: &mut Vec<u8>, mut v: usize, n: u32, first: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

impl<S: AsyncRead + Unpin> AsyncRead for LenientAuthority<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Pass) && this.raw.is_empty() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    // The rest, parsed or not, is the server's to judge.
                    this.eof = true;
                    this.out.append(&mut this.raw);
                }
                Poll::Ready(Ok(())) => {
                    this.raw.extend_from_slice(rb.filled());
                    this.process()?;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LenientAuthority<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_becomes_its_host_and_port() {
        assert_eq!(host_port(b"http://127.0.0.1:2379"), b"127.0.0.1:2379");
        assert_eq!(host_port(b"https://h1:2379/x?y"), b"h1:2379");
        assert_eq!(host_port(b"127.0.0.1:2379"), b"127.0.0.1:2379");
    }

    #[test]
    fn literals_decode_to_the_same_headers() {
        let headers = vec![
            (b":authority".to_vec(), b"127.0.0.1:2379".to_vec()),
            (b"x-long".to_vec(), vec![b'v'; 300]),
        ];
        let block = encode_literals(&headers);
        let back = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(back, headers);
    }

    #[test]
    fn padding_and_priority_are_cut_from_a_fragment() {
        let payload = [2, 0, 0, 0, 1, 9, 0xaa, 0xbb, 0, 0];
        let got = headers_fragment(&payload, PADDED | PRIORITY).unwrap();
        assert_eq!(got, &[0xaa, 0xbb]);
        assert_eq!(headers_fragment(&[5], PADDED), None);
    }
}
