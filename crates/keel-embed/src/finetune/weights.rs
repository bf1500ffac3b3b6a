//! BERT weights as plain row-major arrays, named as in Hugging Face checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use keel_core::SplitMix64;

use super::float::Float;
use super::st;
use crate::bert::BertConfig;
use crate::error::EmbedError;
use crate::source::InstalledModel;

/// The sizes of a BERT encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dims {
    pub vocab: usize,
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    /// Feed-forward width.
    pub inter: usize,
    pub max_pos: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f64,
}

impl Dims {
    /// Head size.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    fn check(&self) -> Result<(), EmbedError> {
        let sizes = [self.vocab, self.hidden, self.heads, self.layers, self.inter, self.max_pos, self.type_vocab];
        if sizes.contains(&0) || !self.hidden.is_multiple_of(self.heads) {
            return Err(EmbedError::InvalidConfig(format!("bad BERT sizes {self:?}")));
        }
        Ok(())
    }
}

/// What a tensor is, for the optimiser (weight decay skips biases and LayerNorms, as
/// sentence-transformers does) and for choosing what trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedding,
    Norm,
    Weight,
    Bias,
}

/// A linear layer, `y = x · wᵀ + b`, `w` stored `[n_out][n_in]` (PyTorch layout).
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<T> {
    pub n_out: usize,
    pub n_in: usize,
    pub w: Vec<T>,
    pub b: Vec<T>,
}

/// LayerNorm scale and shift.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm<T> {
    pub gamma: Vec<T>,
    pub beta: Vec<T>,
}

/// The projections of one layer that can train or carry a LoRA adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proj {
    Query,
    Key,
    Value,
    /// The attention output projection.
    AttnOut,
    /// The first feed-forward layer (`intermediate.dense`).
    FfIn,
    /// The second feed-forward layer (`output.dense`).
    FfOut,
}

impl Proj {
    pub const ALL: [Proj; 6] = [Proj::Query, Proj::Key, Proj::Value, Proj::AttnOut, Proj::FfIn, Proj::FfOut];

    /// The Hugging Face module path inside `encoder.layer.{l}.`.
    pub fn module(self) -> &'static str {
        match self {
            Proj::Query => "attention.self.query",
            Proj::Key => "attention.self.key",
            Proj::Value => "attention.self.value",
            Proj::AttnOut => "attention.output.dense",
            Proj::FfIn => "intermediate.dense",
            Proj::FfOut => "output.dense",
        }
    }

    /// Short name as used in configs: `query`, `key`, `value`, `attn_out`, `ff_in`, `ff_out`.
    pub fn name(self) -> &'static str {
        match self {
            Proj::Query => "query",
            Proj::Key => "key",
            Proj::Value => "value",
            Proj::AttnOut => "attn_out",
            Proj::FfIn => "ff_in",
            Proj::FfOut => "ff_out",
        }
    }

    /// The inverse of [`Proj::name`].
    pub fn parse(name: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One transformer layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights<T> {
    pub query: Linear<T>,
    pub key: Linear<T>,
    pub value: Linear<T>,
    pub attn_out: Linear<T>,
    pub ln1: Norm<T>,
    pub ff_in: Linear<T>,
    pub ff_out: Linear<T>,
    pub ln2: Norm<T>,
}

impl<T> LayerWeights<T> {
    pub fn proj(&self, p: Proj) -> &Linear<T> {
        match p {
            Proj::Query => &self.query,
            Proj::Key => &self.key,
            Proj::Value => &self.value,
            Proj::AttnOut => &self.attn_out,
            Proj::FfIn => &self.ff_in,
            Proj::FfOut => &self.ff_out,
        }
    }

    pub fn proj_mut(&mut self, p: Proj) -> &mut Linear<T> {
        match p {
            Proj::Query => &mut self.query,
            Proj::Key => &mut self.key,
            Proj::Value => &mut self.value,
            Proj::AttnOut => &mut self.attn_out,
            Proj::FfIn => &mut self.ff_in,
            Proj::FfOut => &mut self.ff_out,
        }
    }
}

/// All weights of a BERT encoder (the pooler, which sentence embeddings do not use, is left out).
#[derive(Debug, Clone, PartialEq)]
pub struct BertWeights<T = f32> {
    pub dims: Dims,
    /// `[vocab][hidden]`.
    pub word: Vec<T>,
    /// `[max_pos][hidden]`.
    pub pos: Vec<T>,
    /// `[type_vocab][hidden]`.
    pub typ: Vec<T>,
    pub emb_ln: Norm<T>,
    pub layers: Vec<LayerWeights<T>>,
}

/// A tensor of [`BertWeights`] by reference: Hugging Face name, kind, shape, values.
pub type TensorRef<'a, T> = (String, Kind, Vec<usize>, &'a [T]);
/// A tensor of [`BertWeights`] by mutable reference.
pub type TensorMut<'a, T> = (String, Kind, Vec<usize>, &'a mut [T]);

