// svd-train's native CPU kernels: oneDNN (the library PyTorch uses for CPU convolutions) behind
// N-API, called synchronously on Float32Arrays that the caller owns.
//
// Why this shape:
// - The caller passes views straight into the tfjs wasm heap (or any Float32Array). oneDNN wraps
//   them as `dnnl::memory(md, engine, ptr)` without copying. That is safe only because every call
//   is synchronous and waits on the stream before returning, so no JS can run (and no wasm memory
//   growth can detach the buffer) while oneDNN holds the pointer.
// - With every tensor in a plain layout (nhwc activations, hwio weights) oneDNN falls back to
//   `gemm:jit`, about 3x slower. Weights are therefore `format_tag::any` and reordered on every
//   call (they change every step; they are small). Activations stay nhwc: oneDNN 2.6 then picks
//   `brgconv:avx512_core` forward and `jit:avx512_core` backward, which read nhwc directly, and
//   measured as fast as or faster than blocked layouts with reorders around each call
//   (setActivationLayout switches, for benchmarks).
// - Primitive descriptors, primitives and the scratch memories of the reorders are cached by a
//   shape key: building a primitive JIT-compiles code and costs milliseconds.
// - An uncaught C++ exception aborts Node, so every entry point catches and throws a JS Error with
//   a `code` (NATIVE_DNNL_ERROR or NATIVE_BAD_ARGUMENT) instead.
#include <napi.h>
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include "batch_norm.h"
#include "lanes_net.h"
#include "pointwise_affine.h"
#include "prefetch.h"
#include "rank_bn.h"
#include "regularizer.h"
#include "small_oc_conv.h"
#include "huge_pages.h"

#include <algorithm>
#include <utility>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

dnnl::engine& Eng() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& Strm() {
  static dnnl::stream s(Eng());
  return s;
}

struct ArgError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

Napi::Error CodedError(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  return e;
}

// Runs `body`, turning every C++ exception into a JS exception with a code.
template <typename F>
Napi::Value Guard(const Napi::CallbackInfo& info, const char* what, F body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const dnnl::error& e) {
    throw CodedError(env, "NATIVE_DNNL_ERROR", std::string(what) + ": oneDNN failed: " + e.what() +
                                                   " (status " + std::to_string(static_cast<int>(e.status)) + ")");
  } catch (const ArgError& e) {
    throw CodedError(env, "NATIVE_BAD_ARGUMENT", std::string(what) + ": " + e.what());
  } catch (const std::exception& e) {
    throw CodedError(env, "NATIVE_DNNL_ERROR", std::string(what) + ": " + e.what());
  }
}

float* F32(const Napi::CallbackInfo& info, size_t i, size_t want, const char* name) {
  if (i >= info.Length() || !info[i].IsTypedArray()) throw ArgError(std::string(name) + " must be a Float32Array");
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_float32_array) throw ArgError(std::string(name) + " must be a Float32Array");
  Napi::Float32Array a = ta.As<Napi::Float32Array>();
  if (a.ElementLength() != want) {
    throw ArgError(std::string(name) + " has " + std::to_string(a.ElementLength()) + " elements; expected " +
                   std::to_string(want));
  }
  return a.Data();  // Data() already includes the byteOffset.
}

// An optional Uint16Array argument of exactly `want` elements (absent: null).
uint16_t* OptionalU16(const Napi::CallbackInfo& info, size_t i, size_t want, const char* name) {
  if (i >= info.Length() || info[i].IsUndefined()) return nullptr;
  if (!info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array) {
    throw ArgError(std::string(name) + " must be a Uint16Array");
  }
  Napi::Uint16Array a = info[i].As<Napi::Uint16Array>();
  if (a.ElementLength() != want) {
    throw ArgError(std::string(name) + " has " + std::to_string(a.ElementLength()) + " elements; expected " +
                   std::to_string(want));
  }
  return a.Data();
}

std::vector<int64_t> Ints(const Napi::CallbackInfo& info, size_t i, size_t n, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) throw ArgError(std::string(name) + " must be an array of integers");
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() != n) {
    throw ArgError(std::string(name) + " has " + std::to_string(a.Length()) + " entries; expected " + std::to_string(n));
  }
  std::vector<int64_t> out(n);
  for (uint32_t k = 0; k < n; k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsNumber()) throw ArgError(std::string(name) + "[" + std::to_string(k) + "] is not a number");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || d < 0 || d > (1LL << 40)) {
      throw ArgError(std::string(name) + "[" + std::to_string(k) + "] = " + std::to_string(d) +
                     " is not a non-negative integer");
    }
    out[k] = static_cast<int64_t>(d);
  }
  return out;
}

// Element counts made from shape entries (each at most 2^40) are products that could wrap int64 and
// then pass a length check on an empty array, so every count a call uses is checked here first, in
// double, against 2^40 elements (4 TiB of floats: no real tensor comes near).
void CheckCounts(std::initializer_list<double> counts) {
  for (double n : counts)
    if (n > double(1LL << 40)) throw ArgError("a tensor of " + std::to_string(n) + " elements is too large (the limit is 2^40)");
}

std::string Key(const char* kind, const std::vector<int64_t>& v) {
  std::ostringstream s;
  s << kind;
  for (int64_t x : v) s << ',' << x;
  return s.str();
}

// A user buffer in a fixed layout, plus (when the primitive wants another layout) a cached
// internal memory and the reorder between them.
struct Port {
  memory user;
  memory inner;
  dnnl::reorder to_inner, to_user;
  bool same = true;

  Port() = default;
  Port(const memory::desc& user_md, const memory::desc& want, bool in, bool out) {
    user = memory(user_md, Eng(), DNNL_MEMORY_NONE);
    same = user_md == want;
    if (same) {
      inner = user;
    } else {
      inner = memory(want, Eng());
      if (in) to_inner = dnnl::reorder(user, inner);
      if (out) to_user = dnnl::reorder(inner, user);
    }
  }
  void Bind(float* p) { user.set_data_handle(p); }
  void In() {
    if (!same) to_inner.execute(Strm(), user, inner);
  }
  void Out() {
    if (!same) to_user.execute(Strm(), inner, user);
  }
};

// Whether activations (x, y, dy, dx) are handed to oneDNN in their plain NHWC layout (the
// primitive then picks an nhwc-capable implementation) or as `any` with reorders around the call.
bool g_act_nhwc = true;
tag ActTag() { return g_act_nhwc ? tag::nhwc : tag::any; }

// ---- convolution -------------------------------------------------------------------------------
// p = [N, H, W, C, F, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, PB, PR]; x NHWC [N,H,W,C],
// w HWIO [KH,KW,C,F], y NHWC [N,OH,OW,F]. DH/DW are tfjs dilations (1 = dense).
struct ConvShape {
  int64_t n, h, w, c, f, kh, kw, oh, ow, sh, sw, dh, dw, pt, pl, pb, pr;
  explicit ConvShape(const std::vector<int64_t>& p)
      : n(p[0]), h(p[1]), w(p[2]), c(p[3]), f(p[4]), kh(p[5]), kw(p[6]), oh(p[7]), ow(p[8]), sh(p[9]), sw(p[10]),
        dh(p[11]), dw(p[12]), pt(p[13]), pl(p[14]), pb(p[15]), pr(p[16]) {
    if (n < 1 || h < 1 || w < 1 || c < 1 || f < 1 || kh < 1 || kw < 1 || oh < 1 || ow < 1 || sh < 1 || sw < 1 ||
        dh < 1 || dw < 1) {
      throw ArgError("conv shape has a zero size, stride or dilation");
    }
    CheckCounts({double(n) * h * w * c, double(kh) * kw * c * f, double(n) * oh * ow * f});
    // The output size must follow from the rest, or oneDNN would read or write out of bounds.
    int64_t eoh = (h + pt + pb - ((kh - 1) * dh + 1)) / sh + 1;
    int64_t eow = (w + pl + pr - ((kw - 1) * dw + 1)) / sw + 1;
    if (eoh != oh || eow != ow) {
      throw ArgError("conv output " + std::to_string(oh) + "x" + std::to_string(ow) + " does not follow from input " +
                     std::to_string(h) + "x" + std::to_string(w) + ", kernel, stride and padding (expected " +
                     std::to_string(eoh) + "x" + std::to_string(eow) + ")");
    }
  }
  size_t xs() const { return n * h * w * c; }
  size_t ws() const { return kh * kw * c * f; }
  size_t ys() const { return n * oh * ow * f; }
  memory::desc xmd(tag t) const { return memory::desc({n, c, h, w}, dt::f32, t); }
  memory::desc wmd(tag t) const { return memory::desc({f, c, kh, kw}, dt::f32, t); }
  memory::desc ymd(tag t) const { return memory::desc({n, f, oh, ow}, dt::f32, t); }
  memory::dims strides() const { return {sh, sw}; }
  memory::dims dil() const { return {dh - 1, dw - 1}; }  // oneDNN counts dilation from 0.
  memory::dims padl() const { return {pt, pl}; }
  memory::dims padr() const { return {pb, pr}; }
  dnnl::convolution_forward::primitive_desc Fwd() const {
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
                                      xmd(ActTag()), wmd(tag::any), ymd(ActTag()), strides(), dil(), padl(), padr());
    return dnnl::convolution_forward::primitive_desc(d, Eng());
  }
};

svd_small_oc::Geom SmallGeom(const ConvShape& s) {
  return {s.n, s.h, s.w, s.c, s.f, s.kh, s.kw, s.oh, s.ow, s.sh, s.sw, s.pt, s.pl};
}

// Our own kernels for few output channels (small_oc_conv.h) instead of oneDNN, for the forward
// and the filter gradient, when they apply and are switched on (setSmallOcKernels; on by default).
// implementations() lists the shape keys they ran as "svd:small_oc_avx512".
bool g_small_oc = true;
std::map<std::string, std::string> small_oc_keys;
bool UseSmallOc(const ConvShape& s, const std::string& key, bool forward) {
  if (!g_small_oc || !svd_small_oc::Applies(SmallGeom(s), s.dh, s.dw, forward)) return false;
  small_oc_keys.emplace(key, "svd:small_oc_avx512");
  return true;
}

struct ConvFwd {
  dnnl::convolution_forward prim;
  Port x, w, y;
  std::string impl;
};
struct ConvBwdData {
  dnnl::convolution_backward_data prim;
  Port dy, w, dx;
  std::string impl;
};
struct ConvBwdWeights {
  dnnl::convolution_backward_weights prim;
  Port x, dy, dw;
  std::string impl;
};

template <typename T>
using Cache = std::unordered_map<std::string, std::unique_ptr<T>>;
Cache<ConvFwd> conv_fwd;
Cache<ConvBwdData> conv_bwd_data;
Cache<ConvBwdWeights> conv_bwd_weights;

ConvFwd& FwdPrimitive(const ConvShape& s, const std::string& key);
void RunFwd(ConvFwd& e, float* x, float* w, float* y);

