//! Opening a source file: transparent decompression by extension (or magic bytes), and the
//! sha256 of the file as stored, computed while it is read.

use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;

use keel_core::ContentHash;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Gzip,
    Bzip2,
}

impl Compression {
    pub fn from_extension(path: &Path) -> Option<Compression> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "gz" | "gzip" => Some(Compression::Gzip),
            "bz2" | "bzip2" => Some(Compression::Bzip2),
            _ => None,
        }
    }

    pub fn from_magic(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Some(Compression::Bzip2)
        } else {
            None
        }
    }
}

/// The path without its compression extension: `corpus.csv.bz2` → `corpus.csv`.
pub fn inner_path(path: &Path) -> &Path {
    match Compression::from_extension(path) {
        Some(_) => path.file_stem().map(Path::new).unwrap_or(path),
        None => path,
    }
}

/// Passes bytes through while hashing them.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new() }
    }

    /// Reads what is left, then returns the sha256 of everything read.
    pub fn finish(mut self) -> io::Result<ContentHash> {
        io::copy(&mut self, &mut io::sink())?;
        let hex = hex::encode(self.hasher.finalize());
        Ok(ContentHash::parse(&hex).expect("sha256 hex is a content hash"))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A file opened for reading: decompressed when its extension or first bytes say so.
pub fn open<'a>(
    path: &Path,
    raw: &'a mut HashingReader<File>,
) -> io::Result<(Box<dyn Read + 'a>, Option<Compression>)> {
    let mut magic = Vec::with_capacity(4);
    raw.by_ref().take(4).read_to_end(&mut magic)?;
    let compression = Compression::from_extension(path).or_else(|| Compression::from_magic(&magic));
    let stream = Cursor::new(magic).chain(raw);
    Ok(match compression {
        None => (Box::new(stream), None),
        Some(Compression::Gzip) => (Box::new(flate2::read::MultiGzDecoder::new(stream)), compression),
        Some(Compression::Bzip2) => (Box::new(bzip2::read::MultiBzDecoder::new(stream)), compression),
    })
}

/// Reads up to `n` bytes (fewer only at the end of the input).
pub fn read_head(input: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n.min(1 << 20));
    input.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}