impl<T: Float> BertWeights<T> {
    /// Every weight set to `f(name, kind, index)`, in the order of [`BertWeights::tensors`].
    fn build(dims: Dims, f: &mut dyn FnMut(&str, Kind, usize) -> T) -> BertWeights<T> {
        fn vec<T>(f: &mut dyn FnMut(&str, Kind, usize) -> T, name: &str, kind: Kind, n: usize) -> Vec<T> {
            (0..n).map(|i| f(name, kind, i)).collect()
        }
        fn lin<T>(f: &mut dyn FnMut(&str, Kind, usize) -> T, name: &str, n_out: usize, n_in: usize) -> Linear<T> {
            let w = vec(f, &format!("{name}.weight"), Kind::Weight, n_out * n_in);
            Linear { n_out, n_in, w, b: vec(f, &format!("{name}.bias"), Kind::Bias, n_out) }
        }
        fn norm<T>(f: &mut dyn FnMut(&str, Kind, usize) -> T, name: &str, h: usize) -> Norm<T> {
            let gamma = vec(f, &format!("{name}.weight"), Kind::Norm, h);
            Norm { gamma, beta: vec(f, &format!("{name}.bias"), Kind::Norm, h) }
        }
        let (h, i) = (dims.hidden, dims.inter);
        let word = vec(f, "embeddings.word_embeddings.weight", Kind::Embedding, dims.vocab * h);
        let pos = vec(f, "embeddings.position_embeddings.weight", Kind::Embedding, dims.max_pos * h);
        let typ = vec(f, "embeddings.token_type_embeddings.weight", Kind::Embedding, dims.type_vocab * h);
        let emb_ln = norm(f, "embeddings.LayerNorm", h);
        let layers = (0..dims.layers)
            .map(|l| {
                let p = format!("encoder.layer.{l}.");
                let query = lin(f, &format!("{p}{}", Proj::Query.module()), h, h);
                let key = lin(f, &format!("{p}{}", Proj::Key.module()), h, h);
                let value = lin(f, &format!("{p}{}", Proj::Value.module()), h, h);
                let attn_out = lin(f, &format!("{p}{}", Proj::AttnOut.module()), h, h);
                let ln1 = norm(f, &format!("{p}attention.output.LayerNorm"), h);
                let ff_in = lin(f, &format!("{p}{}", Proj::FfIn.module()), i, h);
                let ff_out = lin(f, &format!("{p}{}", Proj::FfOut.module()), h, i);
                let ln2 = norm(f, &format!("{p}output.LayerNorm"), h);
                LayerWeights { query, key, value, attn_out, ln1, ff_in, ff_out, ln2 }
            })
            .collect();
        BertWeights { dims, word, pos, typ, emb_ln, layers }
    }

    /// All zeros (LayerNorm scales too): the shape of a gradient.
    pub fn zeros(dims: Dims) -> BertWeights<T> {
        BertWeights::build(dims, &mut |_, _, _| T::ZERO)
    }

    /// Random weights for tests on tiny configurations: uniform in ±`scale`, LayerNorm scales
    /// `1 ± scale`.
    pub fn random(dims: Dims, scale: f64, seed: u64) -> Result<BertWeights<T>, EmbedError> {
        dims.check()?;
        let mut rng = SplitMix64::new(seed);
        Ok(BertWeights::build(dims, &mut |name, kind, _| {
            let u = rng.signed_unit() * scale;
            T::from_f64(if kind == Kind::Norm && name.ends_with(".weight") { 1.0 + u } else { u })
        }))
    }

