//! A fast reader for the YAML graph files are usually written in: block
//! mappings and sequences, one-line flow collections (`{kind: noop, name: a}`),
//! plain, quoted and literal (`|`, `|-`) scalars, comments, one optional `---`.
//! It deserializes straight from the text, as serde_json does, without the
//! event queue, key fingerprints and budgets that make serde_saphyr read a
//! 150 000-resource graph at about 7 MB/s.
//!
//! It never decides anything alone: whatever it is not sure of makes it
//! decline, and the caller reads the text again with serde_saphyr, which gives
//! the result or the error with its message. It declines on anchors, aliases,
//! tags, directives, more than one document, multi-line flow collections and
//! plain scalars, folded and kept (`|+`) scalars, tabs and carriage returns
//! outside scalars, duplicate keys, a null, a scalar YAML might resolve to
//! something else than the string or number asked for (`yes`, `1.5`, `0x1F`,
//! `~`), and on any deserialization error. Where it accepts, its value and
//! locations are serde_saphyr's (the tests compare them on generated
//! documents).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{Location, SPANNED};

/// Why the fast reader stopped: the text needs the full YAML reader.
#[derive(Debug)]
pub(super) struct Declined;

impl fmt::Display for Declined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("declined")
    }
}

impl std::error::Error for Declined {}

impl de::Error for Declined {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Declined
    }
}

type Result<T> = std::result::Result<T, Declined>;

/// Deepest nesting read before declining (serde_saphyr has its own limits).
const MAX_DEPTH: usize = 64;

/// `T` read from `text`, or `None` where serde_saphyr must read it.
pub(super) fn from_str<T: DeserializeOwned>(text: &str) -> Option<T> {
    if text.contains('\r') || text.starts_with('\u{feff}') {
        return None;
    }
    let mut reader = Reader::new(text);
    reader.document_start().ok()?;
    let start = reader.root().ok()?;
    let value = T::deserialize(Node {
        reader: &mut reader,
        context: Context::Block {
            parent: 0,
            seq_item: false,
            compact: false,
        },
        start: Some(start),
    })
    .ok()?;
    reader.skip_blank_lines().ok()?;
    reader.at_eof().then_some(value)
}

/// The text and a cursor in it, with the cursor's line.
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    line_start: usize,
    line_end: usize,
    line_no: usize,
    depth: usize,
}

/// What a node is, found from its first characters; scalars are read whole.
enum Start<'a> {
    Scalar {
        text: Cow<'a, str>,
        /// Plain scalars are resolved (`true`, `12`, `null`); quoted and
        /// literal ones are strings.
        plain: bool,
        at: Location,
    },
    /// The cursor is on the first key.
    BlockMap {
        indent: usize,
        at: Location,
    },
    /// The cursor is at the start of the line of the first `-`. Placed at
    /// its first item's first character, as serde_saphyr places it; `None`
    /// when that item starts on a later line.
    BlockSeq {
        indent: usize,
        at: Option<Location>,
    },
    /// The cursor is after the opening bracket.
    FlowMap {
        at: Location,
    },
    FlowSeq {
        at: Location,
    },
}

impl Start<'_> {
    fn at(&self) -> Option<Location> {
        match self {
            Start::Scalar { at, .. }
            | Start::BlockMap { at, .. }
            | Start::FlowMap { at }
            | Start::FlowSeq { at } => Some(*at),
            Start::BlockSeq { at, .. } => *at,
        }
    }
}

/// Where a node stands, which decides how it may be written.
#[derive(Clone, Copy)]
enum Context {
    /// After `key:` or `- ` in a block collection indented `parent`.
    Block {
        parent: usize,
        /// After `- `, where `key: value` starts a mapping on the same line.
        seq_item: bool,
        /// After `key:`, where a sequence may be indented as the key is.
        compact: bool,
    },
    /// Inside a flow collection.
    Flow,
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/')
}

/// Characters that start something else than a plain scalar.
fn is_indicator(b: u8) -> bool {
    b"-?:,[]{}#&*!|>'\"%@`".contains(&b)
}

