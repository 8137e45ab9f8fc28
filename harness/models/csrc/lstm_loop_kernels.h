// Per-step pointwise kernels of the custom LSTM time loop (one pass over a batch row per step).
//
// Header-free on purpose: lstm_loop.cpp includes this file twice, inside two namespaces, once
// compiled for x86-64-v3 (AVX2 + FMA, chosen at run time when the CPU has them) and once for the
// baseline ISA. Everything here is static or in an anonymous namespace, so the two copies never
// meet at link time. The loops are written for the auto-vectoriser: unit stride, no calls in the
// float path (exp is a polynomial, below).
//
// Step (Hochreiter & Schmidhuber 1997; gate order i, f, g, o of nn.LSTM, + T with highway):
//   pre   = xw_t + R(h_in W_hh^T)          R = LN per gate block (Ba et al. 2016) or identity;
//                                          the highway block T is never normalised
//   i, f, o, T = sigma(pre),  g = tanh(pre) = 2 sigma(2 pre) - 1
//   C~    = f C_{t-1} + i g
//   C_t   = lerp(C~, C_{t-1}, k_c)        zoneout keep weight k_c (Krueger et al. 2017)
//   h~    = o tanh(LN(C~))                 LN of the cell only with layernorm
//   h     = lerp(h_{t-1}, h~, T)           highway (Zhang et al. 2016)
//   h     = h_{t-1} + h                    residual_step
//   h_t   = lerp(h, h_{t-1}, k_h)          zoneout on h (k = d in training, p at evaluation,
//                                          1 on padded steps)
//   h_in_{t+1} = m_{t+1} h_t               recurrent dropout mask (Semeniuta et al. 2016)
// lerp(a, b, w) is torch.lerp's formula (exact at w = 0 and w = 1).

namespace {

// -- activations -------------------------------------------------------------------------------
// exp for float: Cephes' expf polynomial (relative error ~2e-7) with 2^n built in the exponent
// bits, so that the loops vectorise; double uses libm (tests, gradcheck).
static inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  float y = p * r * r + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

static inline float sigmoid_(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
static inline double sigmoid_(double x) { return 1.0 / (1.0 + __builtin_exp(-x)); }
// tanh(x) = 2 sigma(2x) - 1, as the fallback computes tanh(g)
static inline float tanh_gate_(float x) { return 2.0f * sigmoid_(2.0f * x) - 1.0f; }
static inline double tanh_gate_(double x) { return 2.0 * sigmoid_(2.0 * x) - 1.0; }
static inline float tanh_cell_(float x) { return tanh_gate_(x); }
static inline double tanh_cell_(double x) { return __builtin_tanh(x); }

template <typename T>
static inline T lerp_(T a, T b, T w) {  // torch.lerp(a, b, w)
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// mean and 1 / sqrt(var + eps) of x[0 .. n) (biased variance, two passes; 8 partial sums, so
// that the sums vectorise)
template <typename T>
static inline T sum_(const T* __restrict__ x, int64_t n) {
  T p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) p[l] += x[j + l];
  }
  T s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
  for (; j < n; ++j) s += x[j];
  return s;
}

template <typename T>
static inline T sum_sq_dev_(const T* __restrict__ x, int64_t n, T m) {
  T p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) p[l] += (x[j + l] - m) * (x[j + l] - m);
  }
  T s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
  for (; j < n; ++j) s += (x[j] - m) * (x[j] - m);
  return s;
}

template <typename T>
static inline void moments_(const T* x, int64_t n, T eps, T* mean, T* rstd) {
  T m = sum_(x, n) / T(n);
  *mean = m;
  *rstd = T(1) / __builtin_sqrt(sum_sq_dev_(x, n, m) / T(n) + eps);
}

