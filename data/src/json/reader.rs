//! A JSON reader that accepts what Kafka's `JsonDeserializer` (Jackson's `readTree`) accepts:
//! leading zeros in numbers, an empty document (a "missing" node), and anything after the first
//! complete value ignored. Numbers keep their text so decimals and 64-bit integers lose nothing.

use crate::error::ConversionError;

/// Deepest nesting accepted (Jackson's `StreamReadConstraints` default).
const MAX_DEPTH: usize = 1000;

/// A parsed JSON document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// The number's text as written; `integral` when it has no fraction and no exponent
    /// (Jackson's int/long/BigInteger nodes, as opposed to its decimal nodes).
    Number {
        text: String,
        integral: bool,
    },
    String(String),
    Array(Vec<Node>),
    /// Members in document order; a repeated name keeps its first position and last value,
    /// as Jackson's `ObjectNode` does.
    Object(Vec<(String, Node)>),
}

impl Node {
    /// Jackson's node type names, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "NULL",
            Node::Bool(_) => "BOOLEAN",
            Node::Number { .. } => "NUMBER",
            Node::String(_) => "STRING",
            Node::Array(_) => "ARRAY",
            Node::Object(_) => "OBJECT",
        }
    }

    pub fn get(&self, name: &str) -> Option<&Node> {
        match self {
            Node::Object(members) => members.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Parses a document; `Ok(None)` for an empty (or all-whitespace) one.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<Node>, ConversionError> {
    let mut reader = Reader { bytes, pos: 0 };
    reader.skip_ws();
    if reader.pos == bytes.len() {
        return Ok(None);
    }
    let node = reader.value(0)?;
    // Jackson insists a root-level scalar token ends cleanly ("12x" and "truex" fail) but
    // ignores whatever comes after the first value otherwise.
    if matches!(node, Node::Number { .. } | Node::Bool(_) | Node::Null) {
        if let Some(&b) = bytes.get(reader.pos) {
            if !b.is_ascii_whitespace() && !matches!(b, b'[' | b'{' | b',' | b']' | b'}' | b'"') {
                return Err(reader.error("unexpected character after a value"));
            }
        }
    }
    Ok(Some(node))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn error(&self, what: &str) -> ConversionError {
        ConversionError::new(format!("invalid json at byte {}: {what}", self.pos))
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Node, ConversionError> {
        if depth > MAX_DEPTH {
            return Err(self.error("document nested too deeply"));
        }
        self.skip_ws();
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'n') => self.literal("null", Node::Null),
            Some(b't') => self.literal("true", Node::Bool(true)),
            Some(b'f') => self.literal("false", Node::Bool(false)),
            Some(b'"') => Ok(Node::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                    return Ok(Node::Array(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Node::Array(items));
                        }
                        _ => return Err(self.error("expected ',' or ']' in an array")),
                    }
                }
            }
            Some(b'{') => {
                self.pos += 1;
                let mut members: Vec<(String, Node)> = Vec::new();
                self.skip_ws();
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(Node::Object(members));
                }
                loop {
                    self.skip_ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.error("expected a field name"));
                    }
                    let name = self.string()?;
                    self.skip_ws();
                    if self.peek() != Some(b':') {
                        return Err(self.error("expected ':' after a field name"));
                    }
                    self.pos += 1;
                    let value = self.value(depth + 1)?;
                    match members.iter_mut().find(|(k, _)| *k == name) {
                        Some(existing) => existing.1 = value,
                        None => members.push((name, value)),
                    }
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(Node::Object(members));
                        }
                        _ => return Err(self.error("expected ',' or '}' in an object")),
                    }
                }
            }
            Some(_) => Err(self.error("unexpected character")),
        }
    }

    fn literal(&mut self, word: &str, node: Node) -> Result<Node, ConversionError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            if self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(self.error("unrecognized token"));
            }
            Ok(node)
        } else {
            Err(self.error("unrecognized token"))
        }
    }

    fn number(&mut self) -> Result<Node, ConversionError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == int_start {
            return Err(self.error("expected a digit"));
        }
        let mut integral = true;
        if self.peek() == Some(b'.') {
            integral = false;
            self.pos += 1;
            let frac_start = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == frac_start {
                return Err(self.error("expected a digit after the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integral = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            let exp_start = self.pos;
            while let Some(b'0'..=b'9') = self.peek() {
                self.pos += 1;
            }
            if self.pos == exp_start {
                return Err(self.error("expected a digit in the exponent"));
            }
        }
        if self.pos - start > 1000 {
            return Err(self.error("number longer than 1000 characters"));
        }
        let text = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        Ok(Node::Number { text, integral })
    }

    fn string(&mut self) -> Result<String, ConversionError> {
        self.pos += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0C),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let mut unit = self.hex4()?;
                            let c = if (0xD800..0xDC00).contains(&unit)
                                && self.bytes[self.pos..].starts_with(b"\\u")
                            {
                                self.pos += 2;
                                let low = self.hex4()?;
                                if (0xDC00..0xE000).contains(&low) {
                                    let code = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                                    char::from_u32(code)
                                } else {
                                    // Java keeps lone surrogates; UTF-8 cannot, so both become
                                    // replacement characters.
                                    out.extend_from_slice("\u{FFFD}".as_bytes());
                                    unit = low;
                                    char::from_u32(unit)
                                }
                            } else {
                                char::from_u32(unit)
                            };
                            let c = c.unwrap_or('\u{FFFD}');
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(self.error("invalid escape in a string")),
                    }
                }
                0x00..=0x1F => return Err(self.error("unescaped control character in a string")),
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("invalid utf-8 in a string"))
    }

    fn hex4(&mut self) -> Result<u32, ConversionError> {
        let hex = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        self.pos += 4;
        Ok(hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(text: &str, integral: bool) -> Node {
        Node::Number {
            text: text.into(),
            integral,
        }
    }

    #[test]
    fn reads_like_jackson() {
        assert_eq!(parse(b"").unwrap(), None);
        assert_eq!(parse(b"  \n").unwrap(), None);
        assert_eq!(parse(b"0012").unwrap(), Some(num("0012", true)));
        assert_eq!(parse(b"12.50").unwrap(), Some(num("12.50", false)));
        assert_eq!(parse(b"-1e3").unwrap(), Some(num("-1e3", false)));
        assert_eq!(parse(b"true 5").unwrap(), Some(Node::Bool(true)));
        assert_eq!(parse(b"{} trailing").unwrap(), Some(Node::Object(vec![])));
        assert!(parse(b"12x").is_err());
        assert!(parse(b"truex").is_err());
        assert!(parse(b"[1,]").is_err());
        assert!(parse(b"{\"a\":1").is_err());
        assert!(parse(b"\"a\x01\"").is_err());
        assert!(parse(b"\"\xff\"").is_err());
        assert!(parse(b"NaN").is_err());
        assert_eq!(
            parse(br#"{"a":1,"b":2,"a":3}"#).unwrap(),
            Some(Node::Object(vec![
                ("a".into(), num("3", true)),
                ("b".into(), num("2", true))
            ]))
        );
        assert_eq!(
            parse(br#""\u00e9\ud83d\ude00\n""#).unwrap(),
            Some(Node::String("é😀\n".into()))
        );
    }

    #[test]
    fn never_panics_on_deep_or_truncated_input() {
        let deep = "[".repeat(5000);
        assert!(parse(deep.as_bytes()).is_err());
        for cut in 0..20 {
            let doc = br#"{"a":[1,"x\u00",{"b":null}]}"#;
            let _ = parse(&doc[..cut.min(doc.len())]);
        }
    }
}
