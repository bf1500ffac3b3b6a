//! LoRA: low-rank adapters `W + (alpha / rank) · B · A` on chosen projections of every layer,
//! the base weights frozen; a small safetensors artifact; merging into the base weights.

use std::collections::BTreeMap;

use keel_core::SplitMix64;

use super::float::{Float, Out, View};
use super::st;
use super::weights::{BertWeights, Dims, Proj};
use crate::error::EmbedError;

/// The `format` entry of an adapter artifact's metadata.
pub const LORA_FORMAT: &str = "keel-lora-1";

/// Where adapters go and how large they are.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank `r` of every adapter.
    pub rank: usize,
    /// The update is scaled by `alpha / rank` (as in PEFT without rank-stabilisation).
    pub alpha: f32,
    /// Projections that get an adapter, in every layer.
    pub targets: Vec<Proj>,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16, every projection of every layer.
    fn default() -> Self {
        LoraConfig { rank: 8, alpha: 16.0, targets: Proj::ALL.to_vec() }
    }
}

/// One adapter: the update of projection `proj` of layer `layer` is `scale · B · A`.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter<T> {
    pub layer: usize,
    pub proj: Proj,
    pub n_out: usize,
    pub n_in: usize,
    /// `[rank][n_in]`.
    pub a: Vec<T>,
    /// `[n_out][rank]`.
    pub b: Vec<T>,
}

/// The adapters of one model, ordered by layer, then projection.
#[derive(Debug, Clone, PartialEq)]
pub struct Lora<T = f32> {
    pub rank: usize,
    pub alpha: f32,
    pub adapters: Vec<Adapter<T>>,
}

fn proj_shape(dims: &Dims, p: Proj) -> (usize, usize) {
    match p {
        Proj::FfIn => (dims.inter, dims.hidden),
        Proj::FfOut => (dims.hidden, dims.inter),
        _ => (dims.hidden, dims.hidden),
    }
}

impl<T: Float> Lora<T> {
    /// Fresh adapters as PEFT initialises them: `A` uniform in `±1/sqrt(n_in)` (Kaiming-uniform
    /// with `a = sqrt 5`), `B` zero, so the adapted model starts equal to the base.
    pub fn new(cfg: &LoraConfig, dims: &Dims, seed: u64) -> Result<Lora<T>, EmbedError> {
        if cfg.rank == 0 || cfg.targets.is_empty() || !(cfg.alpha.is_finite() && cfg.alpha > 0.0) {
            return Err(EmbedError::InvalidConfig(format!("LoRA needs rank ≥ 1, alpha > 0 and a target: {cfg:?}")));
        }
        let mut targets = cfg.targets.clone();
        targets.sort();
        targets.dedup();
        let mut rng = SplitMix64::new(seed);
        let mut adapters = Vec::new();
        for layer in 0..dims.layers {
            for &proj in &targets {
                let (n_out, n_in) = proj_shape(dims, proj);
                let bound = 1.0 / (n_in as f64).sqrt();
                let a = (0..cfg.rank * n_in).map(|_| T::from_f64(rng.signed_unit() * bound)).collect();
                adapters.push(Adapter { layer, proj, n_out, n_in, a, b: vec![T::ZERO; n_out * cfg.rank] });
            }
        }
        Ok(Lora { rank: cfg.rank, alpha: cfg.alpha, adapters })
    }

    /// The multiplier of `B · A`.
    pub fn scale(&self) -> T {
        T::from_f64(f64::from(self.alpha) / self.rank as f64)
    }

    /// Position of the adapter on (`layer`, `proj`) in `adapters`.
    pub fn index(&self, layer: usize, proj: Proj) -> Option<usize> {
        self.adapters.iter().position(|a| a.layer == layer && a.proj == proj)
    }

    /// The configuration these adapters were made with.
    pub fn config(&self) -> LoraConfig {
        let mut targets: Vec<Proj> = self.adapters.iter().map(|a| a.proj).collect();
        targets.sort();
        targets.dedup();
        LoraConfig { rank: self.rank, alpha: self.alpha, targets }
    }

    /// The same shapes, all zeros: a gradient.
    pub fn zeros_like(&self) -> Lora<T> {
        let mut z = self.clone();
        z.fill_zero();
        z
    }

    pub fn fill_zero(&mut self) {
        for ad in &mut self.adapters {
            ad.a.fill(T::ZERO);
            ad.b.fill(T::ZERO);
        }
    }