// -- forward -----------------------------------------------------------------------------------
template <typename T>
static void forward_row(const ForwardRow<T>& a) {
  const int64_t H = a.H, W = a.W, four = 4 * H;
  T* __restrict__ act = a.acts;
  if (a.layernorm) {
    for (int64_t k = 0; k < 4; ++k) {
      const T* r = a.rec + k * H;
      T* xh = a.xhat + k * H;
      T mean, rstd;
      moments_(r, H, a.eps, &mean, &rstd);
      a.rstd_g[k] = rstd;
      a.mean_g[k] = mean;
      const T* xw = a.xw + k * H;
      const T* gg = a.gates_gain + k * H;
      const T* gb = a.gates_bias + k * H;
      T* pre = act + k * H;
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        T n = (r[j] - mean) * rstd;
        xh[j] = n;
        pre[j] = (xw[j] + gb[j]) + n * gg[j];
      }
    }
    #pragma GCC ivdep
    for (int64_t j = four; j < W; ++j) act[j] = a.xw[j] + a.rec[j];
  } else {
    #pragma GCC ivdep
    for (int64_t j = 0; j < W; ++j) act[j] = a.xw[j] + a.rec[j];
  }
  #pragma GCC ivdep
  for (int64_t j = 0; j < 2 * H; ++j) act[j] = sigmoid_(act[j]);
  #pragma GCC ivdep
  for (int64_t j = 2 * H; j < 3 * H; ++j) act[j] = tanh_gate_(act[j]);
  #pragma GCC ivdep
  for (int64_t j = 3 * H; j < W; ++j) act[j] = sigmoid_(act[j]);
  const T* __restrict__ i = act;
  const T* __restrict__ f = act + H;
  const T* __restrict__ g = act + 2 * H;
  const T* __restrict__ o = act + 3 * H;
  T* __restrict__ cn = a.c_new;
  #pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) cn[j] = f[j] * a.c_prev[j] + i[j] * g[j];
  if (a.keep_c) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) a.c[j] = lerp_(cn[j], a.c_prev[j], a.keep_c[j]);
  }
  T* __restrict__ tc = a.tanh_c;
  T* __restrict__ h = a.h;
  if (a.layernorm) {
    T mean, rstd;
    moments_(cn, H, a.eps, &mean, &rstd);
    *a.mean_c = mean;
    *a.rstd_c = rstd;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      tc[j] = tanh_cell_((cn[j] - mean) * rstd * a.cell_gain[j] + a.cell_bias[j]);
    }
  } else {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) tc[j] = tanh_cell_(cn[j]);
  }
  #pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) h[j] = o[j] * tc[j];
  if (a.highway) {
    const T* tr = act + four;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) h[j] = lerp_(a.h_prev[j], h[j], tr[j]);
  }
  if (a.residual) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) h[j] = a.h_prev[j] + h[j];
  }
  if (a.keep_h) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) h[j] = lerp_(h[j], a.h_prev[j], a.keep_h[j]);
  }
  if (a.mask_next) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) a.h_in_next[j] = h[j] * a.mask_next[j];
  }
}