    /// Every tensor, in a fixed order (embeddings, then layer by layer).
    pub fn tensors(&self) -> Vec<TensorRef<'_, T>> {
        let h = self.dims.hidden;
        let mut out: Vec<TensorRef<'_, T>> = vec![
            ("embeddings.word_embeddings.weight".into(), Kind::Embedding, vec![self.dims.vocab, h], &self.word),
            ("embeddings.position_embeddings.weight".into(), Kind::Embedding, vec![self.dims.max_pos, h], &self.pos),
            (
                "embeddings.token_type_embeddings.weight".into(),
                Kind::Embedding,
                vec![self.dims.type_vocab, h],
                &self.typ,
            ),
            ("embeddings.LayerNorm.weight".into(), Kind::Norm, vec![h], &self.emb_ln.gamma),
            ("embeddings.LayerNorm.bias".into(), Kind::Norm, vec![h], &self.emb_ln.beta),
        ];
        for (l, layer) in self.layers.iter().enumerate() {
            let p = format!("encoder.layer.{l}.");
            for (proj, ln) in [
                (Proj::Query, None),
                (Proj::Key, None),
                (Proj::Value, None),
                (Proj::AttnOut, Some(("attention.output.LayerNorm", &layer.ln1))),
                (Proj::FfIn, None),
                (Proj::FfOut, Some(("output.LayerNorm", &layer.ln2))),
            ] {
                let lin = layer.proj(proj);
                out.push((format!("{p}{}.weight", proj.module()), Kind::Weight, vec![lin.n_out, lin.n_in], &lin.w));
                out.push((format!("{p}{}.bias", proj.module()), Kind::Bias, vec![lin.n_out], &lin.b));
                if let Some((name, norm)) = ln {
                    out.push((format!("{p}{name}.weight"), Kind::Norm, vec![h], &norm.gamma));
                    out.push((format!("{p}{name}.bias"), Kind::Norm, vec![h], &norm.beta));
                }
            }
        }
        out
    }

    /// [`BertWeights::tensors`] by mutable reference, in the same order.
    pub fn tensors_mut(&mut self) -> Vec<TensorMut<'_, T>> {
        let h = self.dims.hidden;
        let d = self.dims;
        let mut out: Vec<TensorMut<'_, T>> = vec![
            ("embeddings.word_embeddings.weight".into(), Kind::Embedding, vec![d.vocab, h], &mut self.word),
            ("embeddings.position_embeddings.weight".into(), Kind::Embedding, vec![d.max_pos, h], &mut self.pos),
            ("embeddings.token_type_embeddings.weight".into(), Kind::Embedding, vec![d.type_vocab, h], &mut self.typ),
            ("embeddings.LayerNorm.weight".into(), Kind::Norm, vec![h], &mut self.emb_ln.gamma),
            ("embeddings.LayerNorm.bias".into(), Kind::Norm, vec![h], &mut self.emb_ln.beta),
        ];
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("encoder.layer.{l}.");
            let LayerWeights { query, key, value, attn_out, ln1, ff_in, ff_out, ln2 } = layer;
            for (proj, lin, ln) in [
                (Proj::Query, query, None),
                (Proj::Key, key, None),
                (Proj::Value, value, None),
                (Proj::AttnOut, attn_out, Some(("attention.output.LayerNorm", ln1))),
                (Proj::FfIn, ff_in, None),
                (Proj::FfOut, ff_out, Some(("output.LayerNorm", ln2))),
            ] {
                let shape = vec![lin.n_out, lin.n_in];
                out.push((format!("{p}{}.weight", proj.module()), Kind::Weight, shape, &mut lin.w));
                out.push((format!("{p}{}.bias", proj.module()), Kind::Bias, vec![lin.n_out], &mut lin.b));
                if let Some((name, norm)) = ln {
                    out.push((format!("{p}{name}.weight"), Kind::Norm, vec![h], &mut norm.gamma));
                    out.push((format!("{p}{name}.bias"), Kind::Norm, vec![h], &mut norm.beta));
                }
            }
        }
        out
    }

    /// Sets every value to zero.
    pub fn fill_zero(&mut self) {
        for (_, _, _, t) in self.tensors_mut() {
            t.fill(T::ZERO);
        }
    }

    /// The same weights in another precision.
    pub fn cast<U: Float>(&self) -> BertWeights<U> {
        let mut out = BertWeights::<U>::zeros(self.dims);
        for ((_, _, _, src), (_, _, _, dst)) in self.tensors().into_iter().zip(out.tensors_mut()) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = U::from_f64(s.to_f64());
            }
        }
        out
    }
}

impl BertWeights<f32> {
    /// Reads `config.json` and `model.safetensors` of an installed model.
    pub fn load(model: &InstalledModel) -> Result<BertWeights<f32>, EmbedError> {
        let cfg_path = model.dir.join("config.json");
        let raw = std::fs::read(&cfg_path).map_err(|e| EmbedError::io(&cfg_path, e))?;
        let cfg: BertConfig = serde_json::from_slice(&raw)
            .map_err(|e| EmbedError::Config { path: cfg_path.clone(), message: e.to_string() })?;
        if cfg.hidden_act != "gelu" {
            return Err(EmbedError::InvalidConfig(format!("unsupported activation {:?}", cfg.hidden_act)));
        }
        let dims = Dims {
            vocab: cfg.vocab_size,
            hidden: cfg.hidden_size,
            heads: cfg.num_attention_heads,
            layers: cfg.num_hidden_layers,
            inter: cfg.intermediate_size,
            max_pos: cfg.max_position_embeddings,
            type_vocab: cfg.type_vocab_size,
            layer_norm_eps: cfg.layer_norm_eps,
        };
        Self::from_safetensors_file(&model.dir.join("model.safetensors"), dims)
    }

    fn from_safetensors_file(path: &Path, dims: Dims) -> Result<BertWeights<f32>, EmbedError> {
        dims.check()?;
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let prefix = if !tensors.contains_key("embeddings.word_embeddings.weight")
            && tensors.contains_key("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        };
        let mut w = BertWeights::zeros(dims);
        for (name, _, shape, dst) in w.tensors_mut() {
            let full = format!("{prefix}{name}");
            let t: &Tensor = tensors
                .get(&full)
                .ok_or_else(|| EmbedError::InvalidConfig(format!("{}: lacks tensor {full}", path.display())))?;
            if t.dims() != shape.as_slice() {
                return Err(EmbedError::InvalidConfig(format!(
                    "tensor {full} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            dst.copy_from_slice(&t.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(w)
    }

    /// The weights as a safetensors file (Hugging Face names, no prefix, deterministic bytes):
    /// what [`crate::Encoder::load_with_weights`] takes.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let tensors = self.tensors();
        st::write(tensors.iter().map(|(n, _, s, d)| (n.as_str(), s.as_slice(), *d)), &BTreeMap::new())
    }
}