// Output channels oneDNN computes for a forward of F: F itself, or 32 for 16 < F < 32. Its
// brgconv ran such F at the cost of 64 (batch 256, 3x3 on 8x8x64: 6.6-6.7 ms for F = 18..31,
// 4.1-4.2 ms padded to 32, 7.5 ms for 64; 16x16x32 at F = 29: 13.2 ms, 9.2 ms padded), the low
// ranks of a pruned model's stage-3 layers. F = 13 (padded to 16) and 41 (to 48 or 64) gained
// nothing, so they stay.
int64_t PaddedF(int64_t f) { return f > 16 && f < 32 ? 32 : f; }

Napi::Value Conv2D(const Napi::CallbackInfo& info) {
  return Guard(info, "conv2d", [&]() -> Napi::Value {
    auto p = Ints(info, 3, 17, "shape");
    ConvShape s(p);
    float* x = F32(info, 0, s.xs(), "x");
    float* w = F32(info, 1, s.ws(), "filter");
    float* y = F32(info, 2, s.ys(), "y");
    std::string key = Key("f", p);
    if (UseSmallOc(s, key, true)) {
      svd_small_oc::Forward(SmallGeom(s), x, w, y);
      return info.Env().Undefined();
    }
    const int64_t fp = PaddedF(s.f);
    if (fp != s.f) {
      // The filter's F columns with zero ones after them, into a [.., fp] output; the first F
      // channels of each pixel are y.
      const int64_t rows = s.kh * s.kw * s.c, pixels = s.n * s.oh * s.ow;
      static thread_local std::vector<float> wpad, ypad;
      wpad.assign(static_cast<size_t>(rows * fp), 0.0f);
      ypad.resize(static_cast<size_t>(pixels * fp));
      for (int64_t r = 0; r < rows; r++) std::copy(w + r * s.f, w + (r + 1) * s.f, wpad.data() + r * fp);
      std::vector<int64_t> pp = p;
      pp[4] = fp;
      ConvFwd& e = FwdPrimitive(ConvShape(pp), Key("f", pp));
      RunFwd(e, x, wpad.data(), ypad.data());
      for (int64_t i = 0; i < pixels; i++) std::copy(ypad.data() + i * fp, ypad.data() + i * fp + s.f, y + i * s.f);
      return info.Env().Undefined();
    }
    RunFwd(FwdPrimitive(s, key), x, w, y);
    return info.Env().Undefined();
  });
}

// The cached oneDNN forward for shape s (built on first use: JIT compilation costs milliseconds).
ConvFwd& FwdPrimitive(const ConvShape& s, const std::string& key) {
  auto& e = conv_fwd[key];
  if (!e) {
    auto c = std::make_unique<ConvFwd>();
    auto pd = s.Fwd();
    c->prim = dnnl::convolution_forward(pd);
    c->x = Port(s.xmd(tag::nhwc), pd.src_desc(), true, false);
    c->w = Port(s.wmd(tag::hwio), pd.weights_desc(), true, false);
    c->y = Port(s.ymd(tag::nhwc), pd.dst_desc(), false, true);
    c->impl = pd.impl_info_str();
    e = std::move(c);
  }
  return *e;
}

void RunFwd(ConvFwd& e, float* x, float* w, float* y) {
  e.x.Bind(x);
  e.w.Bind(w);
  e.y.Bind(y);
  e.x.In();
  e.w.In();
  e.prim.execute(Strm(), {{DNNL_ARG_SRC, e.x.inner}, {DNNL_ARG_WEIGHTS, e.w.inner}, {DNNL_ARG_DST, e.y.inner}});
  e.y.Out();
  Strm().wait();
}

const float* OptionalF32(const Napi::CallbackInfo& info, size_t i, size_t n, const char* name);
void ConvBackwardDataOneDnn(const ConvShape& s, const std::string& key, float* dy, float* w, float* dx);
void AddInto(float* out, const float* b, size_t n);

// An input-gradient call's arguments: dy, filter and dx (0-2, lengths checked against) the shape (3).
struct InputGradArgs {
  std::vector<int64_t> p;
  ConvShape s;
  float* dy;
  float* w;
  float* dx;
  explicit InputGradArgs(const Napi::CallbackInfo& info)
      : p(Ints(info, 3, 17, "shape")), s(p), dy(F32(info, 0, s.ys(), "dy")), w(F32(info, 1, s.ws(), "filter")),
        dx(F32(info, 2, s.xs(), "dx")) {}
};

// conv2dBackpropInput(dy, filter, dx, shape, res?): dx NHWC [N,H,W,C] from dy [N,OH,OW,F], plus
// res [N,H,W,C] when given (the gradient a residual block's shortcut sends to the same input,
// which tfjs would otherwise sum with a separate Add): in the kernel's own pass where ours runs the
// shape, else added after oneDNN's.
Napi::Value Conv2DBackpropInput(const Napi::CallbackInfo& info) {
  return Guard(info, "conv2dBackpropInput", [&]() -> Napi::Value {
    const InputGradArgs a(info);
    const auto& [p, s, dy, w, dx] = a;
    const float* res = OptionalF32(info, 4, s.xs(), "res");
    std::string key = Key("d", p);
    if (g_small_oc && svd_small_oc::AppliesBackwardInput(SmallGeom(s), s.dh, s.dw, res != nullptr)) {
      small_oc_keys.emplace(key, "svd:small_oc_avx512");
      svd_small_oc::BackwardInput(SmallGeom(s), dy, w, res, dx);
      return info.Env().Undefined();
    }
    ConvBackwardDataOneDnn(s, key, dy, w, dx);
    if (res) AddInto(dx, res, s.xs());
    return info.Env().Undefined();
  });
}

void PointInputGradAddImpl(const float* dy, const float* wt, float* dx, int64_t n0, int64_t n1, int64_t h, int64_t w,
                           int64_t c, int64_t f, int64_t oh, int64_t ow, int64_t sh, int64_t sw);

// conv2dBackpropInputAdd(dy, filter, dx, shape): dx += the input gradient, dx NHWC [N,H,W,C] from dy
// [N,OH,OW,F]: the second of two convs that read the same input adds its share where the first's
// is (a downsampling block's 1×1 shortcut after its 3×3 conv). In place for a 1×1 conv without
// padding or dilation (small_oc_conv.h's PointBackwardInputAdd on AVX-512 at 16, 32 or 64 input
// channels, else PointInputGradAddImpl); any other shape through a scratch and an add.
Napi::Value Conv2DBackpropInputAdd(const Napi::CallbackInfo& info) {
  return Guard(info, "conv2dBackpropInputAdd", [&]() -> Napi::Value {
    const InputGradArgs a(info);
    const auto& [p, s, dy, w, dx] = a;
    if (s.kh == 1 && s.kw == 1 && s.dh == 1 && s.dw == 1 && s.pt == 0 && s.pl == 0 && s.pb == 0 && s.pr == 0) {
      // The filter HWIO [1, 1, C, F] as [F][C], so that each output channel's row is contiguous.
      std::vector<float> wt(s.ws());
      for (int64_t k = 0; k < s.c; k++)
        for (int64_t o = 0; o < s.f; o++) wt[o * s.c + k] = w[k * s.f + o];
      const svd_small_oc::Geom g = SmallGeom(s);
      const bool fast = svd_small_oc::AppliesPointBackwardInputAdd(g, s.dh, s.dw);
      const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), s.n)));
#pragma omp parallel num_threads(threads) if (threads > 1)
      {
        const int id = omp_get_thread_num(), k = omp_get_num_threads();
        const int64_t n0 = s.n * id / k, n1 = s.n * (id + 1) / k;
        if (fast) svd_small_oc::PointBackwardInputAdd(g, dy, wt.data(), dx, n0, n1);
        else PointInputGradAddImpl(dy, wt.data(), dx, n0, n1, s.h, s.w, s.c, s.f, s.oh, s.ow, s.sh, s.sw);
      }
      return info.Env().Undefined();
    }
    static thread_local std::vector<float> scratch;
    scratch.resize(s.xs());
    ConvBackwardDataOneDnn(s, Key("d", p), dy, w, scratch.data());
    AddInto(dx, scratch.data(), s.xs());
    return info.Env().Undefined();
  });
}

// oneDNN's input gradient (primitive cached by shape key).
void ConvBackwardDataOneDnn(const ConvShape& s, const std::string& key, float* dy, float* w, float* dx) {
  auto& e = conv_bwd_data[key];
  if (!e) {
    auto c = std::make_unique<ConvBwdData>();
    auto hint = s.Fwd();
    dnnl::convolution_backward_data::desc d(dnnl::algorithm::convolution_direct, s.xmd(ActTag()), s.wmd(tag::any),
                                            s.ymd(ActTag()), s.strides(), s.dil(), s.padl(), s.padr());
    dnnl::convolution_backward_data::primitive_desc pd(d, Eng(), hint);
    c->prim = dnnl::convolution_backward_data(pd);
    c->dy = Port(s.ymd(tag::nhwc), pd.diff_dst_desc(), true, false);
    c->w = Port(s.wmd(tag::hwio), pd.weights_desc(), true, false);
    c->dx = Port(s.xmd(tag::nhwc), pd.diff_src_desc(), false, true);
    c->impl = pd.impl_info_str();
    e = std::move(c);
  }
  e->dy.Bind(dy);
  e->w.Bind(w);
  e->dx.Bind(dx);
  e->dy.In();
  e->w.In();
  e->prim.execute(Strm(),
                  {{DNNL_ARG_DIFF_DST, e->dy.inner}, {DNNL_ARG_WEIGHTS, e->w.inner}, {DNNL_ARG_DIFF_SRC, e->dx.inner}});
  e->dx.Out();
  Strm().wait();
}

// oneDNN 2.6's jit_1x1 filter gradient below AVX-512 (jit_1x1:avx2) writes past a buffer of its own
// for a strided 1x1 conv from fewer than 8 input channels (its input reduced to unit stride): heap
// corruption, then a crash, on a CPU without AVX-512, e.g. in a pruned spatial model's downsampling
// shortcut. Found under valgrind and qemu's AVX2 CPU, reproduced with guard pages and
// DNNL_MAX_CPU_ISA=AVX2; its AVX-512 kernel passes the same check. Such shapes take oneDNN's next
// implementation.
bool OverflowingBwdWeights1x1(const ConvShape& s, const std::string& impl) {
  return s.kh == 1 && s.kw == 1 && (s.sh > 1 || s.sw > 1) && s.c < 8 && impl.rfind("jit_1x1:", 0) == 0 &&
         impl.find("avx512") == std::string::npos;
}