/// A line (from its indentation on) that is an entry of a block list.
fn is_list_entry(rest: &[u8]) -> bool {
    rest == b"-" || rest.starts_with(b"- ")
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        let mut reader = Reader {
            text,
            pos: 0,
            line_start: 0,
            line_end: 0,
            line_no: 1,
            depth: 0,
        };
        reader.line_end = reader.find_line_end(0);
        reader
    }

    fn find_line_end(&self, from: usize) -> usize {
        self.text[from..]
            .find('\n')
            .map_or(self.text.len(), |i| from + i)
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn at_eof(&self) -> bool {
        self.pos >= self.text.len()
    }

    /// The byte at the cursor, `None` at the end of the line.
    fn peek(&self) -> Option<u8> {
        (self.pos < self.line_end).then(|| self.bytes()[self.pos])
    }

    fn next_line(&mut self) {
        if self.line_end >= self.text.len() {
            self.pos = self.text.len();
            self.line_start = self.text.len();
            self.line_end = self.text.len();
            return;
        }
        self.line_start = self.line_end + 1;
        self.line_no += 1;
        self.pos = self.line_start;
        self.line_end = self.find_line_end(self.line_start);
    }

    fn location(&self, at: usize) -> Location {
        let before = &self.text[self.line_start..at];
        let column = if before.is_ascii() {
            before.len()
        } else {
            before.chars().count()
        };
        Location::new(self.line_no as u64, column as u64 + 1)
    }

    /// Spaces at the start of the current line; a tab there declines.
    fn indent(&self) -> Result<usize> {
        let line = &self.bytes()[self.line_start..self.line_end];
        let n = line.iter().take_while(|&&b| b == b' ').count();
        if line.get(n) == Some(&b'\t') {
            return Err(Declined);
        }
        Ok(n)
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Moves to the next line holding more than spaces and a comment.
    fn skip_blank_lines(&mut self) -> Result<()> {
        while !self.at_eof() {
            let indent = self.indent()?;
            match self.bytes().get(self.line_start + indent) {
                Some(b'\n') | Some(b'#') | None => self.next_line(),
                Some(_) => {
                    self.pos = self.line_start;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The start of the next entry of a block collection indented `indent`:
    /// the next line with content, if indented as much; `None` once the
    /// collection ended (the text did, or a line is less indented).
    fn next_entry(&mut self, indent: usize) -> Result<Option<usize>> {
        self.skip_blank_lines()?;
        if self.at_eof() {
            return Ok(None);
        }
        match self.indent()? {
            n if n < indent => Ok(None),
            n if n > indent => Err(Declined),
            n => Ok(Some(self.line_start + n)),
        }
    }

    /// The rest of the line is blank or a comment: go to the next line.
    fn end_line(&mut self) -> Result<()> {
        let before = self.pos;
        self.skip_spaces();
        match self.peek() {
            None => {}
            Some(b'#') if self.pos > before => {}
            Some(_) => return Err(Declined),
        }
        self.next_line();
        Ok(())
    }

    fn document_start(&mut self) -> Result<()> {
        self.skip_blank_lines()?;
        let line = &self.text[self.line_start..self.line_end];
        if line.starts_with('%') {
            return Err(Declined);
        }
        if let Some(rest) = line.strip_prefix("---") {
            let rest = rest.trim_start_matches(' ');
            if !(rest.is_empty() || (rest.starts_with('#') && rest.len() < line.len() - 3)) {
                return Err(Declined);
            }
            self.next_line();
        }
        Ok(())
    }

    fn root(&mut self) -> Result<Start<'a>> {
        self.skip_blank_lines()?;
        if self.at_eof() || self.indent()? != 0 || self.key_end(self.pos).is_none() {
            return Err(Declined);
        }
        Ok(Start::BlockMap {
            indent: 0,
            at: self.location(self.pos),
        })
    }

    /// Where the `:` of a plain `key: ` at `from` is, if a key starts there.
    fn key_end(&self, from: usize) -> Option<usize> {
        let bytes = &self.bytes()[..self.line_end];
        let first = *bytes.get(from)?;
        if !(first.is_ascii_alphanumeric() || first == b'_') {
            return None;
        }
        let mut i = from;
        while i < bytes.len() && is_key_byte(bytes[i]) {
            i += 1;
        }
        (bytes.get(i) == Some(&b':') && matches!(bytes.get(i + 1), None | Some(b' '))).then_some(i)
    }

    /// Reads the key at the cursor and moves past its `:`.
    fn key(&mut self) -> Result<&'a str> {
        let end = self.key_end(self.pos).ok_or(Declined)?;
        let key = &self.text[self.pos..end];
        self.pos = end + 1;
        Ok(key)
    }

    /// What the node at the cursor is; scalars are read whole.
    fn start(&mut self, context: Context) -> Result<Start<'a>> {
        match context {
            Context::Block {
                parent,
                seq_item,
                compact,
            } => self.block_start(parent, seq_item, compact),
            Context::Flow => self.flow_start(),
        }
    }

    fn block_start(&mut self, parent: usize, seq_item: bool, compact: bool) -> Result<Start<'a>> {
        self.skip_spaces();
        let Some(first) = self.peek().filter(|&b| b != b'#') else {
            // The value is on the lines below, more indented.
            self.next_line();
            self.skip_blank_lines()?;
            if self.at_eof() {
                return Err(Declined);
            }
            let indent = self.indent()?;
            let at = self.line_start + indent;
            let rest = &self.bytes()[at..self.line_end];
            if is_list_entry(rest) {
                if indent > parent || (indent == parent && compact) {
                    let spaces = rest[1..].iter().take_while(|&&b| b == b' ').count();
                    let item = at + 1 + spaces;
                    let inline = item < self.line_end && self.bytes()[item] != b'#';
                    return Ok(Start::BlockSeq {
                        indent,
                        at: inline.then(|| self.location(item)),
                    });
                }
            } else if indent > parent && self.key_end(at).is_some() {
                self.pos = at;
                return Ok(Start::BlockMap {
                    indent,
                    at: self.location(at),
                });
            }
            return Err(Declined);
        };
        let at = self.location(self.pos);
        match first {
            b'|' => self.literal(parent),
            b'{' => {
                self.pos += 1;
                Ok(Start::FlowMap { at })
            }
            b'[' => {
                self.pos += 1;
                Ok(Start::FlowSeq { at })
            }
            b'"' | b'\'' => {
                let text = self.quoted()?;
                self.end_line()?;
                Ok(Start::Scalar {
                    text,
                    plain: false,
                    at,
                })
            }
            _ if seq_item && self.key_end(self.pos).is_some() => Ok(Start::BlockMap {
                indent: self.pos - self.line_start,
                at,
            }),
            _ if is_indicator(first) => Err(Declined),
            _ => {
                let line = &self.text[self.pos..self.line_end];
                let end = line.find(" #").unwrap_or(line.len());
                let text = line[..end].trim_end_matches(' ');
                if text.contains(": ") || text.ends_with(':') || text.contains('\t') {
                    return Err(Declined);
                }
                self.next_line();
                Ok(Start::Scalar {
                    text: Cow::Borrowed(text),
                    plain: true,
                    at,
                })
            }
        }
    }

    fn flow_start(&mut self) -> Result<Start<'a>> {
        self.skip_spaces();
        let first = self.peek().ok_or(Declined)?;
        let at = self.location(self.pos);
        match first {
            b'{' => {
                self.pos += 1;
                Ok(Start::FlowMap { at })
            }
            b'[' => {
                self.pos += 1;
                Ok(Start::FlowSeq { at })
            }
            b'"' | b'\'' => Ok(Start::Scalar {
                text: self.quoted()?,
                plain: false,
                at,
            }),
            _ if is_indicator(first) => Err(Declined),
            _ => {
                let line = &self.bytes()[..self.line_end];
                let mut end = self.pos;
                while end < line.len() && !matches!(line[end], b',' | b'[' | b']' | b'{' | b'}') {
                    if matches!(line[end], b':' | b'#' | b'\t') {
                        return Err(Declined);
                    }
                    end += 1;
                }
                let text = self.text[self.pos..end].trim_end_matches(' ');
                self.pos = end;
                Ok(Start::Scalar {
                    text: Cow::Borrowed(text),
                    plain: true,
                    at,
                })
            }
        }
    }

    /// A quoted scalar on one line, the cursor on its opening quote.
    fn quoted(&mut self) -> Result<Cow<'a, str>> {
        let quote = self.bytes()[self.pos];
        self.pos += 1;
        let begin = self.pos;
        let line = &self.bytes()[..self.line_end];
        // Without escapes, the text is borrowed.
        let mut i = begin;
        while i < line.len() && line[i] != quote && line[i] != b'\\' {
            i += 1;
        }
        if i >= line.len() {
            return Err(Declined);
        }
        if line[i] == quote && !(quote == b'\'' && line.get(i + 1) == Some(&b'\'')) {
            self.pos = i + 1;
            return Ok(Cow::Borrowed(&self.text[begin..i]));
        }
        let mut out = String::with_capacity(i - begin + 16);
        let mut i = begin;
        let mut copied = begin;
        while i < line.len() {
            let b = line[i];
            if quote == b'\'' && b == b'\'' {
                out.push_str(&self.text[copied..i]);
                if line.get(i + 1) == Some(&b'\'') {
                    out.push('\'');
                    i += 2;
                    copied = i;
                    continue;
                }
                self.pos = i + 1;
                return Ok(Cow::Owned(out));
            }
            if quote == b'"' && b == b'"' {
                out.push_str(&self.text[copied..i]);
                self.pos = i + 1;
                return Ok(Cow::Owned(out));
            }
            if quote == b'"' && b == b'\\' {
                out.push_str(&self.text[copied..i]);
                let (c, len) = self.escape(i + 1)?;
                out.push(c);
                i += 1 + len;
                copied = i;
                continue;
            }
            i += 1;
        }
        Err(Declined)
    }

    /// The character an escape after a backslash at `at` stands for, and
    /// the escape's length.
    fn escape(&self, at: usize) -> Result<(char, usize)> {
        let line = &self.text[..self.line_end];
        let c = match line.as_bytes().get(at).ok_or(Declined)? {
            b'\\' => '\\',
            b'"' => '"',
            b'/' => '/',
            b'n' => '\n',
            b't' => '\t',
            b'r' => '\r',
            b'0' => '\0',
            b'u' => {
                let hex = line.get(at + 1..at + 5).ok_or(Declined)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Declined);
                }
                let code = u32::from_str_radix(hex, 16).map_err(|_| Declined)?;
                return char::from_u32(code).map(|c| (c, 5)).ok_or(Declined);
            }
            _ => return Err(Declined),
        };
        Ok((c, 1))
    }

    /// A literal block scalar (`|` or `|-`), the cursor on its `|`, in a
    /// collection indented `parent`.
    fn literal(&mut self, parent: usize) -> Result<Start<'a>> {
        self.pos += 1;
        let strip = self.peek() == Some(b'-');
        if strip {
            self.pos += 1;
        }
        self.end_line()?;
        // The first line with more than spaces sets the indentation.
        let mut leading_blank = 0;
        let mut widest_blank = 0;
        let indent = loop {
            if self.at_eof() {
                return Err(Declined);
            }
            let line = &self.bytes()[self.line_start..self.line_end];
            let spaces = line.iter().take_while(|&&b| b == b' ').count();
            if spaces < line.len() {
                break spaces;
            }
            leading_blank += 1;
            widest_blank = widest_blank.max(spaces);
            self.next_line();
        };
        if indent <= parent || widest_blank > indent {
            return Err(Declined);
        }
        // serde_saphyr places a literal scalar at its first character.
        let at = self.location(self.line_start + indent);
        let mut text = "\n".repeat(leading_blank);
        let mut pending_blank = 0;
        while !self.at_eof() {
            let line = &self.text[self.line_start..self.line_end];
            let spaces = line.bytes().take_while(|&b| b == b' ').count();
            if spaces == line.len() {
                // A blank line longer than the indentation holds spaces.
                if spaces > indent {
                    return Err(Declined);
                }
                pending_blank += 1;
            } else if spaces >= indent {
                for _ in 0..pending_blank {
                    text.push('\n');
                }
                pending_blank = 0;
                text.push_str(&line[indent..]);
                text.push('\n');
            } else {
                break;
            }
            self.next_line();
        }
        if strip {
            text.pop();
        }
        // Back to the start of the line that ended the scalar; the blank
        // lines before it are skipped by whoever reads on.
        self.pos = self.line_start;
        Ok(Start::Scalar {
            text: Cow::Owned(text),
            plain: false,
            at,
        })
    }
}

