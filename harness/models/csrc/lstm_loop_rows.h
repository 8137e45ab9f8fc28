// Arguments of the per-row kernels of lstm_loop_kernels.h (pointers into this step's rows).
#pragma once

#include <cstdint>

template <typename T>
struct ForwardRow {
  int64_t H, W;
  bool layernorm, highway, residual;
  T eps;
  const T* xw;        // [W] this step's input projection
  const T* rec;       // [W] h_in W_hh^T
  const T* h_prev;    // [H]
  const T* c_prev;    // [H]
  T* h;               // [H] h_t
  T* c;               // [H] C_t (after zoneout)
  T* c_new;           // [H] C~ (== c without zoneout on c)
  T* acts;            // [W] sigma(i), sigma(f), tanh(g), sigma(o) [, sigma(T)]
  T* tanh_c;          // [H] tanh(LN(C~)) or tanh(C~) (this step's scratch)
  T* xhat;            // [W] LN: normalised recurrent gates (first 4H)
  T* rstd_g;          // [4] LN
  T* mean_g;          // [4] LN
  T* mean_c;          // [1] LN
  T* rstd_c;          // [1] LN
  const T* gates_gain; const T* gates_bias; const T* cell_gain; const T* cell_bias;
  const T* keep_h;    // [H] or null
  const T* keep_c;    // [H] or null
  const T* mask_next; // [H] or null: m_{t+1}
  T* h_in_next;       // [H] or null: m_{t+1} h_t
};

template <typename T>
struct BackwardRow {
  int64_t H, W;
  bool layernorm, highway, residual, first;
  const T* d_h;       // [H] dL/dh_T (first step of the reverse loop)
  const T* d_h_in;    // [H] dL/d(h_in_{t+1}) = d_rec_{t+1} W_hh (later steps)
  const T* mask_next; // [H] or null: m_{t+1}
  T* gh_prev;         // [H] in: dL/dh_t through the skip paths of step t+1; out: of step t
  const T* d_out;     // [H] dL/d(out_t)
  T* gc;              // [H] in: dL/dC_t from later steps; out: dL/dC_{t-1}
  const T* keep_h; const T* keep_c;
  const T* acts;      // [W] activations
  T* d_pre;           // [W] out: dL/d(pre)
  const T* h_prev; const T* c_prev; const T* c_new;
  const T* mean_c; const T* rstd_c; const T* cell_gain; const T* cell_bias; const T* gates_gain;
  T* xhat;            // [W] LN: in x^ of the gates; out: dL/d(h_in W_hh^T)
  const T* rstd_g;
  T* d_gates_gain;    // [4H] per-row sums
  T* d_cell_gain;     // [H]
  T* d_cell_bias;     // [H]
  T* scratch;         // [5H]
};
