// Fused kernels of seqpipe's device-resident training step (src/nn/cuda/step.rs drives them).
//
// Compiled at run time by NVRTC (src/nn/cuda/device.rs, `--fmad=false`) and, for the tests, by the
// host C++ compiler through src/nn/cuda/emu.h (`-ffp-contract=off`). The math is the CPU's:
// src/nn/math.rs (tanh_f, sigmoid_f, exp_neg_f, softmax_ce), src/nn/core/{rnn,gru,lstm}.rs (the
// cells, PyTorch gate order) and src/nn/params.rs (global norm, clipping, SGD, Adam), with the
// same formulas in the same order of operations and no contraction into FMAs, so that a kernel
// gives the CPU's bits. Layouts: row-major, rows time-major (row = t*batch + b), as in
// src/nn/core/mod.rs. A pointer argument that may be null says so.
//
// Every kernel is `extern "C"` and listed in KERNELS in src/nn/cuda/mod.rs (with whether it uses
// __syncthreads: the host emulation runs those with one OS thread per CUDA thread).

#ifndef SEQPIPE_EMU
#define SP_KERNEL extern "C" __global__
#define SP_DEV static __device__ __forceinline__
SP_DEV float sp_from_bits(unsigned int u) { return __uint_as_float(u); }
SP_DEV unsigned int sp_to_bits(float f) { return __float_as_uint(f); }
#endif

#define SP_MAX_BLOCK 1024
#define SP_LANES 16

SP_DEV int sp_isnan(float x) { return (sp_to_bits(x) & 0x7fffffffu) > 0x7f800000u; }
SP_DEV int sp_isfinite(float x) { return (sp_to_bits(x) & 0x7f800000u) != 0x7f800000u; }
SP_DEV float sp_nan() { return sp_from_bits(0x7fc00000u); }
SP_DEV float sp_neg_inf() { return sp_from_bits(0xff800000u); }

// math.rs tanh_f: Eigen's rational approximation, clamped (NaN stays NaN).
SP_DEV float sp_tanh(float x) {
    const float A1 = 4.8935246e-3f;
    const float A3 = 6.3726193e-4f;
    const float A5 = 1.4857224e-5f;
    const float A7 = 5.122297e-8f;
    const float A9 = -8.604672e-11f;
    const float A11 = 2.000188e-13f;
    const float A13 = -2.7607685e-16f;
    const float B0 = 4.893525e-3f;
    const float B2 = 2.2684346e-3f;
    const float B4 = 1.1853471e-4f;
    const float B6 = 1.1982584e-6f;
    const float CLAMP = 7.905311f;
    float xc = x;
    if (xc < -CLAMP) xc = -CLAMP;
    if (xc > CLAMP) xc = CLAMP;
    float x2 = xc * xc;
    float p = A13;
    p = p * x2 + A11;
    p = p * x2 + A9;
    p = p * x2 + A7;
    p = p * x2 + A5;
    p = p * x2 + A3;
    p = p * x2 + A1;
    p = p * xc;
    float q = B6;
    q = q * x2 + B4;
    q = q * x2 + B2;
    q = q * x2 + B0;
    return p / q;
}

// math.rs sigmoid_f
SP_DEV float sp_sigmoid(float x) { return 0.5f + 0.5f * sp_tanh(0.5f * x); }

// math.rs exp_neg_f: exp(x) for x <= 0 (Cephes polynomial, 2^n from the exponent bits).
SP_DEV float sp_exp_neg(float x) {
    const float LOG2E = 1.44269504088896340736f;
    const float LN2_HI = 0.6933594f;
    const float LN2_LO = -2.1219444e-4f;
    const float ROUND = 12582912.0f;
    if (x < -87.3f) x = -87.3f;
    float n = (x * LOG2E + ROUND) - ROUND;
    float r = x - n * LN2_HI - n * LN2_LO;
    float p = 1.9875691e-4f;
    p = p * r + 1.3981999e-3f;
    p = p * r + 8.333452e-3f;
    p = p * r + 4.1665796e-2f;
    p = p * r + 1.6666665e-1f;
    p = p * r + 0.5f;
    float e = p * r * r + r + 1.0f;
    int ni = sp_isnan(n) ? 0 : (int)n;  // Rust's `n as i32` (NaN -> 0)
    float scale = sp_from_bits(((unsigned int)(ni + 127)) << 23);
    return e * scale;
}

