// The custom LSTM layer's time loop, forward and backward, compiled (CPU).
//
// The same algorithm as lstm_harness.models.layers.SequenceLoop (the PyTorch fallback): the input
// projections xw [T, B, G H] come precomputed; each step does one BLAS product h_in W_hh^T and
// then ONE fused pointwise pass per batch row (lstm_loop_kernels.h: gates, LayerNorm, zoneout,
// highway, residual, the next step's recurrent-dropout input). The backward runs the loop in
// reverse with one fused pass and one dgates W_hh product per step, then dW_hh = sum_t dgates_t^T
// h_in_t as a single product. Threads: with 8 or more batch rows for every intra-op thread,
// each thread runs the whole loop for its own block of rows (by_rows); else each step's product
// and pointwise pass are split over the threads.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "lstm_loop_rows.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LSTM_LOOP_X86_V3 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace v3 {
#include "lstm_loop_kernels.h"
template <typename T> void forward_rows(const ForwardRow<T>& a) { forward_row(a); }
template <typename T> void backward_rows(const BackwardRow<T>& a) { backward_row(a); }
template <typename T>
void attention_forward(const T* q, const T* hist, int64_t stride, int64_t t, int64_t H, T* beta,
                       T* ctx) {
  attention_forward_row(q, hist, stride, t, H, beta, ctx);
}
template <typename T>
void attention_backward(const T* q, const T* hist, int64_t stride, int64_t t, int64_t H,
                        const T* beta, const T* d_ctx, T* d_hist, int64_t d_stride, T* d_beta) {
  attention_backward_row(q, hist, stride, t, H, beta, d_ctx, d_hist, d_stride, d_beta);
}
}  // namespace v3
#pragma GCC pop_options
#endif

namespace base {
#include "lstm_loop_kernels.h"
}  // namespace base

namespace {

using Tensor = at::Tensor;
using Opt = std::optional<Tensor>;

bool use_v3() {
#ifdef LSTM_LOOP_X86_V3
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
#else
  return false;
#endif
}

template <typename T> void run_forward(const ForwardRow<T>& a) {
#ifdef LSTM_LOOP_X86_V3
  if (use_v3()) {
    v3::forward_rows(a);
    return;
  }
#endif
  base::forward_row(a);
}

template <typename T> void run_backward(const BackwardRow<T>& a) {
#ifdef LSTM_LOOP_X86_V3
  if (use_v3()) {
    v3::backward_rows(a);
    return;
  }
#endif
  base::backward_row(a);
}

template <typename T>
void run_attention_forward(const T* q, const T* hist, int64_t stride, int64_t t, int64_t H,
                           T* beta, T* ctx) {
#ifdef LSTM_LOOP_X86_V3
  if (use_v3()) {
    v3::attention_forward(q, hist, stride, t, H, beta, ctx);
    return;
  }
#endif
  base::attention_forward_row(q, hist, stride, t, H, beta, ctx);
}

template <typename T>
void run_attention_backward(const T* q, const T* hist, int64_t stride, int64_t t, int64_t H,
                            const T* beta, const T* d_ctx, T* d_hist, int64_t d_stride,
                            T* d_beta) {
#ifdef LSTM_LOOP_X86_V3
  if (use_v3()) {
    v3::attention_backward(q, hist, stride, t, H, beta, d_ctx, d_hist, d_stride, d_beta);
    return;
  }
#endif
  base::attention_backward_row(q, hist, stride, t, H, beta, d_ctx, d_hist, d_stride, d_beta);
}

// a mask or keep weight as [T, B, H] with unit stride over H (strides over T may be 0)
struct Mask {
  const void* data = nullptr;
  int64_t st = 0, sb = 0;
  template <typename T> const T* row(int64_t t, int64_t b) const {
    return data ? static_cast<const T*>(data) + t * st + b * sb : nullptr;
  }
};

Mask mask_of(const Opt& m, int64_t T, int64_t B, int64_t H) {
  Mask out;
  if (!m.has_value() || !m->defined()) return out;
  Tensor x = *m;
  if (x.dim() == 2) x = x.unsqueeze(0).expand({T, B, H});
  TORCH_CHECK(x.dim() == 3 && x.size(0) == T && x.size(1) == B && x.size(2) == H,
              "lstm_loop: a mask must be [B, H] or [T, B, H] after broadcasting");
  TORCH_CHECK(x.stride(2) == 1 && x.stride(1) == H, "lstm_loop: masks need unit stride over H");
  out.data = x.data_ptr();
  out.st = x.stride(0);
  out.sb = x.stride(1);
  return out;
}

const Tensor& defined_or(const Opt& m, const Tensor& other) {
  return m.has_value() && m->defined() ? *m : other;
}

// rows per task: threads only when a step has at least ATen's own pointwise grain (32768
// elements); below that a parallel region costs more than it saves
int64_t grain(int64_t width) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, width));
}

