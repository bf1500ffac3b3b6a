//! A small MLP head: one hidden layer (ReLU or GELU), dropout, AdamW, early stopping on the
//! validation loss, a checkpoint after every epoch and resume after a kill.
//!
//! Everything random (initialisation, the order of rows, dropout masks) comes from one
//! seeded SplitMix64 whose state is part of the checkpoint, and all arithmetic is single
//! threaded in a fixed order. So the same data, config and seed give bit-identical weights,
//! and a run resumed from the checkpoint of epoch `e` ends with the same bytes as a run that
//! was never interrupted.

use keel_core::Matrix;
use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer, b64_to_f32s, f32s_to_b64};
use crate::rng::{self, SplitMix64, fnv1a};
use crate::{TrainError, softmax_f64};

/// The hidden layer's non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Relu,
    /// The tanh approximation of GELU.
    Gelu,
}

/// Settings of [`fit_mlp`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Width of the hidden layer (default 256).
    pub hidden: usize,
    pub activation: Activation,
    /// Probability of zeroing a hidden unit during training (default 0.2).
    pub dropout: f32,
    /// AdamW step size (default 1e-3).
    pub learning_rate: f32,
    /// AdamW decoupled weight decay on the weight matrices, not the biases (default 1e-2).
    pub weight_decay: f32,
    /// Rows per gradient step (default 64).
    pub batch_size: usize,
    /// Upper bound on passes over the training data (default 100).
    pub max_epochs: usize,
    /// Stop after this many epochs without a lower validation loss (default 5); the weights
    /// of the best epoch are returned.
    pub patience: usize,
    pub seed: u64,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            activation: Activation::Relu,
            dropout: 0.2,
            learning_rate: 1e-3,
            weight_decay: 1e-2,
            batch_size: 64,
            max_epochs: 100,
            patience: 5,
            seed: 0,
        }
    }
}

/// Where checkpoints go. The caller owns the storage (a file, a row, memory): this crate does
/// no IO. `save` is called after every epoch with the full training state; `load` returns the
/// latest saved state, if any.
pub trait Checkpoint {
    fn save(&mut self, epoch: usize, bytes: &[u8]) -> std::io::Result<()>;
    fn load(&mut self) -> Option<Vec<u8>>;
}

/// No checkpoints: training always starts from scratch.
#[derive(Debug, Default)]
pub struct NoCheckpoint;

impl Checkpoint for NoCheckpoint {
    fn save(&mut self, _: usize, _: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn load(&mut self) -> Option<Vec<u8>> {
        None
    }
}

/// Keeps the latest checkpoint in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryCheckpoint {
    pub latest: Option<(usize, Vec<u8>)>,
    /// Number of `save` calls.
    pub saves: usize,
}

impl Checkpoint for MemoryCheckpoint {
    fn save(&mut self, epoch: usize, bytes: &[u8]) -> std::io::Result<()> {
        self.latest = Some((epoch, bytes.to_vec()));
        self.saves += 1;
        Ok(())
    }
    fn load(&mut self) -> Option<Vec<u8>> {
        self.latest.as_ref().map(|(_, b)| b.clone())
    }
}

/// One epoch's numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    /// Mean training cross-entropy over the epoch's batches (with dropout).
    pub train_loss: f64,
    /// Mean validation cross-entropy (no dropout).
    pub val_loss: f64,
    pub val_accuracy: f64,
}

/// How MLP training went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpReport {
    pub history: Vec<EpochStats>,
    /// The epoch whose weights were kept (lowest validation loss).
    pub best_epoch: usize,
    pub best_val_loss: f64,
    /// True when training stopped because the validation loss stopped improving.
    pub stopped_early: bool,
    /// The epoch of the checkpoint training resumed from, if it did.
    pub resumed_from: Option<usize>,
}

/// A trained one-hidden-layer network over fixed-length feature vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    labels: Vec<String>,
    activation: Activation,
    dim: usize,
    hidden: usize,
    p: Params,
}

