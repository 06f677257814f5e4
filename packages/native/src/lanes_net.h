// A whole convolutional network's inference, 16 images at a time in the lanes layout (lanes.h):
// every activation of a group stays [h][w][c][16 images] from the input's transpose to the
// logits', so no layer pays a transpose, and a group's activations (1 MiB for 32x32x16) are
// reused from cache by the next layer instead of streaming the whole batch through memory once
// per layer, as per-op kernels on [N,H,W,C] do.
//
// Why: at a third of the MACs, a pruned ResNet-20's inference ran per op at 1.6x the full rank's
// speed (issue 11 asks 2.5x): its few-channel convs paid a transpose to and from the lanes on
// every call, and its 1x1 conv + batch norm passes were memory-bound at batch 256. Here each conv
// is one kernel: output channels in chunks of at most 8 held in registers for a block of pixels,
// the weights broadcast, nothing reduced across lanes, and an epilogue that applies batch norm's
// eval-mode scale and shift, adds the shortcut and takes the ReLU before the one store.
//
// The network is a list of steps over numbered buffers (the caller, lanes-inference.ts, compiles
// it from the model and folds batch norm into scale/shift). Images run in parallel over OpenMP
// threads, a group each.
#pragma once
#include <cstdint>
#include <vector>

namespace svd_lanes {

// out = relu?(conv(in, w) * scale + shift (+ res)) per output channel; w HWIO [kh][kw][c][f],
// stride sh/sw, zero padding pt (top) / pl (left), the bottom/right padding implied by oh/ow.
struct Conv {
  int in, out, res;  // buffer indices; res < 0: no shortcut
  int64_t h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pl;
  const float* weights;
  const float* scale;  // [f], or nullptr for 1
  const float* shift;  // [f], or nullptr for 0
  bool relu;
};

// out [c] = the mean of in [hw][c] over its hw pixels (global average pooling).
struct Pool {
  int in, out;
  int64_t hw, c;
};

struct Step {
  enum Kind { kConv, kPool } kind;
  Conv conv;
  Pool pool;
};

struct Net {
  std::vector<Step> steps;
  std::vector<int64_t> sizes;  // floats per image of each buffer
  int input, output;           // the buffers the images go into and the logits come out of
  int64_t in_size, out_size;   // floats per image of the input and the output (within their buffers)
};

// Whether Run can run here (AVX-512F on an x86-64): the one CPU probe of the addon's own AVX-512
// kernels (small_oc_conv.cc, pointwise_affine.cc and rank_bn.cc ask it too).
bool Available();

// One conv step on one group already in the lanes layout: yt [oh][ow][f][16] from xt [h][w][c][16]
// (the buffers' row strides are w*c*16 and ow*f*16). small_oc_conv.cc's forward runs its convs here.
void ConvGroup(const Conv& g, const float* xt, float* yt);

// Whether Run makes a 1x1 conv's output row by row into a small ring just before the next conv
// reads it (where only that conv reads it; lanes_net.cc RunPair): on by default, off for benchmarks.
void SetPairs(bool on);
// How many pairs the last Run made that way (for tests).
int LastPairs();

// y [n][out_size] = the network on x [n][in_size] (each image's values in NHWC order).
// The caller has checked that every step's geometry fits its buffers (addon.cc).
void Run(const Net& net, const float* x, int64_t n, float* y);

}  // namespace svd_lanes