/// A plain scalar YAML reads as null, a bool, or a number other than a
/// decimal integer.
fn resolves_to_other(text: &str) -> bool {
    const WORDS: [&str; 10] = [
        "~", "null", "true", "false", "yes", "no", "on", "off", "y", "n",
    ];
    let Some(&first) = text.as_bytes().first() else {
        return true;
    };
    first.is_ascii_digit()
        || matches!(first, b'+' | b'-' | b'.')
        || (text.len() <= 5 && WORDS.iter().any(|w| w.eq_ignore_ascii_case(text)))
}

/// A decimal integer as YAML writes it without a leading zero: `0`, `12`, `-3`.
fn decimal(text: &str) -> Option<i128> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let simple = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && digits.len() <= 20;
    simple.then(|| text.parse().ok()).flatten()
}

/// A value of the text: deserializes the node at the reader's cursor.
struct Node<'r, 'a> {
    reader: &'r mut Reader<'a>,
    context: Context,
    /// The node, if it was looked at already.
    start: Option<Start<'a>>,
}

impl<'a> Node<'_, 'a> {
    fn take_start(&mut self) -> Result<Start<'a>> {
        match self.start.take() {
            Some(start) => Ok(start),
            None => self.reader.start(self.context),
        }
    }

    /// A scalar's text; a collection declines.
    fn scalar(&mut self) -> Result<(Cow<'a, str>, bool)> {
        match self.take_start()? {
            Start::Scalar { text, plain, .. } => Ok((text, plain)),
            _ => Err(Declined),
        }
    }

    fn integer(&mut self) -> Result<i128> {
        match self.scalar()? {
            (text, true) => decimal(&text).ok_or(Declined),
            _ => Err(Declined),
        }
    }

    /// Visits a collection, then ends a flow collection's line in block context.
    fn collection<V: Visitor<'a>>(&mut self, start: Start<'a>, visitor: V) -> Result<V::Value> {
        let flow = matches!(start, Start::FlowMap { .. } | Start::FlowSeq { .. });
        self.reader.depth += 1;
        if self.reader.depth > MAX_DEPTH {
            return Err(Declined);
        }
        let value = match start {
            Start::BlockMap { indent, .. } => visitor.visit_map(BlockMap {
                reader: self.reader,
                indent,
                first: true,
                keys: Vec::new(),
            }),
            Start::BlockSeq { indent, .. } => visitor.visit_seq(BlockSeq {
                reader: self.reader,
                indent,
            }),
            Start::FlowMap { .. } => visitor.visit_map(FlowMap {
                reader: self.reader,
                first: true,
                keys: Vec::new(),
            }),
            Start::FlowSeq { .. } => visitor.visit_seq(FlowSeq {
                reader: self.reader,
                first: true,
            }),
            Start::Scalar { .. } => Err(Declined),
        }?;
        self.reader.depth -= 1;
        if flow && matches!(self.context, Context::Block { .. }) {
            self.reader.end_line()?;
        }
        Ok(value)
    }
}

