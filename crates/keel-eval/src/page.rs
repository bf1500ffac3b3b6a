//! The page shell of Keel's reports (the evaluation report, the drift report): one
//! self-contained HTML document with inline CSS, no scripts and no external requests, so it
//! opens offline from a file.

use std::fmt::Write as _;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The style every report page shares.
const CSS: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#1d2330;padding:0 1rem;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #dde2ea;padding-bottom:.3rem}
.sub{color:#5b6474}.why{color:#5b6474;font-size:.9rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}td,th{padding:.3rem .6rem;border-bottom:1px solid #eef1f5;text-align:left;vertical-align:top}
th{background:#f6f8fb}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.promote{background:#e7f6ec;border-left:4px solid #2f9e55;padding:.6rem 1rem}.hold{background:#fdf0e6;border-left:4px solid #d9822b;padding:.6rem 1rem}
svg{display:block;margin:.6rem 0;max-width:100%;height:auto}svg text{font-family:inherit;font-size:11px;fill:#1d2330}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:.8rem}
.card{border:1px solid #dde2ea;border-radius:6px;padding:.7rem .9rem}.card .v{font-size:1.5rem;font-weight:600}
";

/// A whole page: the doctype and head (`title`, escaped here; the shared style, then
/// `extra_css`), `<body>`, what `body` writes, and the closing tags.
pub fn page(title: &str, extra_css: &str, body: impl FnOnce(&mut String)) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<link rel=\"icon\" href=\"data:,\"><title>{}</title><style>{CSS}{extra_css}</style></head><body>\n",
        escape(title)
    );
    body(&mut h);
    h.push_str("</body></html>\n");
    h
}
