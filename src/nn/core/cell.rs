//! What a kind of cell adds to the shared passes. `forward.rs` and `backward.rs` own the
//! products, the caches, the loss and the gradients of the weights; a cell (`rnn.rs`, `gru.rs`,
//! `lstm.rs`) owns its element-wise step on one batch row, forward and backward, and says
//! which caches it keeps and how its biases and carry go. A new cell is a new file with an
//! `impl Cell`, and its line in `with_cell!` (in `core/mod.rs`, which knows every cell).

/// One batch row at one time step, forward: what the cell reads and writes. The caches the
/// cell does not keep are empty.
pub(super) struct FwdRow<'a> {
    /// The row's input projection `x W_ih^T + b_ih` (plus `b_hh` when folded) [GH].
    pub gi: &'a [f32],
    /// `h_s W_hh^T` [GH].
    pub gh: &'a [f32],
    /// `b_hh` when the cell adds it itself ([`Cell::FOLDS_B_HH`] false), else empty.
    pub b_hh: &'a [f32],
    /// h_s [H] and h_{s+1} [H] (written).
    pub hp: &'a [f32],
    pub hc: &'a mut [f32],
    /// Kept for the backward pass: the gates [GH], GRU's `W_hn h + b_hn` [H], LSTM's cell
    /// states c_s (read) and c_{s+1} and tanh(c_{s+1}) [H].
    pub gates: &'a mut [f32],
    pub ghn: &'a mut [f32],
    pub cp: &'a [f32],
    pub cn: &'a mut [f32],
    pub tc: &'a mut [f32],
}

/// One batch row at one time step, backward. `dh` is dL/dh_{s+1}; the caches are those the
/// forward pass kept (empty where the cell keeps none).
pub(super) struct BwdRow<'a> {
    pub dh: &'a [f32],
    pub hp: &'a [f32],
    pub hc: &'a [f32],
    pub gates: &'a [f32],
    pub ghn: &'a [f32],
    pub cp: &'a [f32],
    pub tc: &'a [f32],
    /// The row's carry [H] from the step after, to the step before (see
    /// [`Cell::CARRY_IN_DH`]).
    pub carry: &'a mut [f32],
    /// The gradients at W_hh's outputs [GH] and at W_ih's outputs [GH].
    pub dg: &'a mut [f32],
    pub dgi: &'a mut [f32],
}

/// A kind of recurrent cell, for the shared passes (dispatched once per pass, by `with_cell!`
/// in `core/mod.rs`).
pub(super) trait Cell: Sync {
    /// `b_hh` is added to the input projection once for all steps, so its gradient equals
    /// `b_ih`'s. False (GRU): the cell adds it inside, and its gradient is summed from dG.
    const FOLDS_B_HH: bool = true;
    /// Keeps its gates per step (cells of more than one gate).
    const KEEPS_GATES: bool;
    /// Keeps `W_hn h + b_hn` per step (GRU).
    const KEEPS_GHN: bool = false;
    /// Has a cell state c beside h, kept per step with tanh(c) (LSTM).
    const CELL_STATE: bool = false;
    /// The carry is a part of dL/dh (GRU: the direct path through z), added to `dh` before
    /// the step; else it is the cell's own (LSTM: dL/dc), or unused.
    const CARRY_IN_DH: bool = false;
    /// One step of one row, forward.
    fn forward(&self, r: FwdRow);
    /// One step of one row, backward: `dg`, `dgi` and the carry.
    fn backward(&self, r: BwdRow);
}