/// The methods for types a graph's schema never asks for: they decline.
macro_rules! declines {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'a>>(self, _visitor: V) -> Result<V::Value> {
            Err(Declined)
        })*
    };
}

impl<'a> de::Deserializer<'a> for Node<'_, 'a> {
    type Error = Declined;

    fn deserialize_any<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_start()? {
            Start::Scalar {
                text, plain: false, ..
            } => visit_text(text, visitor),
            Start::Scalar {
                text, plain: true, ..
            } => {
                if let Some(n) = decimal(&text) {
                    match u64::try_from(n) {
                        Ok(n) => visitor.visit_u64(n),
                        Err(_) => visitor.visit_i64(i64::try_from(n).map_err(|_| Declined)?),
                    }
                } else if text.len() > 1 && text.bytes().all(|b| b.is_ascii_digit()) {
                    // `0644`: the graph's reader keeps leading zeros as text.
                    visit_text(text, visitor)
                } else if resolves_to_other(&text) {
                    Err(Declined)
                } else {
                    visit_text(text, visitor)
                }
            }
            start => self.collection(start, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        match self.scalar()? {
            (text, true) if text == "true" => visitor.visit_bool(true),
            (text, true) if text == "false" => visitor.visit_bool(false),
            _ => Err(Declined),
        }
    }

    fn deserialize_i64<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        let n = self.integer()?;
        visitor.visit_i64(i64::try_from(n).map_err(|_| Declined)?)
    }

