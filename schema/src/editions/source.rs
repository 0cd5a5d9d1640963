//! Editions source text to proto2 text that protox parses, with positions kept.
//!
//! Only two things change: the `edition = "…";` statement becomes `syntax = "proto2";`, and a
//! field without a label gets `optional ` in front (proto2 insists on labels; editions forbids
//! them). Both changes stay on their line, so a position maps back by undoing the column
//! shifts on that line ([`Edits::original`]). Everything else — features, options, defaults —
//! protox already parses, because descriptor.proto declares it.

use super::Edition;

/// A position-keeping rewrite of one editions file.
#[derive(Debug)]
pub(crate) struct LoweredSource {
    pub(crate) text: String,
    pub(crate) edition: Edition,
    pub(crate) edits: Edits,
}

/// A refusal found in the text, with its 1-based position as shown (see [`shown_position`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SourceError {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) message: String,
}

/// Column changes, each within one line: at original `column` (0-based, in bytes),
/// `removed` bytes became `inserted` ones.
///
/// Lines and columns here are those of protox's source info: lines end at `\n` only, columns
/// count bytes. Errors are shown otherwise (a lone `\r` ends a line too, as in miette and
/// editors): [`original_shown_position`] converts.
#[derive(Debug, Default)]
pub(crate) struct Edits(Vec<Edit>);

#[derive(Debug, Clone, Copy)]
struct Edit {
    line: u32,
    column: u32,
    removed: u32,
    inserted: u32,
}

impl Edits {
    /// The original 0-based column of lowered `(line, column)`; a position inside inserted
    /// text maps to where the insertion was made.
    pub(crate) fn original(&self, line: u32, column: u32) -> u32 {
        let mut shift: i64 = 0;
        for edit in self.0.iter().filter(|e| e.line == line) {
            let start = i64::from(edit.column) + shift;
            let c = i64::from(column);
            if c >= start + i64::from(edit.inserted) {
                shift += i64::from(edit.inserted) - i64::from(edit.removed);
            } else if c >= start {
                return edit.column;
            } else {
                break;
            }
        }
        (i64::from(column) - shift).max(0) as u32
    }

    /// Whether lowered `(line, column)` lies in text that was inserted and is not in the file.
    pub(crate) fn is_inserted(&self, line: u32, column: u32) -> bool {
        let mut shift: i64 = 0;
        for edit in self.0.iter().filter(|e| e.line == line) {
            let start = i64::from(edit.column) + shift;
            let c = i64::from(column);
            if edit.removed == 0 && c >= start && c < start + i64::from(edit.inserted) {
                return true;
            }
            shift += i64::from(edit.inserted) - i64::from(edit.removed);
        }
        false
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ident,
    Str,
    Number,
    Punct(char),
}

#[derive(Clone, Copy, Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    /// Byte offset in the file.
    offset: usize,
    /// 0-based line (ended by `\n`) and column (bytes).
    line: u32,
    column: u32,
}

impl Token<'_> {
    fn is(&self, c: char) -> bool {
        self.kind == Kind::Punct(c)
    }

    fn is_word(&self, w: &str) -> bool {
        self.kind == Kind::Ident && self.text == w
    }

    /// A refusal at this token; its position is made a shown one by [`lower`].
    fn error(&self, message: impl Into<String>) -> Refusal {
        Refusal { offset: self.offset, message: message.into() }
    }
}