// conv2dBackpropFilter(x, dy, dw, shape): dw HWIO [KH,KW,C,F].
Napi::Value Conv2DBackpropFilter(const Napi::CallbackInfo& info) {
  return Guard(info, "conv2dBackpropFilter", [&]() -> Napi::Value {
    auto p = Ints(info, 3, 17, "shape");
    ConvShape s(p);
    float* x = F32(info, 0, s.xs(), "x");
    float* dy = F32(info, 1, s.ys(), "dy");
    float* dw = F32(info, 2, s.ws(), "dw");
    std::string key = Key("w", p);
    if (UseSmallOc(s, key, false)) {
      svd_small_oc::BackwardWeights(SmallGeom(s), x, dy, dw);
      return info.Env().Undefined();
    }
    auto& e = conv_bwd_weights[key];
    if (!e) {
      auto c = std::make_unique<ConvBwdWeights>();
      auto hint = s.Fwd();
      dnnl::convolution_backward_weights::desc d(dnnl::algorithm::convolution_direct, s.xmd(ActTag()),
                                                 s.wmd(tag::any), s.ymd(ActTag()), s.strides(), s.dil(), s.padl(),
                                                 s.padr());
      dnnl::convolution_backward_weights::primitive_desc pd(d, Eng(), hint);
      while (OverflowingBwdWeights1x1(s, pd.impl_info_str()) && pd.next_impl()) {
      }
      c->prim = dnnl::convolution_backward_weights(pd);
      c->x = Port(s.xmd(tag::nhwc), pd.src_desc(), true, false);
      c->dy = Port(s.ymd(tag::nhwc), pd.diff_dst_desc(), true, false);
      c->dw = Port(s.wmd(tag::hwio), pd.diff_weights_desc(), false, true);
      c->impl = pd.impl_info_str();
      e = std::move(c);
    }
    e->x.Bind(x);
    e->dy.Bind(dy);
    e->dw.Bind(dw);
    e->x.In();
    e->dy.In();
    e->prim.execute(Strm(),
                    {{DNNL_ARG_SRC, e->x.inner}, {DNNL_ARG_DIFF_DST, e->dy.inner}, {DNNL_ARG_DIFF_WEIGHTS, e->dw.inner}});
    e->dw.Out();
    Strm().wait();
    return info.Env().Undefined();
  });
}

// ---- matmul ------------------------------------------------------------------------------------
// matmul(a, b, c, [BA, BB, M, K, N, transA, transB]): c[B,M,N] = op(a)·op(b), a [BA, M,K] (or
// [BA,K,M] when transA), b [BB,K,N] (or [BB,N,K] when transB), B = max(BA, BB); a batch of 1
// broadcasts, as in tfjs BatchMatMul.
struct MatMul {
  dnnl::matmul prim;
  memory a, b, c;
};
Cache<MatMul> matmuls;

// c = op(a)·op(b) for one batch: a [M, K] ([K, M] when ta), b [K, N] ([N, K] when tb), c [M, N].
void RunMatMul(const float* a, const float* b, float* c, int64_t ba, int64_t bb, int64_t m, int64_t k, int64_t n, bool ta,
               bool tb) {
  const std::vector<int64_t> p = {ba, bb, m, k, n, ta ? 1 : 0, tb ? 1 : 0};
  const int64_t bo = std::max(ba, bb);
  auto& e = matmuls[Key("m", p)];
  if (!e) {
    auto mm = std::make_unique<MatMul>();
    memory::desc amd({ba, m, k}, dt::f32, ta ? tag::acb : tag::abc);
    memory::desc bmd({bb, k, n}, dt::f32, tb ? tag::acb : tag::abc);
    memory::desc cmd({bo, m, n}, dt::f32, tag::abc);
    dnnl::matmul::desc d(amd, bmd, cmd);
    dnnl::matmul::primitive_desc pd(d, Eng());
    mm->prim = dnnl::matmul(pd);
    mm->a = memory(amd, Eng(), DNNL_MEMORY_NONE);
    mm->b = memory(bmd, Eng(), DNNL_MEMORY_NONE);
    mm->c = memory(cmd, Eng(), DNNL_MEMORY_NONE);
    e = std::move(mm);
  }
  e->a.set_data_handle(const_cast<float*>(a));
  e->b.set_data_handle(const_cast<float*>(b));
  e->c.set_data_handle(c);
  e->prim.execute(Strm(), {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}});
  Strm().wait();
}

Napi::Value MatMulFn(const Napi::CallbackInfo& info) {
  return Guard(info, "matmul", [&]() -> Napi::Value {
    auto p = Ints(info, 3, 7, "shape");
    int64_t ba = p[0], bb = p[1], m = p[2], k = p[3], n = p[4];
    if (ba < 1 || bb < 1 || m < 1 || k < 1 || n < 1) throw ArgError("matmul has a zero dimension");
    if (ba != bb && ba != 1 && bb != 1) throw ArgError("matmul batch sizes must be equal or 1");
    int64_t bo = std::max(ba, bb);
    CheckCounts({double(ba) * m * k, double(bb) * k * n, double(bo) * m * n});
    float* a = F32(info, 0, ba * m * k, "a");
    float* b = F32(info, 1, bb * k * n, "b");
    float* c = F32(info, 2, bo * m * n, "c");
    RunMatMul(a, b, c, ba, bb, m, k, n, p[5] != 0, p[6] != 0);
    return info.Env().Undefined();
  });
}

// ---- batch norm (training) and the ReLU gradient ----------------------------------------------
// Over a row-major [M, C] view (NHWC with M = N·H·W). These loops are memory-bound when they
// vectorize, and ResNet's C = 16 makes a naive per-element double accumulation 4x too slow. So
// each column sum runs in float over blocks of kBlock rows (the inner loop over C vectorizes) and
// is flushed into double after each block: float rounding over 64 terms, double across blocks,
// as accurate as the JS path. target_clones picks AVX-512, AVX2 or SSE2 at load time, so the
// addon built on one x86-64 runs on any other.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SVD_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#else
#define SVD_CLONES
#endif

constexpr int64_t kBlock = 64;

// Whether batchNormForward/Backward take batch_norm.cc's kernels where they apply (setFastBatchNorm).
bool g_fast_bn = true;

// res (or null) is added after the affine map, then max(·, 0) when relu: a residual block's
// bn2 + shortcut + ReLU, or bn1 + ReLU, in the same last pass.
SVD_CLONES void BnForwardImpl(const float* x, const float* g, const float* b, float* y, float* mean, float* var,
                              int64_t m, int64_t c, double eps, const float* res, bool relu) {
  std::vector<double> s(c, 0.0), s2(c, 0.0);
  std::vector<float> acc(c), mu(c), scale(c), shift(c);
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const int64_t r1 = std::min(m, r0 + kBlock);
    for (int64_t r = r0; r < r1; r++) {
      const float* row = x + r * c;
      for (int64_t j = 0; j < c; j += 16) svd_prefetch::ForRead(row + j);
      for (int64_t j = 0; j < c; j++) acc[j] += row[j];
    }
    for (int64_t j = 0; j < c; j++) s[j] += acc[j];
  }
  for (int64_t j = 0; j < c; j++) mu[j] = static_cast<float>(s[j] / m);
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    const int64_t r1 = std::min(m, r0 + kBlock);
    for (int64_t r = r0; r < r1; r++) {
      const float* row = x + r * c;
      for (int64_t j = 0; j < c; j++) {
        float d = row[j] - mu[j];
        acc[j] += d * d;
      }
    }
    for (int64_t j = 0; j < c; j++) s2[j] += acc[j];
  }
  for (int64_t j = 0; j < c; j++) {
    double v = s2[j] / m;
    mean[j] = mu[j];
    var[j] = static_cast<float>(v);
    float inv = static_cast<float>(1.0 / std::sqrt(v + eps));
    scale[j] = inv * g[j];
    shift[j] = b[j] - mu[j] * scale[j];
  }
  for (int64_t r = 0; r < m; r++) {
    const float* row = x + r * c;
    float* out = y + r * c;
    for (int64_t j = 0; j < c; j += 16) {
      svd_prefetch::ForWrite(out + j);
      if (res) svd_prefetch::ForRead(res + r * c + j);
    }
    if (res) {
      const float* rr = res + r * c;
      for (int64_t j = 0; j < c; j++) out[j] = row[j] * scale[j] + shift[j] + rr[j];
    } else {
      for (int64_t j = 0; j < c; j++) out[j] = row[j] * scale[j] + shift[j];
    }
    if (relu)
      for (int64_t j = 0; j < c; j++) out[j] = out[j] > 0.0f ? out[j] : 0.0f;
  }
}

// Flat loops in blocks of 16 (one line, one AVX-512 vector), each block's line asked for ahead.
SVD_CLONES void AddImpl(const float* a, const float* b, float* out, size_t n) {
  for (size_t i0 = 0; i0 < n; i0 += 16) {
    svd_prefetch::ForWrite(out + i0);
    const size_t i1 = std::min(n, i0 + 16);
    for (size_t i = i0; i < i1; i++) out[i] = a[i] + b[i];
  }
}

// out += b (AddImpl in place), for code above the clones' definitions.
void AddInto(float* out, const float* b, size_t n) { AddImpl(out, b, out, n); }

// dx += the input gradient of a 1×1 conv without padding or dilation, images [n0, n1): output pixel
// (i, j)'s dy [F] against the filter's rows, wt [F][C], lands on input pixel (i·sh, j·sw) alone.
// At stride 2 that is a quarter of dx's pixels, read and written in place, where oneDNN writes all of
// a new dx (three quarters zeros) and an Add then reads it and the other gradient back.
SVD_CLONES void PointInputGradAddImpl(const float* __restrict dy, const float* __restrict wt, float* __restrict dx,
                                      int64_t n0, int64_t n1, int64_t h, int64_t w, int64_t c, int64_t f, int64_t oh,
                                      int64_t ow, int64_t sh, int64_t sw) {
  for (int64_t n = n0; n < n1; n++)
    for (int64_t i = 0; i < oh; i++)
      for (int64_t j = 0; j < ow; j++) {
        const float* d = dy + ((n * oh + i) * ow + j) * f;
        float* x = dx + ((n * h + i * sh) * w + j * sw) * c;
        for (int64_t o = 0; o < f; o++) {
          const float a = d[o];
          const float* wo = wt + o * c;
#pragma omp simd
          for (int64_t k = 0; k < c; k++) x[k] += a * wo[k];
        }
      }
}

SVD_CLONES void ReluGradImpl(const float* dy, const float* x, float* dx, size_t n) {
  for (size_t i0 = 0; i0 < n; i0 += 16) {
    svd_prefetch::ForWrite(dx + i0);
    const size_t i1 = std::min(n, i0 + 16);
    for (size_t i = i0; i < i1; i++) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
  }
}