// -- backward ----------------------------------------------------------------------------------
// Reverse-mode of the step above for one row: dL/d(pre) into d_pre and, with layernorm,
// dL/d(h_in W_hh^T) over x^ (read for the last time here; recomputed for a repeat backward).
template <typename T>
static void backward_row(const BackwardRow<T>& a) {
  const int64_t H = a.H, four = 4 * H;
  const T* __restrict__ act = a.acts;
  T* __restrict__ dz = a.d_pre;
  T* __restrict__ ghp = a.gh_prev;
  T* __restrict__ gc = a.gc;
  T* __restrict__ dch = a.scratch;  // dL/d(tanh argument) * o (1 - tanh^2) = dL/dC^
  T* __restrict__ tc = a.scratch + 4 * H;  // tanh(LN(C~)), recomputed (the forward's formula)
  if (a.layernorm) {
    const T mean = *a.mean_c, rstd = *a.rstd_c;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      tc[j] = tanh_cell_((a.c_new[j] - mean) * rstd * a.cell_gain[j] + a.cell_bias[j]);
    }
  } else {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) tc[j] = tanh_cell_(a.c_new[j]);
  }
  T* __restrict__ gh = a.scratch + H;  // dL/dh~ (after the skip paths)
  const T* __restrict__ o = act + 3 * H;
  const T* __restrict__ tr = act + four;
  T* __restrict__ dz_o = dz + 3 * H;
  T* __restrict__ dz_tr = dz + four;
  const T* __restrict__ d_out = a.d_out;
  const T* __restrict__ hp = a.h_prev;
  // each option its own loop: no loads under a condition, so every loop vectorises
  if (a.first) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) gh[j] = a.d_h[j] + d_out[j];
  } else if (a.mask_next) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) gh[j] = (a.d_h_in[j] * a.mask_next[j] + ghp[j]) + d_out[j];
  } else {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) gh[j] = (a.d_h_in[j] + ghp[j]) + d_out[j];
  }
  bool has = false;  // whether a skip path carries dL/dh_t to h_{t-1} (then in ghp)
  if (a.keep_h) {    // h_t = lerp(h, h_{t-1}, k)
    const T* __restrict__ k = a.keep_h;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      ghp[j] = gh[j] * k[j];
      gh[j] = gh[j] - ghp[j];
    }
    has = true;
  }
  if (a.residual) {  // h = h_{t-1} + h~
    if (has) {
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) ghp[j] = ghp[j] + gh[j];
    } else {
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) ghp[j] = gh[j];
    }
    has = true;
  }
  if (a.highway) {  // h = T h~ + (1 - T) h_{t-1}
    const T* __restrict__ tk = tr;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {  // dL/d(pre_T)
      T t = tk[j];
      dz_tr[j] = gh[j] * ((t - t * t) * (o[j] * tc[j] - hp[j]));
    }
    if (has) {
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) ghp[j] = (ghp[j] + gh[j]) - gh[j] * tk[j];
    } else {
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) ghp[j] = gh[j] - gh[j] * tk[j];
    }
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) gh[j] = gh[j] * tk[j];
    has = true;
  }
  if (!has) {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) ghp[j] = T(0);
  }
  #pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) {
    T oj = o[j], hc = oj * tc[j];
    dz_o[j] = gh[j] * ((oj - oj * oj) * tc[j]);
    dch[j] = gh[j] * (oj - hc * tc[j]);  // o (1 - tanh^2)
  }
  if (a.layernorm) {  // LN of the cell: dL/dC~ from dL/dC^
    const T mean = *a.mean_c, rstd = *a.rstd_c;
    const T* __restrict__ cg = a.cell_gain;
    const T* __restrict__ cn = a.c_new;
    T* __restrict__ xh = a.scratch + 2 * H;
    T* __restrict__ dy = gh;  // dL/dh~ is spent
    T* __restrict__ dyx = a.scratch + 3 * H;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      xh[j] = (cn[j] - mean) * rstd;
      dy[j] = dch[j] * cg[j];
      dyx[j] = dy[j] * xh[j];
      a.d_cell_gain[j] += dch[j] * xh[j];
      a.d_cell_bias[j] += dch[j];
    }
    const T s1 = sum_(dy, H) / T(H), s2 = sum_(dyx, H) / T(H);
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) dch[j] = rstd * (dy[j] - s1 - xh[j] * s2);
  }
  const T* __restrict__ i = act;
  const T* __restrict__ f = act + H;
  const T* __restrict__ g = act + 2 * H;
  T* __restrict__ dz_i = dz;
  T* __restrict__ dz_f = dz + H;
  T* __restrict__ dz_g = dz + 2 * H;
  const T* __restrict__ cp = a.c_prev;
  if (a.keep_c) {  // C_t = lerp(C~, C_{t-1}, k)
    const T* __restrict__ k = a.keep_c;
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      T keep = gc[j] * k[j];
      T dc = (gc[j] + dch[j]) - keep;
      T ij = i[j], fj = f[j], gj = g[j];
      dz_i[j] = dc * ((ij - ij * ij) * gj);
      dz_f[j] = dc * ((fj - fj * fj) * cp[j]);
      dz_g[j] = dc * (ij - ij * gj * gj);
      gc[j] = keep + dc * fj;
    }
  } else {
    #pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      T dc = gc[j] + dch[j];
      T ij = i[j], fj = f[j], gj = g[j];
      dz_i[j] = dc * ((ij - ij * ij) * gj);
      dz_f[j] = dc * ((fj - fj * fj) * cp[j]);
      dz_g[j] = dc * (ij - ij * gj * gj);
      gc[j] = dc * fj;
    }
  }
  if (a.layernorm) {  // LN of the recurrent gates: dL/d(h_in W^T) from dL/d(pre)
    T* __restrict__ dy = a.scratch + 2 * H;
    T* __restrict__ dyx = a.scratch + 3 * H;
    for (int64_t k = 0; k < 4; ++k) {
      const T* __restrict__ dzk = dz + k * H;
      const T* __restrict__ gg = a.gates_gain + k * H;
      T* __restrict__ xh = a.xhat + k * H;
      T* __restrict__ dgg = a.d_gates_gain + k * H;
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        dy[j] = dzk[j] * gg[j];
        dyx[j] = dy[j] * xh[j];
        dgg[j] += dzk[j] * xh[j];
      }
      const T s1 = sum_(dy, H) / T(H), s2 = sum_(dyx, H) / T(H);
      const T rstd = a.rstd_g[k];
      #pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) xh[j] = rstd * (dy[j] - s1 - xh[j] * s2);
    }
    if (a.highway) {
      #pragma GCC ivdep
      for (int64_t j = four; j < a.W; ++j) a.xhat[j] = dz[j];
    }
  }
}