    fn deserialize_u64<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        let n = self.integer()?;
        visitor.visit_u64(u64::try_from(n).map_err(|_| Declined)?)
    }

    fn deserialize_i8<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_u8<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        match self.scalar()? {
            (text, false) => visit_text(text, visitor),
            (text, true) if !resolves_to_other(&text) => visit_text(text, visitor),
            _ => Err(Declined),
        }
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        // A null declines where it is read: `Some` is all this reader gives.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        mut self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name != SPANNED {
            return visitor.visit_newtype_struct(self);
        }
        let start = self.take_start()?;
        let at = start.at().ok_or(Declined)?;
        self.start = Some(start);
        visitor.visit_map(SpannedMap {
            node: Some(self),
            at,
            step: 0,
        })
    }

    fn deserialize_seq<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_start()? {
            start @ (Start::BlockSeq { .. } | Start::FlowSeq { .. }) => {
                self.collection(start, visitor)
            }
            _ => Err(Declined),
        }
    }

    fn deserialize_map<V: Visitor<'a>>(mut self, visitor: V) -> Result<V::Value> {
        match self.take_start()? {
            start @ (Start::BlockMap { .. } | Start::FlowMap { .. }) => {
                self.collection(start, visitor)
            }
            _ => Err(Declined),
        }
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, _len: usize, _visitor: V) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Declined)
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _visitor: V,
    ) -> Result<V::Value> {
        Err(Declined)
    }

    declines! {
        deserialize_f32 deserialize_f64 deserialize_char deserialize_bytes
        deserialize_byte_buf deserialize_unit deserialize_ignored_any
    }
}

