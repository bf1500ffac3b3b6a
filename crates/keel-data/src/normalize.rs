//! Text normalisation: optional HTML stripping, control characters removed, whitespace
//! collapsed, Unicode NFC.

use std::borrow::Cow;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// Normalises `text`: with `strip_html`, tags are removed (block tags such as `<br />` become a
/// space) and character references decoded; then control characters (and U+FEFF) are removed,
/// every run of whitespace becomes one space, the ends are trimmed, and the result is put in
/// Unicode NFC. Without `strip_html` it is idempotent. Borrows when nothing changes.
pub fn normalize(text: &str, strip_html: bool) -> Cow<'_, str> {
    let stripped = if strip_html && text.bytes().any(|b| b == b'<' || b == b'&') {
        Cow::Owned(html_to_text(text))
    } else {
        Cow::Borrowed(text)
    };
    let cleaned = match clean(&stripped) {
        Some(s) => Cow::Owned(s),
        None => stripped,
    };
    let nfc = if cleaned.is_ascii() || is_nfc_quick(cleaned.chars()) == IsNormalized::Yes {
        cleaned
    } else {
        let s: String = cleaned.nfc().collect();
        if s == *cleaned { cleaned } else { Cow::Owned(s) }
    };
    match nfc {
        Cow::Owned(s) if s == text => Cow::Borrowed(text),
        other => other,
    }
}

fn drop_char(c: char) -> bool {
    c.is_control() || c == '\u{feff}'
}

