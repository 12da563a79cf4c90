// Fused GRU recurrence (Keras reset_after=True form) for the CPU: forward and backward over a
// static number of steps, batch rows sharded over TF's intra-op threads.
#include <cmath>
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"
#include "tensorflow/core/platform/blocking_counter.h"
#include "Eigen/Core"

using namespace tensorflow;
using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapM = Eigen::Map<RowMat>;
using CMapM = Eigen::Map<const RowMat>;

REGISTER_OP("MicFusedGru")
    .Input("xp: float")      // [L, B, 3H] input projection + input bias, time-major
    .Input("u: float")       // [H, 3H] recurrent kernel
    .Input("b: float")       // [3H] recurrent bias
    .Output("states: float") // [L, B, H]
    .Output("gates: float")  // [L, B, 4H]: z, r, n, h U_n + b_n
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      auto xp = c->input(0);
      auto h = c->Dim(c->input(1), 0);
      c->set_output(0, c->MakeShape({c->Dim(xp, 0), c->Dim(xp, 1), h}));
      shape_inference::DimensionHandle h4;
      TF_RETURN_IF_ERROR(c->Multiply(h, 4, &h4));
      c->set_output(1, c->MakeShape({c->Dim(xp, 0), c->Dim(xp, 1), h4}));
      return OkStatus();
    });

REGISTER_OP("MicFusedGruGrad")
    .Input("u: float")         // [H, 3H]
    .Input("states: float")    // [L, B, H]
    .Input("gates: float")     // [L, B, 4H]
    .Input("d_states: float")  // [L, B, H]
    .Output("d_xp: float")     // [L, B, 3H]
    .Output("d_u: float")      // [H, 3H]
    .Output("d_b: float")      // [3H]
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      auto s = c->input(1);
      auto u = c->input(0);
      c->set_output(0, c->MakeShape({c->Dim(s, 0), c->Dim(s, 1), c->Dim(u, 1)}));
      c->set_output(1, u);
      c->set_output(2, c->MakeShape({c->Dim(u, 1)}));
      return OkStatus();
    });

static inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

class MicFusedGruOp : public OpKernel {
 public:
  explicit MicFusedGruOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& xp = ctx->input(0);
    const Tensor& u = ctx->input(1);
    const Tensor& b = ctx->input(2);
    const int64 L = xp.dim_size(0), B = xp.dim_size(1), H = u.dim_size(0);
    OP_REQUIRES(ctx, xp.dim_size(2) == 3 * H && u.dim_size(1) == 3 * H && b.dim_size(0) == 3 * H,
                errors::InvalidArgument("MicFusedGru: shapes do not match H = ", H));
    Tensor *states, *gates;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({L, B, H}), &states));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({L, B, 4 * H}), &gates));
    const float* X = xp.flat<float>().data();
    const float* bias = b.flat<float>().data();
    float* S = states->flat<float>().data();
    float* G = gates->flat<float>().data();
    CMapM U(u.flat<float>().data(), H, 3 * H);
    using RowArr = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using CMapA = Eigen::Map<const RowArr>;
    using MapA = Eigen::Map<RowArr>;
    Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>> brow(bias, 3 * H);
    auto work = [&](int64 lo, int64 hi) {
      const int64 n = hi - lo;
      RowMat h = RowMat::Zero(n, H), inner(n, 3 * H);
      RowArr pre(n, 2 * H);
      for (int64 t = 0; t < L; ++t) {
        inner.noalias() = h * U;
        CMapA x(X + (t * B + lo) * 3 * H, n, 3 * H);
        MapA g(G + (t * B + lo) * 4 * H, n, 4 * H);
        MapA s(S + (t * B + lo) * H, n, H);
        auto in = inner.array();
        pre = x.leftCols(2 * H) + in.leftCols(2 * H);
        pre.rowwise() += brow.head(2 * H);
        g.leftCols(2 * H) = pre.logistic();                                   // z, r
        g.middleCols(3 * H, H) = in.rightCols(H).rowwise() + brow.tail(H);  // h U_n + b_n
        g.middleCols(2 * H, H) =
            (x.rightCols(H) + g.middleCols(H, H) * g.middleCols(3 * H, H)).tanh();  // n
        auto ha = h.array();
        ha = g.middleCols(2 * H, H) + g.leftCols(H) * (ha - g.middleCols(2 * H, H));
        s = ha;
      }
    };
    auto pool = ctx->device()->tensorflow_cpu_worker_threads();
    const int shards = std::max(1, std::min<int>(pool->num_threads, B / 16));
    const int64 per = (B + shards - 1) / shards;
    BlockingCounter counter(shards - 1);
    for (int s = 1; s < shards; ++s) {
      pool->workers->Schedule([&, s]() { work(s * per, std::min(B, (s + 1) * per)); counter.DecrementCount(); });
    }
    work(0, std::min(B, per));
    counter.Wait();
  }
};

