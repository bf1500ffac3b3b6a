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

/// How far a compressed file may expand: past either bound reading fails with an error that
/// says so, so a decompression bomb costs neither hours of CPU nor the disk it would fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decompression {
    /// Decompressed bytes per compressed byte at most, checked once past `ratio_after` bytes
    /// (real text compresses 3-15x; gzip's ceiling is ~1,000x, bzip2's far higher).
    pub max_ratio: u64,
    /// Decompressed bytes read before the ratio is checked (small files may be very repetitive).
    pub ratio_after: u64,
    /// Decompressed bytes at most, whatever the ratio.
    pub max_bytes: u64,
}

impl Default for Decompression {
    fn default() -> Self {
        Self { max_ratio: 100, ratio_after: 64 << 20, max_bytes: 64 << 30 }
    }
}

/// Counts the bytes passed through.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A decoder that can say how many compressed bytes it has pulled in.
trait Decoder: Read {
    fn compressed(&self) -> u64;
}

impl<R: Read> Decoder for flate2::read::MultiGzDecoder<Counting<R>> {
    fn compressed(&self) -> u64 {
        self.get_ref().read
    }
}

impl<R: Read> Decoder for bzip2::read::MultiBzDecoder<Counting<R>> {
    fn compressed(&self) -> u64 {
        self.get_ref().read
    }
}

/// A decoder held to [`Decompression`]'s bounds.
struct Capped<D> {
    decoder: D,
    out: u64,
    limits: Decompression,
    kind: &'static str,
}

impl<D: Decoder> Read for Capped<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.decoder.read(buf)?;
        self.out += n as u64;
        let (out, compressed, l) = (self.out, self.decoder.compressed().max(1), self.limits);
        let refuse = |why: String| {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the {} stream {why}: refusing a likely decompression bomb; if the file is genuine, \
                     decompress it and ingest the plain file (or raise ReadOptions::decompression)",
                    self.kind
                ),
            ))
        };
        if out > l.max_bytes {
            return refuse(format!("expands past {} bytes, the decompression limit", l.max_bytes));
        }
        if out > l.ratio_after && out / compressed > l.max_ratio {
            return refuse(format!(
                "expands more than {}x ({out} bytes from {compressed} compressed bytes so far)",
                l.max_ratio
            ));
        }
        Ok(n)
    }
}

/// A file opened for reading: decompressed when its extension or first bytes say so, within
/// `limits`.
pub fn open<'a>(
    path: &Path,
    raw: &'a mut HashingReader<File>,
    limits: Decompression,
) -> io::Result<(Box<dyn Read + 'a>, Option<Compression>)> {
    let mut magic = Vec::with_capacity(4);
    raw.by_ref().take(4).read_to_end(&mut magic)?;
    let compression = Compression::from_extension(path).or_else(|| Compression::from_magic(&magic));
    let stream = Cursor::new(magic).chain(raw);
    let counted = Counting { inner: stream, read: 0 };
    Ok(match compression {
        None => (Box::new(counted), None),
        Some(Compression::Gzip) => {
            let decoder = flate2::read::MultiGzDecoder::new(counted);
            (Box::new(Capped { decoder, out: 0, limits, kind: "gzip" }), compression)
        }
        Some(Compression::Bzip2) => {
            let decoder = bzip2::read::MultiBzDecoder::new(counted);
            (Box::new(Capped { decoder, out: 0, limits, kind: "bzip2" }), compression)
        }
    })
}

/// Reads up to `n` bytes (fewer only at the end of the input).
pub fn read_head(input: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n.min(1 << 20));
    input.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}