// -- self-attention over the earlier outputs (Cheng et al. 2016) -------------------------------
// Step t >= 1 of one row: q = h_{t-1}, history h_k = out_k (k < t) at hist + k * stride,
// e_k = h_k . q, beta = softmax(e), ctx = sum_k beta_k h_k.
template <typename T>
static inline T dot_(const T* __restrict__ x, const T* __restrict__ y, int64_t n) {
  T p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) p[l] += x[j + l] * y[j + l];
  }
  T s = ((p[0] + p[4]) + (p[2] + p[6])) + ((p[1] + p[5]) + (p[3] + p[7]));
  for (; j < n; ++j) s += x[j] * y[j];
  return s;
}

static inline float exp_(float x) { return exp_approx(x); }
static inline double exp_(double x) { return __builtin_exp(x); }

// Explicit 32-byte vectors (GCC vector extensions: AVX registers in the x86-64-v3 copy, SSE
// pairs in the baseline one) for widths H that are a multiple of one vector (other widths take
// the scalar loops): the scores eight history rows at a time (eight independent FMA chains),
// and ctx / dq / the rank-2 update with their accumulators or operands in registers over the
// history (not loaded and stored back once per history row).
template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(32)));
  static constexpr int64_t L = 32 / sizeof(T);
};

template <typename T>
static inline typename Vec<T>::type load_(const T* p) {
  typename Vec<T>::type v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
static inline void store_(T* p, typename Vec<T>::type v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <typename T>
static inline T lanes_(typename Vec<T>::type v) {
  T s = T(0);
  for (int64_t l = 0; l < Vec<T>::L; ++l) s += v[l];
  return s;
}

// Sums of the lanes of eight float vectors at once: out[r] = sum_l a_r[l], by three rounds of
// pairwise shuffles and adds (7 adds for 8 rows instead of 7 per row).
#if defined(__clang__)
#define LSTM_LOOP_SHUFFLE(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define LSTM_LOOP_SHUFFLE(a, b, ...) __builtin_shuffle(a, b, (I8{__VA_ARGS__}))
#endif
typedef int32_t I8 __attribute__((vector_size(32)));
typedef float F8 __attribute__((vector_size(32)));

static inline F8 pair_sums_(F8 a, F8 b) {  // [a0+a1, b0+b1, a2+a3, b2+b3, ...]
  return LSTM_LOOP_SHUFFLE(a, b, 0, 8, 2, 10, 4, 12, 6, 14) +
         LSTM_LOOP_SHUFFLE(a, b, 1, 9, 3, 11, 5, 13, 7, 15);
}

static inline F8 quad_sums_(F8 p, F8 q) {
  return LSTM_LOOP_SHUFFLE(p, q, 0, 1, 8, 9, 4, 5, 12, 13) +
         LSTM_LOOP_SHUFFLE(p, q, 2, 3, 10, 11, 6, 7, 14, 15);
}

static inline F8 lanes8_(const F8* a) {
  const F8 u = quad_sums_(pair_sums_(a[0], a[1]), pair_sums_(a[2], a[3]));
  const F8 v = quad_sums_(pair_sums_(a[4], a[5]), pair_sums_(a[6], a[7]));
  return LSTM_LOOP_SHUFFLE(u, v, 0, 1, 2, 3, 8, 9, 10, 11) +
         LSTM_LOOP_SHUFFLE(u, v, 4, 5, 6, 7, 12, 13, 14, 15);
}

// out[k] = h_k . y for the 8 rows k0 .. k0 + 7 (h_k = x + k * stride): 8 independent FMA chains
template <typename T>
static inline void dots8_(const T* x, int64_t stride, const T* y, int64_t H, T* out) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  V a[8];
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) a[r] = V{};
  for (int64_t j = 0; j < H; j += L) {
    const V yv = load_(y + j);
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) a[r] += load_(x + r * stride + j) * yv;
  }
  if constexpr (sizeof(T) == 4) {
    store_(out, lanes8_(a));
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) out[r] = lanes_<T>(a[r]);
  }
}

