// Convolutions with few output channels (forward F <= 8, or 48 from 64 channels; filter gradient up
// to 8, 10 or 48 by taps) from a multiple of 16 input channels: the first half of a low-rank
// factored layer, a k x k conv from C channels to the rank r.
//
// Why: oneDNN's AVX-512 convolutions compute output channels 16 at a time, so a 3x3 conv from 16
// channels to rank 1, 2, 3 or 5 costs what the full-rank conv to 16 costs (measured ~8 ms each at
// batch 256, 32x32), and a pruned model's stage-1 layers got no faster. These kernels keep the
// work proportional to F, and nothing needs a reduction across vector lanes:
//   - forward: 16 images at once. A group's input is transposed so that one vector holds one
//     value of 16 images; each (tap, input channel) then gives F FMAs with the weights broadcast,
//     into one accumulator per (output pixel, output channel), and the output is transposed back
//     to NHWC. (The first version kept 16 input channels in the lanes and summed them per output;
//     the reductions and loads made it 1.3-2.4x slower than this one.)
//   - filter gradient: input channels in the lanes, read NHWC in place; one accumulator per (tap,
//     16 input channels, output channel), the output gradient broadcast.
//   - input gradient (stride 1, 16 or 32 input channels, kw 1 or 3, up to 16 outputs): the input
//     channels in the lanes (one or two vectors per pixel), dy broadcast. Its point is the optional
//     res: a residual block's shortcut gradient summed in the same pass, which saves tfjs' Add of
//     two activations (~0.7 ms each at 32x32x16, batch 64). Alone it is no faster than oneDNN on
//     warm buffers (0.66 against 0.48 ms at F = 5, 32x32x16, batch 64) and a little faster in a
//     training step (0.83 against 0.97 ms a call at F = 5), where its PREFETCHW stores meet a cold
//     output buffer.
// Images run in parallel over OpenMP threads (the count setThreads gives oneDNN).
#pragma once
#include <cstdint>

