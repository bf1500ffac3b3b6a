//! Text → TF-IDF rows: the tokenizer (scikit-learn's default token pattern, lower-cased), word
//! n-grams, an arena-backed term table, per-fold vocabularies and idf, and CSR rows.

use super::SparseConfig;

/// Which terms a text has; stored in the artifact so prediction reads text the same way.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Analyzer {
    pub(super) word_ngrams: (usize, usize),
    pub(super) char_ngrams: (usize, usize),
}

impl From<&SparseConfig> for Analyzer {
    fn from(cfg: &SparseConfig) -> Self {
        Self { word_ngrams: cfg.word_ngrams, char_ngrams: cfg.char_ngrams }
    }
}

/// `\w` of Python's `re` on `str`, closely: letters, digits and numerals, and `_`.
pub(super) fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Analyzer {
    pub(super) fn check(&self) -> Result<(), String> {
        let (wl, wh) = self.word_ngrams;
        let (cl, ch) = self.char_ngrams;
        if wl > wh || cl > ch {
            return Err("n-gram ranges must be (low, high) with low <= high".into());
        }
        if wh > 8 || ch > 16 {
            return Err("n-grams longer than 8 words or 16 characters are not supported".into());
        }
        if (wl == 0 && wh > 0) || (cl == 0 && ch > 0) {
            return Err("an n-gram range starts at 1, or is (0, 0) for none".into());
        }
        if wh == 0 && ch == 0 {
            return Err("no word or character n-grams requested".into());
        }
        Ok(())
    }

    /// Calls `f` with every term occurrence of `text`, in text order, word n-grams first.
    pub(super) fn terms(&self, text: &str, mut f: impl FnMut(&str)) {
        let lower = text.to_lowercase();
        let mut tokens: Vec<&str> = Vec::new();
        let mut start = None;
        let mut chars = 0;
        for (i, c) in lower.char_indices() {
            if is_word_char(c) {
                if start.is_none() {
                    start = Some(i);
                    chars = 0;
                }
                chars += 1;
            } else if let Some(s) = start.take()
                && chars >= 2
            {
                tokens.push(&lower[s..i]);
            }
        }
        if let Some(s) = start
            && chars >= 2
        {
            tokens.push(&lower[s..]);
        }
        let mut buf = String::new();
        let (wl, wh) = self.word_ngrams;
        if wl >= 1 {
            for n in wl..=wh {
                for win in tokens.windows(n) {
                    if n == 1 {
                        f(win[0]);
                        continue;
                    }
                    buf.clear();
                    for (j, t) in win.iter().enumerate() {
                        if j > 0 {
                            buf.push(' ');
                        }
                        buf.push_str(t);
                    }
                    f(&buf);
                }
            }
        }
        let (cl, ch) = self.char_ngrams;
        if cl >= 1 {
            let mut padded: Vec<(usize, char)> = Vec::new();
            let mut word = String::new();
            for t in &tokens {
                word.clear();
                word.push(' ');
                word.push_str(t);
                word.push(' ');
                padded.clear();
                padded.extend(word.char_indices());
                let len = padded.len();
                let end = |j: usize| if j < len { padded[j].0 } else { word.len() };
                for n in cl..=ch {
                    // As scikit-learn's char_wb: a word shorter than n gives itself once.
                    let last = len.saturating_sub(n);
                    for s in 0..=last {
                        buf.clear();
                        buf.push('#');
                        buf.push_str(&word[padded[s].0..end(s + n)]);
                        f(&buf);
                    }
                    if len <= n {
                        break;
                    }
                }
            }
        }
    }
}

/// Terms by id: their bytes back to back, and an open-addressing table from a term's hash to its
/// id. One allocation per growth, none per term: interning is most of the cost of reading text.
#[derive(Clone, Default)]
pub(super) struct Interner {
    pub(super) bytes: Vec<u8>,
    /// Term `i` is `bytes[ends[i - 1]..ends[i]]` (from 0 for the first).
    pub(super) ends: Vec<usize>,
    pub(super) hashes: Vec<u64>,
    /// Ids, `u32::MAX` for an empty slot; length a power of two, at most half full.
    pub(super) table: Vec<u32>,
}

impl std::fmt::Debug for Interner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interner({} terms, {} bytes)", self.len(), self.bytes.len())
    }
}