SP_DEV long long sp_tid() { return (long long)blockIdx.x * blockDim.x + threadIdx.x; }

// ---- inputs ------------------------------------------------------------------------------------

// One-hot input: gi[r, j] = W_ih[j, x[r]] + (b_ih[j] + b_hh[j]); W_ih is [gh, v]. b_hh may be null
// (GRU keeps b_hh for its n gate; the from-scratch RNN has none).
SP_KERNEL void gather_onehot(float* gi, const float* w_ih, const float* b_ih, const float* b_hh,
                             const int* x, int rows, int gh, int v) {
    long long i = sp_tid();
    if (i >= (long long)rows * gh) return;
    int r = (int)(i / gh), j = (int)(i % gh);
    float bias = b_hh ? b_ih[j] + b_hh[j] : b_ih[j];
    gi[i] = w_ih[(long long)j * v + x[r]] + bias;
}

// y[r, j] += b1[j] (+ b2[j]); b2 may be null.
SP_KERNEL void add_bias(float* y, const float* b1, const float* b2, int rows, int cols) {
    long long i = sp_tid();
    if (i >= (long long)rows * cols) return;
    int j = (int)(i % cols);
    float bias = b2 ? b1[j] + b2[j] : b1[j];
    y[i] = y[i] + bias;
}

// Embedding rows: out[r, :] = table[x[r], :].
SP_KERNEL void gather_rows(float* out, const float* table, const int* x, int rows, int dim) {
    long long i = sp_tid();
    if (i >= (long long)rows * dim) return;
    int r = (int)(i / dim), j = (int)(i % dim);
    out[i] = table[(long long)x[r] * dim + j];
}

// ---- cells: one step, all batch rows (thread per (b, j)) ----------------------------------------

// rnn.rs forward: hc = act(gi + gh) (gi holds both biases). n = batch * hidden.
SP_KERNEL void rnn_fwd(int relu, const float* gi, const float* gh, float* hc, int n) {
    long long i = sp_tid();
    if (i >= n) return;
    float v = gi[i] + gh[i];
    if (relu) {
        hc[i] = (v > 0.0f || sp_isnan(v)) ? v : 0.0f;
    } else {
        hc[i] = sp_tanh(v);
    }
}

// gru.rs forward. gi = x W_ih^T + b_ih [b, 3h], gh = h W_hh^T [b, 3h], b_hh [3h], hp [b, h].
// Writes gates (r, z, n) [b, 3h], ghn = W_hn h + b_hn [b, h], hc [b, h].
SP_KERNEL void gru_fwd(const float* gi, const float* gh, const float* bhh, const float* hp,
                       float* gates, float* ghn, float* hc, int b, int h) {
    long long i = sp_tid();
    if (i >= (long long)b * h) return;
    long long row = i / h;
    int j = (int)(i % h);
    const float* gir = gi + row * 3 * h;
    const float* ghr = gh + row * 3 * h;
    float r = sp_sigmoid(gir[j] + ghr[j] + bhh[j]);
    float z = sp_sigmoid(gir[h + j] + ghr[h + j] + bhh[h + j]);
    float hn = ghr[2 * h + j] + bhh[2 * h + j];
    float n = sp_tanh(gir[2 * h + j] + r * hn);
    float* g = gates + row * 3 * h;
    g[j] = r;
    g[h + j] = z;
    g[2 * h + j] = n;
    ghn[i] = hn;
    hc[i] = (1.0f - z) * n + z * hp[i];
}