// out[k] = h_k . y for k < t (h_k = x + k * stride); H a multiple of L
template <typename T>
static inline void dots_vec_(const T* x, int64_t stride, const T* y, int64_t H, int64_t t,
                             T* out) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  int64_t k = 0;
  for (; k + 8 <= t; k += 8) dots8_(x + k * stride, stride, y, H, out + k);
  for (; k < t; ++k) {
    const T* x0 = x + k * stride;
    V a0 = {}, a1 = {};
    int64_t j = 0;
    for (; j + 2 * L <= H; j += 2 * L) {
      a0 += load_(x0 + j) * load_(y + j);
      a1 += load_(x0 + j + L) * load_(y + j + L);
    }
    if (j < H) a0 += load_(x0 + j) * load_(y + j);
    out[k] = lanes_<T>(a0 + a1);
  }
}

// acc[0 .. NB L) += sum_{k < t} w_k h_k[0 .. NB L) (h_k = x + k * stride): NB vectors of acc
// held in registers over the whole history (NB independent FMA chains)
template <typename T, int NB>
static inline void weighted_sum_block_(const T* x, int64_t stride, const T* w, int64_t t,
                                       T* acc) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  V c[NB];
#pragma GCC unroll 8
  for (int u = 0; u < NB; ++u) c[u] = load_(acc + u * L);
  for (int64_t k = 0; k < t; ++k) {
    const T* r = x + k * stride;
    const T wk = w[k];
#pragma GCC unroll 8
    for (int u = 0; u < NB; ++u) c[u] += wk * load_(r + u * L);
  }
#pragma GCC unroll 8
  for (int u = 0; u < NB; ++u) store_(acc + u * L, c[u]);
}

// acc[0 .. H) += sum_{k < t} w_k h_k; H a multiple of L
template <typename T>
static inline void weighted_sum_vec_(const T* x, int64_t stride, const T* w, int64_t H,
                                     int64_t t, T* acc) {
  constexpr int64_t L = Vec<T>::L;
  int64_t j = 0;
  for (; j + 8 * L <= H; j += 8 * L) weighted_sum_block_<T, 8>(x + j, stride, w, t, acc + j);
  switch ((H - j) / L) {
    case 1: weighted_sum_block_<T, 1>(x + j, stride, w, t, acc + j); break;
    case 2: weighted_sum_block_<T, 2>(x + j, stride, w, t, acc + j); break;
    case 3: weighted_sum_block_<T, 3>(x + j, stride, w, t, acc + j); break;
    case 4: weighted_sum_block_<T, 4>(x + j, stride, w, t, acc + j); break;
    case 5: weighted_sum_block_<T, 5>(x + j, stride, w, t, acc + j); break;
    case 6: weighted_sum_block_<T, 6>(x + j, stride, w, t, acc + j); break;
    case 7: weighted_sum_block_<T, 7>(x + j, stride, w, t, acc + j); break;
    default: break;
  }
}

// d_k[0 .. NB L) += a_k u + b_k v for k < t (d_k = d + k * stride), u and v in registers
template <typename T, int NB>
static inline void rank2_block_(T* d, int64_t stride, const T* a, const T* b, const T* u_,
                                const T* v_, int64_t t) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  V u[NB], v[NB];
#pragma GCC unroll 4
  for (int l = 0; l < NB; ++l) {
    u[l] = load_(u_ + l * L);
    v[l] = load_(v_ + l * L);
  }
  for (int64_t k = 0; k < t; ++k) {
    T* r = d + k * stride;
    const T ak = a[k], bk = b[k];
#pragma GCC unroll 4
    for (int l = 0; l < NB; ++l) store_(r + l * L, (load_(r + l * L) + ak * u[l]) + bk * v[l]);
  }
}

// d_k[0 .. H) += a_k u + b_k v for k < t; H a multiple of L
template <typename T>
static inline void rank2_vec_(T* d, int64_t stride, const T* a, const T* b, const T* u,
                              const T* v, int64_t H, int64_t t) {
  constexpr int64_t L = Vec<T>::L;
  int64_t j = 0;
  for (; j + 4 * L <= H; j += 4 * L) rank2_block_<T, 4>(d + j, stride, a, b, u + j, v + j, t);
  switch ((H - j) / L) {
    case 1: rank2_block_<T, 1>(d + j, stride, a, b, u + j, v + j, t); break;
    case 2: rank2_block_<T, 2>(d + j, stride, a, b, u + j, v + j, t); break;
    case 3: rank2_block_<T, 3>(d + j, stride, a, b, u + j, v + j, t); break;
    default: break;
  }
}