// With y (the fused forward's output; null without a ReLU) the incoming gradient is first masked
// by y > 0, the ReLU's gradient, in one flat pass (the ReLU-gradient select, which vectorizes; a
// branch per element inside the sums mispredicted on ReLU's pattern and measured 2.4x slower) into
// dres, the residual's gradient, or a scratch buffer kept between calls.
SVD_CLONES void BnBackwardImpl(const float* x, const float* dy_in, const float* mean, const float* var, const float* g,
                               float* dx, float* dg, float* db, int64_t m, int64_t c, double eps, const float* y,
                               float* dres) {
  const float* dy = dy_in;
  if (y) {
    static thread_local std::vector<float> scratch;
    float* masked = dres;
    if (!masked) {
      if (scratch.size() < static_cast<size_t>(m * c)) scratch.resize(static_cast<size_t>(m * c));
      masked = scratch.data();
    }
    ReluGradImpl(dy_in, y, masked, static_cast<size_t>(m * c));
    dy = masked;
  } else if (dres) {
    std::copy(dy_in, dy_in + m * c, dres);
  }
  std::vector<float> inv(c), a1(c), a2(c), k1(c), k2(c), k3(c);
  std::vector<double> sdy(c, 0.0), sdyx(c, 0.0);
  for (int64_t j = 0; j < c; j++) inv[j] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var[j]) + eps));
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    std::fill(a1.begin(), a1.end(), 0.0f);
    std::fill(a2.begin(), a2.end(), 0.0f);
    const int64_t r1 = std::min(m, r0 + kBlock);
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * c;
      const float* dr = dy + r * c;
      for (int64_t j = 0; j < c; j += 16) svd_prefetch::ForRead(xr + j), svd_prefetch::ForRead(dr + j);
      for (int64_t j = 0; j < c; j++) {
        a1[j] += dr[j];
        a2[j] += dr[j] * ((xr[j] - mean[j]) * inv[j]);
      }
    }
    for (int64_t j = 0; j < c; j++) {
      sdy[j] += a1[j];
      sdyx[j] += a2[j];
    }
  }
  for (int64_t j = 0; j < c; j++) {
    db[j] = static_cast<float>(sdy[j]);
    dg[j] = static_cast<float>(sdyx[j]);
    float scale = g[j] * inv[j];
    k1[j] = scale;                                             // × dy
    k2[j] = static_cast<float>(scale * sdy[j] / m);            // − constant
    k3[j] = static_cast<float>(scale * sdyx[j] / m) * inv[j];  // × (x − mean)
  }
  for (int64_t r = 0; r < m; r++) {
    const float* xr = x + r * c;
    const float* dr = dy + r * c;
    float* o = dx + r * c;
    for (int64_t j = 0; j < c; j += 16) svd_prefetch::ForWrite(o + j);
    for (int64_t j = 0; j < c; j++) o[j] = k1[j] * dr[j] - k2[j] - k3[j] * (xr[j] - mean[j]);
  }
}

// affine(x, scale, shift, y, [M, C, relu], residual?): y[i,j] = x[i,j]·scale[j] + shift[j]
// (+ residual[i,j]), then max(·, 0) when relu is 1; scale and shift have C elements, or 0 for none
// (1 and 0). One pass where tfjs makes two to four: eval-mode batch norm (with a block's shortcut
// and ReLU), and a conv's bias and ReLU. y may be x.
SVD_CLONES void AffineImpl(const float* x, const float* scale, const float* shift, float* y, int64_t m, int64_t c,
                           bool relu, const float* res) {
  for (int64_t i = 0; i < m; i++) {
    const float* xr = x + i * c;
    const float* rr = res ? res + i * c : nullptr;
    float* yr = y + i * c;
    for (int64_t j = 0; j < c; j++) {
      float v = xr[j] * (scale ? scale[j] : 1.0f) + (shift ? shift[j] : 0.0f) + (rr ? rr[j] : 0.0f);
      yr[j] = relu && v < 0.0f ? 0.0f : v;
    }
  }
}

// An optional Float32Array argument: absent or empty is none (null); otherwise it must hold n.
const float* OptionalF32(const Napi::CallbackInfo& info, size_t i, size_t n, const char* name) {
  if (i >= info.Length() || info[i].IsUndefined()) return nullptr;
  if (info[i].IsTypedArray() && info[i].As<Napi::TypedArray>().ElementLength() == 0) {
    F32(info, i, 0, name);  // still a Float32Array
    return nullptr;
  }
  return F32(info, i, n, name);
}

Napi::Value Affine(const Napi::CallbackInfo& info) {
  return Guard(info, "affine", [&]() -> Napi::Value {
    auto p = Ints(info, 4, 3, "shape");
    int64_t m = p[0], c = p[1];
    if (c < 1 || p[2] > 1) throw ArgError("affine shape must be [M, C >= 1, relu 0 or 1]");
    CheckCounts({double(m) * c});
    const size_t n = static_cast<size_t>(m * c);
    const float* x = F32(info, 0, n, "x");
    float* y = F32(info, 3, n, "y");
    const float* scale = OptionalF32(info, 1, static_cast<size_t>(c), "scale");
    const float* shift = OptionalF32(info, 2, static_cast<size_t>(c), "shift");
    AffineImpl(x, scale, shift, y, m, c, p[2] == 1, OptionalF32(info, 5, n, "residual"));
    return info.Env().Undefined();
  });
}

// pointwiseAffine(t, w, shift, y, [M, R, C, relu], residual?): y = t·w + shift (+ residual), then
// max(·, 0) when relu is 1; t [M, R], w [R, C], shift [C], y and residual [M, C]. A factored
// layer's 1×1 conv with the eval-mode batch norm after it (its scale folded into w) in one pass;
// see pointwise_affine.h.
Napi::Value PointwiseAffineFn(const Napi::CallbackInfo& info) {
  return Guard(info, "pointwiseAffine", [&]() -> Napi::Value {
    auto p = Ints(info, 4, 4, "shape");
    const int64_t m = p[0], r = p[1], c = p[2];
    if (r < 1 || c < 1 || p[3] > 1) throw ArgError("pointwiseAffine shape must be [M, R >= 1, C >= 1, relu 0 or 1]");
    CheckCounts({double(m) * r, double(r) * c, double(m) * c});
    const size_t mc = static_cast<size_t>(m * c);
    const float* t = F32(info, 0, static_cast<size_t>(m * r), "t");
    const float* w = F32(info, 1, static_cast<size_t>(r * c), "w");
    const float* shift = F32(info, 2, static_cast<size_t>(c), "shift");
    float* y = F32(info, 3, mc, "y");
    svd_pointwise::PointwiseAffine(t, w, shift, y, m, r, c, p[3] == 1, OptionalF32(info, 5, mc, "residual"));
    return info.Env().Undefined();
  });
}

// rowConvAffine(t, w, shift, y, [Q, Win, Wout, kw, sw, pl, R, C, relu], residual?): the spatial
// decomposition's 1×kw conv along the width with the eval-mode batch norm after it (its scale
// folded into w), y[q, x, :] = t[q, x·sw + j − pl, :]·w[j] summed over the taps j, + shift
// (+ residual), then max(·, 0) when relu is 1; t [Q, Win, R], w [kw, R, C], shift [C], y and
// residual [Q, Wout, C]. Wout must be what the padding gives: (Win + pl + pr − kw) / sw + 1 for
// some right padding 0 <= pr < kw + sw. See pointwise_affine.h.
Napi::Value RowConvAffineFn(const Napi::CallbackInfo& info) {
  return Guard(info, "rowConvAffine", [&]() -> Napi::Value {
    auto p = Ints(info, 4, 9, "shape");
    const svd_pointwise::RowGeom g{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]};
    if (g.q < 0 || g.win < 1 || g.wout < 1 || g.kw < 1 || g.sw < 1 || g.pl < 0 || g.pl >= g.kw || g.r < 1 || g.c < 1 || p[8] > 1)
      throw ArgError("rowConvAffine shape must be [Q >= 0, Win >= 1, Wout >= 1, kw >= 1, sw >= 1, 0 <= pl < kw, R >= 1, C >= 1, relu 0 or 1]");
    // The last output's taps start at most kw − 1 + sw − 1 past the input's end (the right padding).
    const int64_t last = (g.wout - 1) * g.sw - g.pl;
    if (last > g.win - 1 || last + g.kw - 1 < 0)
      throw ArgError("Wout " + std::to_string(g.wout) + " does not fit Win " + std::to_string(g.win) + ", kw " + std::to_string(g.kw) + ", sw " + std::to_string(g.sw) + ", pl " + std::to_string(g.pl) + " (the last output column's first tap must fall inside the row)");
    CheckCounts({double(g.q) * g.win * g.r, double(g.q) * g.wout * g.c, double(g.kw) * g.r * g.c});
    const size_t yc = static_cast<size_t>(g.q * g.wout * g.c);
    const float* t = F32(info, 0, static_cast<size_t>(g.q * g.win * g.r), "t");
    const float* w = F32(info, 1, static_cast<size_t>(g.kw * g.r * g.c), "w");
    const float* shift = F32(info, 2, static_cast<size_t>(g.c), "shift");
    float* y = F32(info, 3, yc, "y");
    svd_pointwise::RowConvAffine(g, t, w, shift, y, p[8] == 1, OptionalF32(info, 5, yc, "residual"));
    return info.Env().Undefined();
  });
}

// spatialAffine(x, k1, w2, shift, y, [N, H, W, Cin, kh, sh, pt, OH, R, kw, sw, pl, OW, C, relu],
// residual?): a whole spatially factored layer with the eval-mode batch norm after it, t = the kh×1
// conv of x with k1 (stride sh, top padding pt), then y = the 1×kw conv of t with w2 (stride sw,
// left padding pl; batch norm's scale folded in) + shift (+ residual), max(·, 0) when relu is 1.
// x [N, H, W, Cin], k1 [kh, Cin, R], w2 [kw, R, C], shift [C], y and residual [N, OH, OW, C]. See
// pointwise_affine.h.
Napi::Value SpatialAffineFn(const Napi::CallbackInfo& info) {
  return Guard(info, "spatialAffine", [&]() -> Napi::Value {
    auto p = Ints(info, 5, 15, "shape");
    const svd_pointwise::SpatialGeom g{p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13]};
    if (g.h < 1 || g.w < 1 || g.cin < 1 || g.kh < 1 || g.sh < 1 || g.pt >= g.kh || g.oh < 1 || g.r < 1 || g.kw < 1 ||
        g.sw < 1 || g.pl >= g.kw || g.ow < 1 || g.c < 1 || p[14] > 1)
      throw ArgError("shape must be [N, H >= 1, W >= 1, Cin >= 1, kh >= 1, sh >= 1, 0 <= pt < kh, OH >= 1, R >= 1, kw >= 1, sw >= 1, 0 <= pl < kw, OW >= 1, C >= 1, relu 0 or 1]");
    // The last output row's and column's first tap must fall inside the image (beyond it: padding only).
    if ((g.oh - 1) * g.sh - g.pt > g.h - 1)
      throw ArgError("OH " + std::to_string(g.oh) + " does not fit H " + std::to_string(g.h) + ", sh " + std::to_string(g.sh) + ", pt " + std::to_string(g.pt));
    if ((g.ow - 1) * g.sw - g.pl > g.w - 1)
      throw ArgError("OW " + std::to_string(g.ow) + " does not fit W " + std::to_string(g.w) + ", sw " + std::to_string(g.sw) + ", pl " + std::to_string(g.pl));
    CheckCounts({double(g.n) * g.h * g.w * g.cin, double(g.n) * g.oh * g.ow * g.c, double(g.kh) * g.cin * g.r, double(g.kw) * g.r * g.c});
    // The per-thread row buffer ((W + 2·kw) pixels of R padded to 16) and the padded k1: with N = 0 the
    // sizes above allow any W, so a row this wide is refused rather than allocated.
    if (double(g.w + 2 * g.kw) * (g.r + 15) > double(1 << 28) || double(g.kh) * g.cin * (g.r + 15) > double(1 << 28))
      throw ArgError("a row of W " + std::to_string(g.w) + " x R " + std::to_string(g.r) + " (or a k1 of " + std::to_string(g.kh) + " x " + std::to_string(g.cin) + " x " + std::to_string(g.r) + ") is too large for the row buffer");
    const size_t yc = static_cast<size_t>(g.n * g.oh * g.ow * g.c);
    const float* x = F32(info, 0, static_cast<size_t>(g.n * g.h * g.w * g.cin), "x");
    const float* k1 = F32(info, 1, static_cast<size_t>(g.kh * g.cin * g.r), "k1");
    const float* w2 = F32(info, 2, static_cast<size_t>(g.kw * g.r * g.c), "w2");
    const float* shift = F32(info, 3, static_cast<size_t>(g.c), "shift");
    float* y = F32(info, 4, yc, "y");
    svd_pointwise::SpatialAffine(g, x, k1, w2, shift, y, p[14] == 1, OptionalF32(info, 6, yc, "residual"));
    return info.Env().Undefined();
  });
}

