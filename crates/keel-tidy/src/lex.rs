//! A small Rust lexer: enough to tell code from comments and literals, and to match braces.
//!
//! It knows line comments (`//`, `///`, `//!`), nested block comments, string literals with
//! escapes (`"…"`, `b"…"`, `c"…"`), raw strings (`r"…"`, `r#"…"#`, `br##"…"##`), char and byte
//! literals (`'x'`, `'\n'`, `b'\''`, `'\u{1F600}'`) and tells them from lifetimes and labels
//! (`'a`, `'static`, `'outer:`). It does not expand macros or parse items; the rules built on it
//! say where that makes them approximate.

/// A source file split into views of the same byte length: every rule picks the view it needs,
/// and byte offsets (and so line numbers) are the same in all of them.
pub(crate) struct Lexed {
    /// Comments and literals blanked to spaces (newlines kept): only code is left.
    pub code: String,
    /// Comments blanked, literals kept.
    pub code_and_literals: String,
    /// Only comments kept, everything else blanked.
    pub comments: String,
    line_starts: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    Comment,
    Literal,
}

/// A token of the code view: identifiers (keywords and numbers included), `::`, or one
/// punctuation byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Ident(&'a str),
    Sep,
    Punct(u8),
}

/// A token and the byte offset where it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    pub at: usize,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

/// The length in bytes of the UTF-8 character that starts with `b`.
fn char_len(b: u8) -> usize {
    match b {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

impl Lexed {
    pub fn new(text: &str) -> Lexed {
        let kinds = classify(text.as_bytes());
        let view = |keep: &dyn Fn(Kind) -> bool| -> String {
            let bytes: Vec<u8> =
                text.bytes().zip(&kinds).map(|(b, &k)| if b == b'\n' || keep(k) { b } else { b' ' }).collect();
            // Only whole spans (which start and end at ASCII delimiters) are blanked, so the
            // multi-byte characters that remain are intact.
            String::from_utf8(bytes).expect("blanking whole spans keeps UTF-8 valid")
        };
        let mut line_starts = vec![0];
        line_starts.extend(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        Lexed {
            code: view(&|k| k == Kind::Code),
            code_and_literals: view(&|k| k != Kind::Comment),
            comments: view(&|k| k == Kind::Comment),
            line_starts,
        }
    }

    /// The 1-based line of a byte offset.
    pub fn line_of(&self, at: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= at)
    }

    /// The comment text of a 1-based line (empty when the line has none).
    pub fn comment_on(&self, line: usize) -> &str {
        line_of_text(&self.comments, &self.line_starts, line).trim()
    }

    /// The code of a 1-based line (comments and literals blanked).
    pub fn code_on(&self, line: usize) -> &str {
        line_of_text(&self.code, &self.line_starts, line)
    }

    /// The tokens of the code view.
    pub fn tokens(&self) -> Vec<Token<'_>> {
        tokenize(&self.code)
    }
}

fn line_of_text<'a>(text: &'a str, starts: &[usize], line: usize) -> &'a str {
    let Some(&start) = starts.get(line.wrapping_sub(1)) else { return "" };
    let end = starts.get(line).map_or(text.len(), |&e| e - 1);
    &text[start..end]
}

/// Marks every byte as code, comment or literal.
fn classify(b: &[u8]) -> Vec<Kind> {
    let n = b.len();
    let mut kinds = vec![Kind::Code; n];
    let mut mark = |from: usize, to: usize, k: Kind| kinds[from..to.min(n)].fill(k);
    let mut i = 0;
    while i < n {
        let at = |j: usize| b.get(j).copied().unwrap_or(0);
        match b[i] {
            b'/' if at(i + 1) == b'/' => {
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(n, |p| i + p);
                mark(i, end, Kind::Comment);
                i = end;
            }
            b'/' if at(i + 1) == b'*' => {
                let end = block_comment_end(b, i);
                mark(i, end, Kind::Comment);
                i = end;
            }
            b'"' => {
                let end = string_end(b, i + 1);
                mark(i, end, Kind::Literal);
                i = end;
            }
            b'\'' => {
                if let Some(end) = char_literal_end(b, i) {
                    mark(i, end, Kind::Literal);
                    i = end;
                } else {
                    i += 1; // a lifetime or label: its name is read as an identifier next
                }
            }
            c if is_ident(c) => {
                let start = i;
                while i < n && is_ident(b[i]) {
                    i += 1;
                }
                if matches!(&b[start..i], b"r" | b"br" | b"cr")
                    && let Some(end) = raw_string_end(b, i)
                {
                    mark(start, end, Kind::Literal);
                    i = end;
                }
            }
            _ => i += 1,
        }
    }
    kinds
}