// lstm.rs forward. gi = x W_ih^T + b_ih + b_hh [b, 4h], gh = h W_hh^T [b, 4h], cp [b, h].
// Writes gates (i, f, g, o) [b, 4h], the new cell state cn, tanh(cn) (tc) and hc, all [b, h].
SP_KERNEL void lstm_fwd(const float* gi, const float* gh, const float* cp, float* gates, float* cn,
                        float* tc, float* hc, int b, int h) {
    long long k = sp_tid();
    if (k >= (long long)b * h) return;
    long long row = k / h;
    int j = (int)(k % h);
    const float* gir = gi + row * 4 * h;
    const float* ghr = gh + row * 4 * h;
    float i = sp_sigmoid(gir[j] + ghr[j]);
    float f = sp_sigmoid(gir[h + j] + ghr[h + j]);
    float gg = sp_tanh(gir[2 * h + j] + ghr[2 * h + j]);
    float o = sp_sigmoid(gir[3 * h + j] + ghr[3 * h + j]);
    float* g = gates + row * 4 * h;
    g[j] = i;
    g[h + j] = f;
    g[2 * h + j] = gg;
    g[3 * h + j] = o;
    float c = f * cp[k] + i * gg;
    float t = sp_tanh(c);
    tc[k] = t;
    hc[k] = o * t;
    cn[k] = c;
}

// The backward kernels take dL/dh_t in parts, summed in the CPU's order (backward.rs):
// dh = mm (the recurrent product, null when there is none) [+ carry for GRU] [+ extra].
// `extra` (may be null) is dY_t W_lin for the top layer, or the gradient from the layer above.

// rnn.rs backward: dg = gradient at the pre-activation [n]. (dgi is the same array.)
SP_KERNEL void rnn_bwd(int relu, const float* mm, const float* extra, const float* hcur, float* dg,
                       int n) {
    long long i = sp_tid();
    if (i >= n) return;
    float d = mm ? mm[i] : 0.0f;
    if (extra) d = d + extra[i];
    float hv = hcur[i];
    if (relu) {
        dg[i] = hv > 0.0f ? d : 0.0f;
    } else {
        dg[i] = d * (1.0f - hv * hv);
    }
}

// gru.rs backward. carry [b, h]: in, dL/dh_t through z from the step after; out, dh * z.
// dg [b, 3h]: gradients at W_hh's outputs (r, z, r * dn); dgi [b, 3h]: at W_ih's outputs.
SP_KERNEL void gru_bwd(const float* mm, const float* extra, const float* gates, const float* ghn,
                       const float* hp, float* carry, float* dg, float* dgi, int b, int h) {
    long long i = sp_tid();
    if (i >= (long long)b * h) return;
    long long row = i / h;
    int j = (int)(i % h);
    float dhj = mm ? mm[i] : 0.0f;
    dhj = dhj + carry[i];
    if (extra) dhj = dhj + extra[i];
    const float* g = gates + row * 3 * h;
    float r = g[j], z = g[h + j], n = g[2 * h + j];
    float dn = dhj * (1.0f - z);
    float dz = dhj * (hp[i] - n);
    carry[i] = dhj * z;
    float dnp = dn * (1.0f - n * n);
    float dr = dnp * ghn[i];
    float drp = dr * r * (1.0f - r);
    float dzp = dz * z * (1.0f - z);
    float* d = dg + row * 3 * h;
    float* di = dgi + row * 3 * h;
    d[j] = drp;
    d[h + j] = dzp;
    d[2 * h + j] = dnp * r;
    di[j] = drp;
    di[h + j] = dzp;
    di[2 * h + j] = dnp;
}

// lstm.rs backward. carry [b, h]: in, dL/dc_t from the step after; out, dL/dc_{t-1}.
// dg [b, 4h] (dgi is the same array).
SP_KERNEL void lstm_bwd(const float* mm, const float* extra, const float* gates, const float* cp,
                        const float* tc, float* carry, float* dg, int b, int h) {
    long long k = sp_tid();
    if (k >= (long long)b * h) return;
    long long row = k / h;
    int j = (int)(k % h);
    float dhj = mm ? mm[k] : 0.0f;
    if (extra) dhj = dhj + extra[k];
    const float* g = gates + row * 4 * h;
    float i = g[j], f = g[h + j], gg = g[2 * h + j], o = g[3 * h + j];
    float t = tc[k];
    float d_o = dhj * t;
    float dc = carry[k] + dhj * o * (1.0f - t * t);
    carry[k] = dc * f;
    float* d = dg + row * 4 * h;
    d[j] = dc * gg * i * (1.0f - i);
    d[h + j] = dc * cp[k] * f * (1.0f - f);
    d[2 * h + j] = dc * i * (1.0f - gg * gg);
    d[3 * h + j] = d_o * o * (1.0f - o);
}