    /// Every tensor with its name (`encoder.layer.{l}.{module}.lora_A.weight`, `…lora_B.weight`,
    /// as PEFT names them without its `base_model.model.` prefix) and shape, in adapter order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, &[T])> {
        let mut out = Vec::with_capacity(2 * self.adapters.len());
        for ad in &self.adapters {
            let p = format!("encoder.layer.{}.{}", ad.layer, ad.proj.module());
            out.push((format!("{p}.lora_A.weight"), vec![self.rank, ad.n_in], ad.a.as_slice()));
            out.push((format!("{p}.lora_B.weight"), vec![ad.n_out, self.rank], ad.b.as_slice()));
        }
        out
    }

    /// [`Lora::tensors`] by mutable reference.
    pub fn tensors_mut(&mut self) -> Vec<(String, Vec<usize>, &mut [T])> {
        let rank = self.rank;
        let mut out = Vec::with_capacity(2 * self.adapters.len());
        for ad in &mut self.adapters {
            let p = format!("encoder.layer.{}.{}", ad.layer, ad.proj.module());
            out.push((format!("{p}.lora_A.weight"), vec![rank, ad.n_in], ad.a.as_mut_slice()));
            out.push((format!("{p}.lora_B.weight"), vec![ad.n_out, rank], ad.b.as_mut_slice()));
        }
        out
    }
}

impl Lora<f32> {
    /// The adapter artifact: a safetensors file of the A and B matrices with metadata `format`
    /// ([`LORA_FORMAT`]), `rank`, `alpha`, `targets` (comma-separated [`Proj::name`]s) and `base`
    /// (the caller's id of the base encoder). The same adapters give the same bytes.
    pub fn to_bytes(&self, base: &str) -> Vec<u8> {
        let targets: Vec<&str> = self.config().targets.iter().map(|p| p.name()).collect();
        let meta = BTreeMap::from([
            ("format".to_string(), LORA_FORMAT.to_string()),
            ("rank".to_string(), self.rank.to_string()),
            ("alpha".to_string(), self.alpha.to_string()),
            ("targets".to_string(), targets.join(",")),
            ("base".to_string(), base.to_string()),
        ]);
        let tensors = self.tensors();
        st::write(tensors.iter().map(|(n, s, d)| (n.as_str(), s.as_slice(), *d)), &meta)
    }

    /// Reads an artifact written by [`Lora::to_bytes`] for a model of size `dims`; returns the
    /// adapters and the `base` id recorded in it.
    pub fn from_bytes(bytes: &[u8], dims: &Dims) -> Result<(Lora<f32>, String), EmbedError> {
        let bad = |m: String| EmbedError::InvalidConfig(format!("LoRA artifact: {m}"));
        let (tensors, meta) = st::read(bytes)?;
        let get = |k: &str| meta.get(k).ok_or_else(|| bad(format!("metadata lacks {k}")));
        if get("format")? != LORA_FORMAT {
            return Err(bad(format!("format {:?}, expected {LORA_FORMAT}", get("format")?)));
        }
        let rank: usize = get("rank")?.parse().map_err(|e| bad(format!("rank: {e}")))?;
        let alpha: f32 = get("alpha")?.parse().map_err(|e| bad(format!("alpha: {e}")))?;
        let targets = get("targets")?
            .split(',')
            .map(|t| Proj::parse(t).ok_or_else(|| bad(format!("unknown target {t:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut lora = Lora::<f32>::new(&LoraConfig { rank, alpha, targets }, dims, 0)?;
        let mut by_name: BTreeMap<String, st::NamedTensor> = tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        for (name, shape, dst) in lora.tensors_mut() {
            let t = by_name.remove(&name).ok_or_else(|| bad(format!("lacks tensor {name}")))?;
            if t.shape != shape {
                return Err(bad(format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape)));
            }
            dst.copy_from_slice(&t.data);
        }
        if let Some(extra) = by_name.keys().next() {
            return Err(bad(format!("unexpected tensor {extra}")));
        }
        Ok((lora, get("base")?.clone()))
    }

    /// Adds every adapter's `scale · B · A` to the base weight it adapts.
    pub fn merge_into(&self, w: &mut BertWeights<f32>) -> Result<(), EmbedError> {
        let scale = self.scale();
        for ad in &self.adapters {
            let lin = w
                .layers
                .get_mut(ad.layer)
                .map(|l| l.proj_mut(ad.proj))
                .filter(|lin| lin.n_out == ad.n_out && lin.n_in == ad.n_in)
                .ok_or_else(|| {
                    EmbedError::InvalidConfig(format!("LoRA adapter {} {} does not fit", ad.layer, ad.proj.name()))
                })?;
            let (m, n, k) = (ad.n_out, ad.n_in, self.rank);
            f32::gemm(1, (m, n, k), View::rows(&ad.b, k), View::rows(&ad.a, n), scale, Out::add(&mut lin.w, n));
        }
        Ok(())
    }
}