class MicFusedGruGradOp : public OpKernel {
 public:
  explicit MicFusedGruGradOp(OpKernelConstruction* c) : OpKernel(c) {}
  void Compute(OpKernelContext* ctx) override {
    const Tensor& u = ctx->input(0);
    const Tensor& states = ctx->input(1);
    const Tensor& gates = ctx->input(2);
    const Tensor& dstates = ctx->input(3);
    const int64 L = states.dim_size(0), B = states.dim_size(1), H = u.dim_size(0);
    Tensor *dxp, *du, *db;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({L, B, 3 * H}), &dxp));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({H, 3 * H}), &du));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({3 * H}), &db));
    const float* S = states.flat<float>().data();
    const float* G = gates.flat<float>().data();
    const float* dS = dstates.flat<float>().data();
    float* dX = dxp->flat<float>().data();
    CMapM U(u.flat<float>().data(), H, 3 * H);
    auto pool = ctx->device()->tensorflow_cpu_worker_threads();
    const int shards = std::max(1, std::min<int>(pool->num_threads, B / 16));
    const int64 per = (B + shards - 1) / shards;
    std::vector<RowMat> du_part(shards, RowMat::Zero(H, 3 * H));
    std::vector<Eigen::VectorXf> db_part(shards, Eigen::VectorXf::Zero(3 * H));
    using RowArr = Eigen::Array<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using CMapA = Eigen::Map<const RowArr>;
    using MapA = Eigen::Map<RowArr>;
    auto work = [&](int s) {
      const int64 lo = s * per, hi = std::min(B, (s + 1) * per), n = hi - lo;
      if (n <= 0) return;
      RowMat dh = RowMat::Zero(n, H), dinner(n, 3 * H), hprev = RowMat::Zero(n, H);
      RowArr d(n, H), dn(n, H);
      for (int64 t = L - 1; t >= 0; --t) {
        CMapA g(G + (t * B + lo) * 4 * H, n, 4 * H);
        CMapA ds(dS + (t * B + lo) * H, n, H);
        MapA dx(dX + (t * B + lo) * 3 * H, n, 3 * H);
        if (t > 0) hprev = Eigen::Map<const RowMat>(S + ((t - 1) * B + lo) * H, n, H);
        else hprev.setZero();
        auto z = g.leftCols(H); auto r = g.middleCols(H, H);
        auto nn = g.middleCols(2 * H, H); auto hn = g.middleCols(3 * H, H);
        d = dh.array() + ds;
        dn = d * (1.f - z) * (1.f - nn * nn);
        auto di = dinner.array();
        di.leftCols(H) = d * (hprev.array() - nn) * z * (1.f - z);   // dz
        di.middleCols(H, H) = dn * hn * r * (1.f - r);              // dr
        di.rightCols(H) = dn * r;                                   // d(h U_n + b_n)
        dx.leftCols(2 * H) = di.leftCols(2 * H);
        dx.rightCols(H) = dn;
        dh.array() = d * z;
        du_part[s].noalias() += hprev.transpose() * dinner;
        db_part[s] += dinner.colwise().sum().transpose();
        dh.noalias() += dinner * U.transpose();
      }
    };
    BlockingCounter counter(shards - 1);
    for (int s = 1; s < shards; ++s) {
      pool->workers->Schedule([&, s]() { work(s); counter.DecrementCount(); });
    }
    work(0);
    counter.Wait();
    MapM dU(du->flat<float>().data(), H, 3 * H);
    Eigen::Map<Eigen::VectorXf> dB(db->flat<float>().data(), 3 * H);
    dU = du_part[0]; dB = db_part[0];
    for (int s = 1; s < shards; ++s) { dU += du_part[s]; dB += db_part[s]; }
  }
};

REGISTER_KERNEL_BUILDER(Name("MicFusedGru").Device(DEVICE_CPU), MicFusedGruOp);
REGISTER_KERNEL_BUILDER(Name("MicFusedGruGrad").Device(DEVICE_CPU), MicFusedGruGradOp);