// ---- reductions over rows (fixed order: row 0 first, as the CPU) -------------------------------

// out[j] = sum over rows of m[r, j]; also into out2 when not null (b_ih and b_hh share it).
SP_KERNEL void col_sum(const float* m, int rows, int cols, float* out, float* out2) {
    long long j = sp_tid();
    if (j >= cols) return;
    float acc = 0.0f;
    for (int r = 0; r < rows; r++) acc = acc + m[(long long)r * cols + j];
    out[j] = acc;
    if (out2) out2[j] = acc;
}

// Gradient of gathered rows: for each token v and column j, the sum of src[r, j] over the rows r
// holding token v, in increasing r (`order` lists the rows sorted by token, stably; `starts` [v+1]
// where each token's rows begin). Written to out[v * sv + j * sj] (every (v, j), zero for tokens
// that do not occur): sv = dim, sj = 1 for an embedding table [v, dim]; sv = 1, sj = v for the
// one-hot W_ih [dim, v].
SP_KERNEL void scatter_rows(float* out, const float* src, const int* order, const int* starts,
                            int vocab, int dim, int sv, int sj) {
    long long i = sp_tid();
    if (i >= (long long)vocab * dim) return;
    int v = (int)(i / dim), j = (int)(i % dim);
    float acc = 0.0f;
    for (int k = starts[v]; k < starts[v + 1]; k++) acc = acc + src[(long long)order[k] * dim + j];
    out[(long long)v * sv + (long long)j * sj] = acc;
}

// ---- loss ---------------------------------------------------------------------------------------

// math.rs softmax_ce, one block per row of logits [rows, o] (grid = rows): grad = scale *
// (softmax - onehot(y)), row_loss = lse - logit[y] (double). The maximum propagates NaN; the sum
// of exp runs over 16 interleaved lanes, then the remainder, then the lanes, as the CPU's.
SP_KERNEL void softmax_ce(const float* logits, const int* y, float* grad, double* row_loss, int o,
                          float scale) {
    __shared__ float s_max[SP_MAX_BLOCK];
    __shared__ int s_nan[SP_MAX_BLOCK];
    __shared__ float s_lane[SP_LANES];
    __shared__ float s_sum;
    __shared__ float s_m;
    long long row = blockIdx.x;
    const float* l = logits + row * o;
    float* g = grad + row * o;
    int tid = threadIdx.x, bd = blockDim.x;
    float m = sp_neg_inf();
    int nan = 0;
    for (int i = tid; i < o; i += bd) {
        float v = l[i];
        if (sp_isnan(v)) nan = 1;
        else if (v > m) m = v;
    }
    s_max[tid] = m;
    s_nan[tid] = nan;
    __syncthreads();
    if (tid == 0) {
        for (int t = 1; t < bd; t++) {
            if (s_max[t] > m) m = s_max[t];
            nan |= s_nan[t];
        }
        s_m = nan ? sp_nan() : m;
    }
    __syncthreads();
    m = s_m;
    int finite = sp_isfinite(m);
    if (finite) {
        for (int i = tid; i < o; i += bd) g[i] = sp_exp_neg(l[i] - m);
    } else {
        for (int i = tid; i < o; i += bd) g[i] = sp_nan();
    }
    __syncthreads();
    int full = o / SP_LANES;
    if (finite) {
        for (int lane = tid; lane < SP_LANES; lane += bd) {
            float acc = 0.0f;
            for (int c = 0; c < full; c++) acc = acc + g[c * SP_LANES + lane];
            s_lane[lane] = acc;
        }
    }
    __syncthreads();
    if (tid == 0 && finite) {
        float s = 0.0f;
        for (int i = full * SP_LANES; i < o; i++) s = s + g[i];
        for (int lane = 0; lane < SP_LANES; lane++) s = s + s_lane[lane];
        s_sum = s;
    }
    __syncthreads();
    if (finite) {
        float s = s_sum;
        float k = scale / s;
        for (int i = tid; i < o; i += bd) g[i] = g[i] * k;
    }
    __syncthreads();
    if (tid == 0) {
        if (finite) {
            int t = y[row];
            g[t] = g[t] - scale;
            double lse = (double)m + log((double)s_sum);
            row_loss[row] = lse - (double)l[t];
        } else {
            row_loss[row] = (double)sp_nan();
        }
    }
}