fn visit_text<'a, V: Visitor<'a>>(text: Cow<'a, str>, visitor: V) -> Result<V::Value> {
    match text {
        Cow::Borrowed(s) => visitor.visit_borrowed_str(s),
        Cow::Owned(s) => visitor.visit_string(s),
    }
}

/// A mapping key; it is unique in its mapping.
fn key_seed<'a, K: DeserializeSeed<'a>>(
    seed: K,
    key: &'a str,
    keys: &mut Vec<&'a str>,
) -> Result<K::Value> {
    if keys.contains(&key) || resolves_to_other(key) {
        return Err(Declined);
    }
    keys.push(key);
    seed.deserialize(de::value::BorrowedStrDeserializer::new(key))
}

/// A mapping in block style, its keys at column `indent`.
struct BlockMap<'r, 'a> {
    reader: &'r mut Reader<'a>,
    indent: usize,
    first: bool,
    keys: Vec<&'a str>,
}

impl<'a> de::MapAccess<'a> for BlockMap<'_, 'a> {
    type Error = Declined;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.first {
            self.first = false;
        } else {
            let Some(key) = self.reader.next_entry(self.indent)? else {
                return Ok(None);
            };
            self.reader.pos = key;
        }
        let key = self.reader.key()?;
        key_seed(seed, key, &mut self.keys).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(Node {
            reader: self.reader,
            context: Context::Block {
                parent: self.indent,
                seq_item: false,
                compact: true,
            },
            start: None,
        })
    }
}

