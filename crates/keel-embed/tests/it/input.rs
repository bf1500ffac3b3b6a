use std::io::Write;

use keel_embed::{EmbedError, read_texts};

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

#[test]
fn jsonl_default_and_custom_field() {
    let f = file("\n{\"text\": \"first\", \"body\": \"a\"}\r\n\n{\"text\": \"sécond 🙂\", \"body\": \"b\"}\n");
    assert_eq!(read_texts(f.path(), None).unwrap(), ["first", "sécond 🙂"]);
    assert_eq!(read_texts(f.path(), Some("body")).unwrap(), ["a", "b"]);
}

#[test]
fn jsonl_errors_name_the_line() {
    let f = file("{\"text\": \"ok\"}\n{\"title\": \"no text\"}\n");
    let err = read_texts(f.path(), None).unwrap_err();
    assert!(matches!(err, EmbedError::Input { line: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(":2:") && msg.contains("missing field \"text\""), "{msg}");

    let f = file("{\"text\": \"ok\"}\n{\"text\": 3}\nnot json\n");
    let err = read_texts(f.path(), None).unwrap_err();
    assert!(err.to_string().contains(":2: field \"text\" is not a string"), "{err}");

    let f = file("{\"text\": \"ok\"}\nnot json\n");
    let err = read_texts(f.path(), None).unwrap_err();
    assert!(err.to_string().contains(":2: invalid JSON"), "{err}");
}

#[test]
fn plain_lines() {
    let f = file("alpha\r\n\nbeta {\"text\": 1}\r\ngamma");
    assert_eq!(read_texts(f.path(), None).unwrap(), ["alpha", "", "beta {\"text\": 1}", "gamma"]);
    // A first line that is JSON but not an object means plain text.
    let f = file("\"quoted\"\n[1]\n");
    assert_eq!(read_texts(f.path(), None).unwrap(), ["\"quoted\"", "[1]"]);
    let missing = std::path::Path::new("/nonexistent/texts.txt");
    let err = read_texts(missing, None).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/texts.txt"), "{err}");
}