// ---- gradient norm, clipping, optimizers --------------------------------------------------------

// partial[block] = sum of g[i]^2 (double) over a grid-stride share of the n elements.
SP_KERNEL void sumsq_partial(const float* g, long long n, double* partial) {
    __shared__ double s[SP_MAX_BLOCK];
    int tid = threadIdx.x, bd = blockDim.x;
    double acc = 0.0;
    for (long long i = (long long)blockIdx.x * bd + tid; i < n; i += (long long)gridDim.x * bd) {
        double v = (double)g[i];
        acc = acc + v * v;
    }
    s[tid] = acc;
    __syncthreads();
    if (tid == 0) {
        double t = 0.0;
        for (int k = 0; k < bd; k++) t = t + s[k];
        partial[blockIdx.x] = t;
    }
}

// One thread. stats[0] = sum of row_loss in row order (the CPU's order), stats[1] = global norm
// (params.rs global_norm: sqrt of the double sum of squares, as f32), stats[2] = the clipping
// factor (params.rs clip_scale; has_clip = 0: none).
SP_KERNEL void finish_step(const double* partial, int np, const double* row_loss, int rows,
                           int has_clip, float clip, double* stats) {
    if (sp_tid() != 0) return;
    double ss = 0.0;
    for (int k = 0; k < np; k++) ss = ss + partial[k];
    double loss = 0.0;
    for (int r = 0; r < rows; r++) loss = loss + row_loss[r];
    float norm = (float)sqrt(ss);
    float sc = (has_clip && norm > clip) ? clip / norm : 1.0f;
    stats[0] = loss;
    stats[1] = (double)norm;
    stats[2] = (double)sc;
}

// params.rs Optimizer::apply, SGD: w -= lr * (g * scale + wd * w); scale = stats[2].
// hp: lr, wd (in device memory: a recorded graph replays with each step's values).
SP_KERNEL void sgd_step(float* w, const float* g, long long n, const double* stats,
                        const float* hp) {
    long long i = sp_tid();
    if (i >= n) return;
    float lr = hp[0], wd = hp[1];
    float s = (float)stats[2];
    float gg = g[i] * s + wd * w[i];
    w[i] = w[i] - lr * gg;
}

// params.rs Optimizer::apply, Adam (PyTorch's): step_size = lr / (1 - beta1^t) and
// bc2_sqrt = sqrt(1 - beta2^t) come from the host, computed as there.
// hp: step_size, beta1, beta2, eps, wd, bc2_sqrt (device memory, as for sgd_step).
SP_KERNEL void adam_step(float* w, const float* g, float* m, float* v, long long n,
                         const double* stats, const float* hp) {
    long long i = sp_tid();
    if (i >= n) return;
    float step_size = hp[0], beta1 = hp[1], beta2 = hp[2], eps = hp[3], wd = hp[4],
          bc2_sqrt = hp[5];
    float s = (float)stats[2];
    float wi = w[i];
    float gg = g[i] * s + wd * wi;
    float mi = beta1 * m[i] + (1.0f - beta1) * gg;
    float vi = beta2 * v[i] + (1.0f - beta2) * gg * gg;
    float denom = sqrtf(vi) / bc2_sqrt + eps;
    m[i] = mi;
    v[i] = vi;
    w[i] = wi - step_size * (mi / denom);
}