void RankBnMatMul(const float* a, const float* b, float* out, int64_t rows, int64_t k, int64_t n, bool ta, bool tb) {
  RunMatMul(a, b, out, 1, 1, rows, k, n, ta, tb);
}

// p as rank_bn.h takes it, [R, C]: itself, or (transposed, a layer's U as stored, [C, R]) its
// transpose in a scratch (R·C is at most a few thousand floats).
const float* PlainP(const float* p, int64_t r, int64_t c, bool transposed) {
  if (!transposed) return p;
  static thread_local std::vector<float> rc;
  rc.resize(static_cast<size_t>(r * c));
  for (int64_t j = 0; j < c; j++)
    for (int64_t o = 0; o < r; o++) rc[static_cast<size_t>(o * c + j)] = p[j * r + o];
  return rc.data();
}

// rankBnForward(t, p, gamma, beta, y, mean, variance, tmean, cov, scale, invstd, [M, R, C, relu, pT],
// eps, residual?, mask?): train-mode batch norm of u = t·p computed from t (see rank_bn.h); t [M, R],
// p [R, C] ([C, R] when pT is 1); mask (Uint16Array, M·ceil(C/16)) gets y > 0 as bits when relu;
// gamma, beta, mean, variance, scale, invstd [C], tmean [R], cov [R, R], y and residual [M, C].
Napi::Value RankBnForward(const Napi::CallbackInfo& info) {
  return Guard(info, "rankBnForward", [&]() -> Napi::Value {
    auto d = Ints(info, 11, 5, "shape");
    const int64_t m = d[0], r = d[1], c = d[2];
    if (m < 1 || r < 1 || c < 1 || d[3] > 1 || d[4] > 1) {
      throw ArgError("rankBnForward shape must be [M >= 1, R >= 1, C >= 1, relu 0 or 1, p transposed 0 or 1]");
    }
    CheckCounts({double(m) * r, double(m) * c, double(r) * c, double(r) * r});
    if (info.Length() < 13 || !info[12].IsNumber()) throw ArgError("eps must be a number");
    const double eps = info[12].As<Napi::Number>().DoubleValue();
    const size_t mc = static_cast<size_t>(m * c), cs = static_cast<size_t>(c), rs = static_cast<size_t>(r);
    const float* t = F32(info, 0, static_cast<size_t>(m * r), "t");
    const float* p = PlainP(F32(info, 1, rs * cs, "p"), r, c, d[4] == 1);
    const float* gamma = F32(info, 2, cs, "gamma");
    const float* beta = F32(info, 3, cs, "beta");
    float* y = F32(info, 4, mc, "y");
    float* mean = F32(info, 5, cs, "mean");
    float* variance = F32(info, 6, cs, "variance");
    float* tmean = F32(info, 7, rs, "tmean");
    float* cov = F32(info, 8, rs * rs, "cov");
    float* scale = F32(info, 9, cs, "scale");
    float* invstd = F32(info, 10, cs, "invstd");
    uint16_t* mask = OptionalU16(info, 14, static_cast<size_t>(m * svd_pointwise::MaskWords(c)), "mask");
    svd_rank_bn::Forward(t, p, gamma, beta, OptionalF32(info, 13, mc, "residual"), y, mean, variance, tmean, cov, scale,
                         invstd, m, r, c, eps, d[3] == 1, RankBnMatMul, mask);
    return info.Env().Undefined();
  });
}

// svdRegularizer(factors, grads, dims, kind, lambdaO, lambdaS) -> [orth, sparsity]: the SVD
// regularizer of every layer at once (see regularizer.h). dims holds [m, p, r] per layer; factors
// holds each layer's U [m, r], V [p, r] and s [r] one after the other, and grads receives their
// λ-weighted gradients in the same layout. kind: 0 none, 1 L1, 2 Hoyer, 3 Hoyer-square. Returns the
// orthogonality and sparsity sums over the layers, before the λs.
Napi::Value SvdRegularizer(const Napi::CallbackInfo& info) {
  return Guard(info, "svdRegularizer", [&]() -> Napi::Value {
    if (info.Length() < 6 || !info[2].IsArray()) throw ArgError("svdRegularizer(factors, grads, dims, kind, lambdaO, lambdaS): dims must be an array of integers");
    const uint32_t nd = info[2].As<Napi::Array>().Length();
    if (nd == 0 || nd % 3 != 0) throw ArgError("dims has " + std::to_string(nd) + " entries; expected [m, p, r] for each of one or more layers");
    auto d = Ints(info, 2, nd, "dims");
    double total = 0.0;
    for (uint32_t l = 0; l < nd / 3; l++) {
      const double m = double(d[3 * l]), pp = double(d[3 * l + 1]), r = double(d[3 * l + 2]);
      if (m < 1 || pp < 1 || r < 1) throw ArgError("dims of layer " + std::to_string(l) + " must be [m >= 1, p >= 1, r >= 1]");
      CheckCounts({m * r, pp * r, r * r});
      total += (m + pp + 1) * r;
    }
    CheckCounts({total});
    const float* f = F32(info, 0, static_cast<size_t>(total), "factors");
    float* g = F32(info, 1, static_cast<size_t>(total), "grads");
    auto kind = Ints(info, 3, 1, "kind");
    if (kind[0] > 3) throw ArgError("kind = " + std::to_string(kind[0]) + "; expected 0 (none), 1 (L1), 2 (Hoyer) or 3 (Hoyer-square)");
    if (!info[4].IsNumber() || !info[5].IsNumber()) throw ArgError("lambdaO and lambdaS must be numbers");
    const double lo = info[4].As<Napi::Number>().DoubleValue(), ls = info[5].As<Napi::Number>().DoubleValue();
    if (!std::isfinite(lo) || !std::isfinite(ls)) throw ArgError("lambdaO " + std::to_string(lo) + ", lambdaS " + std::to_string(ls) + ": expected finite numbers");
    std::vector<svd_reg::Layer> layers(nd / 3);
    int64_t off = 0;
    for (uint32_t l = 0; l < nd / 3; l++) {
      const int64_t m = d[3 * l], pp = d[3 * l + 1], r = d[3 * l + 2];
      svd_reg::Layer& L = layers[l];
      L.m = m, L.p = pp, L.r = r;
      L.u = f + off, L.du = g + off, off += m * r;
      L.v = f + off, L.dv = g + off, off += pp * r;
      L.s = f + off, L.ds = g + off, off += r;
    }
    double orth = 0.0, sparsity = 0.0;
    svd_reg::Run(layers.data(), static_cast<int64_t>(layers.size()), static_cast<svd_reg::Sparsity>(kind[0]), lo, ls, &orth,
                 &sparsity, RankBnMatMul);
    Napi::Array out = Napi::Array::New(info.Env(), 2);
    out.Set(0u, Napi::Number::New(info.Env(), orth));
    out.Set(1u, Napi::Number::New(info.Env(), sparsity));
    return out;
  });
}

// rankBnBackward(dy, y?, t, p, tmean, cov, scale, invstd, dt, dp, dgamma, dbeta, dres?, [M, R, C, pT]):
// rankBnForward's gradient; y (empty: no ReLU) is its output, whose mask y > 0 applies to dy; dres
// (empty: no residual) receives the residual's gradient; p and dp are [C, R] when pT is 1; mask?
// (index 14, the forward's) stands in for y where the one-pass path runs (y is still required).
Napi::Value RankBnBackward(const Napi::CallbackInfo& info) {
  return Guard(info, "rankBnBackward", [&]() -> Napi::Value {
    auto d = Ints(info, 13, 4, "shape");
    const int64_t m = d[0], r = d[1], c = d[2];
    const bool pt = d[3] == 1;
    if (m < 1 || r < 1 || c < 1 || d[3] > 1) throw ArgError("rankBnBackward shape must be [M >= 1, R >= 1, C >= 1, p transposed 0 or 1]");
    CheckCounts({double(m) * r, double(m) * c, double(r) * c, double(r) * r});
    const size_t mc = static_cast<size_t>(m * c), cs = static_cast<size_t>(c), rs = static_cast<size_t>(r);
    const float* dy = F32(info, 0, mc, "dy");
    const float* y = OptionalF32(info, 1, mc, "y");
    const float* t = F32(info, 2, static_cast<size_t>(m * r), "t");
    const float* p = PlainP(F32(info, 3, rs * cs, "p"), r, c, pt);
    const float* tmean = F32(info, 4, rs, "tmean");
    const float* cov = F32(info, 5, rs * rs, "cov");
    const float* scale = F32(info, 6, cs, "scale");
    const float* invstd = F32(info, 7, cs, "invstd");
    float* dt = F32(info, 8, static_cast<size_t>(m * r), "dt");
    float* dp = F32(info, 9, rs * cs, "dp");
    float* dgamma = F32(info, 10, cs, "dgamma");
    float* dbeta = F32(info, 11, cs, "dbeta");
    float* dres = const_cast<float*>(OptionalF32(info, 12, mc, "dres"));
    // With p given as [C, R], dp goes out the same way: computed [R, C], then transposed.
    static thread_local std::vector<float> dp_rc;
    if (pt) dp_rc.resize(rs * cs);
    const uint16_t* mask = OptionalU16(info, 14, static_cast<size_t>(m * svd_pointwise::MaskWords(c)), "mask");
    svd_rank_bn::Backward(dy, y, t, p, tmean, cov, scale, invstd, dt, pt ? dp_rc.data() : dp, dgamma, dbeta, dres, m, r, c,
                          RankBnMatMul, mask);
    if (pt)
      for (int64_t o = 0; o < r; o++)
        for (int64_t j = 0; j < c; j++) dp[j * r + o] = dp_rc[static_cast<size_t>(o * c + j)];
    return info.Env().Undefined();
  });
}