/// The end (exclusive) of the nested block comment starting at `i`.
fn block_comment_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        if b[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if b[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// The end (exclusive, after the closing quote) of a string whose content starts at `i`.
fn string_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

/// If a raw string's hashes and opening quote start at `i` (just after its `r`), its end.
fn raw_string_end(b: &[u8], i: usize) -> Option<usize> {
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    if b.get(i + hashes) != Some(&b'"') {
        return None; // `r#ident` (a raw identifier) or a plain `r`
    }
    let mut closing = vec![b'"'];
    closing.extend(std::iter::repeat_n(b'#', hashes));
    let body = i + hashes + 1;
    let end = b[body..].windows(closing.len()).position(|w| w == closing.as_slice());
    Some(end.map_or(b.len(), |p| body + p + closing.len()))
}

/// If a char literal starts at the quote at `i`, its end; `None` for a lifetime or label.
fn char_literal_end(b: &[u8], i: usize) -> Option<usize> {
    let next = *b.get(i + 1)?;
    if next == b'\\' {
        // An escape: `'\n'`, `'\''`, `'\x41'`, `'\u{…}'`; the closing quote is the next one
        // after the escaped character.
        let from = i + 3;
        return Some(b.get(from..)?.iter().position(|&c| c == b'\'').map_or(b.len(), |p| from + p + 1));
    }
    let after = i + 1 + char_len(next);
    (b.get(after) == Some(&b'\'') && next != b'\n').then_some(after + 1)
}

fn tokenize(code: &str) -> Vec<Token<'_>> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            out.push(Token { tok: Tok::Ident(&code[start..i]), at: start });
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push(Token { tok: Tok::Sep, at: i });
            i += 2;
        } else {
            out.push(Token { tok: Tok::Punct(c), at: i });
            i += 1;
        }
    }
    out
}

/// The index of the token that closes the bracket opened at `open` (`{`, `(` or `[`).
pub(crate) fn matching(toks: &[Token<'_>], open: usize) -> Option<usize> {
    let (o, c) = match toks[open].tok {
        Tok::Punct(b'{') => (b'{', b'}'),
        Tok::Punct(b'(') => (b'(', b')'),
        Tok::Punct(b'[') => (b'[', b']'),
        _ => return None,
    };
    let mut depth = 0usize;
    for (j, t) in toks.iter().enumerate().skip(open) {
        if t.tok == Tok::Punct(o) {
            depth += 1;
        } else if t.tok == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return Some(j);
            }
        }
    }
    None
}

/// Byte ranges of inline test modules: `#[cfg(test)]` (other attributes may follow) on a
/// `mod name { … }`.
pub(crate) fn cfg_test_modules(toks: &[Token<'_>]) -> Vec<std::ops::Range<usize>> {
    use Tok::{Ident, Punct};
    const CFG_TEST: [Tok<'static>; 7] =
        [Punct(b'#'), Punct(b'['), Ident("cfg"), Punct(b'('), Ident("test"), Punct(b')'), Punct(b']')];
    let tok = |j: usize| toks.get(j).map(|t| t.tok);
    let mut out = Vec::new();
    for i in 0..toks.len() {
        if toks.len() < i + CFG_TEST.len() || !toks[i..].iter().zip(CFG_TEST).all(|(t, p)| t.tok == p) {
            continue;
        }
        // Skip further attributes and a visibility, then expect `mod name {`.
        let mut j = i + CFG_TEST.len();
        loop {
            match (tok(j), tok(j + 1)) {
                (Some(Punct(b'#')), Some(Punct(b'['))) => j = matching(toks, j + 1).map_or(toks.len(), |e| e + 1),
                (Some(Ident("pub")), Some(Punct(b'('))) => j = matching(toks, j + 1).map_or(toks.len(), |e| e + 1),
                (Some(Ident("pub")), _) => j += 1,
                _ => break,
            }
        }
        if tok(j) == Some(Ident("mod"))
            && tok(j + 2) == Some(Punct(b'{'))
            && let Some(close) = matching(toks, j + 2)
        {
            out.push(toks[i].at..toks[close].at + 1);
        }
    }
    out
}