// rows per task of the self-attention at step t: about 2 t H multiply-adds per row (scores and
// context, or in the backward the scores' and the updates' passes), so the history of step t
// splits over the threads once t H is large enough; each thread then keeps its rows' history
// in its own cache (ATen's static split gives a thread the same rows every step)
int64_t attention_grain(int64_t t, int64_t H) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(1, 2 * t * H));
}

// Batch rows are independent through the whole recurrence (only W_hh is shared): when every
// intra-op thread gets at least kMinRowsPerThread rows, each thread runs the whole time loop
// for its own block of rows: one parallel region per sequence instead of two or three per
// step, each step's product on the block's rows on that thread alone (torch lets MKL start
// nested threads inside a parallel region; max-active-levels = 1 for the region's length stops
// that, and is restored by the last loop to leave). The workers run under the caller's
// thread-local state (grad and inference mode, autocast), as ATen's own OpenMP loops do not
// pass it on. With fewer rows (or without ATen's OpenMP backend) the loop runs once over the
// whole batch, each step's product and pointwise pass split over the threads.
constexpr int64_t kMinRowsPerThread = 8;

#if defined(_OPENMP) && AT_PARALLEL_OPENMP
#define LSTM_LOOP_ROW_BLOCKS 1
#endif

int64_t row_blocks(int64_t B) {
#ifdef LSTM_LOOP_ROW_BLOCKS
  const int64_t n = at::get_num_threads();
  if (n < 2 || at::in_parallel_region() || B < n * kMinRowsPerThread) return 1;
  return n;
#else
  return 1;
#endif
}

#ifdef LSTM_LOOP_ROW_BLOCKS
class NoNestedThreads {  // max-active-levels = 1 while any loop runs its row blocks
 public:
  NoNestedThreads() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (depth_++ == 0) {
      saved_ = omp_get_max_active_levels();
      omp_set_max_active_levels(1);
    }
  }
  ~NoNestedThreads() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (--depth_ == 0) omp_set_max_active_levels(saved_);
  }
  NoNestedThreads(const NoNestedThreads&) = delete;
  NoNestedThreads& operator=(const NoNestedThreads&) = delete;

 private:
  static inline std::mutex mutex_;
  static inline int depth_ = 0;
  static inline int saved_ = 0;
};
#endif

template <typename F>
void by_rows(int64_t B, const F& rows) {
  const int64_t blocks = row_blocks(B);
  if (blocks < 2) {
    rows(0, B);
    return;
  }
#ifdef LSTM_LOOP_ROW_BLOCKS
  NoNestedThreads guard;
  const at::ThreadLocalState caller;
  at::parallel_for(0, B, (B + blocks - 1) / blocks, [&](int64_t r0, int64_t r1) {
    at::ThreadLocalStateGuard state(caller);
    rows(r0, r1);
  });
#endif
}