/// Splits the text into tokens, skipping whitespace and comments. Malformed text (an
/// unterminated string or comment) is left for protox to report.
fn tokens(text: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let (mut line, mut column) = (0u32, 0u32);
    let advance = |c: char, line: &mut u32, column: &mut u32| {
        if c == '\n' {
            *line += 1;
            *column = 0;
        } else {
            *column += c.len_utf8() as u32;
        }
    };
    while let Some(&(offset, c)) = chars.peek() {
        let (start_line, start_column) = (line, column);
        if c.is_whitespace() {
            chars.next();
            advance(c, &mut line, &mut column);
            continue;
        }
        let rest = text.get(offset..).unwrap_or("");
        if rest.starts_with("//") {
            while let Some(&(_, c)) = chars.peek() {
                if c == '\n' {
                    break;
                }
                chars.next();
                advance(c, &mut line, &mut column);
            }
            continue;
        }
        if rest.starts_with("/*") {
            chars.next();
            chars.next();
            column += 2;
            let mut prev = ' ';
            for (_, c) in chars.by_ref() {
                advance(c, &mut line, &mut column);
                if prev == '*' && c == '/' {
                    break;
                }
                prev = c;
            }
            continue;
        }
        let kind;
        let mut end = offset + c.len_utf8();
        chars.next();
        advance(c, &mut line, &mut column);
        if c == '"' || c == '\'' {
            kind = Kind::Str;
            let mut escaped = false;
            while let Some(&(i, d)) = chars.peek() {
                if d == '\n' {
                    break;
                }
                chars.next();
                advance(d, &mut line, &mut column);
                end = i + d.len_utf8();
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            kind = Kind::Ident;
            while let Some(&(i, d)) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_') {
                    break;
                }
                chars.next();
                advance(d, &mut line, &mut column);
                end = i + 1;
            }
        } else if c.is_ascii_digit() {
            kind = Kind::Number;
            let mut prev = c;
            while let Some(&(i, d)) = chars.peek() {
                let exponent_sign = (d == '+' || d == '-') && (prev == 'e' || prev == 'E');
                if !(d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign) {
                    break;
                }
                chars.next();
                advance(d, &mut line, &mut column);
                end = i + 1;
                prev = d;
            }
        } else {
            kind = Kind::Punct(c);
        }
        out.push(Token {
            kind,
            text: text.get(offset..end).unwrap_or(""),
            offset,
            line: start_line,
            column: start_column,
        });
    }
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    File,
    Message,
    Extend,
    Oneof,
    Enum,
    Service,
    Method,
}

/// What protoc says instead of a label under editions.
fn label_refusal(label: &str) -> String {
    let feature = if label == "required" { "LEGACY_REQUIRED" } else { "EXPLICIT" };
    format!("label '{label}' is not allowed under editions; use `[features.field_presence = {feature}]`")
}

const GROUP_REFUSAL: &str = "group syntax is not allowed under editions; declare the message and give the \
                             field `[features.message_encoding = DELIMITED]`";

/// A refusal at a byte offset of the text.
struct Refusal {
    offset: usize,
    message: String,
}

/// Lowers `text` if it is an editions file; `Ok(None)` for proto2/proto3 files.
pub(crate) fn lower(text: &str) -> Result<Option<LoweredSource>, SourceError> {
    lower_tokens(text).map_err(|r| {
        let (line, column) = shown_position(text, r.offset);
        SourceError { line, column, message: r.message }
    })
}