/// Parameters: `w1` is `hidden × dim`, `w2` is `k × hidden`, row-major.
#[derive(Clone, Debug, PartialEq)]
struct Params {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Params {
    fn zeros_like(o: &Params) -> Params {
        Params {
            w1: vec![0.0; o.w1.len()],
            b1: vec![0.0; o.b1.len()],
            w2: vec![0.0; o.w2.len()],
            b2: vec![0.0; o.b2.len()],
        }
    }
    fn parts(&self) -> [&Vec<f32>; 4] {
        [&self.w1, &self.b1, &self.w2, &self.b2]
    }
    fn parts_mut(&mut self) -> [&mut Vec<f32>; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }
    fn write(&self, w: &mut Writer) {
        for p in self.parts() {
            w.f32s(p);
        }
    }
    fn read(r: &mut Reader<'_>, shape: &Params) -> Result<Params, TrainError> {
        Ok(Params {
            w1: r.f32s(shape.w1.len())?,
            b1: r.f32s(shape.b1.len())?,
            w2: r.f32s(shape.w2.len())?,
            b2: r.f32s(shape.b2.len())?,
        })
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

const GELU_C: f32 = 0.797_884_6; // sqrt(2/π)

fn act(a: Activation, x: f32) -> f32 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + (GELU_C * (x + 0.044715 * x * x * x)).tanh()),
    }
}

fn act_grad(a: Activation, x: f32) -> f32 {
    match a {
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Gelu => {
            let u = GELU_C * (x + 0.044715 * x * x * x);
            let t = u.tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * 0.044715 * x * x)
        }
    }
}

impl Mlp {
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Class scores before the softmax. Panics if `x.len() != self.dim()`.
    pub fn logits(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(x.len(), self.dim, "feature vector has the wrong length");
        let h: Vec<f32> = (0..self.hidden)
            .map(|j| act(self.activation, dot(&self.p.w1[j * self.dim..(j + 1) * self.dim], x) + self.p.b1[j]))
            .collect();
        (0..self.labels.len())
            .map(|c| dot(&self.p.w2[c * self.hidden..(c + 1) * self.hidden], &h) + self.p.b2[c])
            .collect()
    }

    /// Class probabilities (they sum to 1). Panics if `x.len() != self.dim()`.
    pub fn predict_proba(&self, x: &[f32]) -> Vec<f32> {
        let mut z: Vec<f64> = self.logits(x).iter().map(|&v| f64::from(v)).collect();
        softmax_f64(&mut z);
        z.iter().map(|&p| p as f32).collect()
    }

    fn mean_loss(&self, x: &Matrix, y: &[usize]) -> (f64, f64) {
        let mut loss = 0.0;
        let mut hits = 0usize;
        for (i, &t) in y.iter().enumerate() {
            let mut z: Vec<f64> = self.logits(x.row(i)).iter().map(|&v| f64::from(v)).collect();
            softmax_f64(&mut z);
            loss -= z[t].max(1e-300).ln();
            hits += usize::from(crate::argmax_f64(&z) == t);
        }
        let n = y.len().max(1) as f64;
        (loss / n, hits as f64 / n)
    }

    pub(crate) fn to_artifact(&self) -> MlpArtifact {
        MlpArtifact {
            labels: self.labels.clone(),
            activation: self.activation,
            dim: self.dim,
            hidden: self.hidden,
            w1: f32s_to_b64(&self.p.w1),
            b1: f32s_to_b64(&self.p.b1),
            w2: f32s_to_b64(&self.p.w2),
            b2: f32s_to_b64(&self.p.b2),
        }
    }