// batchNormForward(x, gamma, beta, y, mean, variance, [M, C], eps, residual?, relu?, mask?):
// y = (x−mean)·invstd·gamma+beta (+ residual), then max(·, 0) when relu is 1; mean and biased
// variance per channel; mask (a Uint16Array of M·ceil(C/16) words) gets y > 0 as bits, for
// batchNormBackward. C 16, 32 or 64 on AVX-512 or AVX2 + FMA runs batch_norm.cc's kernels.
Napi::Value BatchNormForward(const Napi::CallbackInfo& info) {
  return Guard(info, "batchNormForward", [&]() -> Napi::Value {
    auto p = Ints(info, 6, 2, "shape");
    int64_t m = p[0], c = p[1];
    if (m < 1 || c < 1) throw ArgError("batch norm needs M >= 1 rows and C >= 1 channels");
    CheckCounts({double(m) * c});
    if (info.Length() < 8 || !info[7].IsNumber()) throw ArgError("eps must be a number");
    double eps = info[7].As<Napi::Number>().DoubleValue();
    const float* x = F32(info, 0, m * c, "x");
    const float* g = F32(info, 1, c, "gamma");
    const float* b = F32(info, 2, c, "beta");
    float* y = F32(info, 3, m * c, "y");
    float* mean = F32(info, 4, c, "mean");
    float* var = F32(info, 5, c, "variance");
    const float* res = OptionalF32(info, 8, m * c, "residual");
    bool relu = false;
    if (info.Length() > 9 && !info[9].IsUndefined()) {
      if (!info[9].IsNumber()) throw ArgError("relu must be 0 or 1");
      relu = info[9].As<Napi::Number>().Int32Value() == 1;
    }
    uint16_t* mask = OptionalU16(info, 10, static_cast<size_t>(m * svd_pointwise::MaskWords(c)), "mask");
    if (g_fast_bn && svd_bn::Applies(c)) {
      svd_bn::Forward(x, g, b, y, mean, var, m, c, eps, res, relu, mask);
    } else {
      BnForwardImpl(x, g, b, y, mean, var, m, c, eps, res, relu);
      // Only batch_norm.cc's backward reads the mask (the generic one reads y): written where it may run.
      if (mask && svd_bn::Applies(c)) svd_bn::MaskOf(y, m, c, mask);
    }
    return info.Env().Undefined();
  });
}

// batchNormBackward(x, dy, mean, variance, gamma, dx, dgamma, dbeta, [M, C], eps, y?, dresidual?):
// x̂ = (x−mean)·invstd; dbeta = Σdy; dgamma = Σdy·x̂; dx = gamma·invstd/M·(M·dy − Σdy − x̂·Σdy·x̂).
// With y (the output of a forward with relu) dy is first masked by y > 0; dresidual receives the
// (masked) dy, the gradient of the residual that forward added. mask? (index 12, the forward's)
// stands in for y where batch_norm.cc's kernel runs (y is still required with it).
Napi::Value BatchNormBackward(const Napi::CallbackInfo& info) {
  return Guard(info, "batchNormBackward", [&]() -> Napi::Value {
    auto p = Ints(info, 8, 2, "shape");
    int64_t m = p[0], c = p[1];
    if (m < 1 || c < 1) throw ArgError("batch norm needs M >= 1 rows and C >= 1 channels");
    CheckCounts({double(m) * c});
    if (info.Length() < 10 || !info[9].IsNumber()) throw ArgError("eps must be a number");
    double eps = info[9].As<Napi::Number>().DoubleValue();
    const float* x = F32(info, 0, m * c, "x");
    const float* dy = F32(info, 1, m * c, "dy");
    const float* mean = F32(info, 2, c, "mean");
    const float* var = F32(info, 3, c, "variance");
    const float* g = F32(info, 4, c, "gamma");
    float* dx = F32(info, 5, m * c, "dx");
    float* dg = F32(info, 6, c, "dgamma");
    float* db = F32(info, 7, c, "dbeta");
    const float* yout = OptionalF32(info, 10, m * c, "y");
    float* dres = const_cast<float*>(OptionalF32(info, 11, m * c, "dresidual"));
    const uint16_t* mask = OptionalU16(info, 12, static_cast<size_t>(m * svd_pointwise::MaskWords(c)), "mask");
    if (mask && !yout) throw ArgError("mask stands in for y, which must be given with it (the generic loops read y)");
    if (g_fast_bn && svd_bn::Applies(c)) svd_bn::Backward(x, dy, mean, var, g, dx, dg, db, m, c, eps, yout, dres, mask);
    else BnBackwardImpl(x, dy, mean, var, g, dx, dg, db, m, c, eps, yout, dres);
    return info.Env().Undefined();
  });
}

// An entry point f(in1, in2, out) over three Float32Arrays of one length: impl(in1, in2, out, n).
template <typename Impl>
Napi::Value Elementwise(const Napi::CallbackInfo& info, const char* what, const char* in1, const char* in2,
                        const char* out, Impl impl) {
  return Guard(info, what, [&]() -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsTypedArray()) throw ArgError(std::string(in1) + " must be a Float32Array");
    size_t n = info[0].As<Napi::TypedArray>().ElementLength();
    const float* a = F32(info, 0, n, in1);
    const float* b = F32(info, 1, n, in2);
    float* o = F32(info, 2, n, out);
    impl(a, b, o, n);
    return info.Env().Undefined();
  });
}

// reluGrad(dy, x, dx): dx = x > 0 ? dy : 0 (tfjs' Relu gradient is Step, Cast and Mul: three
// passes and two temporaries).
Napi::Value ReluGrad(const Napi::CallbackInfo& info) { return Elementwise(info, "reluGrad", "dy", "x", "dx", ReluGradImpl); }

// add(a, b, out): out = a + b elementwise, equal lengths. tfjs sums the gradients of a tensor read
// twice (a residual block's input: the conv path and the shortcut) with its Add; wasm's kernel
// (128-bit SIMD) took ~0.9 ms for a [64,32,32,16] pair, this one ~0.6 (both memory-bound).
Napi::Value AddFn(const Napi::CallbackInfo& info) { return Elementwise(info, "add", "a", "b", "out", AddImpl); }

// The output offset of each input element of transpose(reshape(a, dims), perm), in input order,
// handed to `visit(e, offset)`: the offset is stepped like an odometer, no division per element.
template <typename Visit>
void ForEachPermuted(const std::vector<int64_t>& dims, const std::vector<int64_t>& perm, Visit visit) {
  const size_t n = dims.size();
  std::vector<int64_t> out_stride(n), in_stride(n), idx(n, 0);
  for (int64_t k = static_cast<int64_t>(n) - 1, st = 1; k >= 0; k--) {
    out_stride[static_cast<size_t>(k)] = st;
    st *= dims[static_cast<size_t>(perm[static_cast<size_t>(k)])];
  }
  // Input axis perm[k] is output axis k.
  for (size_t k = 0; k < n; k++) in_stride[static_cast<size_t>(perm[k])] = out_stride[k];
  int64_t size = 1;
  for (int64_t d : dims) size *= d;
  int64_t off = 0;
  for (int64_t e = 0; e < size; e++) {
    visit(e, off);
    for (int64_t j = static_cast<int64_t>(n) - 1; j >= 0; j--) {
      const size_t u = static_cast<size_t>(j);
      off += in_stride[u];
      if (++idx[u] < dims[u]) break;
      off -= in_stride[u] * dims[u];
      idx[u] = 0;
    }
  }
}

// dims and perm of scalePermute(Grad), checked: 1-6 axes, each at least 1, their product n (the
// elements of a), perm a permutation of the axes.
void PermuteArgs(const Napi::CallbackInfo& info, size_t i, int64_t n, std::vector<int64_t>& dims, std::vector<int64_t>& perm) {
  if (i + 1 >= info.Length() || !info[i].IsArray() || !info[i + 1].IsArray()) throw ArgError("dims and perm must be arrays of integers");
  const size_t k = info[i].As<Napi::Array>().Length();
  if (k < 1 || k > 6) throw ArgError("dims must have 1 to 6 entries");
  dims = Ints(info, i, k, "dims");
  perm = Ints(info, i + 1, k, "perm");
  double prod = 1;
  std::vector<bool> seen(k, false);
  for (size_t a = 0; a < k; a++) {
    if (dims[a] < 1) throw ArgError("dims entries must be at least 1");
    prod *= static_cast<double>(dims[a]);
    if (perm[a] >= static_cast<int64_t>(k) || seen[static_cast<size_t>(perm[a])]) throw ArgError("perm is not a permutation of dims' axes");
    seen[static_cast<size_t>(perm[a])] = true;
  }
  if (prod != static_cast<double>(n)) throw ArgError("dims do not hold the elements of a");
}

// Whether the permutation keeps a's rows whole: the last axis is r and stays last.
bool RowsStay(const std::vector<int64_t>& dims, const std::vector<int64_t>& perm, size_t r) {
  const size_t n = dims.size();
  return n >= 2 && dims[n - 1] == static_cast<int64_t>(r) && perm[n - 1] == static_cast<int64_t>(n - 1);
}

// The lengths of a ([rows, r]) and s ([r]) at args ai and si: scalePermute's and its gradient's
// operands, refused unless both are typed arrays and a's length is a multiple of s's.
std::pair<size_t, size_t> ScaleOperandLengths(const Napi::CallbackInfo& info, size_t ai, size_t si) {
  if (info.Length() <= std::max(ai, si) || !info[ai].IsTypedArray() || !info[si].IsTypedArray()) throw ArgError("a and s must be Float32Arrays");
  const size_t n = info[ai].As<Napi::TypedArray>().ElementLength(), r = info[si].As<Napi::TypedArray>().ElementLength();
  if (r == 0 || n % r != 0) throw ArgError("a's length must be a multiple of s's (a is [rows, r])");
  return {n, r};
}

// scalePermute(a, s, out, dims, perm): out = transpose(reshape(a·diag(s), dims), perm), a [rows, r];
// an SVD layer's filter from V and s (layers' SvdScalePermute, which did it in a JS loop).
Napi::Value ScalePermute(const Napi::CallbackInfo& info) {
  return Guard(info, "scalePermute", [&]() -> Napi::Value {
    const auto [n, r] = ScaleOperandLengths(info, 0, 1);
    const float* a = F32(info, 0, n, "a");
    const float* sc = F32(info, 1, r, "s");
    float* out = F32(info, 2, n, "out");
    std::vector<int64_t> dims, perm;
    PermuteArgs(info, 3, static_cast<int64_t>(n), dims, perm);
    if (RowsStay(dims, perm, r)) {
      // The last axis (r) stays last: whole rows of a, scaled, land contiguously.
      std::vector<int64_t> d(dims.begin(), dims.end() - 1), q(perm.begin(), perm.end() - 1);
      ForEachPermuted(d, q, [&](int64_t row, int64_t off) {
        const float* ar = a + row * static_cast<int64_t>(r);
        float* o = out + off * static_cast<int64_t>(r);
        for (size_t j = 0; j < r; j++) o[j] = ar[j] * sc[j];
      });
    } else {
      ForEachPermuted(dims, perm, [&](int64_t e, int64_t off) { out[off] = a[e] * sc[static_cast<size_t>(e) % r]; });
    }
    return info.Env().Undefined();
  });
}