fn lower_tokens(text: &str) -> Result<Option<LoweredSource>, Refusal> {
    let tokens = tokens(text);
    let Some(first) = tokens.first() else { return Ok(None) };
    if !first.is_word("edition") {
        return Ok(None);
    }
    let (Some(eq), Some(value), Some(semi)) = (tokens.get(1), tokens.get(2), tokens.get(3)) else {
        return Err(first.error("expected `edition = \"2023\";`"));
    };
    if !eq.is('=') || value.kind != Kind::Str || !semi.is(';') {
        return Err(first.error("expected `edition = \"2023\";`"));
    }
    let name = value.text.trim_matches(|c| c == '"' || c == '\'');
    let edition = Edition::from_name(name).ok_or_else(|| {
        value.error(format!("edition \"{name}\" is not supported (supported: {})", super::SUPPORTED))
    })?;
    if value.line != first.line {
        return Err(first.error("write `edition = \"2023\";` on one line"));
    }
    let mut edits = Vec::new();
    // Byte-range replacements, applied in order.
    let mut replacements: Vec<(usize, usize, &str)> = Vec::new();
    let statement_end = value.offset + value.text.len();
    let replacement = "syntax = \"proto2\"";
    replacements.push((first.offset, statement_end, replacement));
    edits.push(Edit {
        line: first.line,
        column: first.column,
        removed: statement_end.saturating_sub(first.offset) as u32,
        inserted: replacement.len() as u32,
    });

    let mut scopes = vec![Scope::File];
    let mut i = 4;
    while let Some(t) = tokens.get(i) {
        let scope = scopes.last().copied().unwrap_or(Scope::File);
        if t.is('}') {
            if scopes.len() > 1 {
                scopes.pop();
            }
            i += 1;
            continue;
        }
        if t.is(';') {
            i += 1;
            continue;
        }
        let at = |k: usize| tokens.get(i + k);
        let word = |k: usize, w: &str| at(k).is_some_and(|t| t.is_word(w));
        let punct = |k: usize, c: char| at(k).is_some_and(|t| t.is(c));
        let ident = |k: usize| at(k).is_some_and(|t| t.kind == Kind::Ident);
        // Blocks: `message X {`, `enum X {`, `oneof x {`, `service X {`, `extend a.b.X {`, `rpc … {`.
        let block = match scope {
            Scope::File | Scope::Message | Scope::Extend => {
                if word(0, "message") && ident(1) && punct(2, '{') {
                    Some((Scope::Message, 3))
                } else if word(0, "enum") && ident(1) && punct(2, '{') {
                    Some((Scope::Enum, 3))
                } else if scope == Scope::Message && word(0, "oneof") && ident(1) && punct(2, '{') {
                    Some((Scope::Oneof, 3))
                } else if scope == Scope::File && word(0, "service") && ident(1) && punct(2, '{') {
                    Some((Scope::Service, 3))
                } else if word(0, "extend") && scope != Scope::Extend {
                    let mut k = 1;
                    while at(k).is_some_and(|t| t.kind == Kind::Ident || t.is('.')) {
                        k += 1;
                    }
                    punct(k, '{').then_some((Scope::Extend, k + 1))
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some((inner, skip)) = block {
            scopes.push(inner);
            i += skip;
            continue;
        }
        match scope {
            Scope::Message | Scope::Extend | Scope::Oneof => {
                let first_word = t.kind == Kind::Ident;
                if t.is_word("reserved") {
                    i = quote_reserved_names(&tokens, i, &mut replacements, &mut edits)?;
                    continue;
                }
                if first_word && (t.text == "option" || t.text == "extensions") {
                    i = skip_statement(&tokens, i);
                    continue;
                }
                if first_word && (t.text == "optional" || t.text == "required") && ident(1) {
                    return Err(t.error(label_refusal(t.text)));
                }
                let typed = if word(0, "repeated") { 1 } else { 0 };
                if word(typed, "group") && ident(typed + 1) && punct(typed + 2, '=') {
                    return Err(at(typed).map_or_else(|| t.error(GROUP_REFUSAL), |g| g.error(GROUP_REFUSAL)));
                }
                let labelled = typed == 1;
                let is_map = word(0, "map") && punct(1, '<');
                if scope != Scope::Oneof && !labelled && !is_map && (first_word || t.is('.')) {
                    replacements.push((t.offset, t.offset, "optional "));
                    edits.push(Edit { line: t.line, column: t.column, removed: 0, inserted: 9 });
                }
                i = skip_statement(&tokens, i);
            }
            Scope::Service if t.is_word("rpc") => {
                // `rpc M (A) returns (B);` or `… { option …; }`
                let mut k = i + 1;
                while let Some(u) = tokens.get(k) {
                    if u.is(';') {
                        break;
                    }
                    if u.is('{') {
                        scopes.push(Scope::Method);
                        break;
                    }
                    k += 1;
                }
                i = k + 1;
            }
            Scope::Enum if t.is_word("reserved") => {
                i = quote_reserved_names(&tokens, i, &mut replacements, &mut edits)?;
            }
            _ => i = skip_statement(&tokens, i),
        }
    }

    let mut lowered = String::with_capacity(text.len() + replacements.len() * 9);
    let mut from = 0;
    for (start, end, with) in replacements {
        lowered.push_str(text.get(from..start).unwrap_or(""));
        lowered.push_str(with);
        from = end;
    }
    lowered.push_str(text.get(from..).unwrap_or(""));
    Ok(Some(LoweredSource { text: lowered, edition, edits: Edits(edits) }))
}

/// Editions reserve names as identifiers (`reserved foo, bar;`) where proto2 quotes them:
/// quotes them for protox, refusing string literals as protoc does under editions. Returns
/// the index after the statement.
fn quote_reserved_names<'a>(
    tokens: &[Token<'a>],
    start: usize,
    replacements: &mut Vec<(usize, usize, &'a str)>,
    edits: &mut Vec<Edit>,
) -> Result<usize, Refusal> {
    let mut i = start + 1;
    while let Some(t) = tokens.get(i) {
        i += 1;
        match t.kind {
            Kind::Punct(';') => break,
            Kind::Str => {
                return Err(t.error(format!(
                    "reserved names are identifiers under editions: write {} without quotes",
                    t.text
                )))
            }
            Kind::Ident if t.text != "to" && t.text != "max" => {
                replacements.push((t.offset, t.offset, "\""));
                edits.push(Edit { line: t.line, column: t.column, removed: 0, inserted: 1 });
                let end = t.offset + t.text.len();
                replacements.push((end, end, "\""));
                edits.push(Edit { line: t.line, column: t.column + t.text.len() as u32, removed: 0, inserted: 1 });
            }
            _ => {}
        }
    }
    Ok(i)
}

/// The index after the `;` that ends the statement at `i`, stepping over `{ … }` values.
fn skip_statement(tokens: &[Token<'_>], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(t) = tokens.get(i) {
        i += 1;
        if t.is('{') {
            depth += 1;
        } else if t.is('}') {
            if depth == 0 {
                // The enclosing block's end: leave it for the caller.
                return i - 1;
            }
            depth -= 1;
        } else if t.is(';') && depth == 0 {
            return i;
        }
    }
    i
}

/// The 1-based line and column of byte `offset` as errors show it, the way miette (protox's
/// errors) and editors count: a line ends at `\n`, `\r\n` or a lone `\r`; columns count bytes.
pub(crate) fn shown_position(text: &str, offset: usize) -> (u32, u32) {
    let bytes = text.as_bytes();
    let before = bytes.get(..offset).unwrap_or(bytes);
    let (mut line, mut line_start) = (1u32, 0usize);
    let mut i = 0;
    while let Some(&b) = before.get(i) {
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            line += 1;
            line_start = i + 1;
        }
        i += 1;
    }
    (line, (before.len() - line_start) as u32 + 1)
}

/// The byte offset of a 1-based `(line, column)` as [`shown_position`] counts them.
fn shown_offset(text: &str, line: u32, column: u32) -> usize {
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut at = 1u32;
    let mut i = 0;
    while at < line {
        let Some(&b) = bytes.get(i) else { break };
        if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
            at += 1;
            start = i + 1;
        }
        i += 1;
    }
    (start + column.saturating_sub(1) as usize).min(bytes.len())
}

/// `(line, column)`, 0-based, of byte `offset` as source info counts them (lines end at `\n`).
fn info_position(text: &str, offset: usize) -> (u32, u32) {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let line = before.iter().filter(|&&b| b == b'\n').count() as u32;
    let start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, (before.len() - start) as u32)
}

/// The byte offset of a 0-based source-info `(line, column)`.
fn info_offset(text: &str, line: u32, column: u32) -> usize {
    let start = if line == 0 {
        0
    } else {
        text.match_indices('\n').nth(line as usize - 1).map_or(text.len(), |(i, _)| i + 1)
    };
    (start + column as usize).min(text.len())
}

/// A 1-based source-info position (lines end at `\n`) of `text`, as errors show it.
pub(crate) fn info_shown_position(text: &str, line: u32, column: u32) -> (u32, u32) {
    shown_position(text, info_offset(text, line.saturating_sub(1), column.saturating_sub(1)))
}

/// A position protox showed in the lowered text, shown in the original one: lowering keeps
/// `\n`-lines, so the column is mapped back on its line and the result shown as written.
pub(crate) fn original_shown_position(original: &str, lowered: &str, edits: &Edits, line: u32, column: u32) -> (u32, u32) {
    let (info_line, info_column) = info_position(lowered, shown_offset(lowered, line, column));
    shown_position(original, info_offset(original, info_line, edits.original(info_line, info_column)))
}

/// Rewrites a compiled file's `source_code_info` (field 9) from lowered to original
/// positions, dropping the locations of inserted labels.
pub(crate) fn relocate(file: &[u8], edits: &Edits) -> Vec<u8> {
    use crate::wire;
    const SOURCE_INFO: u32 = 9;
    const LOCATION: u32 = 1;
    const SPAN: u32 = 2;
    let Ok(fields) = wire::fields(file) else { return file.to_vec() };
    let mut out = Vec::with_capacity(file.len());
    for field in &fields {
        if field.number != SOURCE_INFO {
            out.extend_from_slice(field.whole);
            continue;
        }
        let Ok(locations) = wire::fields(field.value) else {
            out.extend_from_slice(field.whole);
            continue;
        };
        let mut info = Vec::with_capacity(field.value.len());
        for location in &locations {
            let parts = match (location.number, wire::fields(location.value)) {
                (LOCATION, Ok(parts)) => parts,
                _ => {
                    info.extend_from_slice(location.whole);
                    continue;
                }
            };
            let mut rewritten = Vec::with_capacity(location.value.len());
            let mut inserted_only = false;
            for part in &parts {
                if part.number != SPAN {
                    rewritten.extend_from_slice(part.whole);
                    continue;
                }
                let mut span = Vec::new();
                let mut pos = 0;
                while pos < part.value.len() {
                    match wire::read_varint(part.value, &mut pos) {
                        Ok(v) => span.push(v as u32),
                        Err(_) => break,
                    }
                }
                let (start_line, end_line) = match span.len() {
                    3 => (span.first().copied().unwrap_or(0), span.first().copied().unwrap_or(0)),
                    _ => (span.first().copied().unwrap_or(0), span.get(2).copied().unwrap_or(0)),
                };
                let start_column = span.get(1).copied().unwrap_or(0);
                let end_column = span.last().copied().unwrap_or(0);
                inserted_only = start_line == end_line
                    && edits.is_inserted(start_line, start_column)
                    && edits.is_inserted(end_line, end_column.saturating_sub(1));
                let end_index = span.len().saturating_sub(1);
                if let Some(c) = span.get_mut(1) {
                    *c = edits.original(start_line, *c);
                }
                if let Some(c) = span.get_mut(end_index) {
                    if end_index >= 2 {
                        *c = edits.original(end_line, *c);
                    }
                }
                let mut packed = Vec::new();
                for v in span {
                    wire::write_varint(&mut packed, u64::from(v));
                }
                wire::write_len_field(&mut rewritten, SPAN, &packed);
            }
            if !inserted_only {
                wire::write_len_field(&mut info, LOCATION, &rewritten);
            }
        }
        wire::write_len_field(&mut out, SOURCE_INFO, &info);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_added_and_positions_map_back() {
        let text = "edition = \"2023\";\npackage p;\nmessage M {\n  int32 a = 1;\n  repeated string b = 2;\n  \
                    map<string, int32> m = 3;\n  oneof o { int32 c = 4; }\n  .p.M d = 5 [features.field_presence = \
                    EXPLICIT];\n}\n";
        let lowered = lower(text).unwrap().unwrap();
        assert_eq!(lowered.edition, Edition::E2023);
        assert!(lowered.text.starts_with("syntax = \"proto2\";\n"));
        assert!(lowered.text.contains("  optional int32 a = 1;"));
        assert!(lowered.text.contains("  repeated string b = 2;"));
        assert!(lowered.text.contains("  map<string, int32> m = 3;"));
        assert!(lowered.text.contains("oneof o { int32 c = 4; }"));
        assert!(lowered.text.contains("  optional .p.M d = 5"));
        // `a` is at column 8 of line 3 (0-based) as written, 17 once lowered.
        assert_eq!(lowered.edits.original(3, 17), 8);
        assert_eq!(lowered.edits.original(3, 4), 2, "inside the inserted label");
        assert!(lowered.edits.is_inserted(3, 2));
        assert!(!lowered.edits.is_inserted(3, 11));
        // After the rewritten edition statement (17 bytes became 17).
        assert_eq!(lowered.edits.original(0, 17), 16);
    }

    #[test]
    fn plain_syntax_files_are_left_alone() {
        assert!(lower("syntax = \"proto3\";\nmessage M { int32 a = 1; }").unwrap().is_none());
        assert!(lower("// edition = \"2023\";\nmessage M {}").unwrap().is_none());
    }

    #[test]
    fn refusals_say_what_and_where() {
        let err = lower("edition = \"2024\";\n").unwrap_err();
        assert_eq!((err.line, err.column), (1, 11));
        assert!(err.message.contains("\"2024\" is not supported"), "{}", err.message);
        let err = lower("edition = \"2023\";\nmessage M {\n  optional int32 a = 1;\n}\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 3));
        assert!(err.message.contains("field_presence = EXPLICIT"), "{}", err.message);
        let err = lower("edition = \"2023\";\nmessage M {\n  required int32 a = 1;\n}\n").unwrap_err();
        assert!(err.message.contains("LEGACY_REQUIRED"), "{}", err.message);
        let err = lower("edition = \"2023\";\nmessage M {\n  repeated group G = 1 { int32 x = 2; }\n}\n").unwrap_err();
        assert_eq!((err.line, err.column), (3, 12));
        assert!(err.message.contains("DELIMITED"));
        assert!(lower("edition = 2023;\n").is_err());
    }

    #[test]
    fn positions_are_shown_as_editors_count_lines_and_in_bytes() {
        // A lone `\r` ends a line where errors are shown (miette, editors), not in source info.
        let text = "edition = \"2023\";\n// a comment\rwith a lone CR\nmessage M {\n  optional int32 a = 1;\n}\n";
        let err = lower(text).unwrap_err();
        assert_eq!((err.line, err.column), (5, 3));
        // Columns count bytes: `é` is two.
        let err = lower("edition = \"2023\";\nmessage M { /* é */ optional int32 a = 1; }\n").unwrap_err();
        assert_eq!((err.line, err.column), (2, 22));
        assert_eq!(shown_position("a\r\nb\rc\nd", 6), (3, 2));
        // Source info's line 2 column 4 (`d`: `b`, CR, `c`, `d`) is shown on line 3, after the lone CR.
        assert_eq!(info_shown_position("a\nb\rcd\ne", 2, 4), (3, 2));
        assert_eq!(shown_offset("a\r\nb\rc\nd", 3, 2), 6);
    }

    #[test]
    fn a_position_in_the_lowered_text_is_shown_where_it_was_written() {
        let original = "edition = \"2023\";\n// x\ry\nmessage M { /* é */ int32 a = 1x; }\n";
        let lowered = lower(original).unwrap().unwrap();
        // protox shows `1x` (line 4 as shown, after the lone CR) in the lowered text.
        let at = lowered.text.find("1x").unwrap();
        let (line, column) = shown_position(&lowered.text, at);
        assert_eq!(line, 4);
        let shown = original_shown_position(original, &lowered.text, &lowered.edits, line, column);
        assert_eq!(shown, shown_position(original, original.find("1x").unwrap()));
    }

    #[test]
    fn aggregate_options_and_nested_blocks_are_stepped_over() {
        let text = "edition = \"2023\";\nimport \"google/protobuf/descriptor.proto\";\n\
                    extend google.protobuf.FieldOptions { Rule rule = 5000; }\n\
                    message Rule { option (x) = { a: 1 b { c: 2 } }; int32 a = 1 [(y) = { z: 1 }];\n\
                    enum E { A = 0; B = 1 [(o) = { q: 1 }]; }\n message N { string s = 1; } }\n\
                    service S { rpc Call(Rule) returns (Rule) { option (m) = { }; } rpc Other(Rule) returns (Rule); }\n";
        let lowered = lower(text).unwrap().unwrap();
        assert!(lowered.text.contains("{ optional Rule rule = 5000; }"));
        assert!(lowered.text.contains("optional int32 a = 1 [(y)"));
        assert!(lowered.text.contains("{ optional string s = 1; }"));
        assert!(lowered.text.contains("enum E { A = 0; B = 1"));
        assert!(!lowered.text.contains("optional A"));
        assert!(!lowered.text.contains("optional rpc"));
    }

    #[test]
    fn any_prefix_or_byte_flip_is_lowered_or_refused_never_a_panic() {
        let text = "edition = \"2023\";\npackage p; // c\n/* block */ message M {\n  reserved a, b;\n  \
                    int32 a = 1 [features.field_presence = IMPLICIT, (x) = { y: \"}\" }];\n  oneof o { string s = 2; }\n  \
                    map<string, M> m = 3;\n  enum E { Z = 0; reserved Q; }\n}\nservice S { rpc R(M) returns (M) {} }\n";
        for end in (0..=text.len()).filter(|i| text.is_char_boundary(*i)) {
            let _ = lower(&text[..end]);
        }
        let bytes = text.as_bytes();
        for at in 0..bytes.len() {
            for with in [b'{', b'}', b';', b'"', b'\'', b'/', b'*', b'\n', b'=', b'a'] {
                let mut mutated = bytes.to_vec();
                mutated[at] = with;
                if let Ok(mutated) = String::from_utf8(mutated) {
                    if let Ok(Some(lowered)) = lower(&mutated) {
                        // Every original column maps back inside its line.
                        for (line, text) in lowered.text.lines().enumerate() {
                            let _ = lowered.edits.original(line as u32, text.len() as u32);
                        }
                    }
                }
            }
        }
    }
}