template <typename T>
static inline bool vec_width_(int64_t H) {
  return H % Vec<T>::L == 0;
}

// max of x[0 .. n), n >= 1: one vector of partial maxima (a compare-and-select the compiler
// turns into vector max instructions), then its lanes
template <typename T>
static inline T max_(const T* __restrict__ x, int64_t n) {
  using V = typename Vec<T>::type;
  constexpr int64_t L = Vec<T>::L;
  T m = x[0];
  int64_t j = 0;
  if (n >= L) {
    V p = load_(x);
    for (j = L; j + L <= n; j += L) {
      const V v = load_(x + j);
      p = v > p ? v : p;
    }
    for (int64_t l = 0; l < L; ++l) m = p[l] > m ? p[l] : m;
  }
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// beta = softmax(e) over k < t, in place
template <typename T>
static inline void softmax_(T* __restrict__ beta, int64_t t) {
  const T top = max_(beta, t);
#pragma GCC ivdep
  for (int64_t k = 0; k < t; ++k) beta[k] = exp_(beta[k] - top);  // vectorised: no reduction
  const T inv = T(1) / sum_(beta, t);
#pragma GCC ivdep
  for (int64_t k = 0; k < t; ++k) beta[k] = beta[k] * inv;
}

template <typename T>
static void attention_forward_row(const T* q, const T* hist, int64_t stride, int64_t t, int64_t H,
                                  T* beta, T* ctx) {
  const bool vec = vec_width_<T>(H);
  if (vec) {
    dots_vec_(hist, stride, q, H, t, beta);
  } else {
    for (int64_t k = 0; k < t; ++k) beta[k] = dot_(hist + k * stride, q, H);
  }
  softmax_(beta, t);
#pragma GCC ivdep
  for (int64_t j = 0; j < H; ++j) ctx[j] = T(0);
  if (vec) {
    weighted_sum_vec_(hist, stride, beta, H, t, ctx);
    return;
  }
  for (int64_t k = 0; k < t; ++k) {
    const T* __restrict__ h = hist + k * stride;
    const T b = beta[k];
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) ctx[j] += b * h[j];
  }
}

// Reverse of the above: dL/dctx -> dL/dq (added at d_hist + (t - 1) * d_stride, q = out_{t-1})
// and dL/dh_k (added at d_hist + k * d_stride); d_beta: [t] scratch.
//   dL/dbeta_k = dctx . h_k,  de_k = beta_k (dL/dbeta_k - sum_l beta_l dL/dbeta_l),
//   dh_k += beta_k dctx + de_k q,  dq += sum_k de_k h_k
template <typename T>
static void attention_backward_row(const T* q, const T* hist, int64_t stride, int64_t t,
                                   int64_t H, const T* beta, const T* d_ctx, T* d_hist,
                                   int64_t d_stride, T* d_beta) {
  const bool vec = vec_width_<T>(H);
  if (vec) {
    dots_vec_(hist, stride, d_ctx, H, t, d_beta);
  } else {
    for (int64_t k = 0; k < t; ++k) d_beta[k] = dot_(d_ctx, hist + k * stride, H);
  }
  const T s = dot_(beta, d_beta, t);
  T* dq = d_hist + (t - 1) * d_stride;
  if (vec) {  // dh_{t-1} is dq's row: the rank-2 update reaches it too, then dq's sum
#pragma GCC ivdep
    for (int64_t k = 0; k < t; ++k) d_beta[k] = beta[k] * (d_beta[k] - s);
    rank2_vec_(d_hist, d_stride, beta, d_beta, d_ctx, q, H, t);
    weighted_sum_vec_(hist, stride, d_beta, H, t, dq);
    return;
  }
  for (int64_t k = 0; k < t; ++k) {
    const T de = beta[k] * (d_beta[k] - s), b = beta[k];
    const T* h = hist + k * stride;
    T* dh = d_hist + k * d_stride;
    if (k == t - 1) {  // dq and dh_{t-1} share a row: q = h_{t-1}
#pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) dh[j] += (b * d_ctx[j] + de * q[j]) + de * h[j];
    } else {
#pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        dq[j] += de * h[j];
        dh[j] += b * d_ctx[j] + de * q[j];
      }
    }
  }
}

}  // namespace