std::vector<Tensor> loop_forward(Tensor xw, Tensor h0, Tensor c0, Tensor w_hh, Opt gates_gain,
                                 Opt gates_bias, Opt cell_gain, Opt cell_bias, Opt rec_mask,
                                 Opt keep_h, Opt keep_c, bool highway, bool residual,
                                 double eps, bool attention) {
  xw = xw.contiguous();
  h0 = h0.contiguous();
  c0 = c0.contiguous();
  w_hh = w_hh.contiguous();
  const int64_t T = xw.size(0), B = xw.size(1), W = xw.size(2), H = h0.size(1);
  const bool ln = gates_gain.has_value() && gates_gain->defined();
  TORCH_CHECK(W == (highway ? 5 : 4) * H, "lstm_loop: xw must be [T, B, G H]");
  auto opts = xw.options();
  Tensor hs = at::empty({T + 1, B, H}, opts), cs = at::empty({T + 1, B, H}, opts);
  hs[0].copy_(h0);
  cs[0].copy_(c0);
  const bool has_keep_c = keep_c.has_value() && keep_c->defined();
  const bool has_mask = rec_mask.has_value() && rec_mask->defined();
  Tensor c_new = has_keep_c ? at::empty({T, B, H}, opts) : cs.narrow(0, 1, T);
  // with self-attention the recurrent input is [m h_{t-1}, ctx_t] (Cheng et al. 2016)
  Tensor h_in = attention ? at::empty({T, B, 2 * H}, opts)
                          : has_mask ? at::empty({T, B, H}, opts) : hs.narrow(0, 0, T);
  Tensor beta = attention ? at::zeros({T, B, T}, opts) : Tensor();
  // the attention's history batch-major, [B, T, H]: each row's earlier outputs one contiguous
  // block (streamed), rather than H-wide pieces B H apart in hs
  Tensor hist = attention ? at::empty({B, T, H}, opts) : Tensor();
  // tanh(LN(C~)) only for this step: the backward recomputes it from C~ (and the statistics)
  Tensor acts = at::empty({T, B, W}, opts), tanh_c = at::empty({B, H}, opts);
  Tensor xhat, rstd_g, mean_g, mean_c, rstd_c, gg, gb, cg, cb;
  if (ln) {
    xhat = at::empty({T, B, W}, opts);
    rstd_g = at::empty({T, B, 4}, opts);
    mean_g = at::empty({T, B, 4}, opts);
    mean_c = at::empty({T, B}, opts);
    rstd_c = at::empty({T, B}, opts);
    gg = gates_gain->contiguous();
    gb = gates_bias->contiguous();
    cg = cell_gain->contiguous();
    cb = cell_bias->contiguous();
  }
  Mask mask = mask_of(rec_mask, T, B, H), kh = mask_of(keep_h, T, B, H),
       kc = mask_of(keep_c, T, B, H);
  if (has_mask && T > 0 && !attention) {
    Tensor m0 = rec_mask->dim() == 2 ? *rec_mask : (*rec_mask)[0];
    Tensor first = h_in[0];
    at::mul_out(first, h0, m0);
  }
  Tensor rec = at::empty({B, W}, opts);
  // detached: the products may run on worker threads, whose grad mode is their own
  Tensor w_t = w_hh.detach().t();
  AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "lstm_loop_forward", [&] {
    using T_ = scalar_t;
    T_* hs_p = hs.data_ptr<T_>();
    T_* cs_p = cs.data_ptr<T_>();
    T_* cn_p = c_new.data_ptr<T_>();
    T_* hin_p = h_in.data_ptr<T_>();
    T_* act_p = acts.data_ptr<T_>();
    T_* tc_p = tanh_c.data_ptr<T_>();
    const T_* xw_p = xw.data_ptr<T_>();
    const T_* rec_p = rec.data_ptr<T_>();
    T_* xh_p = ln ? xhat.data_ptr<T_>() : nullptr;
    T_* rg_p = ln ? rstd_g.data_ptr<T_>() : nullptr;
    T_* mg_p = ln ? mean_g.data_ptr<T_>() : nullptr;
    T_* mc_p = ln ? mean_c.data_ptr<T_>() : nullptr;
    T_* rc_p = ln ? rstd_c.data_ptr<T_>() : nullptr;
    const T_* gg_p = ln ? gg.data_ptr<T_>() : nullptr;
    const T_* gb_p = ln ? gb.data_ptr<T_>() : nullptr;
    const T_* cg_p = ln ? cg.data_ptr<T_>() : nullptr;
    const T_* cb_p = ln ? cb.data_ptr<T_>() : nullptr;
    T_* beta_p = attention ? beta.data_ptr<T_>() : nullptr;
    T_* hist_p = attention ? hist.data_ptr<T_>() : nullptr;
    const auto rows = [&](int64_t r0, int64_t r1) {  // the whole loop for batch rows [r0, r1)
      Tensor rec_r = rec.narrow(0, r0, r1 - r0);
      for (int64_t t = 0; t < T; ++t) {
        if (attention) {  // [m_t h_{t-1}, ctx_t] for every row
          at::parallel_for(r0, r1, attention_grain(t, H), [&](int64_t b0, int64_t b1) {
            for (int64_t b = b0; b < b1; ++b) {
              const T_* q = hs_p + (t * B + b) * H;
              T_* row = hin_p + (t * B + b) * 2 * H;
              const T_* m = mask.row<T_>(t, b);
              for (int64_t j = 0; j < H; ++j) row[j] = m ? q[j] * m[j] : q[j];
              if (t == 0) {
                for (int64_t j = 0; j < H; ++j) row[H + j] = T_(0);
              } else {
                T_* mine = hist_p + b * T * H;
                std::copy(q, q + H, mine + (t - 1) * H);
                run_attention_forward<T_>(q, mine, H, t, H, beta_p + (t * B + b) * T, row + H);
              }
            }
          });
        }
        at::mm_out(rec_r, h_in[t].narrow(0, r0, r1 - r0), w_t);
        at::parallel_for(r0, r1, grain(W), [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            ForwardRow<T_> a;
            a.H = H;
            a.W = W;
            a.layernorm = ln;
            a.highway = highway;
            a.residual = residual;
            a.eps = static_cast<T_>(eps);
            const int64_t rw = (t * B + b) * W, rh = (t * B + b) * H, nh = ((t + 1) * B + b) * H;
            a.xw = xw_p + rw;
            a.rec = rec_p + b * W;
            a.h_prev = hs_p + rh;
            a.c_prev = cs_p + rh;
            a.h = hs_p + nh;
            a.c = cs_p + nh;
            a.c_new = has_keep_c ? cn_p + rh : cs_p + nh;
            a.acts = act_p + rw;
            a.tanh_c = tc_p + b * H;
            a.xhat = ln ? xh_p + rw : nullptr;
            a.rstd_g = ln ? rg_p + (t * B + b) * 4 : nullptr;
            a.mean_g = ln ? mg_p + (t * B + b) * 4 : nullptr;
            a.mean_c = ln ? mc_p + t * B + b : nullptr;
            a.rstd_c = ln ? rc_p + t * B + b : nullptr;
            a.gates_gain = gg_p;
            a.gates_bias = gb_p;
            a.cell_gain = cg_p;
            a.cell_bias = cb_p;
            a.keep_h = kh.row<T_>(t, b);
            a.keep_c = kc.row<T_>(t, b);
            const bool next = has_mask && t + 1 < T && !attention;
            a.mask_next = next ? mask.row<T_>(t + 1, b) : nullptr;
            a.h_in_next = next ? hin_p + ((t + 1) * B + b) * H : nullptr;
            run_forward(a);
          }
        });
      }
    };
    by_rows(B, rows);
  });
  return {hs, cs, acts, c_new, h_in, xhat, rstd_g, mean_g, mean_c, rstd_c, beta};
}