/// A 64-bit hash of a term: 8-byte words multiplied in, then murmur3's finaliser, so every bit
/// of the result depends on every input byte. Fixed, so run time does not depend on the process.
pub(super) fn term_hash(s: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = s.len() as u64;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().expect("8 bytes"))).wrapping_mul(K).rotate_left(31);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl Interner {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn term_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub(super) fn term(&self, id: u32) -> &str {
        std::str::from_utf8(self.term_bytes(id)).expect("terms are pushed as str")
    }

    /// The slot holding `s`, or the empty slot where it would go.
    pub(super) fn slot(&self, s: &str, h: u64) -> usize {
        let mask = self.table.len() - 1;
        let mut i = (h as usize) & mask;
        loop {
            let id = self.table[i];
            if id == u32::MAX || (self.hashes[id as usize] == h && self.term_bytes(id) == s.as_bytes()) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    pub(super) fn get(&self, s: &str) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let id = self.table[self.slot(s, term_hash(s.as_bytes()))];
        (id != u32::MAX).then_some(id)
    }

    /// The id of `s`, added with the next id if new. Returns (id, added).
    pub(super) fn intern(&mut self, s: &str) -> (u32, bool) {
        if 2 * (self.len() + 1) > self.table.len() {
            self.grow();
        }
        let h = term_hash(s.as_bytes());
        let slot = self.slot(s, h);
        if self.table[slot] != u32::MAX {
            return (self.table[slot], false);
        }
        let id = u32::try_from(self.len()).expect("fewer than 2^32 distinct terms");
        self.bytes.extend_from_slice(s.as_bytes());
        self.ends.push(self.bytes.len());
        self.hashes.push(h);
        self.table[slot] = id;
        (id, true)
    }

    pub(super) fn grow(&mut self) {
        let cap = (self.table.len() * 2).max(1024);
        self.table = vec![u32::MAX; cap];
        let mask = cap - 1;
        for (id, &h) in self.hashes.iter().enumerate() {
            let mut i = (h as usize) & mask;
            while self.table[i] != u32::MAX {
                i = (i + 1) & mask;
            }
            self.table[i] = id as u32;
        }
    }
}

/// Every text as (term id, count) pairs over one interned term table (all terms, before any
/// document-frequency cut), so folds can each pick their own vocabulary without re-reading text.
pub(super) struct Corpus {
    pub(super) analyzer: Analyzer,
    pub(super) terms: Interner,
    pub(super) docs: Vec<TermCounts>,
}

/// One text's (term id, count) pairs, ids ascending.
pub(super) type TermCounts = Vec<(u32, u32)>;

/// A vocabulary drawn from some rows: term ids in column order, and each column's idf.
pub(super) struct Vocabulary {
    pub(super) terms: Vec<u32>,
    /// Column of each term id (`u32::MAX`: not in the vocabulary).
    pub(super) col: Vec<u32>,
    pub(super) idf: Vec<f32>,
}

impl Corpus {
    pub(super) fn new<S: AsRef<str> + Sync>(texts: &[S], analyzer: Analyzer, threads: Option<usize>) -> Self {
        // Tokenise in parallel into per-chunk term tables, then merge the tables in chunk order:
        // ids are given in order of first appearance, as one sequential pass would give them.
        let threads = super::parallel::threads(threads);
        let chunk = if threads == 1 { texts.len() } else { texts.len().div_ceil(threads * 4) }.max(1);
        let n_chunks = texts.len().div_ceil(chunk);
        let parts: Vec<(Interner, Vec<TermCounts>)> = super::parallel::par_map(n_chunks, threads, |ci| {
            let mut local = Interner::default();
            let rows = &texts[ci * chunk..((ci + 1) * chunk).min(texts.len())];
            let mut ids: Vec<u32> = Vec::new();
            let docs = rows
                .iter()
                .map(|t| {
                    ids.clear();
                    analyzer.terms(t.as_ref(), |term| ids.push(local.intern(term).0));
                    ids.sort_unstable();
                    count_runs(&ids)
                })
                .collect();
            (local, docs)
        });
        if parts.len() == 1 {
            let (terms, docs) = parts.into_iter().next().expect("one part");
            return Self { analyzer, terms, docs };
        }
        let mut terms = Interner::default();
        let mut docs = Vec::with_capacity(texts.len());
        for (local, part) in parts {
            let remap: Vec<u32> = (0..local.len() as u32).map(|t| terms.intern(local.term(t)).0).collect();
            for d in part {
                let mut g: Vec<(u32, u32)> = d.into_iter().map(|(t, n)| (remap[t as usize], n)).collect();
                g.sort_unstable_by_key(|p| p.0);
                docs.push(g);
            }
        }
        Self { analyzer, terms, docs }
    }

    /// The terms in at least `min_df` of `rows`, most frequent first, with their smoothed idf.
    pub(super) fn vocabulary(&self, rows: &[usize], min_df: usize) -> Vocabulary {
        let mut df = vec![0u32; self.terms.len()];
        for &r in rows {
            for &(t, _) in &self.docs[r] {
                df[t as usize] += 1;
            }
        }
        let n = rows.len() as f64;
        let mut terms: Vec<u32> = (0..df.len() as u32).filter(|&t| df[t as usize] as usize >= min_df).collect();
        // Most frequent first: the weights the solver touches most sit together in memory.
        terms.sort_by_key(|&t| (std::cmp::Reverse(df[t as usize]), t));
        let mut col = vec![u32::MAX; self.terms.len()];
        let mut idf = Vec::with_capacity(terms.len());
        for (c, &t) in terms.iter().enumerate() {
            col[t as usize] = c as u32;
            idf.push((((1.0 + n) / (1.0 + f64::from(df[t as usize]))).ln() + 1.0) as f32);
        }
        Vocabulary { terms, col, idf }
    }

    /// TF-IDF rows of `rows` over vocabulary `v`.
    pub(super) fn rows(&self, rows: &[usize], v: &Vocabulary) -> Csr {
        let mut x = Csr { indptr: vec![0], indices: Vec::new(), values: Vec::new() };
        let mut counted = Vec::new();
        for &r in rows {
            counted.clear();
            counted.extend(self.docs[r].iter().filter_map(|&(t, n)| {
                let c = v.col[t as usize];
                (c != u32::MAX).then_some((c, n))
            }));
            counted.sort_unstable_by_key(|p| p.0);
            for (c, val) in tfidf(&counted, &v.idf) {
                x.indices.push(c);
                x.values.push(val);
            }
            x.indptr.push(x.indices.len());
        }
        x
    }
}

pub(super) fn count_runs(sorted: &[u32]) -> TermCounts {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &t in sorted {
        match out.last_mut() {
            Some((lt, n)) if *lt == t => *n += 1,
            _ => out.push((t, 1)),
        }
    }
    out
}

/// `(1 + ln tf) · idf`, L2-normalised; `counted` is (column, count) with columns ascending.
/// Training and prediction both go through here, so a text gets the same values in both.
pub(super) fn tfidf(counted: &[(u32, u32)], idf: &[f32]) -> Vec<(u32, f32)> {
    let vals: Vec<f64> = counted.iter().map(|&(c, n)| (1.0 + f64::from(n).ln()) * f64::from(idf[c as usize])).collect();
    let norm = vals.iter().map(|v| v * v).sum::<f64>().sqrt();
    let scale = if norm > 0.0 { 1.0 / norm } else { 0.0 };
    counted.iter().zip(&vals).map(|(&(c, _), &v)| (c, (v * scale) as f32)).collect()
}

/// Compressed sparse rows.
pub(super) struct Csr {
    pub(super) indptr: Vec<usize>,
    pub(super) indices: Vec<u32>,
    pub(super) values: Vec<f32>,
}

impl Csr {
    pub(super) fn rows(&self) -> usize {
        self.indptr.len() - 1
    }
    pub(super) fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.values[a..b])
    }
}

/// The combined model's embedding columns for some rows, scaled, row-major and contiguous: the
/// solver reads them as a dense block after the sparse columns (one vectorisable loop, not one
/// index per component).
pub(super) struct DenseBlock {
    pub(super) values: Vec<f32>,
    pub(super) dim: usize,
}

impl DenseBlock {
    /// Row `rows[i]` of `m` times `scale` is row `i`.
    pub(super) fn new(m: &keel_core::Matrix, rows: &[usize], scale: f32) -> Self {
        let dim = m.cols();
        let mut values = Vec::with_capacity(rows.len() * dim);
        for &r in rows {
            values.extend(m.row(r).iter().map(|&v| scale * v));
        }
        Self { values, dim }
    }

    pub(super) fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

// ---------------------------------------------------------------------------------------------
// Dual coordinate descent for the L2-regularised squared-hinge SVM