namespace svd_small_oc {

// The most output channels each kernel takes, where `pnpm bench small-oc` (batch 64; 32x32x16 at
// stride 1 and 2, 16x16x32 and 8x8x64) found it faster than oneDNN:
//   - forward, F <= 8, 3 or 9 taps: 1.2-3.4x (since it runs on the lanes network's conv kernel,
//     lanes_net.cc, 0.87-0.97x at F = 10-12 at batch 64, where its own kernel had been 1.0-1.2x);
//     beyond, oneDNN's cost steps at 16 and 32 but ours grows with F. Not 1x1 convs: with one tap
//     the transposes to and from the image lanes cost more than the conv (0.54-0.64x at F = 5).
//   - filter gradient, stride 1: 3 taps (the spatial form's k x 1 half) up to F = 48, 1.4-4.5x
//     (oneDNN's kernel for 3x1 shapes runs at half its 3x3 speed); 9 taps up to F = 10, 1.05-3.5x
//     (on the Intel Xeon since its unit groups are compiled per size: 1.17-5.3x from 32x32x16, and
//     0.65-0.92x at F = 12-16, so the limit stays); 1 tap, and any stride above 1, up to F = 8 (at
//     13 and more, 0.5-1.1x).
constexpr int64_t kSmallOcMaxFForward = 8;
// From 64 input channels (a 3x3 conv at stride 1), forward up to F = 48 unless F is a multiple of
// 16: there the input's transpose is small next to the conv (576 MACs per output value), the lanes
// kernel runs at ~75 GMAC/s (chunks of 8 outputs), and oneDNN pads F up to a multiple of 16 (8x8x64
// at batch 64: F 10-13 1.15-1.35x oneDNN, 24 even, 16 0.86x; in a pruned ResNet-20's step the last
// stage's F 18, 23, 30, 31, 41 took 5.6 ms on oneDNN, 4.8-5.0 here).
constexpr int64_t kSmallOcMaxFForwardWide = 48;
constexpr int64_t kSmallOcMaxFFilter3Taps = 48;
// The input gradient: up to 16 outputs when it also sums a residual's gradient (the Add it saves
// outweighs the rest), up to 6 alone (where oneDNN, on a cold output buffer in a training step,
// was slower: 0.97 against 0.83 ms at F = 5 from 32x32x16; at F 7-13 the two were even, at 16
// oneDNN ahead, 1.74 against 1.85 ms warm, which full rank's 16-to-16 convs would pay).
constexpr int64_t kSmallOcMaxFBackwardInput = 16;
constexpr int64_t kSmallOcMaxFBackwardInputAlone = 6;
constexpr int64_t kSmallOcMaxFFilter9Taps = 10;
constexpr int64_t kSmallOcMaxFFilterOther = 8;
// On AMD Zen 5 (family 1Ah: full-width AVX-512, where the limits above were set on an Intel Xeon),
// `pnpm bench small-oc` (one thread, batch 64) finds ours ahead further: forward from 16 or 32
// channels 1.06-1.42x at F 10-13 (32x32x16) and 1.25-1.58x (16x16x32), oneDNN ahead at 16 (0.86x),
// and with 3 taps (the spatial form's k x 1 half) 1.09-1.54x from 32 or 64 channels but 0.77x at
// F 13 from 16 channels (0.99x at 9), where the limit stays 8;
// the 9-tap filter gradient from 16 or 32 channels 1.03-1.45x at F 10-13 and 0.81-0.89x at 16, but
// from 64 channels (8x8x64) 0.87x already at F 10, 1.26x at 8. In a pruned ResNet-20's step (the
// record's ranks; stage 2's layers of rank 10 and 13 change kernels) -0.41 +- 0.21 ms of 45 (paired
// A/B, one process). The input gradient alone up to 16 there: +0.48 +- 0.24 ms, so it stays at 6.
constexpr int64_t kSmallOcMaxFForwardZen5 = 13;
constexpr int64_t kSmallOcMaxFFilter9TapsZen5 = 13;
constexpr int64_t kSmallOcMaxFFilter9TapsZen5Wide = 8;
// Whether the CPU is an AMD of family 1Ah or later (Zen 5), which takes the Zen5 limits.
bool Zen5OrLater();

// The conv2d shape of addon.cc: x NHWC [n,h,w,c], w HWIO [kh,kw,c,f], y NHWC [n,oh,ow,f];
// stride sh/sw, zero padding pt (top) / pl (left), the bottom/right padding implied by oh/ow.
struct Geom {
  int64_t n, h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pl;
};

// Whether these kernels take the shape: AVX-512F at run time, c a multiple of 16 (at most 256),
// 1 <= f <= the limits above, at most 9 taps, dilation 1 (dh, dw as tfjs counts them, 1 = dense).
bool Applies(const Geom& g, int64_t dh, int64_t dw, bool forward);

void Forward(const Geom& g, const float* x, const float* w, float* y);
// The input gradient dx [n,h,w,c] of a stride-1 conv from dy [n,oh,ow,f], plus res [n,h,w,c]
// unless null (a residual's gradient summed in the same pass). AppliesBackwardInput: AVX-512F, c 16
// or 32, kw 1 or 3, 1 <= f <= kSmallOcMaxFBackwardInput (with a residual, else ...Alone), at most 9
// taps, stride and dilation 1.
void BackwardInput(const Geom& g, const float* dy, const float* w, const float* res, float* dx);
bool AppliesBackwardInput(const Geom& g, int64_t dh, int64_t dw, bool with_res);
void BackwardWeights(const Geom& g, const float* x, const float* dy, float* dw);
// dx += the input gradient of a 1×1 conv without padding (any stride, any F), in place, for images
// [n0, n1): output pixel (i, j)'s dy [F] times the filter, wt as [F][C], lands on input pixel
// (i·sh, j·sw) alone (a quarter of dx at stride 2). For the second of two convs reading one input
// (a downsampling block's shortcut), where the first's gradient is already in dx; the caller
// (addon.cc's conv2dBackpropInputAdd) transposes the filter and splits the images over threads.
// AppliesPointBackwardInputAdd: AVX-512F, c 16, 32 or 64, 1×1, no padding (every output pixel's
// input pixel inside the image), dilation 1.
void PointBackwardInputAdd(const Geom& g, const float* dy, const float* wt, float* dx, int64_t n0, int64_t n1);
bool AppliesPointBackwardInputAdd(const Geom& g, int64_t dh, int64_t dw);

}  // namespace svd_small_oc