    pub(crate) fn from_artifact(a: MlpArtifact) -> Result<Self, TrainError> {
        crate::check_labels(&a.labels).map_err(|e| TrainError::InvalidArtifact(e.to_string()))?;
        let k = a.labels.len();
        let p = Params {
            w1: b64_to_f32s(&a.w1)?,
            b1: b64_to_f32s(&a.b1)?,
            w2: b64_to_f32s(&a.w2)?,
            b2: b64_to_f32s(&a.b2)?,
        };
        if a.dim == 0
            || a.hidden == 0
            || p.w1.len() != a.hidden * a.dim
            || p.b1.len() != a.hidden
            || p.w2.len() != k * a.hidden
            || p.b2.len() != k
        {
            return Err(TrainError::InvalidArtifact("MLP parameter shapes do not match".into()));
        }
        if !p.parts().iter().all(|v| v.iter().all(|x| x.is_finite())) {
            return Err(TrainError::InvalidArtifact("non-finite MLP parameter".into()));
        }
        Ok(Self { labels: a.labels, activation: a.activation, dim: a.dim, hidden: a.hidden, p })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct MlpArtifact {
    labels: Vec<String>,
    activation: Activation,
    dim: usize,
    hidden: usize,
    w1: String,
    b1: String,
    w2: String,
    b2: String,
}

impl Serialize for Mlp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_artifact().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Mlp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_artifact(MlpArtifact::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// The whole training state after an epoch: what a checkpoint holds.
struct State {
    epoch: usize,
    step: u64,
    rng: SplitMix64,
    params: Params,
    m: Params,
    v: Params,
    best: Params,
    best_epoch: usize,
    best_val: f64,
    since_best: usize,
    stopped: bool,
    history: Vec<EpochStats>,
}

const MAGIC: &[u8; 8] = b"KEELMLP1";

impl State {
    fn encode(&self, fingerprint: u64) -> Vec<u8> {
        let mut w = Writer::default();
        w.0.extend_from_slice(MAGIC);
        w.u64(fingerprint);
        w.u64(self.epoch as u64);
        w.u64(self.step);
        w.u64(self.rng.state());
        for p in [&self.params, &self.m, &self.v, &self.best] {
            p.write(&mut w);
        }
        w.u64(self.best_epoch as u64);
        w.f64(self.best_val);
        w.u64(self.since_best as u64);
        w.u64(u64::from(self.stopped));
        w.u64(self.history.len() as u64);
        for h in &self.history {
            w.u64(h.epoch as u64);
            w.f64(h.train_loss);
            w.f64(h.val_loss);
            w.f64(h.val_accuracy);
        }
        w.0
    }

    fn decode(bytes: &[u8], fingerprint: u64, shape: &Params) -> Result<State, TrainError> {
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(TrainError::InvalidCheckpoint("not an MLP checkpoint".into()));
        }
        let mut r = Reader(&bytes[8..]);
        if r.u64()? != fingerprint {
            return Err(TrainError::InvalidCheckpoint(
                "the checkpoint belongs to a different data set or configuration".into(),
            ));
        }
        let epoch = r.u64()? as usize;
        let step = r.u64()?;
        let rng = SplitMix64::new(r.u64()?);
        let params = Params::read(&mut r, shape)?;
        let m = Params::read(&mut r, shape)?;
        let v = Params::read(&mut r, shape)?;
        let best = Params::read(&mut r, shape)?;
        let best_epoch = r.u64()? as usize;
        let best_val = r.f64()?;
        let since_best = r.u64()? as usize;
        let stopped = r.u64()? != 0;
        let n = r.u64()? as usize;
        if n != epoch {
            return Err(TrainError::InvalidCheckpoint("history does not match the epoch".into()));
        }
        let mut history = Vec::with_capacity(n);
        for _ in 0..n {
            history.push(EpochStats {
                epoch: r.u64()? as usize,
                train_loss: r.f64()?,
                val_loss: r.f64()?,
                val_accuracy: r.f64()?,
            });
        }
        if !r.0.is_empty() {
            return Err(TrainError::InvalidCheckpoint("trailing bytes".into()));
        }
        Ok(State { epoch, step, rng, params, m, v, best, best_epoch, best_val, since_best, stopped, history })
    }
}

fn fingerprint(x: &Matrix, y: &[usize], xv: &Matrix, yv: &[usize], labels: &[String], cfg: &MlpConfig) -> u64 {
    let mut bytes = serde_json::to_vec(cfg).expect("config serialises");
    for l in labels {
        bytes.extend_from_slice(&(l.len() as u64).to_le_bytes());
        bytes.extend_from_slice(l.as_bytes());
    }
    for (m, t) in [(x, y), (xv, yv)] {
        bytes.extend_from_slice(&(m.rows() as u64).to_le_bytes());
        bytes.extend_from_slice(&(m.cols() as u64).to_le_bytes());
        for v in m.as_slice() {
            bytes.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        for &c in t {
            bytes.extend_from_slice(&(c as u64).to_le_bytes());
        }
    }
    fnv1a(0, &bytes)
}

/// Trains an MLP on `(x, y)`, stopping early on the loss over `(x_val, y_val)`, and returns the
/// weights of the epoch with the lowest validation loss.
///
/// After every epoch the full state goes to `ckpt.save`. If `ckpt.load` returns a state saved
/// by a run on the same data and config, training continues after that epoch, and ends with
/// the weights an uninterrupted run would have produced, bit for bit. A checkpoint from other
/// data or another config is an error ([`TrainError::InvalidCheckpoint`]), not silently
/// ignored; a failed save is [`TrainError::Checkpoint`].
pub fn fit_mlp(
    x: &Matrix,
    y: &[usize],
    x_val: &Matrix,
    y_val: &[usize],
    labels: Vec<String>,
    cfg: &MlpConfig,
    ckpt: &mut dyn Checkpoint,
) -> Result<(Mlp, MlpReport), TrainError> {
    check_inputs(x, y, x_val, y_val, &labels, cfg)?;
    let (d, h, k) = (x.cols(), cfg.hidden, labels.len());
    let fp = fingerprint(x, y, x_val, y_val, &labels, cfg);
    let mut mlp = Mlp {
        labels,
        activation: cfg.activation,
        dim: d,
        hidden: h,
        p: Params { w1: vec![0.0; h * d], b1: vec![0.0; h], w2: vec![0.0; k * h], b2: vec![0.0; k] },
    };

    let mut resumed_from = None;
    let mut st = match ckpt.load() {
        Some(bytes) => {
            let s = State::decode(&bytes, fp, &mlp.p)?;
            resumed_from = Some(s.epoch);
            s
        }
        None => State::fresh(&mut mlp, cfg),
    };

    let epochs = Epochs { x, y, cfg, d, h, k };
    let mut work = Work::new(&st.params, x.rows(), cfg.batch_size, h, k);
    while !st.stopped && st.epoch < cfg.max_epochs {
        let loss_sum = epochs.train(&mut st, &mut work);
        st.epoch += 1;
        mlp.p = st.params.clone();
        let (val_loss, val_acc) = mlp.mean_loss(x_val, y_val);
        st.end_epoch(
            EpochStats { epoch: st.epoch, train_loss: loss_sum / x.rows() as f64, val_loss, val_accuracy: val_acc },
            cfg.patience,
        );
        ckpt.save(st.epoch, &st.encode(fp)).map_err(|e| TrainError::Checkpoint(e.to_string()))?;
    }
    mlp.p = st.best.clone();
    let report = MlpReport {
        best_epoch: st.best_epoch,
        best_val_loss: st.best_val,
        stopped_early: st.stopped,
        resumed_from,
        history: st.history,
    };
    Ok((mlp, report))
}

/// The labels, both sets of rows and the configuration are usable together.
fn check_inputs(
    x: &Matrix,
    y: &[usize],
    x_val: &Matrix,
    y_val: &[usize],
    labels: &[String],
    cfg: &MlpConfig,
) -> Result<(), TrainError> {
    crate::check_labels(labels)?;
    let k = labels.len();
    crate::check_xy(x, y, k)?;
    crate::check_xy(x_val, y_val, k)?;
    if x_val.cols() != x.cols() {
        return Err(TrainError::InvalidConfig("validation vectors differ in length from training vectors".into()));
    }
    if cfg.hidden == 0
        || cfg.batch_size == 0
        || cfg.max_epochs == 0
        || !(0.0..1.0).contains(&cfg.dropout)
        || !(cfg.learning_rate.is_finite() && cfg.learning_rate > 0.0)
        || !(cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0)
    {
        return Err(TrainError::InvalidConfig(format!("invalid MLP configuration {cfg:?}")));
    }
    Ok(())
}

impl State {
    /// The state before the first epoch: `mlp`'s weights drawn from the seeded generator.
    fn fresh(mlp: &mut Mlp, cfg: &MlpConfig) -> State {
        let (d, h, k) = (mlp.dim, mlp.hidden, mlp.labels.len());
        let mut rng = rng::seeded(cfg.seed);
        // He-uniform for the ReLU/GELU layer, Glorot-uniform for the output layer.
        let a1 = (6.0 / d as f32).sqrt();
        let a2 = (6.0 / (h + k) as f32).sqrt();
        mlp.p.w1.iter_mut().for_each(|w| *w = (2.0 * rng.unit_f32() - 1.0) * a1);
        mlp.p.w2.iter_mut().for_each(|w| *w = (2.0 * rng.unit_f32() - 1.0) * a2);
        State {
            epoch: 0,
            step: 0,
            rng,
            m: Params::zeros_like(&mlp.p),
            v: Params::zeros_like(&mlp.p),
            best: mlp.p.clone(),
            params: mlp.p.clone(),
            best_epoch: 0,
            best_val: f64::INFINITY,
            since_best: 0,
            stopped: false,
            history: Vec::new(),
        }
    }

    /// Records an epoch's figures, keeps the weights when the validation loss is the lowest so
    /// far, and stops after `patience` epochs without one.
    fn end_epoch(&mut self, stats: EpochStats, patience: usize) {
        let val_loss = stats.val_loss;
        self.history.push(stats);
        if val_loss < self.best_val {
            self.best_val = val_loss;
            self.best_epoch = self.epoch;
            self.best = self.params.clone();
            self.since_best = 0;
        } else {
            self.since_best += 1;
            if self.since_best >= patience {
                self.stopped = true;
            }
        }
    }
}

/// Buffers an epoch reuses: the gradient, the row order, and per batch the hidden layer's
/// pre-activations (NaN where dropped) and activations, the output gradient and one row's
/// hidden gradient.
struct Work {
    grad: Params,
    order: Vec<usize>,
    hpre: Vec<f32>,
    hact: Vec<f32>,
    dz: Vec<f32>,
    dh: Vec<f32>,
}

impl Work {
    fn new(params: &Params, rows: usize, batch_size: usize, h: usize, k: usize) -> Work {
        Work {
            grad: Params::zeros_like(params),
            order: (0..rows).collect(),
            hpre: vec![0.0f32; batch_size * h],
            hact: vec![0.0f32; batch_size * h],
            dz: vec![0.0f32; batch_size * k],
            dh: vec![0.0f32; h],
        }
    }
}

/// What every epoch trains on: the rows, the configuration, and the layer sizes (inputs `d`,
/// hidden units `h`, classes `k`).
struct Epochs<'a> {
    x: &'a Matrix,
    y: &'a [usize],
    cfg: &'a MlpConfig,
    d: usize,
    h: usize,
    k: usize,
}

// Index loops mirror the maths (rows r, hidden units j, classes c) across several arrays.
#[allow(clippy::needless_range_loop)]
impl Epochs<'_> {
    /// One pass over the rows in a seeded order, one AdamW step per batch; returns the sum of
    /// the rows' training losses.
    fn train(&self, st: &mut State, w: &mut Work) -> f64 {
        w.order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
        st.rng.shuffle(&mut w.order);
        let mut loss_sum = 0.0f64;
        let order = std::mem::take(&mut w.order);
        for batch in order.chunks(self.cfg.batch_size) {
            for g in w.grad.parts_mut() {
                g.fill(0.0);
            }
            self.forward(&st.params, &mut st.rng, w, batch, &mut loss_sum);
            self.backward(&st.params, w, batch);
            self.adamw(st, &w.grad);
        }
        w.order = order;
        loss_sum
    }

    /// The batch's hidden layer (dropout drawn from `rng`) and the gradient of the mean loss
    /// at the output, into `w`; each row's loss is added to `loss_sum`.
    fn forward(&self, p: &Params, rng: &mut SplitMix64, w: &mut Work, batch: &[usize], loss_sum: &mut f64) {
        let (d, h, k, cfg) = (self.d, self.h, self.k, self.cfg);
        let keep = 1.0 - cfg.dropout;
        let drop_scale = 1.0 / keep;
        let m = batch.len();
        for (r, &i) in batch.iter().enumerate() {
            let xi = self.x.row(i);
            for j in 0..h {
                let pre = dot(&p.w1[j * d..(j + 1) * d], xi) + p.b1[j];
                // A dropped unit is marked by a NaN pre-activation for the backward pass.
                let kept = cfg.dropout == 0.0 || rng.unit_f32() < keep;
                w.hpre[r * h + j] = if kept { pre } else { f32::NAN };
                w.hact[r * h + j] = if kept { act(cfg.activation, pre) * drop_scale } else { 0.0 };
            }
            let mut z: Vec<f64> = (0..k)
                .map(|c| f64::from(dot(&p.w2[c * h..(c + 1) * h], &w.hact[r * h..(r + 1) * h]) + p.b2[c]))
                .collect();
            softmax_f64(&mut z);
            *loss_sum -= z[self.y[i]].max(1e-300).ln();
            z[self.y[i]] -= 1.0;
            for c in 0..k {
                w.dz[r * k + c] = (z[c] / m as f64) as f32;
            }
        }
    }

    /// Back-propagates the output gradient in `w` through the batch, into `w.grad`.
    fn backward(&self, p: &Params, w: &mut Work, batch: &[usize]) {
        let (d, h, k, cfg) = (self.d, self.h, self.k, self.cfg);
        let drop_scale = 1.0 / (1.0 - cfg.dropout);
        let Work { grad, hpre, hact, dz, dh, .. } = w;
        for (r, &i) in batch.iter().enumerate() {
            let hr = &hact[r * h..(r + 1) * h];
            let dzr = &dz[r * k..(r + 1) * k];
            for c in 0..k {
                let g = dzr[c];
                grad.b2[c] += g;
                for (gw, hv) in grad.w2[c * h..(c + 1) * h].iter_mut().zip(hr) {
                    *gw += g * hv;
                }
            }
            for j in 0..h {
                let pre = hpre[r * h + j];
                dh[j] = if pre.is_nan() {
                    0.0
                } else {
                    let mut s = 0.0f32;
                    for c in 0..k {
                        s += dzr[c] * p.w2[c * h + j];
                    }
                    s * act_grad(cfg.activation, pre) * drop_scale
                };
            }
            let xi = self.x.row(i);
            for j in 0..h {
                let g = dh[j];
                if g == 0.0 {
                    continue;
                }
                grad.b1[j] += g;
                for (gw, xv) in grad.w1[j * d..(j + 1) * d].iter_mut().zip(xi) {
                    *gw += g * xv;
                }
            }
        }
    }

    /// One AdamW step on `st`'s weights and moments from `grad` (decay on the weight matrices,
    /// not the biases).
    fn adamw(&self, st: &mut State, grad: &Params) {
        let (b1c, b2c, eps) = (0.9f32, 0.999f32, 1e-8f32);
        st.step += 1;
        let t = st.step as i32;
        let bc1 = 1.0 - b1c.powi(t);
        let bc2 = 1.0 - b2c.powi(t);
        let lr = self.cfg.learning_rate;
        for (idx, ((pp, gg), (mm, vv))) in st
            .params
            .parts_mut()
            .into_iter()
            .zip(grad.parts())
            .zip(st.m.parts_mut().into_iter().zip(st.v.parts_mut()))
            .enumerate()
        {
            let decay = if idx % 2 == 0 { self.cfg.weight_decay } else { 0.0 };
            for (((w, &g), m1), v1) in pp.iter_mut().zip(gg.iter()).zip(mm.iter_mut()).zip(vv.iter_mut()) {
                *m1 = b1c * *m1 + (1.0 - b1c) * g;
                *v1 = b2c * *v1 + (1.0 - b2c) * g * g;
                let mh = *m1 / bc1;
                let vh = *v1 / bc2;
                *w -= lr * (mh / (vh.sqrt() + eps) + decay * *w);
            }
        }
    }
}