std::vector<Tensor> loop_backward(Tensor d_out, Tensor d_h, Tensor d_c, Tensor w_hh,
                                  Opt gates_gain, Opt cell_gain, Opt cell_bias, Opt rec_mask,
                                  Opt keep_h, Opt keep_c, bool highway, bool residual, Tensor hs,
                                  Tensor cs, Tensor acts, Tensor c_new, Tensor h_in,
                                  Opt xhat, Opt rstd_g, Opt mean_c, Opt rstd_c, Opt beta,
                                  bool reuse_acts) {
  const int64_t T = acts.size(0), B = acts.size(1), W = acts.size(2), H = hs.size(2);
  const bool ln = gates_gain.has_value() && gates_gain->defined();
  auto opts = acts.options();
  const bool attention = beta.has_value() && beta->defined();
  // with self-attention, later steps add dL/d(out_k) through the attention: a private copy
  if (attention) {
    d_out = d_out.contiguous().clone();
  } else if (d_out.stride(2) != 1) {
    d_out = d_out.contiguous();
  }
  d_h = d_h.contiguous();
  d_c = d_c.contiguous();
  w_hh = w_hh.contiguous();
  const int64_t K = attention ? 2 * H : H;  // width of the recurrent input
  Tensor gh_prev = at::zeros({B, H}, opts), gc = d_c.clone(), d_h_in = at::zeros({B, K}, opts);
  Tensor d_beta = attention ? at::empty({B, T}, opts) : Tensor();
  // the history batch-major, as the forward read it
  Tensor hist = attention ? hs.narrow(0, 1, T).transpose(0, 1).contiguous() : Tensor();
  // reuse_acts (the graph is not retained): dL/d(pre) overwrites the activations, each row's
  // copied to the scratch first (it is the last reader of them)
  Tensor scratch = at::empty({B, 5 * H + (reuse_acts ? W : 0)}, opts);
  Tensor d_pre = reuse_acts ? acts : at::empty({T, B, W}, opts);
  Tensor gg, cg, cb, dgg, dcg, dcb, xh, rg, mc, rc;
  if (ln) {
    gg = gates_gain->contiguous();
    cg = cell_gain->contiguous();
    cb = cell_bias->contiguous();
    dgg = at::zeros({B, 4 * H}, opts);
    dcg = at::zeros({B, H}, opts);
    dcb = at::zeros({B, H}, opts);
    xh = *xhat;
    rg = *rstd_g;
    mc = *mean_c;
    rc = *rstd_c;
  }
  Mask mask = mask_of(rec_mask, T, B, H), kh = mask_of(keep_h, T, B, H),
       kc = mask_of(keep_c, T, B, H);
  const bool has_mask = mask.data != nullptr;
  Tensor d_rec = ln ? xh : d_pre;
  const Tensor w = w_hh.detach();  // for the worker threads, as in the forward
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "lstm_loop_backward", [&] {
    using T_ = scalar_t;
    const int64_t so_b = d_out.stride(0), so_t = d_out.stride(1);
    const int64_t cn_t = c_new.stride(0), cn_b = c_new.stride(1);
    const T_* d_h_p = d_h.data_ptr<T_>();
    const T_* d_h_in_p = d_h_in.data_ptr<T_>();
    T_* ghp_p = gh_prev.data_ptr<T_>();
    const T_* d_out_p = d_out.data_ptr<T_>();
    T_* gc_p = gc.data_ptr<T_>();
    const T_* act_p = acts.data_ptr<T_>();
    T_* dpre_p = d_pre.data_ptr<T_>();
    const T_* hs_p = hs.data_ptr<T_>();
    const T_* cs_p = cs.data_ptr<T_>();
    const T_* cn_p = c_new.data_ptr<T_>();
    const T_* mc_p = ln ? mc.data_ptr<T_>() : nullptr;
    const T_* rc_p = ln ? rc.data_ptr<T_>() : nullptr;
    const T_* cg_p = ln ? cg.data_ptr<T_>() : nullptr;
    const T_* cb_p = ln ? cb.data_ptr<T_>() : nullptr;
    const T_* gg_p = ln ? gg.data_ptr<T_>() : nullptr;
    T_* xh_p = ln ? xh.data_ptr<T_>() : nullptr;
    const T_* rg_p = ln ? rg.data_ptr<T_>() : nullptr;
    T_* dgg_p = ln ? dgg.data_ptr<T_>() : nullptr;
    T_* dcg_p = ln ? dcg.data_ptr<T_>() : nullptr;
    T_* dcb_p = ln ? dcb.data_ptr<T_>() : nullptr;
    T_* scratch_p = scratch.data_ptr<T_>();
    const int64_t S = scratch.size(1);
    const auto rows = [&](int64_t r0, int64_t r1) {  // the whole loop for batch rows [r0, r1)
      Tensor d_h_in_r = d_h_in.narrow(0, r0, r1 - r0);
      for (int64_t t = T - 1; t >= 0; --t) {
        at::parallel_for(r0, r1, grain(W), [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            BackwardRow<T_> a;
            a.H = H;
            a.W = W;
            a.layernorm = ln;
            a.highway = highway;
            a.residual = residual;
            a.first = t == T - 1;
            const int64_t rw = (t * B + b) * W, rh = (t * B + b) * H;
            a.d_h = d_h_p + b * H;
            a.d_h_in = d_h_in_p + b * K;
            a.mask_next = has_mask && t + 1 < T ? mask.row<T_>(t + 1, b) : nullptr;
            a.gh_prev = ghp_p + b * H;
            a.d_out = d_out_p + b * so_b + t * so_t;
            a.gc = gc_p + b * H;
            a.keep_h = kh.row<T_>(t, b);
            a.keep_c = kc.row<T_>(t, b);
            if (reuse_acts) {
              T_* copy = scratch_p + b * S + 5 * H;
              std::copy(act_p + rw, act_p + rw + W, copy);
              a.acts = copy;
            } else {
              a.acts = act_p + rw;
            }
            a.d_pre = dpre_p + rw;
            a.h_prev = hs_p + rh;
            a.c_prev = cs_p + rh;
            a.c_new = cn_p + cn_t * t + cn_b * b;
            a.mean_c = ln ? mc_p + t * B + b : nullptr;
            a.rstd_c = ln ? rc_p + t * B + b : nullptr;
            a.cell_gain = cg_p;
            a.cell_bias = cb_p;
            a.gates_gain = gg_p;
            a.xhat = ln ? xh_p + rw : nullptr;
            a.rstd_g = ln ? rg_p + (t * B + b) * 4 : nullptr;
            a.d_gates_gain = ln ? dgg_p + b * 4 * H : nullptr;
            a.d_cell_gain = ln ? dcg_p + b * H : nullptr;
            a.d_cell_bias = ln ? dcb_p + b * H : nullptr;
            a.scratch = scratch_p + b * S;
            run_backward(a);
          }
        });
        at::mm_out(d_h_in_r, d_rec[t].narrow(0, r0, r1 - r0), w);
        if (attention && t > 0) {  // dL/dctx_t -> dL/d(out_k), k < t
          T_* d_out_w = d_out.data_ptr<T_>();
          const T_* beta_p = beta->data_ptr<T_>();
          T_* db_p = d_beta.data_ptr<T_>();
          const T_* hist_p = hist.data_ptr<T_>();
          at::parallel_for(r0, r1, attention_grain(t, H), [&](int64_t b0, int64_t b1) {
            for (int64_t b = b0; b < b1; ++b) {
              run_attention_backward<T_>(hs_p + (t * B + b) * H, hist_p + b * T * H, H, t, H,
                                         beta_p + (t * B + b) * T, d_h_in_p + b * K + H,
                                         d_out_w + b * so_b, so_t, db_p + b * T);
            }
          });
        }
      }
    };
    by_rows(B, rows);
  });
  // dL/dh_0 = m_0 (d_rec_0 W_hh) + the skip paths; dL/dC_0 = gc
  Tensor d_h0;
  if (T == 0) {
    d_h0 = d_h.clone();
  } else {
    Tensor m0 = has_mask ? (rec_mask->dim() == 2 ? *rec_mask : (*rec_mask)[0]) : Tensor();
    Tensor d_first = attention ? d_h_in.narrow(1, 0, H) : d_h_in;
    d_h0 = has_mask ? d_first.mul(m0).add_(gh_prev) : d_first.add(gh_prev);
  }
  Tensor d_w = d_rec.reshape({T * B, W}).t().mm(h_in.reshape({T * B, K}));
  Tensor d_gg, d_gb, d_cg, d_cb;
  if (ln) {
    d_gg = dgg.sum(0).view({4, H});
    d_gb = d_pre.narrow(2, 0, 4 * H).sum({0, 1}).view({4, H});
    d_cg = dcg.sum(0);
    d_cb = dcb.sum(0);
  }
  return {d_pre, d_h0, gc, d_w, d_gg, d_gb, d_cg, d_cb};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "LSTM time loop with fused per-step pointwise kernels (lstm_harness)";
  m.def("forward", &loop_forward, "the custom LSTM layer's time loop, forward");
  m.def("backward", &loop_backward, "the custom LSTM layer's time loop, backward");
  m.def("x86_64_v3", &use_v3, "whether the AVX2 + FMA kernels run on this CPU");
  m.def("row_blocks", &row_blocks, "blocks of batch rows the loop runs in parallel for B rows");
}