// scalePermuteGrad(dy, a, s, da, ds, dims, perm): the gradient of scalePermute, da = dy permuted back
// times s, ds[j] = Σ over a's rows of that times a (summed in double).
Napi::Value ScalePermuteGrad(const Napi::CallbackInfo& info) {
  return Guard(info, "scalePermuteGrad", [&]() -> Napi::Value {
    const auto [n, r] = ScaleOperandLengths(info, 1, 2);
    const float* dy = F32(info, 0, n, "dy");
    const float* a = F32(info, 1, n, "a");
    const float* sc = F32(info, 2, r, "s");
    float* da = F32(info, 3, n, "da");
    float* ds = F32(info, 4, r, "ds");
    std::vector<int64_t> dims, perm;
    PermuteArgs(info, 5, static_cast<int64_t>(n), dims, perm);
    std::vector<double> acc(r, 0.0);
    if (RowsStay(dims, perm, r)) {
      std::vector<int64_t> d(dims.begin(), dims.end() - 1), q(perm.begin(), perm.end() - 1);
      ForEachPermuted(d, q, [&](int64_t row, int64_t off) {
        const float* g = dy + off * static_cast<int64_t>(r);
        const float* ar = a + row * static_cast<int64_t>(r);
        float* dar = da + row * static_cast<int64_t>(r);
        for (size_t j = 0; j < r; j++) {
          dar[j] = g[j] * sc[j];
          acc[j] += static_cast<double>(g[j]) * ar[j];
        }
      });
    } else {
      ForEachPermuted(dims, perm, [&](int64_t e, int64_t off) {
        const size_t j = static_cast<size_t>(e) % r;
        const float g = dy[off];
        da[e] = g * sc[j];
        acc[j] += static_cast<double>(g) * a[e];
      });
    }
    for (size_t j = 0; j < r; j++) ds[j] = static_cast<float>(acc[j]);
    return info.Env().Undefined();
  });
}

// meanPool(x, y, [N, P, C]): y[n, c] = mean over the P pixels of x[n, p, c] (global average
// pooling, NHWC with P = H·W); meanPoolGrad(dy, dx, [N, P, C]): dx[n, p, c] = dy[n, c] / P. tfjs' Mean
// and its gradient (a ones tensor of x's shape, a Mul and a RealDiv) took ~1.3 ms a ResNet-20 step
// at batch 64.
Napi::Value MeanPool(const Napi::CallbackInfo& info) {
  return Guard(info, "meanPool", [&]() -> Napi::Value {
    auto d = Ints(info, 2, 3, "shape");
    const int64_t n = d[0], px = d[1], c = d[2];
    if (n < 1 || px < 1 || c < 1) throw ArgError("shape must be [N >= 1, P >= 1, C >= 1]");
    CheckCounts({double(n) * px * c});
    const float* x = F32(info, 0, static_cast<size_t>(n * px * c), "x");
    float* y = F32(info, 1, static_cast<size_t>(n * c), "y");
    std::vector<double> acc(static_cast<size_t>(c));
    for (int64_t i = 0; i < n; i++) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t q = 0; q < px; q++) {
        const float* row = x + (i * px + q) * c;
        for (int64_t j = 0; j < c; j++) acc[static_cast<size_t>(j)] += row[j];
      }
      for (int64_t j = 0; j < c; j++) y[i * c + j] = static_cast<float>(acc[static_cast<size_t>(j)] / static_cast<double>(px));
    }
    return info.Env().Undefined();
  });
}

Napi::Value MeanPoolGrad(const Napi::CallbackInfo& info) {
  return Guard(info, "meanPoolGrad", [&]() -> Napi::Value {
    auto d = Ints(info, 2, 3, "shape");
    const int64_t n = d[0], px = d[1], c = d[2];
    if (n < 1 || px < 1 || c < 1) throw ArgError("shape must be [N >= 1, P >= 1, C >= 1]");
    CheckCounts({double(n) * px * c});
    const float* dy = F32(info, 0, static_cast<size_t>(n * c), "dy");
    float* dx = F32(info, 1, static_cast<size_t>(n * px * c), "dx");
    const float inv = 1.0f / static_cast<float>(px);
    std::vector<float> g(static_cast<size_t>(c));
    for (int64_t i = 0; i < n; i++) {
      for (int64_t j = 0; j < c; j++) g[static_cast<size_t>(j)] = dy[i * c + j] * inv;
      for (int64_t q = 0; q < px; q++) std::copy(g.begin(), g.end(), dx + (i * px + q) * c);
    }
    return info.Env().Undefined();
  });
}

// ---- threads and introspection -----------------------------------------------------------------
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  return Guard(info, "setThreads", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 1, "threads");
    if (p[0] < 1 || p[0] > 1024) throw ArgError("threads must be between 1 and 1024");
    omp_set_num_threads(static_cast<int>(p[0]));
    return info.Env().Undefined();
  });
}

// setActivationLayout(nhwc): 1 hands activations to oneDNN as plain NHWC, 0 lets it choose a
// blocked layout (reordering in and out). Clears the primitive caches.
Napi::Value SetActivationLayout(const Napi::CallbackInfo& info) {
  return Guard(info, "setActivationLayout", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 1, "nhwc");
    g_act_nhwc = p[0] != 0;
    conv_fwd.clear();
    conv_bwd_data.clear();
    conv_bwd_weights.clear();
    return info.Env().Undefined();
  });
}

// setPrefetch([write, read]): whether the streaming kernels ask for their lines ahead (prefetch.h);
// both 1 by default. For benchmarks.
Napi::Value SetPrefetch(const Napi::CallbackInfo& info) {
  return Guard(info, "setPrefetch", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 2, "flags");
    if (p[0] > 1 || p[1] > 1) throw ArgError("flags must be 0 or 1");
    svd_prefetch::g_write = p[0] == 1;
    svd_prefetch::g_read = p[1] == 1;
    return info.Env().Undefined();
  });
}

// setFastBatchNorm([on]): 1 (the default) runs training batch norm on batch_norm.cc's kernels where
// they apply (C 16, 32 or 64 on AVX-512, or AVX2 + FMA), 0 on the generic loops, 2 on its AVX2
// kernels even where the CPU has AVX-512 (what a CPU without it runs). For benchmarks and tests.
Napi::Value SetFastBatchNorm(const Napi::CallbackInfo& info) {
  return Guard(info, "setFastBatchNorm", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 1, "flags");
    if (p[0] > 2) throw ArgError("on must be 0, 1 or 2 (2: the AVX2 kernels)");
    if (!svd_bn::PreferAvx2(p[0] == 2)) throw ArgError("2 (the AVX2 kernels) needs a CPU with AVX2 and FMA; use 1 or 0");
    g_fast_bn = p[0] >= 1;
    return info.Env().Undefined();
  });
}

Napi::Value GetThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), omp_get_max_threads());
}

// cpuFeatures(): what the CPU offers as the kernels see it (CPUID, as they decide): tests pick their
// cases by it rather than by /proc/cpuinfo, which an emulator (qemu-user's AVX2-only CPU, used to
// run the suite without AVX-512) or a hypervisor may report differently.
Napi::Value CpuFeatures(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("avx512f", __builtin_cpu_supports("avx512f") != 0);
  o.Set("avx2", __builtin_cpu_supports("avx2") != 0);
  o.Set("fma", __builtin_cpu_supports("fma") != 0);
  o.Set("zen5OrLater", svd_small_oc::Zen5OrLater());
  return o;
}

Napi::Value Version(const Napi::CallbackInfo& info) {
  const dnnl_version_t* v = dnnl_version();
  std::ostringstream s;
  s << v->major << '.' << v->minor << '.' << v->patch;
  return Napi::String::New(info.Env(), s.str());
}

// implementations(): which oneDNN implementation each cached primitive runs (e.g.
// "jit:avx512_core"), keyed by kind and shape, for benchmarks and the engine log.
Napi::Value Implementations(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  for (auto& [k, v] : conv_fwd) o.Set(k, v->impl);
  for (auto& [k, v] : conv_bwd_data) o.Set(k, v->impl);
  for (auto& [k, v] : conv_bwd_weights) o.Set(k, v->impl);
  for (auto& [k, v] : small_oc_keys) o.Set(k, v);
  o.Set("lanesNet pairs", std::to_string(svd_lanes::LastPairs()));
  return o;
}

