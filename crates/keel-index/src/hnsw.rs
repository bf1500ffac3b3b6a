//! Hierarchical navigable small-world graph (Malkov & Yashunin, 2016) over unit vectors, with
//! cosine similarity as the dot product.
//!
//! Built by inserting points one at a time in id order with a seeded level generator, so the
//! same vectors and parameters give the same graph, byte for byte. Neighbours are chosen with
//! the paper's heuristic (algorithm 4, as hnswlib does). A search may take a filter: the graph
//! is walked through every node, but only allowed nodes enter the result; callers fall back to
//! an exact scan when the filter leaves few nodes (see [`crate::Index::search`]).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::Path;

use keel_core::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::IndexError;

/// Graph parameters. The defaults reach recall@10 ≥ 0.98 against exact search on 384-d
/// MiniLM vectors of news-article chunks (BENCHMARKS.md, scripts/bench-retrieval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HnswParams {
    /// Links per node on the upper layers; layer 0 keeps twice as many.
    pub m: usize,
    /// Candidate list size while inserting: larger builds slower and links better.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least k): the recall/speed knob.
    pub ef_search: usize,
    /// Seed of the level generator.
    pub seed: u64,
}

impl Default for HnswParams {
    fn default() -> Self {
        Self { m: 16, ef_construction: 200, ef_search: 96, seed: 0x6b65_656c }
    }
}

/// Dot product of two equal-length slices, in eight lanes so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Cand {
    dist: f32,
    id: u32,
}

impl Eq for Cand {}

impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist.total_cmp(&other.dist).then(self.id.cmp(&other.id))
    }
}

struct Visited(Vec<u64>);

impl Visited {
    fn new(n: usize) -> Self {
        Self(vec![0; n.div_ceil(64)])
    }

    /// Marks `id`; true when it was not marked before.
    fn insert(&mut self, id: u32) -> bool {
        let (w, b) = (id as usize / 64, id % 64);
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
}

/// The graph and the vectors it indexes (node id = row).
#[derive(Clone, Debug)]
pub struct Hnsw {
    dim: usize,
    params: HnswParams,
    vectors: Vec<f32>,
    /// `links[node][layer]`: neighbour ids.
    links: Vec<Vec<Vec<u32>>>,
    entry: Option<u32>,
    max_level: usize,
    /// Draws the levels of new nodes; its state is saved with the graph.
    rng: SplitMix64,
}

const MAGIC: &[u8; 8] = b"KEELHNSW";
const FORMAT: u32 = 1;
const MAX_LEVEL: usize = 16;

impl Hnsw {
    /// An empty graph for `dim`-dimensional vectors.
    pub fn new(dim: usize, params: HnswParams) -> Self {
        Self {
            dim,
            params,
            vectors: Vec::new(),
            links: Vec::new(),
            entry: None,
            max_level: 0,
            rng: SplitMix64::new(params.seed),
        }
    }

