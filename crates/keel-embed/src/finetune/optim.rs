//! AdamW (PyTorch's `torch.optim.AdamW` update) and the linear warm-up / decay schedule of
//! Hugging Face's `get_linear_schedule_with_warmup`.

use rayon::prelude::*;

/// AdamW with decoupled weight decay; its moment estimates are kept per tensor, in the order of
/// the tensors handed to [`AdamW::step`] (the same list in the same order on every call).
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    steps: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// One trainable tensor for [`AdamW::step`]: values, gradient, whether weight decay applies.
pub type ParamGrad<'a> = (&'a mut [f32], &'a [f32], bool);

impl AdamW {
    /// PyTorch's defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn new(weight_decay: f64) -> AdamW {
        AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, steps: 0, m: Vec::new(), v: Vec::new() }
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One update at learning rate `lr`. Element-wise, so splitting tensors over threads
    /// (`threads > 1`, current rayon pool) does not change a bit of the result.
    pub fn step(&mut self, lr: f64, params: Vec<ParamGrad<'_>>, threads: usize) {
        if self.m.is_empty() {
            self.m = params.iter().map(|(p, _, _)| vec![0.0; p.len()]).collect();
            self.v = self.m.clone();
        }
        assert_eq!(self.m.len(), params.len(), "AdamW: a different list of tensors");
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let (b1, b2, eps) = (b1 as f32, b2 as f32, self.eps as f32);
        let (c1, c2) = (1.0 - b1, 1.0 - b2);
        let inv_bc2 = (1.0 / bc2_sqrt) as f32;
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let update = |((p, g, wd), (m, v)): (ParamGrad<'_>, (&mut Vec<f32>, &mut Vec<f32>))| {
            assert!(p.len() == g.len() && p.len() == m.len(), "AdamW: tensor size changed");
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                if wd {
                    *p *= decay;
                }
                *m = b1 * *m + c1 * g;
                *v = b2 * *v + c2 * g * g;
                *p -= step_size * *m / (v.sqrt() * inv_bc2 + eps);
            }
        };
        let items: Vec<_> = params.into_iter().zip(self.m.iter_mut().zip(self.v.iter_mut())).collect();
        if threads > 1 {
            items.into_par_iter().for_each(update);
        } else {
            items.into_iter().for_each(update);
        }
    }

    /// The first and second moment estimates, per tensor (empty before the first step).
    pub fn moments(&self) -> (&[Vec<f32>], &[Vec<f32>]) {
        (&self.m, &self.v)
    }

    /// Restores the state [`AdamW::steps`] and [`AdamW::moments`] describe.
    pub fn set_state(&mut self, steps: u64, m: Vec<Vec<f32>>, v: Vec<Vec<f32>>) {
        assert_eq!(m.len(), v.len());
        self.steps = steps;
        self.m = m;
        self.v = v;
    }
}

/// The learning rate for the update after `done` updates: linear from 0 to `peak` over `warmup`
/// updates, then linear down to 0 at `total` (Hugging Face's linear schedule with warm-up).
pub fn linear_schedule(peak: f64, done: u64, warmup: u64, total: u64) -> f64 {
    if done < warmup {
        return peak * done as f64 / warmup.max(1) as f64;
    }
    peak * (total.saturating_sub(done) as f64 / total.saturating_sub(warmup).max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_hand_computed_torch_adamw_step() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01), p = [1, -2], grad = [0.5, -0.25]:
        // the first step moves each weight by lr (m̂/√v̂ = sign(g)) after decay by 1 - lr·wd.
        let mut p = vec![1.0f32, -2.0];
        let g = vec![0.5f32, -0.25];
        let mut opt = AdamW::new(0.01);
        opt.step(0.1, vec![(&mut p, &g, true)], 1);
        let want = [1.0 * (1.0 - 0.001) - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 * (1.0 - 0.001) + 0.1 * 0.25 / (0.25 + 1e-8)];
        for (a, b) in p.iter().zip(want) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(opt.steps(), 1);
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        assert_eq!(linear_schedule(1.0, 0, 10, 110), 0.0);
        assert_eq!(linear_schedule(1.0, 5, 10, 110), 0.5);
        assert_eq!(linear_schedule(1.0, 10, 10, 110), 1.0);
        assert_eq!(linear_schedule(1.0, 60, 10, 110), 0.5);
        assert_eq!(linear_schedule(1.0, 110, 10, 110), 0.0);
        assert_eq!(linear_schedule(1.0, 0, 0, 4), 1.0);
    }
}