// lanesNet(x, y, [n, input, output, inFloats, outFloats], sizes, steps, weights): a whole network's
// inference in the lanes layout (lanes_net.h). sizes: floats per image of each buffer; x [n,
// inFloats] goes into buffer `input`, y [n, outFloats] comes from buffer `output`. steps: kLanesStepInts integers per step,
//   conv: [0, in, out, res + 1 (0: none), h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pl, relu, wi, si + 1, bi + 1]
//   pool: [1, in, out, 0, hw, c, 0, ...]
// with wi, si, bi indices into weights (Float32Arrays: the HWIO filter, the scale and shift, 0 for
// none). Everything is checked before anything runs: every buffer a step reads or writes holds its
// geometry, no step writes the buffer of its input (a conv's shortcut may be its output: each value
// is read just before its own position is written), and every filter has its geometry's length.
constexpr size_t kLanesStepInts = 20;
Napi::Value LanesNetFn(const Napi::CallbackInfo& info) {
  return Guard(info, "lanesNet", [&]() -> Napi::Value {
    if (!svd_lanes::Available()) throw ArgError("the lanes network needs AVX-512F, which this CPU lacks (use the per-op kernels)");
    auto head = Ints(info, 2, 5, "header");
    if (info.Length() < 6 || !info[3].IsArray() || !info[4].IsArray() || !info[5].IsArray())
      throw ArgError("lanesNet(x, y, header, sizes, steps, weights): sizes and steps must be arrays of integers, weights an array of Float32Arrays");
    const auto sizes = Ints(info, 3, info[3].As<Napi::Array>().Length(), "sizes");
    const size_t nsteps_ints = info[4].As<Napi::Array>().Length();
    if (nsteps_ints % kLanesStepInts != 0) throw ArgError("steps has " + std::to_string(nsteps_ints) + " entries; expected a multiple of " + std::to_string(kLanesStepInts));
    const auto st = Ints(info, 4, nsteps_ints, "steps");
    Napi::Array wa = info[5].As<Napi::Array>();
    std::vector<const float*> wp(wa.Length());
    std::vector<size_t> wlen(wa.Length());
    for (uint32_t i = 0; i < wa.Length(); i++) {
      Napi::Value v = wa.Get(i);
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
        throw ArgError("weights[" + std::to_string(i) + "] must be a Float32Array");
      Napi::Float32Array a = v.As<Napi::Float32Array>();
      wp[i] = a.Data();
      wlen[i] = a.ElementLength();
    }
    const int64_t n = head[0];
    const size_t nb = sizes.size();
    if (nb == 0) throw ArgError("sizes is empty; expected one entry per buffer");
    for (size_t b = 0; b < nb; b++) {
      if (sizes[b] < 1) throw ArgError("sizes[" + std::to_string(b) + "] is 0; every buffer holds at least one float per image");
      CheckCounts({double(sizes[b]) * 16});
    }
    auto buffer = [&](int64_t b, const char* what) {
      if (b < 0 || static_cast<size_t>(b) >= nb) throw ArgError(std::string(what) + " buffer " + std::to_string(b) + " is out of range (there are " + std::to_string(nb) + ")");
      return static_cast<int>(b);
    };
    auto fits = [&](int b, double need, const std::string& what) {
      if (need > double(sizes[b])) throw ArgError(what + " needs " + std::to_string(static_cast<int64_t>(need)) + " floats per image; buffer " + std::to_string(b) + " holds " + std::to_string(sizes[b]));
    };
    svd_lanes::Net net;
    net.sizes = sizes;
    net.input = buffer(head[1], "input");
    net.output = buffer(head[2], "output");
    if (net.input == net.output) throw ArgError("the input and output buffers are the same");
    net.in_size = head[3];
    net.out_size = head[4];
    if (net.in_size < 1 || net.out_size < 1) throw ArgError("inFloats and outFloats must be >= 1");
    fits(net.input, double(net.in_size), "the input");
    fits(net.output, double(net.out_size), "the output");
    auto weight = [&](int64_t i, double want, const std::string& what) -> const float* {
      if (i < 0 || static_cast<size_t>(i) >= wp.size()) throw ArgError(what + ": weights index " + std::to_string(i) + " is out of range (there are " + std::to_string(wp.size()) + ")");
      if (double(wlen[i]) != want) throw ArgError(what + ": weights[" + std::to_string(i) + "] has " + std::to_string(wlen[i]) + " elements; expected " + std::to_string(static_cast<int64_t>(want)));
      return wp[i];
    };
    for (size_t k = 0; k < nsteps_ints / kLanesStepInts; k++) {
      const int64_t* q = st.data() + k * kLanesStepInts;
      const std::string what = "step " + std::to_string(k);
      svd_lanes::Step step{};
      if (q[0] == 0) {
        svd_lanes::Conv& g = step.conv;
        step.kind = svd_lanes::Step::kConv;
        g.in = buffer(q[1], what.c_str());
        g.out = buffer(q[2], what.c_str());
        g.res = q[3] == 0 ? -1 : buffer(q[3] - 1, what.c_str());
        g.h = q[4], g.w = q[5], g.c = q[6], g.f = q[7], g.kh = q[8], g.kw = q[9], g.oh = q[10], g.ow = q[11];
        g.sh = q[12], g.sw = q[13], g.pt = q[14], g.pl = q[15];
        if (q[16] > 1) throw ArgError(what + ": relu must be 0 or 1");
        g.relu = q[16] == 1;
        for (int64_t d : {g.h, g.w, g.c, g.f, g.kh, g.kw, g.oh, g.ow, g.sh, g.sw})
          if (d < 1) throw ArgError(what + ": conv dims [h, w, c, f, kh, kw, oh, ow, sh, sw] must be >= 1");
        // The shortcut may be the output (each value is read just before its own position is written);
        // the input may not (its values are read for many outputs).
        if (g.in == g.out) throw ArgError(what + ": a conv cannot write the buffer it reads");
        CheckCounts({double(g.h) * g.w * g.c, double(g.oh) * g.ow * g.f, double(g.kh) * g.kw * g.c * g.f});
        fits(g.in, double(g.h) * g.w * g.c, what + "'s input");
        fits(g.out, double(g.oh) * g.ow * g.f, what + "'s output");
        if (g.res >= 0) fits(g.res, double(g.oh) * g.ow * g.f, what + "'s shortcut");
        g.weights = weight(q[17], double(g.kh) * g.kw * g.c * g.f, what + "'s filter");
        g.scale = q[18] == 0 ? nullptr : weight(q[18] - 1, double(g.f), what + "'s scale");
        g.shift = q[19] == 0 ? nullptr : weight(q[19] - 1, double(g.f), what + "'s shift");
      } else if (q[0] == 1) {
        svd_lanes::Pool& g = step.pool;
        step.kind = svd_lanes::Step::kPool;
        g.in = buffer(q[1], what.c_str());
        g.out = buffer(q[2], what.c_str());
        g.hw = q[4], g.c = q[5];
        if (g.hw < 1 || g.c < 1) throw ArgError(what + ": pool dims [hw, c] must be >= 1");
        if (g.in == g.out) throw ArgError(what + ": a pool cannot write the buffer it reads");
        CheckCounts({double(g.hw) * g.c});
        fits(g.in, double(g.hw) * g.c, what + "'s input");
        fits(g.out, double(g.c), what + "'s output");
      } else {
        throw ArgError(what + ": kind " + std::to_string(q[0]) + "; expected 0 (conv) or 1 (pool)");
      }
      net.steps.push_back(step);
    }
    CheckCounts({double(n) * net.in_size, double(n) * net.out_size});
    const float* x = F32(info, 0, static_cast<size_t>(n * net.in_size), "x");
    float* y = F32(info, 1, static_cast<size_t>(n * net.out_size), "y");
    if (n > 0) svd_lanes::Run(net, x, n, y);
    return info.Env().Undefined();
  });
}

// setLanesPairs([on]): 1 (the default) lets the lanes network make a 1x1 conv's output into a
// ring of rows for the next conv (lanes_net.h SetPairs); 0 writes it whole. For benchmarks and tests.
Napi::Value SetLanesPairs(const Napi::CallbackInfo& info) {
  return Guard(info, "setLanesPairs", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 1, "on");
    if (p[0] > 1) throw ArgError("on must be 0 or 1");
    svd_lanes::SetPairs(p[0] == 1);
    return info.Env().Undefined();
  });
}

// hugeFloat32([n]): a zeroed Float32Array of n floats whose memory is 2 MiB-aligned and, on Linux,
// advised to the kernel as transparent huge pages (madvise MADV_HUGEPAGE) before it is first
// touched (huge_pages.h). The native training step carves its buffers from 8 MiB ones (native-step.ts'
// arena; ~80-130 MiB in all at batch 64). Freed when the array is collected.
Napi::Value HugeFloat32(const Napi::CallbackInfo& info) {
  return Guard(info, "hugeFloat32", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 1, "n");
    CheckCounts({double(p[0])});
    if (p[0] < 1) throw ArgError("hugeFloat32 takes [n >= 1]");
    const size_t bytes = static_cast<size_t>(p[0]) * sizeof(float);
    size_t rounded = 0;
    void* mem = svd_huge::Alloc(bytes, &rounded);
    if (!mem) throw std::runtime_error("could not allocate " + std::to_string(rounded) + " bytes");
    std::memset(mem, 0, rounded);
    Napi::ArrayBuffer buf;
    try {
      buf = Napi::ArrayBuffer::New(info.Env(), mem, bytes, [](Napi::Env, void* data) { std::free(data); });
    } catch (...) {
      std::free(mem);  // the finalizer owns it only once the buffer exists
      throw;
    }
    return Napi::Float32Array::New(info.Env(), static_cast<size_t>(p[0]), buf, 0);
  });
}

// setSmallOcKernels([on]): 1 runs convolutions with few output channels on small_oc_conv.cc's
// kernels where they apply (the default), 0 always on oneDNN (for benchmarks and tests).
Napi::Value SetSmallOcKernels(const Napi::CallbackInfo& info) {
  return Guard(info, "setSmallOcKernels", [&]() -> Napi::Value {
    auto p = Ints(info, 0, 1, "on");
    g_small_oc = p[0] != 0;
    small_oc_keys.clear();
    return info.Env().Undefined();
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // One worker per core is the default, so oneDNN starts single-threaded; setThreads changes it.
  omp_set_num_threads(1);
  exports.Set("conv2d", Napi::Function::New(env, Conv2D));
  exports.Set("conv2dBackpropInput", Napi::Function::New(env, Conv2DBackpropInput));
  exports.Set("conv2dBackpropInputAdd", Napi::Function::New(env, Conv2DBackpropInputAdd));
  exports.Set("conv2dBackpropFilter", Napi::Function::New(env, Conv2DBackpropFilter));
  exports.Set("matmul", Napi::Function::New(env, MatMulFn));
  exports.Set("batchNormForward", Napi::Function::New(env, BatchNormForward));
  exports.Set("batchNormBackward", Napi::Function::New(env, BatchNormBackward));
  exports.Set("reluGrad", Napi::Function::New(env, ReluGrad));
  exports.Set("add", Napi::Function::New(env, AddFn));
  exports.Set("meanPool", Napi::Function::New(env, MeanPool));
  exports.Set("scalePermute", Napi::Function::New(env, ScalePermute));
  exports.Set("scalePermuteGrad", Napi::Function::New(env, ScalePermuteGrad));
  exports.Set("meanPoolGrad", Napi::Function::New(env, MeanPoolGrad));
  exports.Set("affine", Napi::Function::New(env, Affine));
  exports.Set("pointwiseAffine", Napi::Function::New(env, PointwiseAffineFn));
  exports.Set("rowConvAffine", Napi::Function::New(env, RowConvAffineFn));
  exports.Set("spatialAffine", Napi::Function::New(env, SpatialAffineFn));
  exports.Set("rankBnForward", Napi::Function::New(env, RankBnForward));
  exports.Set("rankBnBackward", Napi::Function::New(env, RankBnBackward));
  exports.Set("svdRegularizer", Napi::Function::New(env, SvdRegularizer));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("setActivationLayout", Napi::Function::New(env, SetActivationLayout));
  exports.Set("getThreads", Napi::Function::New(env, GetThreads));
  exports.Set("setPrefetch", Napi::Function::New(env, SetPrefetch));
  exports.Set("setFastBatchNorm", Napi::Function::New(env, SetFastBatchNorm));
  exports.Set("version", Napi::Function::New(env, Version));
  exports.Set("cpuFeatures", Napi::Function::New(env, CpuFeatures));
  exports.Set("implementations", Napi::Function::New(env, Implementations));
  exports.Set("setSmallOcKernels", Napi::Function::New(env, SetSmallOcKernels));
  exports.Set("hugeFloat32", Napi::Function::New(env, HugeFloat32));
  exports.Set("setLanesPairs", Napi::Function::New(env, SetLanesPairs));
  // Only where it can run (AVX-512F), so that its presence is the test callers make.
  if (svd_lanes::Available()) exports.Set("lanesNet", Napi::Function::New(env, LanesNetFn));
  return exports;
}

}  // namespace

NODE_API_MODULE(svd_native, Init)