/// Whitespace collapsed and control characters removed; `None` when `s` is already clean.
fn clean(s: &str) -> Option<String> {
    if is_clean(s) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c.is_whitespace() {
            space = true;
        } else if !drop_char(c) {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    Some(out)
}

fn is_clean(s: &str) -> bool {
    let b = s.as_bytes();
    if b.first().is_some_and(|&c| c == b' ') || b.last().is_some_and(|&c| c == b' ') {
        return false;
    }
    // Fast path, one pass over the bytes: printable ASCII with single spaces is clean; any other
    // byte sends the text to the character-level check.
    let mut prev = 0u8;
    for &c in b {
        if !(b' '..0x7f).contains(&c) || (c == b' ' && prev == b' ') {
            return !(c < 0x80 && c != b' ') && is_clean_chars(s);
        }
        prev = c;
    }
    true
}

fn is_clean_chars(s: &str) -> bool {
    let mut prev_space = true;
    for c in s.chars() {
        if c.is_whitespace() {
            if c != ' ' || prev_space {
                return false;
            }
            prev_space = true;
        } else if drop_char(c) {
            return false;
        } else {
            prev_space = false;
        }
    }
    !prev_space
}

/// Tags that separate words: they become a space. Other tags (`<b>`, `<a>`, ...) vanish.
const BLOCK_TAGS: &[&str] = &[
    "br",
    "p",
    "div",
    "li",
    "ul",
    "ol",
    "tr",
    "td",
    "th",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "blockquote",
    "pre",
    "section",
    "article",
    "header",
    "footer",
    "dd",
    "dt",
    "title",
    "body",
    "html",
    "head",
];

const ENTITIES: &[(&str, &str)] = &[
    ("amp", "&"),
    ("lt", "<"),
    ("gt", ">"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", "\u{a0}"),
    ("ndash", "\u{2013}"),
    ("mdash", "\u{2014}"),
    ("hellip", "\u{2026}"),
    ("lsquo", "\u{2018}"),
    ("rsquo", "\u{2019}"),
    ("ldquo", "\u{201c}"),
    ("rdquo", "\u{201d}"),
    ("laquo", "\u{ab}"),
    ("raquo", "\u{bb}"),
    ("copy", "\u{a9}"),
    ("reg", "\u{ae}"),
    ("trade", "\u{2122}"),
    ("deg", "\u{b0}"),
    ("eacute", "\u{e9}"),
    ("egrave", "\u{e8}"),
    ("aacute", "\u{e1}"),
    ("agrave", "\u{e0}"),
    ("ccedil", "\u{e7}"),
    ("uuml", "\u{fc}"),
    ("ouml", "\u{f6}"),
    ("auml", "\u{e4}"),
    ("szlig", "\u{df}"),
    ("ntilde", "\u{f1}"),
    ("euro", "\u{20ac}"),
    ("pound", "\u{a3}"),
];

/// Removes HTML tags and comments and decodes character references. Text that only looks like
/// markup (`a < b`, `AT&T`, an unclosed `<!--`) is kept as it is. Linear in the input: the
/// next `>` and the next `-->` are remembered as the scan moves forward, so a page of unclosed
/// `<!--` or `<a` is read once, not once per `<`.
pub fn html_to_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut ends = Ends::default();
    let mut pos = 0;
    while let Some(i) = s[pos..].find(['<', '&']) {
        let at = pos + i;
        out.push_str(&s[pos..at]);
        let consumed =
            if s[at..].starts_with('<') { tag(s, at, &mut ends, &mut out) } else { entity(&s[at..], &mut out) };
        match consumed {
            Some(n) => pos = at + n,
            None => {
                out.push_str(&s[at..at + 1]);
                pos = at + 1;
            }
        }
    }
    out.push_str(&s[pos..]);
    out
}

/// The next `>` and `-->` of the text, by absolute byte position (`Some(None)`: none left).
#[derive(Default)]
struct Ends {
    gt: Option<Option<usize>>,
    comment: Option<Option<usize>>,
}

/// The first `needle` at or after `from` in `s`, reusing `cache` while it lies ahead: callers
/// only move forward, so every byte is searched at most once per needle.
fn next_at(cache: &mut Option<Option<usize>>, s: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    match *cache {
        Some(None) => return None,
        Some(Some(p)) if p >= from => return Some(p),
        _ => {}
    }
    let found = s.get(from..).and_then(|rest| rest.windows(needle.len()).position(|w| w == needle)).map(|j| from + j);
    *cache = Some(found);
    found
}

/// A tag or comment at byte `at` of `s`: its length, with its replacement pushed to `out`.
fn tag(s: &str, at: usize, ends: &mut Ends, out: &mut String) -> Option<usize> {
    let t = &s[at..];
    if t.starts_with("<!--") {
        return next_at(&mut ends.comment, s.as_bytes(), at + 4, b"-->").map(|j| {
            out.push(' ');
            j + 3 - at
        });
    }
    let after = t.as_bytes().get(1)?;
    if !(after.is_ascii_alphabetic() || matches!(after, b'/' | b'!' | b'?')) {
        return None;
    }
    // A tag ends at the first `>`, within a bound so that a stray `<` cannot eat a page.
    let end = next_at(&mut ends.gt, s.as_bytes(), at, b">")? - at;
    if end >= 2048 {
        return None;
    }
    let name: String = t[1..end]
        .trim_start_matches('/')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if BLOCK_TAGS.contains(&name.as_str()) || !matches!(after, b'/') && name.is_empty() {
        out.push(' ');
    }
    Some(end + 1)
}

/// A character reference at the start of `s` (`&amp;`, `&#39;`, `&#x27;`): its length.
fn entity(s: &str, out: &mut String) -> Option<usize> {
    let semi = s.as_bytes().iter().take(12).position(|&b| b == b';')?;
    let body = &s[1..semi];
    if let Some(num) = body.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse::<u32>().ok()?,
        };
        out.push(char::from_u32(code).filter(|&c| c != '\0').unwrap_or('\u{fffd}'));
        return Some(semi + 1);
    }
    let (_, text) = ENTITIES.iter().find(|(name, _)| *name == body)?;
    out.push_str(text);
    Some(semi + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_removes_controls_and_composes() {
        assert_eq!(normalize("  a \t\r\n b\u{0}c\u{7}  ", false), "a bc");
        assert_eq!(normalize("e\u{301}t\u{e9}", false), "\u{e9}t\u{e9}");
        assert_eq!(normalize("\u{feff}x\u{a0}\u{a0}y\u{2028}", false), "x y");
        assert!(matches!(normalize("already clean", false), Cow::Borrowed(_)));
        assert!(matches!(normalize("caf\u{e9} ok", false), Cow::Borrowed(_)));
        assert_eq!(normalize(" \u{0} \t", false), "");
    }

    #[test]
    fn html_is_stripped_only_when_asked() {
        let review = "Great film.<br /><br />Loved it &amp; the <i>score</i> &#8212; 5&lt;6, AT&T, a < b &bogus;";
        assert_eq!(normalize(review, true), "Great film. Loved it & the score \u{2014} 5<6, AT&T, a < b &bogus;");
        assert_eq!(normalize(review, false), review);
        assert_eq!(normalize("x<!-- hidden -->y<p>z", true), "x y z");
        assert_eq!(normalize("&#0;&#x110000;ok", true), "\u{fffd}\u{fffd}ok");
        assert_eq!(html_to_text("a<!--b<!--c-->d<!-- e -->f<!--g"), "a d f<!--g");
        assert_eq!(html_to_text("<a <b> c>"), " c>");
        let far = format!("<a{}>x", "y".repeat(3000));
        assert_eq!(html_to_text(&far), far, "a `>` beyond the bound ends no tag");
    }

    /// Issue 19: every `<!--` (or `<a`) searched to the end of the text: quadratic, minutes of
    /// a core for a few megabytes. Now one pass; the unclosed markup is kept as text.
    #[test]
    fn unclosed_comments_and_tags_are_read_once_and_kept() {
        let comments = "<!--".repeat(1 << 19); // 2 MB
        assert_eq!(html_to_text(&comments), comments);
        let tags = "<a".repeat(1 << 20);
        assert_eq!(html_to_text(&tags), tags);
        // Closed at the very end: everything from the first `<!--` is one comment.
        assert_eq!(html_to_text(&format!("x{comments}-->y")), "x y");
        let mixed = "<p<!--&amp".repeat(1 << 18);
        assert_eq!(html_to_text(&mixed), mixed);
    }
}