/// A sequence in block style, its `-` at column `indent`.
struct BlockSeq<'r, 'a> {
    reader: &'r mut Reader<'a>,
    indent: usize,
}

impl<'a> de::SeqAccess<'a> for BlockSeq<'_, 'a> {
    type Error = Declined;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        let reader = &mut *self.reader;
        let Some(dash) = reader.next_entry(self.indent)? else {
            return Ok(None);
        };
        let rest = &reader.bytes()[dash..reader.line_end];
        if !is_list_entry(rest) {
            // The mapping this sequence is the compact value of goes on.
            return Ok(None);
        }
        reader.pos = dash + 1;
        if rest.get(2) == Some(&b'-') && matches!(rest.get(3), None | Some(b' ')) {
            return Err(Declined);
        }
        seed.deserialize(Node {
            reader,
            context: Context::Block {
                parent: self.indent,
                seq_item: true,
                compact: false,
            },
            start: None,
        })
        .map(Some)
    }
}

/// A mapping in flow style on one line, the cursor inside its braces.
struct FlowMap<'r, 'a> {
    reader: &'r mut Reader<'a>,
    first: bool,
    keys: Vec<&'a str>,
}

impl<'a> de::MapAccess<'a> for FlowMap<'_, 'a> {
    type Error = Declined;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let reader = &mut *self.reader;
        if !flow_next(reader, &mut self.first, b'}')? {
            return Ok(None);
        }
        let key = reader.key()?;
        if reader.peek() != Some(b' ') {
            return Err(Declined);
        }
        key_seed(seed, key, &mut self.keys).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(Node {
            reader: self.reader,
            context: Context::Flow,
            start: None,
        })
    }
}

/// A sequence in flow style on one line, the cursor inside its brackets.
struct FlowSeq<'r, 'a> {
    reader: &'r mut Reader<'a>,
    first: bool,
}

impl<'a> de::SeqAccess<'a> for FlowSeq<'_, 'a> {
    type Error = Declined;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !flow_next(self.reader, &mut self.first, b']')? {
            return Ok(None);
        }
        seed.deserialize(Node {
            reader: self.reader,
            context: Context::Flow,
            start: None,
        })
        .map(Some)
    }
}

/// Moves to the next entry of a flow collection: `false` past its `close`.
fn flow_next(reader: &mut Reader<'_>, first: &mut bool, close: u8) -> Result<bool> {
    reader.skip_spaces();
    let was_first = std::mem::replace(first, false);
    match reader.peek().ok_or(Declined)? {
        b if b == close => {
            reader.pos += 1;
            Ok(false)
        }
        b',' if !was_first => {
            reader.pos += 1;
            reader.skip_spaces();
            // A trailing comma, or an empty entry.
            if matches!(reader.peek(), None | Some(b',' | b'}' | b']')) {
                return Err(Declined);
            }
            Ok(true)
        }
        _ if was_first => Ok(true),
        _ => Err(Declined),
    }
}

/// The map a [`super::yaml::Spanned`] reads: its line, its column, then its value.
struct SpannedMap<'r, 'a> {
    node: Option<Node<'r, 'a>>,
    at: Location,
    step: u8,
}

impl<'a> de::MapAccess<'a> for SpannedMap<'_, 'a> {
    type Error = Declined;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        let key = match self.step {
            0 => "line",
            1 => "column",
            2 => "value",
            _ => return Ok(None),
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize(self.at.line().into_deserializer()),
            2 => seed.deserialize(self.at.column().into_deserializer()),
            _ => seed.deserialize(self.node.take().ok_or(Declined)?),
        }
    }
}

#[cfg(test)]
#[path = "block_yaml_tests.rs"]
mod tests;