    /// Builds a graph over `rows` (each of length `dim`, unit length), inserted in order.
    pub fn build(dim: usize, rows: &[Vec<f32>], params: HnswParams) -> Result<Self, IndexError> {
        let mut g = Self::new(dim, params);
        g.vectors.reserve(rows.len() * dim);
        for r in rows {
            g.insert(r)?;
        }
        Ok(g)
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn params(&self) -> HnswParams {
        self.params
    }

    /// Row `id`.
    pub fn vector(&self, id: u32) -> &[f32] {
        let i = id as usize * self.dim;
        &self.vectors[i..i + self.dim]
    }

    fn dist(&self, q: &[f32], id: u32) -> f32 {
        1.0 - dot(q, self.vector(id))
    }

    fn random_level(&mut self) -> usize {
        let u = self.rng.unit_nonzero(); // (0, 1]
        let ml = 1.0 / (self.params.m.max(2) as f64).ln();
        ((-u.ln() * ml) as usize).min(MAX_LEVEL)
    }

    /// Adds one vector as the next node id.
    pub fn insert(&mut self, v: &[f32]) -> Result<u32, IndexError> {
        if v.len() != self.dim {
            return Err(IndexError::Invalid(format!("vector has {} dimensions, the index {}", v.len(), self.dim)));
        }
        let id = u32::try_from(self.links.len()).map_err(|_| IndexError::Invalid("too many vectors".into()))?;
        self.vectors.extend_from_slice(v);
        let level = self.random_level();
        self.links.push(vec![Vec::new(); level + 1]);
        let Some(mut ep) = self.entry else {
            self.entry = Some(id);
            self.max_level = level;
            return Ok(id);
        };
        let q = self.vector(id).to_vec();
        let mut ep_dist = self.dist(&q, ep);
        for layer in (level + 1..=self.max_level).rev() {
            (ep, ep_dist) = self.greedy(&q, ep, ep_dist, layer);
        }
        let mut eps = vec![Cand { dist: ep_dist, id: ep }];
        let m = self.params.m.max(2);
        for layer in (0..=level.min(self.max_level)).rev() {
            let found = self.search_layer(&q, &eps, self.params.ef_construction.max(m), layer, None);
            let chosen = self.select(&found, m);
            self.links[id as usize][layer] = chosen.iter().map(|c| c.id).collect();
            let cap = if layer == 0 { 2 * m } else { m };
            for c in &chosen {
                let n = c.id as usize;
                self.links[n][layer].push(id);
                if self.links[n][layer].len() > cap {
                    let nv = self.vector(c.id).to_vec();
                    let mut cands: Vec<Cand> =
                        self.links[n][layer].iter().map(|&o| Cand { dist: self.dist(&nv, o), id: o }).collect();
                    cands.sort();
                    self.links[n][layer] = self.select(&cands, cap).iter().map(|c| c.id).collect();
                }
            }
            eps = found;
        }
        if level > self.max_level {
            self.max_level = level;
            self.entry = Some(id);
        }
        Ok(id)
    }

    /// Walks to the closest node on `layer`, one improving step at a time.
    fn greedy(&self, q: &[f32], mut ep: u32, mut ep_dist: f32, layer: usize) -> (u32, f32) {
        loop {
            let mut changed = false;
            for &n in self.links[ep as usize].get(layer).map_or(&[][..], |v| v.as_slice()) {
                let d = self.dist(q, n);
                if d < ep_dist {
                    (ep, ep_dist, changed) = (n, d, true);
                }
            }
            if !changed {
                return (ep, ep_dist);
            }
        }
    }

    /// The paper's neighbour heuristic: take candidates nearest first, skipping one that is
    /// closer to an already chosen neighbour than to the base point. `cands` sorted ascending.
    fn select(&self, cands: &[Cand], m: usize) -> Vec<Cand> {
        let mut out: Vec<Cand> = Vec::with_capacity(m);
        for c in cands {
            if out.len() >= m {
                break;
            }
            let v = self.vector(c.id);
            if out.iter().all(|o| 1.0 - dot(v, self.vector(o.id)) > c.dist) {
                out.push(*c);
            }
        }
        out
    }

    /// Best-first search of one layer; returns up to `ef` allowed nodes, nearest first.
    fn search_layer(
        &self,
        q: &[f32],
        eps: &[Cand],
        ef: usize,
        layer: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Cand> {
        let ok = |id: u32| allow.is_none_or(|f| f(id));
        let mut visited = Visited::new(self.len());
        let mut candidates: BinaryHeap<Reverse<Cand>> = BinaryHeap::new();
        let mut results: BinaryHeap<Cand> = BinaryHeap::new();
        for &e in eps {
            if visited.insert(e.id) {
                candidates.push(Reverse(e));
                if ok(e.id) {
                    results.push(e);
                }
            }
        }
        while results.len() > ef {
            results.pop();
        }
        while let Some(Reverse(c)) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|w| c.dist > w.dist) {
                break;
            }
            for &n in &self.links[c.id as usize][layer] {
                if !visited.insert(n) {
                    continue;
                }
                let d = self.dist(q, n);
                if results.len() < ef || results.peek().is_some_and(|w| d < w.dist) {
                    let cand = Cand { dist: d, id: n };
                    candidates.push(Reverse(cand));
                    if ok(n) {
                        results.push(cand);
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    /// Approximate `k` nearest allowed nodes to `q` (unit length) as `(id, cosine)`, best first,
    /// with a candidate list of `max(ef, k)`.
    pub fn search(&self, q: &[f32], k: usize, ef: usize, allow: Option<&dyn Fn(u32) -> bool>) -> Vec<(u32, f32)> {
        let Some(mut ep) = self.entry else { return Vec::new() };
        if q.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let mut ep_dist = self.dist(q, ep);
        for layer in (1..=self.max_level).rev() {
            (ep, ep_dist) = self.greedy(q, ep, ep_dist, layer);
        }
        let found = self.search_layer(q, &[Cand { dist: ep_dist, id: ep }], ef.max(k), 0, allow);
        found.into_iter().take(k).map(|c| (c.id, 1.0 - c.dist)).collect()
    }

    /// Exact `k` nearest allowed nodes by scanning every vector, as `(id, cosine)`, best first.
    pub fn exact(&self, q: &[f32], k: usize, allow: Option<&dyn Fn(u32) -> bool>) -> Vec<(u32, f32)> {
        if q.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Cand> = BinaryHeap::new();
        for id in 0..self.len() as u32 {
            if allow.is_some_and(|f| !f(id)) {
                continue;
            }
            let d = self.dist(q, id);
            if heap.len() < k {
                heap.push(Cand { dist: d, id });
            } else if heap.peek().is_some_and(|w| d < w.dist) {
                heap.pop();
                heap.push(Cand { dist: d, id });
            }
        }
        heap.into_sorted_vec().into_iter().map(|c| (c.id, 1.0 - c.dist)).collect()
    }

    /// The graph and vectors in Keel's little-endian binary format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.vectors.len() * 4 + self.len() * self.params.m * 8);
        b.extend_from_slice(MAGIC);
        for v in [
            FORMAT,
            self.dim as u32,
            self.len() as u32,
            self.params.m as u32,
            self.params.ef_construction as u32,
            self.params.ef_search as u32,
            self.max_level as u32,
            self.entry.unwrap_or(u32::MAX),
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.params.seed.to_le_bytes());
        b.extend_from_slice(&self.rng.state().to_le_bytes());
        for x in &self.vectors {
            b.extend_from_slice(&x.to_le_bytes());
        }
        for node in &self.links {
            b.push(node.len() as u8);
            for layer in node {
                b.extend_from_slice(&(layer.len() as u32).to_le_bytes());
                for n in layer {
                    b.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        b
    }

    /// Reads what [`Hnsw::to_bytes`] wrote; `path` is for error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, IndexError> {
        let bad = |m: &str| IndexError::format(path, format!("not a Keel HNSW file: {m}"));
        let mut r = Reader { b: bytes, pos: 0 };
        if r.take(8).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("wrong magic"));
        }
        let mut u = || r.u32().ok_or_else(|| bad("truncated header"));
        let (format, dim, n, m, efc, efs, max_level, entry) = (u()?, u()?, u()?, u()?, u()?, u()?, u()?, u()?);
        if format != FORMAT {
            return Err(bad(&format!("format {format}, expected {FORMAT}")));
        }
        let seed = r.u64().ok_or_else(|| bad("truncated header"))?;
        let rng = SplitMix64::new(r.u64().ok_or_else(|| bad("truncated header"))?);
        let (dim, n) = (dim as usize, n as usize);
        let raw = r.take(n * dim * 4).ok_or_else(|| bad("truncated vectors"))?;
        let vectors: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let mut links = Vec::with_capacity(n);
        for _ in 0..n {
            let layers = *r.take(1).ok_or_else(|| bad("truncated links"))?.first().unwrap_or(&0) as usize;
            let mut node = Vec::with_capacity(layers);
            for _ in 0..layers {
                let count = r.u32().ok_or_else(|| bad("truncated links"))? as usize;
                let mut ids = Vec::with_capacity(count);
                for _ in 0..count {
                    let id = r.u32().ok_or_else(|| bad("truncated links"))?;
                    if id as usize >= n {
                        return Err(bad("link out of range"));
                    }
                    ids.push(id);
                }
                node.push(ids);
            }
            links.push(node);
        }
        if r.pos != bytes.len() {
            return Err(bad("trailing bytes"));
        }
        let entry = (entry != u32::MAX).then_some(entry);
        if entry.is_some_and(|e| e as usize >= n) || (entry.is_none() && n > 0) {
            return Err(bad("bad entry point"));
        }
        let params = HnswParams { m: m as usize, ef_construction: efc as usize, ef_search: efs as usize, seed };
        Ok(Self { dim, params, vectors, links, entry, max_level: max_level as usize, rng })
    }

    /// Writes [`Hnsw::to_bytes`] to `path` and fsyncs it.
    pub fn write(&self, path: &Path) -> Result<(), IndexError> {
        let mut f = std::fs::File::create(path).map_err(|e| IndexError::io(path, e))?;
        f.write_all(&self.to_bytes()).and_then(|_| f.sync_all()).map_err(|e| IndexError::io(path, e))
    }

    pub fn read(path: &Path) -> Result<Self, IndexError> {
        let bytes = std::fs::read(path).map_err(|e| IndexError::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: Vec<f32>) -> Vec<f32> {
        let n = dot(&v, &v).sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    fn random_rows(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| unit((0..dim).map(|_| rng.unit_f32() - 0.5).collect())).collect()
    }

    #[test]
    fn finds_exact_neighbours_on_random_data_and_round_trips() {
        let rows = random_rows(2000, 32, 7);
        let g = Hnsw::build(32, &rows, HnswParams::default()).unwrap();
        let queries = random_rows(50, 32, 99);
        let mut hit = 0;
        for q in &queries {
            let exact: Vec<u32> = g.exact(q, 10, None).into_iter().map(|x| x.0).collect();
            let approx: Vec<u32> = g.search(q, 10, 96, None).into_iter().map(|x| x.0).collect();
            hit += approx.iter().filter(|a| exact.contains(a)).count();
        }
        let recall = hit as f64 / 500.0;
        assert!(recall >= 0.95, "recall@10 {recall}");
        let back = Hnsw::from_bytes(&g.to_bytes(), Path::new("mem")).unwrap();
        assert_eq!(back.to_bytes(), g.to_bytes());
        assert_eq!(back.search(&queries[0], 5, 50, None), g.search(&queries[0], 5, 50, None));
        // Same input, same graph.
        assert_eq!(Hnsw::build(32, &rows, HnswParams::default()).unwrap().to_bytes(), g.to_bytes());
    }

    #[test]
    fn filter_only_returns_allowed_nodes() {
        let rows = random_rows(500, 16, 3);
        let g = Hnsw::build(16, &rows, HnswParams::default()).unwrap();
        let even = |id: u32| id.is_multiple_of(2);
        let hits = g.search(&rows[1], 10, 64, Some(&even));
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.0.is_multiple_of(2)));
        assert!(g.exact(&rows[1], 10, Some(&even)).iter().all(|h| h.0 % 2 == 0));
    }

    #[test]
    fn rejects_corrupt_bytes() {
        let g = Hnsw::build(4, &random_rows(10, 4, 1), HnswParams::default()).unwrap();
        let b = g.to_bytes();
        assert!(Hnsw::from_bytes(&b[..b.len() - 1], Path::new("x")).is_err());
        assert!(Hnsw::from_bytes(b"nonsense", Path::new("x")).is_err());
    }
}
