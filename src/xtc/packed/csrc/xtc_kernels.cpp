// xtc packed kernels: linear layers computed straight from 1-bit (binary) and 2-bit (ternary)
// weights with 8-bit per-token activations, on CPU.
//
//   y[m, n] = s[m] * alpha[n] * sum_k q[m, k] * w[n, k] + bias[n]
//
// q: int8 activation codes of token m (s = 2 max|x| / 256, as xtc.quantizers.quantize_activations),
// w: weight codes in {-1, +1} (binary) or {-1, 0, +1} (ternary), alpha: per-output scale.
//
// The integer dot products use the VNNI instruction vpdpbusd (unsigned 8-bit x signed 8-bit,
// 4 products summed into each int32 lane). Activations are therefore stored as u = q + 128 (u8),
// and the extra 128 * sum_k w[n, k] is subtracted at the end (colsum128, precomputed at load).
//
// Weight layout ("tile layout", built once at load time by xtc.packed.kernels.prepare_weights):
// outputs are cut into tiles of 16 rows, the reduction dimension into steps of 4. One step of one
// tile is 16 x 4 = 64 weights = one 64-bit mask whose bit j is (row 16t + j/4, column 4k + j%4).
// That is exactly the byte order vpdpbusd wants (byte j of the weight vector feeds int32 lane j/4),
// so expanding a mask to 64 signed bytes is one masked blend, and no horizontal sums are needed.
// Binary: one plane (bit = 1 means +1). Ternary: two planes (nonzero, negative): 2 bits/weight.
//
// Activations are re-packed per call into blocks of MR tokens: block[k4][r] is the 4 bytes
// (columns 4k4..4k4+3) of token r, so the micro-kernel reads them with one 32-bit broadcast.
//
// Four code paths chosen at run time (cpuid): AMX-INT8, AVX-512 VNNI, AVX2, portable scalar. Each
// is compiled with a function-level target attribute, so one build runs on any x86-64 CPU and the
// build cache can be shared between machines. XTC_KERNEL_ISA=scalar|avx2|avx512|amx (or set_isa)
// forces a path (tests run every one the host has).
// AMX (Xeon 4th generation on) multiplies 16 x 64 int8 activation tiles by 64 x 16 weight tiles in
// one instruction (tdpbusd, the same u8 x s8 arithmetic as vpdpbusd). Its weight tile is 16 of the
// 64-bit masks above, expanded to bytes in a small per-thread buffer (the packed weights stay 1-2 bit
// in memory); its activations are blocked as [16 tokens][64 bytes] per tile (see quantize_pack).
// Linears whose input width is not a multiple of 64 take the AVX-512 path.
// CPUs without VNNI (AVX2 only) multiply with vpmaddubsw and sum 64 steps in int16 before widening;
// they expand a whole weight tile to bytes once per task (see expand_tile_avx2).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#define XTC_X86 1
#include <immintrin.h>
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#else
#define XTC_X86 0
#endif

namespace {

enum Isa { ISA_SCALAR = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AMX = 3 };

// AMX needs the CPU (cpuid), the OS (XCR0 tile state) and, on Linux, a per-process permission to use
// the 8 KB tile data state (arch_prctl ARCH_REQ_XCOMP_PERM); without any of them: no AMX.
bool amx_usable() {
#if XTC_X86 && defined(__GNUC__) && defined(__linux__)
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !((c >> 27) & 1)) return false;  // OSXSAVE: xgetbv allowed
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !((d >> 24) & 1) || !((d >> 25) & 1)) return false;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if (((lo >> 17) & 3) != 3) return false;  // XTILECFG and XTILEDATA enabled by the OS
  const long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

int detect_isa() {
#if XTC_X86 && defined(__GNUC__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni"))
    return amx_usable() ? ISA_AMX : ISA_AVX512;
  if (__builtin_cpu_supports("avx2")) return ISA_AVX2;
#endif
  return ISA_SCALAR;
}

const int kHostIsa = detect_isa();
int g_isa = -1;  // -1: not decided yet (environment variable read on first use)

int active_isa() {
  if (g_isa < 0) {
    g_isa = kHostIsa;
    if (const char* env = std::getenv("XTC_KERNEL_ISA")) {
      std::string e(env);
      if (e == "scalar") g_isa = ISA_SCALAR;
      else if (e == "avx2") g_isa = std::min(kHostIsa, (int)ISA_AVX2);
      else if (e == "avx512" || e == "avx512_vnni") g_isa = std::min(kHostIsa, (int)ISA_AVX512);
    }
  }
  return g_isa;
}

// Tokens per activation block (MR) and tiles per column block (NB): the AVX-512 micro-kernel keeps
// MR x NB accumulators in zmm registers (32 in all). 16 x 1 was the fastest shape tried (12 x 2, 8 x 3
// and 6 x 4 came close) and divides the usual 128-token sequences exactly. AVX2 has 16 ymm registers
// and keeps 4 tokens x 2 halves (6 tokens spill).
#ifndef XTC_MR
#define XTC_MR 16
#endif
#ifndef XTC_NB
#define XTC_NB 1
#endif
#ifndef XTC_MR_AVX2
#define XTC_MR_AVX2 4
#endif
int block_rows(int isa) { return isa >= ISA_AVX512 ? XTC_MR : isa == ISA_AVX2 ? XTC_MR_AVX2 : 4; }
static_assert(XTC_MR == 16, "the AMX path shares the AVX-512 activation blocks of 16 tokens");

// The path one GEMM takes: AMX tiles span 64 input columns, so other widths go to AVX-512 VNNI.
int gemm_isa(int isa, int64_t K) { return isa == ISA_AMX && K % 64 != 0 ? ISA_AVX512 : isa; }
// Weight tiles (16 outputs each) per column block, the unit of work along N.
int64_t tiles_per_block(int isa) { return isa == ISA_AMX ? 2 : isa == ISA_AVX512 ? XTC_NB : 1; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Growable 64-byte aligned scratch memory (per thread) that vector code reads with aligned loads.
struct AlignedScratch {
  int8_t* p = nullptr;
  size_t n = 0;
  int8_t* get(size_t want) {
    if (want > n) {
      ::operator delete(p, std::align_val_t(64));
      p = static_cast<int8_t*>(::operator new(want, std::align_val_t(64)));
      n = want;
    }
    return p;
  }
  ~AlignedScratch() { ::operator delete(p, std::align_val_t(64)); }
};

// ------------------------------------------------------------------------------------------
// Activation quantization, bit-compatible with xtc.quantizers.quantize_activations:
// s = (2 * max|x|) / 256, q = clamp(round_half_even(x / s), -128, 127); a zero row gives q = 0.
// Division (not multiplication by 1/s) so that ties round exactly as torch does.
// ------------------------------------------------------------------------------------------
inline float row_scale(float amax) { return (2.0f * amax) / 256.0f; }

void quantize_row_scalar(const float* x, int64_t K, uint8_t* u, float* s_out) {
  float amax = 0.f;
  for (int64_t k = 0; k < K; ++k) amax = std::fmax(amax, std::fabs(x[k]));
  float s = row_scale(amax);
  float d = s > 0.f ? s : 1.f;
  for (int64_t k = 0; k < K; ++k) {
    float v = std::nearbyint(x[k] / d);  // default rounding mode: to nearest, ties to even
    v = std::fmin(std::fmax(v, -128.f), 127.f);  // fmin/fmax also map NaN to a bound
    u[k] = (uint8_t)((int)v + 128);
  }
  *s_out = s;
}

#if XTC_X86
// amax: max |x| of the row when the caller computed it on the way (negative: not known). Values
// 64c .. 64c + 63 go to u + c * stride (stride 64: one contiguous row; the AMX layout interleaves
// tokens every 64 values). Returns false, writing nothing, for a row the scalar path must take.
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"))) bool quantize_row_strided_avx512(
    const float* x, int64_t K, uint8_t* u, int64_t stride, float* s_out, float amax = -1.f) {
  int64_t k = 0;
  if (!(amax >= 0.f)) {
    __m512 vmax = _mm512_setzero_ps();
    for (; k + 16 <= K; k += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    if (k < K) {
      __mmask16 m = (__mmask16)((1u << (K - k)) - 1);
      vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(m, x + k)));
    }
    amax = _mm512_reduce_max_ps(vmax);
  }
  float s = row_scale(amax);
  const float ds = s > 0.f ? s : 1.f, inv = 1.f / ds;
  // NaN or infinite rows, or a scale too small to invert: the scalar path (a division in every lane)
  if (!std::isfinite(amax) || !std::isfinite(inv)) return false;
  // x / d by a multiplication with 1 / d (a division costs several times as much): the product is
  // within |x / d| 2^-23 <= 1.6e-5 of the exact quotient, torch's correctly rounded quotient within
  // 8e-6, so the two round to different integers only where the quotient is within ~3e-5 of a
  // half-integer; lanes within 1e-4 of one (rounding residual above 0.4999, from vreduceps: the
  // exact v - round(v)) are divided exactly (rare: ~2 in 10,000). |x / d| <= 128 (+ rounding): the
  // saturating narrowing to int8 clamps +128 to 127, and XOR 0x80 makes the stored u8 = q + 128.
  const __m512 d = _mm512_set1_ps(ds), r = _mm512_set1_ps(inv), near_tie = _mm512_set1_ps(0.4999f);
  const __m128i flip = _mm_set1_epi8((char)0x80);
  for (k = 0; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - k)) - 1);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + k);
    const __m512 v = _mm512_mul_ps(xv, r);
    __m512i q = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __mmask16 tie = _mm512_mask_cmp_ps_mask(
        m, _mm512_abs_ps(_mm512_reduce_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)), near_tie, _CMP_GT_OQ);
    if (tie) q = _mm512_mask_cvt_roundps_epi32(q, tie, _mm512_div_ps(xv, d),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_mask_storeu_epi8(u + (k >> 6) * stride + (k & 63), m, _mm_xor_si128(_mm512_cvtsepi32_epi8(q), flip));
  }
  *s_out = s;
  return true;
}

void quantize_row_avx512(const float* x, int64_t K, uint8_t* u, float* s_out, float amax = -1.f) {
  if (!quantize_row_strided_avx512(x, K, u, 64, s_out, amax)) quantize_row_scalar(x, K, u, s_out);
}

__attribute__((target("avx2,fma"))) void quantize_row_avx2(const float* x, int64_t K, uint8_t* u,
                                                           float* s_out) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 vmax = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(x + k), absmask));
  float tmp[8];
  _mm256_storeu_ps(tmp, vmax);
  float amax = 0.f;
  for (int i = 0; i < 8; ++i) amax = std::fmax(amax, tmp[i]);
  for (int64_t j = k; j < K; ++j) amax = std::fmax(amax, std::fabs(x[j]));
  if (std::isnan(amax)) { quantize_row_scalar(x, K, u, s_out); return; }
  float s = row_scale(amax);
  float ds = s > 0.f ? s : 1.f;
  const __m256 d = _mm256_set1_ps(ds);
  const __m256 lo = _mm256_set1_ps(-128.f), hi = _mm256_set1_ps(127.f);
  const __m256i off = _mm256_set1_epi32(128);
  const __m256i low_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                             0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  for (k = 0; k + 8 <= K; k += 8) {
    __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + k), d);
    v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    // v holds integers in [-128, 127]: +128, then the low byte of each int32 lane, 4 per 128-bit half
    const __m256i q = _mm256_shuffle_epi8(_mm256_add_epi32(_mm256_cvtps_epi32(v), off), low_bytes);
    const uint32_t b0 = (uint32_t)_mm256_extract_epi32(q, 0), b1 = (uint32_t)_mm256_extract_epi32(q, 4);
    std::memcpy(u + k, &b0, 4);
    std::memcpy(u + k + 4, &b1, 4);
  }
  for (; k < K; ++k) {
    float v = std::fmin(std::fmax(std::nearbyint(x[k] / ds), -128.f), 127.f);
    u[k] = (uint8_t)((int)v + 128);
  }
  *s_out = s;
}
#endif

void quantize_row(int isa, const float* x, int64_t K, uint8_t* u, float* s, float amax = -1.f) {
#if XTC_X86
  if (isa >= ISA_AVX512) return quantize_row_avx512(x, K, u, s, amax);
  if (isa == ISA_AVX2) return quantize_row_avx2(x, K, u, s);
#endif
  quantize_row_scalar(x, K, u, s);
}

void gelu_row(int isa, float* x, int64_t n);  // defined with the vector GELUs below
float gelu_row_amax(int isa, float* x, int64_t n);  // the same, returning max |GELU| (or -1)

// Quantize M rows of K floats, row m read from row_of(m) (which may compute the row first), and pack
// them into the kernels' activation layout (see quantize_pack).
template <class RowSource>
void quantize_pack_rows(int isa, int64_t M, int64_t K, int64_t MR, uint32_t* ap, float* s, RowSource row_of) {
  const int64_t K4 = ceil_div(K, 4), MB = ceil_div(M, MR);
  const bool amx = gemm_isa(isa, 4 * K4) == ISA_AMX;
  // At least ~8K values per task (one block of 16 tokens of a 384-wide model): even at batch 1 both
  // threads quantize (the parallel region costs less than half of a 128 x 384 input).
  const int64_t grain = std::max<int64_t>(1, (1 << 13) / std::max<int64_t>(1, MR * K));
  at::parallel_for(0, MB, grain, [&](int64_t b0, int64_t b1) {
    std::vector<uint8_t> row(K4 * 4, 128);
    for (int64_t mb = b0; mb < b1; ++mb) {
      uint32_t* blk = ap + mb * K4 * MR;
      for (int64_t r = 0; r < MR; ++r) {
        int64_t m = mb * MR + r;
        if (m < M) {
          float amax = -1.f;  // max |row|, when row_of computes it on the way
          const float* xm = row_of(m, amax);
#if XTC_X86
          // straight into the tiles: 64 values of this token per 1 KB tile row
          if (amx && quantize_row_strided_avx512(xm, K, (uint8_t*)(blk + r * 16), MR * 64, s + m, amax)) continue;
#endif
          quantize_row(isa, xm, K, row.data(), s + m, amax);
        } else {
          std::fill(row.begin(), row.end(), (uint8_t)128);
        }
        if (amx) {
          for (int64_t c = 0; c < K4 / 16; ++c) std::memcpy(blk + (c * MR + r) * 16, row.data() + 64 * c, 64);
          continue;
        }
        for (int64_t k4 = 0; k4 < K4; ++k4) {
          uint32_t w;
          std::memcpy(&w, row.data() + 4 * k4, 4);
          blk[k4 * MR + r] = w;
        }
      }
    }
  });
}

// Quantize x [M, K] and pack it into blocks of MR tokens: out[mb][k4][r] = 4 bytes (u8 = q + 128).
// On the AMX path (gemm_isa: K a multiple of 64) a block is instead [K/64][r][16 x 4 bytes]: token
// r's 64 columns of one tile are one 64-byte row, and each tile is 1 KB of contiguous memory.
// Padding (columns past K, tokens past M) is 128, i.e. q = 0, which contributes nothing.
// gelu_first: x is scratch that gets GELU in place, row by row, just before the row is quantized
// (the fused FFN's intermediate), while the row is in L1: cheaper than GELU in the up projection's
// epilogue, which writes the row out and reads it back. (quantize_pack_rows: any such step per row.)
void quantize_pack(int isa, float* x, int64_t M, int64_t K, int64_t MR, uint32_t* ap, float* s,
                   bool gelu_first = false) {
  quantize_pack_rows(isa, M, K, MR, ap, s, [&](int64_t m, float& amax) {
    if (gelu_first) amax = gelu_row_amax(isa, x + m * K, K);
    return (const float*)(x + m * K);
  });
}

// ------------------------------------------------------------------------------------------
// GEMM on packed activations and tile-layout weights.
// ------------------------------------------------------------------------------------------
struct GemmArgs {
  const uint32_t* ap;       // packed activations [MB][K4][MR]
  const float* s;           // activation scales [M]
  const uint64_t* wp;       // weight tiles [NT][K4][P]
  const int32_t* colsum128; // 128 * sum_k w[n, k], [NT * 16]
  const float* alpha;       // per-output scale [NT * 16]
  const float* bias;        // [NT * 16] (zeros when the layer has none)
  float* y;                 // [M, N]
  int64_t M, N, K4, NT, MR, P;
  int act;                  // ACT_NONE or ACT_GELU, applied in the epilogue
};

enum Act { ACT_NONE = 0, ACT_GELU = 1 };

// Coefficients of the vectorized exp and erf, shared by the AVX-512 and AVX2 paths (which differ only
// in vector width). exp: Cephes-style, x = n ln2 + r with ln2 split in two parts, p(r) of degree 7.
namespace poly {
constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kExp[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                           4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};  // highest first
// erf(x) = 1 - 1 / p(x)^16 for x >= 0, p of degree 6 (Abramowitz & Stegun 7.1.28, |error| <= 3e-7):
// no exp, one reciprocal, four squarings, about 20 vector operations for the GELU instead of 34 with
// 7.1.26 and its exp. GELU then differs from torch's float32 GELU by at most 1.5e-6 (torch's own
// float32 GELU is 1.2e-6 from the exact one; checked on 2 million points over [-12, 12]).
// |x| is clamped where the formula has reached 1 in float32 (p(4)^16 ~ 6e7, far from overflow).
constexpr float kErfSaturate = 4.0f;
constexpr float kErf[6] = {4.30638e-5f, 2.765672e-4f, 1.520143e-4f, 9.2705272e-3f, 4.22820123e-2f,
                           7.05230784e-2f};  // a6 .. a1, highest first
}  // namespace poly

// Exact (erf) GELU as torch computes it: x * 0.5 * (1 + erf(x / sqrt(2))).
inline float gelu_scalar(float x) { return x * 0.5f * (1.0f + std::erf(x * (float)M_SQRT1_2)); }

// Epilogue shared by the scalar and AVX2 paths: integer accumulator -> float output.
inline float finish(int32_t acc, int32_t c128, float s, float a, float b, int act) {
  float y = (float)(acc - c128) * s * a + b;
  return act == ACT_GELU ? gelu_scalar(y) : y;
}

void gemm_scalar_block(const GemmArgs& g, int64_t mb, int64_t t) {
  // Reference-speed path: decodes weight bits one by one. Correct everywhere, used when the CPU
  // has neither AVX2 nor AVX-512 (or when forced, for testing).
  const int64_t MR = g.MR, K4 = g.K4, P = g.P;
  const uint32_t* blk = g.ap + mb * K4 * MR;
  const uint64_t* wt = g.wp + t * K4 * P;
  for (int64_t r = 0; r < MR; ++r) {
    int64_t m = mb * MR + r;
    if (m >= g.M) break;
    int32_t acc[16] = {0};
    for (int64_t k4 = 0; k4 < K4; ++k4) {
      uint32_t a4 = blk[k4 * MR + r];
      uint64_t p0 = wt[k4 * P], p1 = P == 2 ? wt[k4 * P + 1] : 0;
      for (int j = 0; j < 64; ++j) {
        int32_t a = (int32_t)((a4 >> (8 * (j & 3))) & 0xff);
        int32_t w;
        if (P == 1) w = ((p0 >> j) & 1) ? 1 : -1;
        else w = ((p0 >> j) & 1) ? (((p1 >> j) & 1) ? -1 : 1) : 0;
        acc[j >> 2] += a * w;
      }
    }
    for (int i = 0; i < 16; ++i) {
      int64_t n = t * 16 + i;
      if (n >= g.N) break;
      g.y[m * g.N + n] = finish(acc[i], g.colsum128[n], g.s[m], g.alpha[n], g.bias[n], g.act);
    }
  }
}

#if XTC_X86
#define XTC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) inline

// Expand one 16 x 4 weight tile (its 64-bit planes) to 64 signed bytes in {-1, 0, +1}.
template <int P>
XTC_AVX512 __m512i expand_avx512(const uint64_t* planes) {
  const __m512i pos = _mm512_set1_epi8(1), neg = _mm512_set1_epi8(-1);
  __mmask64 m0 = _cvtu64_mask64(planes[0]);
  if (P == 1) return _mm512_mask_blend_epi8(m0, neg, pos);
  __mmask64 m1 = _cvtu64_mask64(planes[1]);
  return _mm512_mask_blend_epi8(m1, _mm512_maskz_mov_epi8(m0, pos), neg);
}

// exp(x) for x <= 0 (Cephes-style: 2^n * p(r), |r| <= ln2/2), about 1 ulp; underflows to 0.
XTC_AVX512 __m512 exp_neg_avx512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(poly::kLog2e)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(poly::kLn2Hi), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(poly::kLn2Lo), r);
  __m512 p = _mm512_set1_ps(poly::kExp[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(poly::kExp[i]));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

// erf by Abramowitz & Stegun 7.1.28 (see poly::kErf): 1 - 1 / p(|x|)^16, the sign of x.
XTC_AVX512 __m512 erf_avx512(__m512 x) {
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32((int)0x80000000u));
  const __m512 ax = _mm512_min_ps(_mm512_abs_ps(x), _mm512_set1_ps(poly::kErfSaturate));  // NaN -> bound
  const __m512 one = _mm512_set1_ps(1.f);
  __m512 p = _mm512_set1_ps(poly::kErf[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_fmadd_ps(p, ax, _mm512_set1_ps(poly::kErf[i]));
  p = _mm512_fmadd_ps(p, ax, one);
  for (int i = 0; i < 4; ++i) p = _mm512_mul_ps(p, p);  // p^16, in [1, 6e7]
  // 1 / p^16 by the 14-bit reciprocal and one Newton step (~1 ulp): a division costs several times
  // as much, and GELU runs on every element of the FFN's intermediate
  const __m512 r0 = _mm512_rcp14_ps(p);
  const __m512 r = _mm512_mul_ps(r0, _mm512_fnmadd_ps(p, r0, _mm512_set1_ps(2.f)));
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(_mm512_sub_ps(one, r)), sign));
}

XTC_AVX512 __m512 gelu_avx512(__m512 x) {
  const __m512 e = erf_avx512(_mm512_mul_ps(x, _mm512_set1_ps((float)M_SQRT1_2)));
  return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), _mm512_add_ps(_mm512_set1_ps(1.f), e));
}

// Epilogue of one 16-output tile for `rows` tokens from m0: acc[r][16] int32 ->
// (acc - 128 colsum) * s[m] * alpha[n] + bias[n] (then GELU), masked at the right and bottom edges.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void epilogue_avx512(const GemmArgs& g, int64_t m0,
                                                                           int64_t rows, int64_t n0,
                                                                           const int32_t* acc) {
  const int64_t valid = std::min<int64_t>(16, g.N - n0);
  if (valid <= 0) return;
  const __mmask16 nm = valid >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << valid) - 1);
  const __m512i c = _mm512_loadu_si512(g.colsum128 + n0);
  const __m512 al = _mm512_loadu_ps(g.alpha + n0), bi = _mm512_loadu_ps(g.bias + n0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t m = m0 + r;
    if (m >= g.M) break;
    __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(acc + 16 * r), c));
    v = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(g.s[m])), al);
    v = _mm512_add_ps(v, bi);
    if (g.act == ACT_GELU) v = gelu_avx512(v);
    _mm512_mask_storeu_ps(g.y + m * g.N + n0, nm, v);
  }
}

// MR tokens x NB tiles (16 outputs each). Accumulators stay in registers over the whole K.
template <int MR, int NB, int P>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void micro_avx512(const GemmArgs& g, int64_t mb,
                                                                        int64_t t0) {
  const int64_t K4 = g.K4;
  const uint32_t* blk = g.ap + mb * K4 * MR;
  const uint64_t* wt[NB];
  for (int b = 0; b < NB; ++b) wt[b] = g.wp + (t0 + b) * K4 * P;
  // Fully unrolled loops over compile-time bounds keep all MR x NB accumulators in registers;
  // they go to memory (buf) only once, after the K loop, so the epilogue can index them freely.
  __m512i acc[MR][NB];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_setzero_si512();
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    __m512i w[NB];
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) w[b] = expand_avx512<P>(wt[b] + k4 * P);
    const uint32_t* a4 = blk + k4 * MR;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512i a = _mm512_set1_epi32((int)a4[r]);
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) acc[r][b] = _mm512_dpbusd_epi32(acc[r][b], a, w[b]);
    }
  }
  alignas(64) int32_t buf[NB][MR][16];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int b = 0; b < NB; ++b) _mm512_store_si512((void*)buf[b][r], acc[r][b]);
  for (int b = 0; b < NB; ++b) epilogue_avx512(g, mb * MR, MR, (t0 + b) * 16, buf[b][0]);
}

__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t gelu_vec(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, gelu_avx512(_mm512_loadu_ps(x + i)));
  return i;
}

// GELU in place as gelu_row computes it, returning max |GELU(x)| as quantize_row would find it
// (-1 when not finite: quantize_row then looks for itself).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) float gelu_amax_vec(float* x, int64_t n) {
  __m512 vmax = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 g = gelu_avx512(_mm512_loadu_ps(x + i));
    _mm512_storeu_ps(x + i, g);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(g));
  }
  float amax = _mm512_reduce_max_ps(vmax);
  for (; i < n; ++i) {
    x[i] = gelu_scalar(x[i]);
    amax = std::fmax(amax, std::fabs(x[i]));
  }
  return std::isfinite(amax) ? amax : -1.f;
}

#define XTC_AVX2 __attribute__((target("avx2,fma"), always_inline)) inline

// AVX2 reads the same 64-bit tile as two 32-bit halves (outputs 0-7 and 8-15).
XTC_AVX2 __m256i bits_to_bytes_avx2(uint32_t h) {
  // byte j of the result is 0xff when bit j of h is set: spread byte j/8 of h to lane j, test bit j%8
  const __m256i shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                        2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i sel = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h), shuf);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, sel), sel);
}

template <int P>
XTC_AVX2 __m256i expand_avx2(const uint64_t* planes, int half) {
  const __m256i one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
  __m256i e0 = bits_to_bytes_avx2((uint32_t)(planes[0] >> (32 * half)));
  if (P == 1) return _mm256_sub_epi8(_mm256_and_si256(e0, two), one);  // set: 2-1 = +1, clear: -1
  __m256i e1 = bits_to_bytes_avx2((uint32_t)(planes[1] >> (32 * half)));
  return _mm256_or_si256(_mm256_and_si256(e0, one), e1);  // nonzero: +1, negative: 0xff = -1
}

// exp, erf and GELU as the AVX-512 path computes them (same polynomials), 8 lanes at a time.
XTC_AVX2 __m256 exp_neg_avx2(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));  // 2^n stays a normal float (no scalef on AVX2)
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(poly::kLog2e)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(poly::kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(poly::kLn2Lo), r);
  __m256 p = _mm256_set1_ps(poly::kExp[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(poly::kExp[i]));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n));
}

XTC_AVX2 __m256 erf_avx2(__m256 x) {
  const __m256 signbit = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
  const __m256 sign = _mm256_and_ps(x, signbit), one = _mm256_set1_ps(1.f);
  const __m256 ax = _mm256_min_ps(_mm256_andnot_ps(signbit, x), _mm256_set1_ps(poly::kErfSaturate));  // NaN -> bound
  __m256 p = _mm256_set1_ps(poly::kErf[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, ax, _mm256_set1_ps(poly::kErf[i]));
  p = _mm256_fmadd_ps(p, ax, one);
  for (int i = 0; i < 4; ++i) p = _mm256_mul_ps(p, p);
  return _mm256_xor_ps(_mm256_sub_ps(one, _mm256_div_ps(one, p)), sign);
}

XTC_AVX2 __m256 gelu_avx2(__m256 x) {
  const __m256 e = erf_avx2(_mm256_mul_ps(x, _mm256_set1_ps((float)M_SQRT1_2)));
  return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), _mm256_add_ps(_mm256_set1_ps(1.f), e));
}

__attribute__((target("avx2,fma"))) int64_t gelu_vec_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, gelu_avx2(_mm256_loadu_ps(x + i)));
  return i;
}

// AVX2 has no masked byte blend, so expanding bits to bytes takes about six instructions per half
// tile. The AVX2 path therefore expands one tile (16 outputs x all of K) once into a small per-thread
// buffer of signed bytes (K * 16 bytes: 24 KB for K = 1536) and reuses it for every token block of the
// task, instead of expanding it again for each block of MR tokens. Memory stays packed; the buffer
// is scratch.
template <int P>
__attribute__((target("avx2,fma"))) void expand_tile_avx2(const uint64_t* wt, int64_t K4, int8_t* out) {
  for (int64_t k4 = 0; k4 < K4; ++k4) {
    _mm256_store_si256((__m256i*)(out + 64 * k4), expand_avx2<P>(wt + k4 * P, 0));
    _mm256_store_si256((__m256i*)(out + 64 * k4 + 32), expand_avx2<P>(wt + k4 * P, 1));
  }
}

// Without VNNI, u8 x s8 products go through vpmaddubsw (pairs -> int16). With weights in {-1, 0, +1}
// each int16 lane gains at most 2 * 255 = 510 per step, so 64 steps (32640) fit in int16: the int16
// sums are widened to int32 (vpmaddwd) once per 64 steps instead of at every step, which halves the
// multiply-port work of the inner loop.
constexpr int64_t kInt16Steps = 64;

template <int MR>
__attribute__((target("avx2,fma"))) void micro_avx2(const GemmArgs& g, int64_t mb, int64_t t, const int8_t* we) {
  const int64_t K4 = g.K4;
  const uint32_t* blk = g.ap + mb * K4 * MR;
  const __m256i ones16 = _mm256_set1_epi16(1);
  alignas(32) int32_t buf[MR][16] = {};
  for (int64_t k0 = 0; k0 < K4; k0 += kInt16Steps) {
    const int64_t k1 = std::min(K4, k0 + kInt16Steps);
    __m256i acc[MR][2];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    // two steps per iteration: gcc then keeps the accumulators in place instead of copying them
    // around every step (about 10% faster on Zen 3)
#pragma GCC unroll 2
    for (int64_t k4 = k0; k4 < k1; ++k4) {
      const __m256i w0 = _mm256_load_si256((const __m256i*)(we + 64 * k4));
      const __m256i w1 = _mm256_load_si256((const __m256i*)(we + 64 * k4 + 32));
      const uint32_t* a4 = blk + k4 * MR;
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const __m256i a = _mm256_set1_epi32((int)a4[r]);
        acc[r][0] = _mm256_add_epi16(acc[r][0], _mm256_maddubs_epi16(a, w0));
        acc[r][1] = _mm256_add_epi16(acc[r][1], _mm256_maddubs_epi16(a, w1));
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      __m256i* b = (__m256i*)buf[r];
      _mm256_store_si256(b, _mm256_add_epi32(_mm256_load_si256(b), _mm256_madd_epi16(acc[r][0], ones16)));
      _mm256_store_si256(b + 1, _mm256_add_epi32(_mm256_load_si256(b + 1), _mm256_madd_epi16(acc[r][1], ones16)));
    }
  }
  // Epilogue: (acc - 128 colsum) * s[m] * alpha[n] + bias[n]; the right edge (N % 8) in scalar code.
  const int64_t n0 = t * 16, valid = std::min<int64_t>(16, g.N - n0);
  for (int r = 0; r < MR; ++r) {
    const int64_t m = mb * MR + r;
    if (m >= g.M) break;
    float* y = g.y + m * g.N + n0;
    int64_t i = 0;
    for (; i + 8 <= valid; i += 8) {
      const __m256i c = _mm256_loadu_si256((const __m256i*)(g.colsum128 + n0 + i));
      __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_load_si256((const __m256i*)(buf[r] + i)), c));
      v = _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(g.s[m])), _mm256_loadu_ps(g.alpha + n0 + i));
      v = _mm256_add_ps(v, _mm256_loadu_ps(g.bias + n0 + i));
      if (g.act == ACT_GELU) v = gelu_avx2(v);
      _mm256_storeu_ps(y + i, v);
    }
    for (; i < valid; ++i)
      y[i] = finish(buf[r][i], g.colsum128[n0 + i], g.s[m], g.alpha[n0 + i], g.bias[n0 + i], g.act);
  }
}

// ------------------------------------------------------------------------------------------
// AMX: tiles of 16 tokens x 64 inputs (A, from quantize_pack's AMX blocks) times 64 inputs x 16
// outputs (B, expanded from 16 weight masks), summed into 16 x 16 int32 tiles (C). Eight tile
// registers: C 0-3 (2 token blocks x 2 weight tiles), A 4-5, B 6-7.
// ------------------------------------------------------------------------------------------
struct alignas(64) TileConfig {
  uint8_t palette_id = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

TileConfig make_tile_config() {
  TileConfig cfg;
  for (int i = 0; i < 8; ++i) cfg.colsb[i] = 64, cfg.rows[i] = 16;
  return cfg;
}
// A global, not a local: gcc 12 drops the stores into a local config as dead (it does not see
// ldtilecfg read them), and ldtilecfg then faults on the garbage.
const TileConfig kTileConfig = make_tile_config();

__attribute__((target("amx-tile"))) void amx_configure() { _tile_loadconfig(&kTileConfig); }

__attribute__((target("amx-tile"))) void amx_release() { _tile_release(); }

// Expand the weight masks of tiles [t0, t0 + nt) over all of K into B tiles: out[c][b] is the 1 KB
// tile of K columns 64c..64c+63 and tile t0 + b, row k4 = the 64 bytes of mask (t0 + b, 16c + k4).
template <int P>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void expand_panel_amx(const GemmArgs& g, int64_t t0,
                                                                            int64_t nt, int8_t* out) {
  const int64_t KC = g.K4 / 16;
  for (int64_t c = 0; c < KC; ++c)
    for (int64_t b = 0; b < nt; ++b) {
      const uint64_t* w = g.wp + ((t0 + b) * g.K4 + 16 * c) * P;
      int8_t* tile = out + (c * nt + b) * 1024;
#pragma GCC unroll 16
      for (int r = 0; r < 16; ++r) _mm512_store_si512((void*)(tile + 64 * r), expand_avx512<P>(w + r * P));
    }
}

// NM token blocks (16 tokens each, from mb) x NN weight tiles (from t0) over all of K. ST: the token
// tiles are loaded with the streaming (non-temporal) hint.
template <int NM, int NN, bool ST>
__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vnni"))) void amx_block(
    const GemmArgs& g, int64_t mb, int64_t t0, const int8_t* bexp, int64_t nt) {
  const int64_t KC = g.K4 / 16;
  const int8_t* a0 = (const int8_t*)(g.ap + mb * g.K4 * 16);
  const int8_t* a1 = a0 + g.K4 * 64;  // the next block of 16 tokens
  _tile_zero(0);
  if (NN > 1) _tile_zero(1);
  if (NM > 1) _tile_zero(2);
  if (NM > 1 && NN > 1) _tile_zero(3);
  for (int64_t c = 0; c < KC; ++c) {
    if (ST) _tile_stream_loadd(4, a0 + 1024 * c, 64); else _tile_loadd(4, a0 + 1024 * c, 64);
    _tile_loadd(6, bexp + 1024 * (c * nt), 64);
    _tile_dpbusd(0, 4, 6);
    if (NN > 1) {
      _tile_loadd(7, bexp + 1024 * (c * nt + 1), 64);
      _tile_dpbusd(1, 4, 7);
    }
    if (NM > 1) {
      if (ST) _tile_stream_loadd(5, a1 + 1024 * c, 64); else _tile_loadd(5, a1 + 1024 * c, 64);
      _tile_dpbusd(2, 5, 6);
      if (NN > 1) _tile_dpbusd(3, 5, 7);
    }
  }
  alignas(64) int32_t buf[4][16 * 16];
  _tile_stored(0, buf[0], 64);
  if (NN > 1) _tile_stored(1, buf[1], 64);
  if (NM > 1) _tile_stored(2, buf[2], 64);
  if (NM > 1 && NN > 1) _tile_stored(3, buf[3], 64);
  for (int i = 0; i < NM; ++i)
    for (int j = 0; j < NN; ++j) epilogue_avx512(g, (mb + i) * 16, 16, (t0 + j) * 16, buf[2 * i + j]);
}

// Token blocks [mb0, mb1) of column blocks [cb0, cb1) (column block cb: weight tiles 2cb, 2cb + 1). Each
// column block's weights are expanded once into a per-thread buffer (K x 32 bytes: 96 KB for K = 3072)
// and reused by every token block. Two buffers: the next column block is expanded before the current
// one is multiplied, so the tile loads read bytes that the vector stores wrote a whole column block
// earlier (tile loads get nothing forwarded from vector stores, and waited on the fresh ones: 128 x 768
// -> 3072 spent a fifth of its time there).
AlignedScratch& amx_panels() {  // per thread, shared by both instantiations below
  thread_local AlignedScratch scratch;
  return scratch;
}

template <bool ST>
void gemm_cols_amx_t(const GemmArgs& g, int64_t mb0, int64_t mb1, int64_t cb0, int64_t cb1) {
  const int64_t panel = g.K4 * 64 * 2;
  int8_t* buf = amx_panels().get(2 * panel);
  const auto expand = [&](int64_t cb, int8_t* out) {
    const int64_t t0 = 2 * cb, nt = std::min<int64_t>(2, g.NT - t0);
    g.P == 1 ? expand_panel_amx<1>(g, t0, nt, out) : expand_panel_amx<2>(g, t0, nt, out);
  };
  expand(cb0, buf);
  amx_configure();
  for (int64_t cb = cb0; cb < cb1; ++cb) {
    const int8_t* bexp = buf + ((cb - cb0) & 1) * panel;
    if (cb + 1 < cb1) expand(cb + 1, buf + ((cb - cb0 + 1) & 1) * panel);
    const int64_t t0 = 2 * cb, nt = std::min<int64_t>(2, g.NT - t0);
    int64_t mb = mb0;
    for (; mb + 2 <= mb1; mb += 2)
      nt == 2 ? amx_block<2, 2, ST>(g, mb, t0, bexp, nt) : amx_block<2, 1, ST>(g, mb, t0, bexp, nt);
    if (mb < mb1) nt == 2 ? amx_block<1, 2, ST>(g, mb, t0, bexp, nt) : amx_block<1, 1, ST>(g, mb, t0, bexp, nt);
  }
  amx_release();
}

// The token tiles (A) are loaded with the streaming hint when they cannot stay in L1 anyway (more
// than 64 KB of them) and a column block's expanded weights can (K <= 1024: 2 x 32 KB at most): the
// weights then stay in L1 while the tokens pass by from L2 (BERT-base, 128 tokens: 768 -> 3072 and
// 768 -> 768 products 0.78-0.80x the time). With K = 3072 (the FFN's down projection) the weights
// are in L2 either way, and the hint made the fused FFN slower; MiniLM's 128 x 384 is 48 KB: no change.
void gemm_cols_amx(const GemmArgs& g, int64_t mb0, int64_t mb1, int64_t cb0, int64_t cb1) {
  const bool stream = g.K4 * 4 <= 1024 && (mb1 - mb0) * 16 * g.K4 * 4 > (64 << 10);
  stream ? gemm_cols_amx_t<true>(g, mb0, mb1, cb0, cb1) : gemm_cols_amx_t<false>(g, mb0, mb1, cb0, cb1);
}
#endif

// One (row block, column block) unit of work, on whichever path the ISA selects.
inline void gemm_block(int isa, const GemmArgs& g, int64_t mb, int64_t cb) {
#if XTC_X86
  if (isa == ISA_AVX512) {
    const int64_t t = cb * XTC_NB;
    if (t + XTC_NB <= g.NT) {
      g.P == 1 ? micro_avx512<XTC_MR, XTC_NB, 1>(g, mb, t) : micro_avx512<XTC_MR, XTC_NB, 2>(g, mb, t);
    } else {  // the last, narrower column block: one tile at a time
      for (int64_t u = t; u < g.NT; ++u)
        g.P == 1 ? micro_avx512<XTC_MR, 1, 1>(g, mb, u) : micro_avx512<XTC_MR, 1, 2>(g, mb, u);
    }
    return;
  }
#endif
  gemm_scalar_block(g, mb, cb);
}

// Row blocks [mb0, mb1) of one column block on the AVX-512, AVX2 and scalar paths (AMX pipelines
// several column blocks: gemm_cols sends it to gemm_cols_amx).
void gemm_rows(int isa, const GemmArgs& g, int64_t mb0, int64_t mb1, int64_t cb) {
#if XTC_X86
  if (isa == ISA_AVX2) {
    thread_local AlignedScratch scratch;  // per thread, kept between calls
    int8_t* expanded = scratch.get(g.K4 * 64);
    g.P == 1 ? expand_tile_avx2<1>(g.wp + cb * g.K4, g.K4, expanded)
             : expand_tile_avx2<2>(g.wp + cb * g.K4 * 2, g.K4, expanded);
    for (int64_t mb = mb0; mb < mb1; ++mb) micro_avx2<XTC_MR_AVX2>(g, mb, cb, expanded);
    return;
  }
#endif
  for (int64_t mb = mb0; mb < mb1; ++mb) gemm_block(isa, g, mb, cb);
}

// Work split: tasks are (linear, chunk of row blocks, column block); a thread takes a contiguous
// range, so it reuses one column block's weights (a few KB, in L1) over a chunk of tokens (in L2).
// Several linears sharing an input (query, key, value) go in one parallel region: every region
// ends in a barrier, and on a busy machine each barrier can wait for a preempted thread.
// Chunks of 256 tokens on AVX-512 (16 blocks of 16); 1024 on AMX, which expands the weights of a
// column block once per chunk (BERT-base at batch 32: 2-3 % faster than 256); 32 on AVX2 (8 blocks of
// 4): with 2 threads on a 2-vCPU VM, larger AVX2 chunks left one thread idle on 128-token inputs
// (1 thread: the same either way).
int64_t chunk_blocks(int isa) { return isa == ISA_AVX2 ? 8 : isa == ISA_AMX ? 64 : 16; }

// Row blocks [mb0, mb1) of column blocks [cb0, cb1).
void gemm_cols(int isa, const GemmArgs& g, int64_t mb0, int64_t mb1, int64_t cb0, int64_t cb1) {
#if XTC_X86
  if (isa == ISA_AMX) return gemm_cols_amx(g, mb0, mb1, cb0, cb1);
#endif
  for (int64_t cb = cb0; cb < cb1; ++cb) gemm_rows(isa, g, mb0, mb1, cb);
}

void gemm_multi(int isa, const std::vector<GemmArgs>& gs) {
  std::vector<int64_t> first(gs.size() + 1, 0);  // first task of each linear
  for (size_t i = 0; i < gs.size(); ++i) {
    const int64_t MB = ceil_div(gs[i].M, gs[i].MR);
    first[i + 1] = first[i] + ceil_div(MB, chunk_blocks(isa)) * ceil_div(gs[i].NT, tiles_per_block(isa));
  }
  at::parallel_for(0, first.back(), 1, [&](int64_t t0, int64_t t1) {
    size_t i = 0;
    for (int64_t task = t0; task < t1;) {
      while (task >= first[i + 1]) ++i;
      const GemmArgs& g = gs[i];
      const int64_t NCB = ceil_div(g.NT, tiles_per_block(isa));
      const int64_t local = task - first[i], c = local / NCB, cb = local % NCB;
      const int64_t mb_end = std::min(ceil_div(g.M, g.MR), (c + 1) * chunk_blocks(isa));
      // this thread's consecutive column blocks of one chunk of one linear, in one call
      const int64_t cb_end = std::min(NCB, cb + (t1 - task));
      gemm_cols(isa, g, c * chunk_blocks(isa), mb_end, cb, cb_end);
      task += cb_end - cb;
    }
  });
}

void gemm(int isa, const GemmArgs& g) { gemm_multi(isa, {g}); }

// ------------------------------------------------------------------------------------------
// Python-facing functions.
// ------------------------------------------------------------------------------------------
// Time spent in the linears' work (activation quantization, GEMMs, the fused FFN), summed when
// switched on: the benchmark's "integer multiply-accumulates per second" of a whole forward, whose
// blocks run in one call (encoder_block). Off: one branch per call.
bool g_timing = false;
double g_linear_seconds = 0.0;

struct LinearTimer {
  std::chrono::steady_clock::time_point t0;
  LinearTimer() { if (g_timing) t0 = std::chrono::steady_clock::now(); }
  ~LinearTimer() {
    if (g_timing) g_linear_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
};

// Switch the timing on (and reset it) or off; returns the seconds summed since it was last reset.
double time_linears(bool on) {
  const double spent = g_linear_seconds;
  g_timing = on;
  g_linear_seconds = 0.0;
  return spent;
}

void check_weights(const torch::Tensor& wp, const torch::Tensor& colsum128, const torch::Tensor& alpha,
                   const torch::Tensor& bias, int64_t N) {
  TORCH_CHECK(wp.dim() == 3 && wp.scalar_type() == torch::kInt64 && wp.is_contiguous(),
              "xtc kernel: weight tiles must be a contiguous int64 [tiles, K/4, planes] tensor");
  TORCH_CHECK(wp.size(2) == 1 || wp.size(2) == 2, "xtc kernel: 1 (binary) or 2 (ternary) planes");
  const int64_t np = wp.size(0) * 16;
  TORCH_CHECK(N > 0 && N <= np, "xtc kernel: out_features does not match the weight tiles");
  for (const torch::Tensor* t : {&colsum128, &alpha, &bias})
    TORCH_CHECK(t->dim() == 1 && t->numel() == np && t->is_contiguous(),
                "xtc kernel: colsum/alpha/bias must be contiguous with tiles*16 entries");
  TORCH_CHECK(colsum128.scalar_type() == torch::kInt32, "xtc kernel: colsum128 must be int32");
  TORCH_CHECK(alpha.scalar_type() == torch::kFloat32 && bias.scalar_type() == torch::kFloat32,
              "xtc kernel: alpha and bias must be float32");
}

// Quantize and pack activations once; the result can feed several linears with the same input
// (query, key and value). Returns (packed activations, scales [M]).
std::vector<torch::Tensor> pack_activations(torch::Tensor x) {
  LinearTimer timer;
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "xtc kernel: x must be float32 [M, K]");
  x = x.contiguous();
  const int isa = active_isa();
  const int64_t M = x.size(0), K = x.size(1), MR = block_rows(isa);
  auto ap = torch::empty({ceil_div(M, MR), ceil_div(K, 4), MR}, torch::kInt32);
  auto s = torch::empty({M}, torch::kFloat32);
  quantize_pack(isa, x.data_ptr<float>(), M, K, MR, (uint32_t*)ap.data_ptr<int32_t>(), s.data_ptr<float>());
  return {ap, s};
}

GemmArgs make_args(const torch::Tensor& ap, const torch::Tensor& s, const torch::Tensor& wp, const torch::Tensor& c,
                   const torch::Tensor& alpha, const torch::Tensor& bias, int64_t N, int64_t act, torch::Tensor& y) {
  check_weights(wp, c, alpha, bias, N);
  const int64_t MR = block_rows(active_isa());
  TORCH_CHECK(ap.dim() == 3 && ap.size(2) == MR && ap.scalar_type() == torch::kInt32,
              "xtc kernel: packed activations come from pack_activations (with the same ISA)");
  TORCH_CHECK(ap.size(1) == wp.size(1), "xtc kernel: in_features of x and weight differ");
  const int64_t M = s.numel();
  TORCH_CHECK(ap.size(0) == ceil_div(M, MR), "xtc kernel: scales do not match the packed activations");
  y = torch::empty({M, N}, torch::kFloat32);
  return GemmArgs{(const uint32_t*)ap.data_ptr<int32_t>(), s.data_ptr<float>(), (const uint64_t*)wp.data_ptr<int64_t>(),
                  c.data_ptr<int32_t>(), alpha.data_ptr<float>(), bias.data_ptr<float>(), y.data_ptr<float>(),
                  M, N, wp.size(1), wp.size(0), MR, wp.size(2), (int)act};
}

torch::Tensor linear_packed(torch::Tensor ap, torch::Tensor s, torch::Tensor wp, torch::Tensor colsum128,
                            torch::Tensor alpha, torch::Tensor bias, int64_t N, int64_t act) {
  LinearTimer timer;
  torch::Tensor y;
  GemmArgs g = make_args(ap, s, wp, colsum128, alpha, bias, N, act, y);
  if (g.M > 0) gemm(gemm_isa(active_isa(), 4 * g.K4), g);
  return y;
}

// A packed linear's tensors as Python hands them over: (tiles, colsum128, alpha, bias, out_features, act).
struct Weights {
  torch::Tensor wp, c, alpha, bias;
  int64_t N, act;
};

Weights weights_of(const py::tuple& w) {
  TORCH_CHECK(w.size() == 6, "xtc kernel: a weight is (tiles, colsum128, alpha, bias, out_features, act)");
  return {w[0].cast<torch::Tensor>(), w[1].cast<torch::Tensor>(), w[2].cast<torch::Tensor>(),
          w[3].cast<torch::Tensor>(), w[4].cast<int64_t>(), w[5].cast<int64_t>()};
}

// Several linears on the same packed input, in one parallel region.
std::vector<torch::Tensor> linears(const torch::Tensor& ap, const torch::Tensor& s, const std::vector<Weights>& ws) {
  LinearTimer timer;
  std::vector<torch::Tensor> ys(ws.size());
  std::vector<GemmArgs> gs;
  for (size_t i = 0; i < ws.size(); ++i)
    gs.push_back(make_args(ap, s, ws[i].wp, ws[i].c, ws[i].alpha, ws[i].bias, ws[i].N, ws[i].act, ys[i]));
  if (s.numel() > 0) gemm_multi(gemm_isa(active_isa(), 4 * ap.size(1)), gs);
  return ys;
}

std::vector<torch::Tensor> linear_multi(torch::Tensor ap, torch::Tensor s, std::vector<py::tuple> weights) {
  std::vector<Weights> ws;
  for (const py::tuple& w : weights) ws.push_back(weights_of(w));
  return linears(ap, s, ws);
}

torch::Tensor linear(torch::Tensor x, torch::Tensor wp, torch::Tensor colsum128, torch::Tensor alpha,
                     torch::Tensor bias, int64_t N, int64_t act) {
  auto packed = pack_activations(x);
  return linear_packed(packed[0], packed[1], wp, colsum128, alpha, bias, N, act);
}

// Fused feed-forward block: y = down(act(up(x))), both linears W1A8/W2A8.
// Activations are quantized per token, so the block can run on chunks of tokens: the intermediate
// (tokens x 4 hidden) then lives in one small buffer reused chunk after chunk instead of a large
// tensor written, read back, activated and re-quantized as separate passes.
torch::Tensor ffn_packed(torch::Tensor ap, torch::Tensor s, torch::Tensor wp1, torch::Tensor c1,
                         torch::Tensor a1, torch::Tensor b1, int64_t N1, torch::Tensor wp2, torch::Tensor c2,
                         torch::Tensor a2, torch::Tensor b2, int64_t N2, int64_t act) {
  LinearTimer timer;
  check_weights(wp1, c1, a1, b1, N1);
  check_weights(wp2, c2, a2, b2, N2);
  const int isa = active_isa();
  const int isa1 = gemm_isa(isa, 4 * wp1.size(1)), isa2 = gemm_isa(isa, 4 * wp2.size(1));
  const int64_t MR = block_rows(isa);
  TORCH_CHECK(ap.dim() == 3 && ap.size(2) == MR && ap.scalar_type() == torch::kInt32 && ap.size(1) == wp1.size(1),
              "xtc kernel: packed activations do not fit the first linear");
  TORCH_CHECK(wp2.size(1) == ceil_div(N1, 4), "xtc kernel: the second linear must take the first one's output");
  const int64_t M = s.numel();
  TORCH_CHECK(ap.size(0) == ceil_div(M, MR), "xtc kernel: scales do not match the packed activations");
  auto y = torch::empty({M, N2}, torch::kFloat32);
  if (M == 0) return y;
  // Each thread runs whole chunks of tokens through both linears: one parallel region, no barrier
  // in between. Chunks small enough that every thread gets one.
  const int64_t MB = ceil_div(M, MR);
  // Chunks of 128 tokens; 512 for BERT-base-sized weights and up, whose expansion to int8 tiles
  // (AMX, once per chunk) otherwise costs more than the larger intermediate does (BERT-base, batch 32:
  // 5 % faster with 512 than with 128 or 1024; MiniLM-L6: 128 is best).
  const bool large = 4 * wp1.size(1) * N1 >= (1 << 21);
  const int64_t chunk = large ? 512 : 128;
  const int64_t threads = at::get_num_threads(), K4b = wp2.size(1);
  const uint32_t* apd = (const uint32_t*)ap.data_ptr<int32_t>();
  // the two linears on `rows` tokens: up from packed input a (scales sa) into h (GELU is applied by the
  // re-quantization), down from the re-quantized h into out
  const auto up_args = [&](const uint32_t* a, const float* sa, float* h, int64_t rows) {
    return GemmArgs{a, sa, (const uint64_t*)wp1.data_ptr<int64_t>(), c1.data_ptr<int32_t>(), a1.data_ptr<float>(),
                    b1.data_ptr<float>(), h, rows, N1, wp1.size(1), wp1.size(0), MR, wp1.size(2), ACT_NONE};
  };
  const auto down_args = [&](const uint32_t* hp, const float* hs, float* out, int64_t rows) {
    return GemmArgs{hp, hs, (const uint64_t*)wp2.data_ptr<int64_t>(), c2.data_ptr<int32_t>(), a2.data_ptr<float>(),
                    b2.data_ptr<float>(), out, rows, N2, wp2.size(1), wp2.size(0), MR, wp2.size(2), ACT_NONE};
  };
  if (large && threads > 1 && M <= chunk * (threads - 1)) {
    // Fewer full chunks than threads (batch 1): chunks of M / threads tokens would make every thread
    // expand all of both weight matrices. Instead the threads share each linear's column blocks (each
    // expands its share once), with the re-quantization in between: two more barriers (BERT-base,
    // 2 threads, batch 1: 0.97x the model time; MiniLM-sized weights: 1.11x, so they keep the chunks).
    auto h = torch::empty({M, N1}, torch::kFloat32);
    auto hp = torch::empty({MB, K4b, MR}, torch::kInt32);
    auto hs = torch::empty({M}, torch::kFloat32);
    uint32_t* hpd = (uint32_t*)hp.data_ptr<int32_t>();
    gemm(isa1, up_args(apd, s.data_ptr<float>(), h.data_ptr<float>(), M));
    quantize_pack(isa, h.data_ptr<float>(), M, N1, MR, hpd, hs.data_ptr<float>(), act == ACT_GELU);
    gemm(isa2, down_args(hpd, hs.data_ptr<float>(), y.data_ptr<float>(), M));
    return y;
  }
  const int64_t CB = std::max<int64_t>(1, std::min<int64_t>(chunk / MR, ceil_div(MB, threads)));
  const int64_t CM = CB * MR;
  at::parallel_for(0, ceil_div(MB, CB), 1, [&](int64_t q0, int64_t q1) {
    // Per-thread scratch, kept between calls (OpenMP threads persist): the intermediate of one chunk.
    // 64-byte aligned (a std::vector's large buffers are 16-byte aligned: every 64-byte store of the
    // up projection's epilogue and every tile row the down projection loads then spans two cache lines)
    thread_local AlignedScratch h_mem, hs_mem, hp_mem;
    float* h = (float*)h_mem.get(CM * N1 * sizeof(float));
    float* hs = (float*)hs_mem.get(CM * sizeof(float));
    uint32_t* hp = (uint32_t*)hp_mem.get(CB * K4b * MR * sizeof(uint32_t));
    for (int64_t c = q0; c < q1; ++c) {
      const int64_t m0 = c * CM, rows = std::min(CM, M - m0);
      const GemmArgs g1 = up_args(apd + c * CB * ap.size(1) * MR, s.data_ptr<float>() + m0, h, rows);
      // column block outer: its weight tiles stay in L1 while the chunk's tokens (in L2) pass by
      gemm_cols(isa1, g1, 0, ceil_div(rows, MR), 0, ceil_div(g1.NT, tiles_per_block(isa1)));
      quantize_pack(isa, h, rows, N1, MR, hp, hs, act == ACT_GELU);  // nested: this thread
      const GemmArgs g2 = down_args(hp, hs, y.data_ptr<float>() + m0 * N2, rows);
      gemm_cols(isa2, g2, 0, ceil_div(rows, MR), 0, ceil_div(g2.NT, tiles_per_block(isa2)));
    }
  });
  return y;
}


// ------------------------------------------------------------------------------------------
// The float parts of a block on AVX-512 (used on the AVX-512 and AMX paths; the lean forward
// takes torch's own operators elsewhere): attention and residual + LayerNorm. They compute what
// torch computes, in another order of float operations (so to float rounding, not to the bit).
// ------------------------------------------------------------------------------------------
#if XTC_X86
// Attention of one (sequence, head): q, k, v rows of D floats with row stride ld (the [tokens,
// heads * D] outputs of the projections, already offset to this head), into out (same layout).
// scores = q k^T * scale (+ bias) (+ mask), softmax over keys, times v. Scores are computed for
// 4 queries x 64 keys at a time from K transposed (kt: D x tp, in L1), the context for 8 queries x
// 32 head columns at a time from rows of v.
struct AttnArgs {
  const float *q, *k, *v;
  float* out;
  int64_t t, D, ld;
  float scale;
  const float* bias;  // [t, t] or nullptr (added after scaling: MPNet's relative-position bias)
  const float* mask;  // additive [t or 1 rows, t] (row stride mask_ld; 0 for one row), or nullptr
  const bool* keep;   // boolean [.., t] as mask (true = attend), or nullptr
  int64_t mask_ld;
};

#define XTC_AVX512_VL __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"), always_inline)) inline

// Scores of 4 queries (from i0; rows past t repeat the last) x all keys, scaled, into p[4][tp].
XTC_AVX512_VL void attention_scores_avx512(const AttnArgs& a, const float* kt, int64_t tp, int64_t i0, float* p) {
  const __m512 vscale = _mm512_set1_ps(a.scale);
  const float* qr[4];
  for (int r = 0; r < 4; ++r) qr[r] = a.q + std::min<int64_t>(i0 + r, a.t - 1) * a.ld;
  for (int64_t j0 = 0; j0 < tp; j0 += 64) {
    __m512 acc[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) acc[r][u] = _mm512_setzero_ps();
    for (int64_t c = 0; c < a.D; ++c) {
      const float* kc = kt + c * tp + j0;
      const __m512 k0 = _mm512_load_ps(kc), k1 = _mm512_load_ps(kc + 16), k2 = _mm512_load_ps(kc + 32),
                   k3 = _mm512_load_ps(kc + 48);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        const __m512 qv = _mm512_set1_ps(qr[r][c]);
        acc[r][0] = _mm512_fmadd_ps(qv, k0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(qv, k1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(qv, k2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(qv, k3, acc[r][3]);
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < 4; ++r)
#pragma GCC unroll 4
      for (int u = 0; u < 4; ++u) _mm512_store_ps(p + r * tp + j0 + 16 * u, _mm512_mul_ps(acc[r][u], vscale));
  }
}

// Bias, mask and exponentials of R queries' scores (rows p[r][tp], query min(i0 + r, t - 1)) in
// place, unnormalised (keys past t: 0); inv[r] = 1 / the row's sum, which the context applies.
// R rows at a time: the row maxima and sums are chains of dependent operations (two horizontal
// reductions and a division per row), and R independent rows keep the core busy meanwhile
// (one row at a time, the softmax took half of the attention of 128 tokens).
template <int R>
XTC_AVX512_VL void attention_softmax_avx512(const AttnArgs& a, int64_t i0, int64_t tp, float* p, float* inv) {
  const int64_t t = a.t;
  const __m512 ninf = _mm512_set1_ps(-INFINITY);
  int64_t qi[R];
  __m512 vmax[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) qi[r] = std::min<int64_t>(i0 + r, t - 1), vmax[r] = ninf;
  for (int64_t j = 0; j < tp; j += 16) {
    const __mmask16 in = t - j >= 16 ? (__mmask16)0xffff : t > j ? (__mmask16)((1u << (t - j)) - 1) : 0;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float* pr = p + r * tp;
      __m512 sv = _mm512_mask_mov_ps(ninf, in, _mm512_load_ps(pr + j));
      if (a.bias) sv = _mm512_add_ps(sv, _mm512_maskz_loadu_ps(in, a.bias + qi[r] * t + j));
      if (a.mask) sv = _mm512_add_ps(sv, _mm512_maskz_loadu_ps(in, a.mask + qi[r] * a.mask_ld + j));
      if (a.keep) {
        const __m128i kb = _mm_maskz_loadu_epi8(in, a.keep + qi[r] * a.mask_ld + j);
        sv = _mm512_mask_mov_ps(ninf, _mm_test_epi8_mask(kb, kb), sv);
      }
      _mm512_store_ps(pr + j, sv);
      vmax[r] = _mm512_max_ps(vmax[r], sv);
    }
  }
  __m512 vm[R], vsum[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const float mx = _mm512_reduce_max_ps(vmax[r]);
    // every key masked: no attention at all (exp(-inf - 0) = 0: zeros, not NaN)
    vm[r] = _mm512_set1_ps(mx == -INFINITY ? 0.f : mx);
    vsum[r] = _mm512_setzero_ps();
  }
  const __m512 floor = _mm512_set1_ps(-87.f);
  for (int64_t j = 0; j < tp; j += 16) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      // exp of what float32 holds as a normal number; below that (masked keys included) exactly 0
      float* pr = p + r * tp;
      const __m512 x = _mm512_sub_ps(_mm512_load_ps(pr + j), vm[r]);
      const __m512 e = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, floor, _CMP_GE_OQ), exp_neg_avx512(x));
      _mm512_store_ps(pr + j, e);
      vsum[r] = _mm512_add_ps(vsum[r], e);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const float sum = _mm512_reduce_add_ps(vsum[r]);
    inv[r] = sum > 0.f ? 1.f / sum : 0.f;
  }
}

// Context of RB queries = (p v) * inv (rows of p: unnormalised), ND vectors of 16 floats per head row; RB * ND = 16
// accumulators in registers.
template <int RB, int ND>
XTC_AVX512_VL void attention_context_avx512(const AttnArgs& a, const float* p, const float* inv, int64_t tp,
                                            int64_t i0, int64_t d0) {
  __m512 acc[RB][ND];
#pragma GCC unroll 8
  for (int r = 0; r < RB; ++r)
#pragma GCC unroll 4
    for (int u = 0; u < ND; ++u) acc[r][u] = _mm512_setzero_ps();
  for (int64_t j = 0; j < a.t; ++j) {
    const float* vj = a.v + j * a.ld + 16 * d0;
    __m512 vv[ND];
#pragma GCC unroll 4
    for (int u = 0; u < ND; ++u) vv[u] = _mm512_loadu_ps(vj + 16 * u);
#pragma GCC unroll 8
    for (int r = 0; r < RB; ++r) {
      const __m512 pv = _mm512_set1_ps(p[r * tp + j]);
#pragma GCC unroll 4
      for (int u = 0; u < ND; ++u) acc[r][u] = _mm512_fmadd_ps(pv, vv[u], acc[r][u]);
    }
  }
  const int64_t rows = std::min<int64_t>(RB, a.t - i0);
  for (int64_t r = 0; r < rows; ++r)
    for (int u = 0; u < ND; ++u)
      _mm512_storeu_ps(a.out + (i0 + r) * a.ld + 16 * (d0 + u), _mm512_mul_ps(acc[r][u], _mm512_set1_ps(inv[r])));
}

// dst[c * ldd + j] = src[j * ld + c] for a 16 x 16 block: unpacks within 128-bit lanes, then two
// rounds of 128-bit lane shuffles (64 shuffles instead of 256 scalar loads and stores).
XTC_AVX512_VL void transpose16_avx512(const float* src, int64_t ld, float* dst, int64_t ldd) {
  __m512 r[16], u[16];
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * ld);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {  // pairs of rows: (2i, 2i + 1) interleaved
    u[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    u[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // r[4i + k]: rows 4i .. 4i + 3 of columns k, k + 4, k + 8, k + 12 (one per lane)
    const __m512d lo0 = _mm512_castps_pd(u[4 * i]), lo1 = _mm512_castps_pd(u[4 * i + 2]);
    const __m512d hi0 = _mm512_castps_pd(u[4 * i + 1]), hi1 = _mm512_castps_pd(u[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
  }
#pragma GCC unroll 4
  for (int k = 0; k < 4; ++k) {
    const __m512 w0 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88), w1 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xDD);
    const __m512 w2 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88),
                 w3 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xDD);
    _mm512_storeu_ps(dst + k * ldd, _mm512_shuffle_f32x4(w0, w2, 0x88));
    _mm512_storeu_ps(dst + (k + 8) * ldd, _mm512_shuffle_f32x4(w0, w2, 0xDD));
    _mm512_storeu_ps(dst + (k + 4) * ldd, _mm512_shuffle_f32x4(w1, w3, 0x88));
    _mm512_storeu_ps(dst + (k + 12) * ldd, _mm512_shuffle_f32x4(w1, w3, 0xDD));
  }
}

// One (sequence, head), 8 queries at a time: scores (2 x 4 queries), softmax, context.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) void attention_head_avx512(const AttnArgs& a,
                                                                                          float* kt, float* p) {
  const int64_t t = a.t, D = a.D, tp = ceil_div(t, 64) * 64, nv = D / 16;
  for (int64_t c0 = 0; c0 < D; c0 += 16) {  // K transposed: keys along the vector lanes
    int64_t j = 0;
    for (; j + 16 <= t; j += 16) transpose16_avx512(a.k + j * a.ld + c0, a.ld, kt + c0 * tp + j, tp);
    for (int64_t c = c0; c < c0 + 16; ++c) {
      for (int64_t i = j; i < t; ++i) kt[c * tp + i] = a.k[i * a.ld + c];
      for (int64_t i = t; i < tp; ++i) kt[c * tp + i] = 0.f;
    }
  }
  for (int64_t i0 = 0; i0 < t; i0 += 8) {
    attention_scores_avx512(a, kt, tp, i0, p);
    attention_scores_avx512(a, kt, tp, i0 + 4, p + 4 * tp);
    float inv[8];
    attention_softmax_avx512<8>(a, i0, tp, p, inv);
    int64_t d0 = 0;
    for (; d0 + 2 <= nv; d0 += 2) attention_context_avx512<8, 2>(a, p, inv, tp, i0, d0);
    if (d0 < nv) attention_context_avx512<8, 1>(a, p, inv, tp, i0, d0);
  }
}

// y = LayerNorm(x + residual) row by row (mean, then the mean of squared deviations, as torch);
// returns max |y| (for the quantization that may follow).
__attribute__((target("avx512f,avx512bw,avx512vnni"))) float add_layer_norm_row_avx512(
    const float* x, const float* res, const float* gamma, const float* beta, float eps, int64_t N, float* y) {
  __m512 vs = _mm512_setzero_ps();
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 m = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
    const __m512 v = _mm512_add_ps(_mm512_maskz_loadu_ps(m, x + n), _mm512_maskz_loadu_ps(m, res + n));
    _mm512_mask_storeu_ps(y + n, m, v);
    vs = _mm512_add_ps(vs, v);
  }
  const __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(vs) / (float)N);
  __m512 vq = _mm512_setzero_ps();
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 m = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
    const __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, y + n), mean);
    vq = _mm512_fmadd_ps(d, d, vq);
  }
  const __m512 rstd = _mm512_set1_ps(1.f / std::sqrt(_mm512_reduce_add_ps(vq) / (float)N + eps));
  __m512 vmax = _mm512_setzero_ps();
  for (int64_t n = 0; n < N; n += 16) {
    const __mmask16 m = N - n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - n)) - 1);
    const __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, y + n), mean), rstd);
    const __m512 v = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, gamma + n), _mm512_maskz_loadu_ps(m, beta + n));
    _mm512_mask_storeu_ps(y + n, m, v);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(v));  // masked lanes of v are 0
  }
  const float amax = _mm512_reduce_max_ps(vmax);
  return std::isfinite(amax) ? amax : -1.f;  // not finite: quantize_row looks for itself
}
#endif

bool float_ops_available() { return active_isa() >= ISA_AVX512; }

// Multi-head attention of q, k, v [B * T, H * D] (rows of tokens, heads side by side, as the
// projections give them) -> context [B * T, H * D]. mask: None, or [B, 1, 1 or T, T], boolean
// (true = attend) or additive float. bias: None or float [1 or B, H, T, T], added to the scaled
// scores before the mask. One task per (sequence, head).
torch::Tensor attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, int64_t B, int64_t H, double scale,
                        c10::optional<torch::Tensor> mask, c10::optional<torch::Tensor> bias) {
  TORCH_CHECK(float_ops_available(), "xtc kernel: attention needs the AVX-512 path");
  for (const torch::Tensor* x : {&q, &k, &v})
    TORCH_CHECK(x->dim() == 2 && x->scalar_type() == torch::kFloat32 && x->is_contiguous() &&
                x->sizes() == q.sizes(), "xtc kernel: q, k, v must be contiguous float32 [B*T, H*D] alike");
  const int64_t M = q.size(0), N = q.size(1);
  TORCH_CHECK(B > 0 && M % B == 0 && H > 0 && N % H == 0 && (N / H) % 16 == 0,
              "xtc kernel: attention needs rows = B*T and head size a multiple of 16");
  const int64_t T = M / B, D = N / H;
  torch::Tensor m;
  int64_t mask_rows = 0;
  if (mask && mask->defined()) {
    m = mask->contiguous();
    TORCH_CHECK(m.dim() == 4 && m.size(0) == B && m.size(1) == 1 && (m.size(2) == 1 || m.size(2) == T) &&
                m.size(3) == T && (m.scalar_type() == torch::kBool || m.scalar_type() == torch::kFloat32),
                "xtc kernel: mask must be bool or float32 [B, 1, 1 or T, T]");
    mask_rows = m.size(2);
  }
  torch::Tensor bi;
  if (bias && bias->defined()) {
    bi = bias->contiguous();
    TORCH_CHECK(bi.dim() == 4 && (bi.size(0) == 1 || bi.size(0) == B) && bi.size(1) == H && bi.size(2) == T &&
                bi.size(3) == T && bi.scalar_type() == torch::kFloat32,
                "xtc kernel: bias must be float32 [1 or B, H, T, T]");
  }
  auto out = torch::empty({M, N}, torch::kFloat32);
  const int64_t tp = ceil_div(T, 64) * 64;
#if XTC_X86
  at::parallel_for(0, B * H, 1, [&](int64_t w0, int64_t w1) {
    thread_local AlignedScratch scratch;
    float* kt = (float*)scratch.get((D + 8) * tp * sizeof(float));
    float* p = kt + D * tp;
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / H, h = w % H;
      AttnArgs a{q.data_ptr<float>() + b * T * N + h * D, k.data_ptr<float>() + b * T * N + h * D,
                 v.data_ptr<float>() + b * T * N + h * D, out.data_ptr<float>() + b * T * N + h * D,
                 T, D, N, (float)scale, nullptr, nullptr, nullptr, mask_rows == T ? T : 0};
      if (bi.defined()) a.bias = bi.data_ptr<float>() + ((bi.size(0) == 1 ? 0 : b) * H + h) * T * T;
      if (m.defined() && m.scalar_type() == torch::kBool) a.keep = m.data_ptr<bool>() + b * mask_rows * T;
      if (m.defined() && m.scalar_type() == torch::kFloat32) a.mask = m.data_ptr<float>() + b * mask_rows * T;
      attention_head_avx512(a, kt, p);
    }
  });
#endif
  return out;
}

// LayerNorm(x + residual) over the last dimension, x and residual [M, N] float32.
torch::Tensor add_layer_norm(torch::Tensor x, torch::Tensor residual, torch::Tensor gamma, torch::Tensor beta,
                             double eps) {
  TORCH_CHECK(float_ops_available(), "xtc kernel: add_layer_norm needs the AVX-512 path");
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && residual.scalar_type() == torch::kFloat32 &&
              gamma.scalar_type() == torch::kFloat32 && beta.scalar_type() == torch::kFloat32,
              "xtc kernel: add_layer_norm takes float32");
  const int64_t N = x.size(-1), M = x.numel() / std::max<int64_t>(1, N);
  TORCH_CHECK(residual.numel() == x.numel() && residual.size(-1) == N && gamma.numel() == N && beta.numel() == N,
              "xtc kernel: add_layer_norm shapes differ");
  x = x.contiguous(), residual = residual.contiguous(), gamma = gamma.contiguous(), beta = beta.contiguous();
  auto y = torch::empty(x.sizes(), torch::kFloat32);
#if XTC_X86
  const int64_t grain = std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(1, N));
  at::parallel_for(0, M, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      add_layer_norm_row_avx512(x.data_ptr<float>() + r * N, residual.data_ptr<float>() + r * N,
                                gamma.data_ptr<float>(), beta.data_ptr<float>(), (float)eps, N, y.data_ptr<float>() + r * N);
  });
#endif
  return y;
}

// LayerNorm(x + residual) as add_layer_norm, each row quantized and packed for the next linear as soon
// as it is normalised (while it is in L1): returns (y, packed activations, scales), the latter two as
// pack_activations(y) would give them.
std::vector<torch::Tensor> add_layer_norm_pack(torch::Tensor x, torch::Tensor residual, torch::Tensor gamma,
                                               torch::Tensor beta, double eps) {
  LinearTimer timer;
  TORCH_CHECK(float_ops_available(), "xtc kernel: add_layer_norm_pack needs the AVX-512 path");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && residual.scalar_type() == torch::kFloat32 &&
              gamma.scalar_type() == torch::kFloat32 && beta.scalar_type() == torch::kFloat32,
              "xtc kernel: add_layer_norm_pack takes float32, x [M, N]");
  const int64_t M = x.size(0), N = x.size(1);
  TORCH_CHECK(residual.numel() == x.numel() && gamma.numel() == N && beta.numel() == N,
              "xtc kernel: add_layer_norm_pack shapes differ");
  x = x.contiguous(), residual = residual.contiguous(), gamma = gamma.contiguous(), beta = beta.contiguous();
  const int isa = active_isa();
  const int64_t MR = block_rows(isa);
  auto y = torch::empty({M, N}, torch::kFloat32);
  auto ap = torch::empty({ceil_div(M, MR), ceil_div(N, 4), MR}, torch::kInt32);
  auto s = torch::empty({M}, torch::kFloat32);
#if XTC_X86
  const float *xd = x.data_ptr<float>(), *rd = residual.data_ptr<float>();
  const float *gd = gamma.data_ptr<float>(), *bd = beta.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  quantize_pack_rows(isa, M, N, MR, (uint32_t*)ap.data_ptr<int32_t>(), s.data_ptr<float>(),
                     [&](int64_t m, float& amax) {
    amax = add_layer_norm_row_avx512(xd + m * N, rd + m * N, gd, bd, (float)eps, N, yd + m * N);
    return (const float*)(yd + m * N);
  });
#endif
  return {y, ap, s};
}

// One post-LayerNorm transformer block (BERT's and MPNet's layout) on the packed kernels, in one call
// from Python: q/k/v (one parallel region), attention, output projection, residual + LayerNorm (its
// rows quantized for the FFN in the same pass), the fused FFN, residual + LayerNorm. The same
// operations as the lean forward's float-kernel path, op for op (so the same bits), without the
// return to Python, the module calls and the argument checks between them.
torch::Tensor encoder_block(torch::Tensor x, int64_t B, int64_t H, double scale, c10::optional<torch::Tensor> mask,
                            c10::optional<torch::Tensor> bias, std::vector<py::tuple> qkv, py::tuple o,
                            torch::Tensor g1, torch::Tensor b1, double eps1, py::tuple up, py::tuple down,
                            int64_t act, torch::Tensor g2, torch::Tensor b2, double eps2) {
  TORCH_CHECK(qkv.size() == 3, "xtc kernel: encoder_block takes the query, key and value weights");
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "xtc kernel: x must be float32 [B*T, hidden]");
  x = x.contiguous();
  auto packed = pack_activations(x);
  auto q_k_v = linears(packed[0], packed[1], {weights_of(qkv[0]), weights_of(qkv[1]), weights_of(qkv[2])});
  auto context = attention(q_k_v[0], q_k_v[1], q_k_v[2], B, H, scale, mask, bias);
  packed = pack_activations(context);
  auto projected = linears(packed[0], packed[1], {weights_of(o)})[0];
  auto attended = add_layer_norm_pack(projected, x, g1, b1, eps1);
  const Weights u = weights_of(up), d = weights_of(down);
  auto ffn = ffn_packed(attended[1], attended[2], u.wp, u.c, u.alpha, u.bias, u.N, d.wp, d.c, d.alpha, d.bias, d.N,
                        act);
  return add_layer_norm(ffn, attended[0], g2, b2, eps2);
}

float gelu_row_amax(int isa, float* x, int64_t n) {
#if XTC_X86
  if (isa >= ISA_AVX512) return gelu_amax_vec(x, n);
#endif
  gelu_row(isa, x, n);
  return -1.f;
}

void gelu_row(int isa, float* x, int64_t n) {
  int64_t i = 0;
#if XTC_X86
  if (isa >= ISA_AVX512) i = gelu_vec(x, x, n);
  if (isa == ISA_AVX2) i = gelu_vec_avx2(x, x, n);
#endif
  for (; i < n; ++i) x[i] = gelu_scalar(x[i]);
}

// The scalar and vector GELU of the kernels, exposed for tests.
torch::Tensor gelu(torch::Tensor x) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "xtc kernel: gelu takes float32");
  auto y = x.contiguous().clone();
  gelu_row(active_isa(), y.data_ptr<float>(), y.numel());
  return y;
}

// Tile layout of int8 codes [N, K] (load time; see the top of this file): returns
// (tiles int64 [N/16, K/4, planes], colsum128 int32 [N/16 * 16]). Padding codes are 0, which a
// binary plane stores as bit 0 = -1: colsum counts that -1, so padded columns (activation q = 0,
// stored as 128) cancel exactly. Same result as xtc.packed.kernels.prepare_weights' torch code.
std::vector<torch::Tensor> prepare_tiles(torch::Tensor codes, bool ternary) {
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kInt8, "xtc kernel: codes must be int8 [N, K]");
  codes = codes.contiguous();
  const int64_t N = codes.size(0), K = codes.size(1), NT = ceil_div(N, 16), K4 = ceil_div(K, 4);
  const int64_t P = ternary ? 2 : 1;
  auto wp = torch::zeros({NT, K4, P}, torch::kInt64);
  auto colsum = torch::zeros({NT * 16}, torch::kInt32);
  const int8_t* c = codes.data_ptr<int8_t>();
  uint64_t* w = (uint64_t*)wp.data_ptr<int64_t>();
  int32_t* cs = colsum.data_ptr<int32_t>();
  at::parallel_for(0, NT, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int32_t sum[16] = {0};
      for (int64_t k4 = 0; k4 < K4; ++k4) {
        uint64_t p0 = 0, p1 = 0;  // the tile's planes, built in registers
        for (int64_t i = 0; i < 16; ++i) {
          const int64_t n = t * 16 + i;
          for (int64_t kk = 0; kk < 4; ++kk) {
            const int64_t k = k4 * 4 + kk;
            const int v = (n < N && k < K) ? c[n * K + k] : 0;
            const uint64_t bit = 1ull << (i * 4 + kk);
            if (ternary) {
              p0 |= v != 0 ? bit : 0;
              p1 |= v < 0 ? bit : 0;
              sum[i] += v;
            } else {
              p0 |= v > 0 ? bit : 0;
              sum[i] += v > 0 ? 1 : -1;
            }
          }
        }
        w[(t * K4 + k4) * P] = p0;
        if (ternary) w[(t * K4 + k4) * P + 1] = p1;
      }
      for (int64_t i = 0; i < 16; ++i) cs[t * 16 + i] = 128 * sum[i];
    }
  });
  return {wp, colsum};
}

// Unpacked int8 codes and scales exactly as the kernel sees them (for tests).
std::vector<torch::Tensor> quantize_activations(torch::Tensor x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32, "xtc kernel: x must be float32 [M, K]");
  x = x.contiguous();
  const int isa = active_isa();
  const int64_t M = x.size(0), K = x.size(1);
  auto q = torch::empty({M, K}, torch::kInt8);
  auto s = torch::empty({M}, torch::kFloat32);
  std::vector<uint8_t> row(K);
  for (int64_t m = 0; m < M; ++m) {
    quantize_row(isa, x.data_ptr<float>() + m * K, K, row.data(), s.data_ptr<float>() + m);
    for (int64_t k = 0; k < K; ++k) q.data_ptr<int8_t>()[m * K + k] = (int8_t)((int)row[k] - 128);
  }
  return {q, s};
}

// Core clock in GHz, measured: a chain of dependent integer adds retires one per cycle. For the
// benchmark's "achieved multiply-accumulates per second against the host's peak".
double measure_clock_ghz() {
#if XTC_X86 && defined(__GNUC__)
  // 8 adds per loop iteration (the loop's own branch then never limits the chain), register operands
  // (newer cores fold chains of register + immediate adds at rename, several per cycle)
  const int64_t n = 20000000;
  uint64_t x = 0, one = 1;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i)
    __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
                     "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(one));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return x == (uint64_t)(8 * n) ? 8 * n / s / 1e9 : 0.0;
#else
  return 0.0;
#endif
}

// Peak int8 multiply-accumulates per cycle of one core on a path: AMX tdpbusd does 16 x 16 x 64 in
// 16 cycles; vpdpbusd 64 per instruction on each of 2 ports (Xeon Gold / Platinum; 1 on some SKUs);
// AVX2 vpmaddubsw 32 per instruction on 2 ports.
int64_t peak_macs_per_cycle(int isa) {
  return isa == ISA_AMX ? 1024 : isa == ISA_AVX512 ? 128 : isa == ISA_AVX2 ? 64 : 1;
}

std::string isa_name(int isa) {
  return isa == ISA_AMX ? "amx" : isa == ISA_AVX512 ? "avx512_vnni" : isa == ISA_AVX2 ? "avx2" : "scalar";
}

std::string get_isa() { return isa_name(active_isa()); }
std::string host_isa() { return isa_name(kHostIsa); }

// Force a path; asking for more than the CPU has falls back to the best it has.
std::string set_isa(const std::string& name) {
  int want = name == "amx" ? ISA_AMX : name == "avx512_vnni" || name == "avx512" ? ISA_AVX512 : name == "avx2" ? ISA_AVX2
           : name == "scalar" ? ISA_SCALAR : -1;
  TORCH_CHECK(want >= 0, "xtc kernel: unknown ISA '", name, "' (scalar, avx2, avx512, amx)");
  g_isa = std::min(want, kHostIsa);
  return get_isa();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "xtc packed 1/2-bit x int8 linear kernels (AMX / AVX-512 VNNI / AVX2 / scalar)";
  m.def("pack_activations", &pack_activations, "quantize x to int8 per token and pack for the kernel");
  m.def("linear_packed", &linear_packed, "y = act(s * alpha * (q @ w^T) + bias) from packed activations");
  m.def("linear_multi", &linear_multi, "several linears of one packed input in one parallel region");
  m.def("ffn_packed", &ffn_packed, "fused down(act(up(x))) from packed activations, in chunks of tokens");
  m.def("gelu", &gelu, "the epilogue's GELU (for tests)");
  m.def("attention", &attention, "multi-head attention of [B*T, H*D] q, k, v (AVX-512)");
  m.def("add_layer_norm", &add_layer_norm, "LayerNorm(x + residual) (AVX-512)");
  m.def("add_layer_norm_pack", &add_layer_norm_pack, "add_layer_norm, its rows also quantized and packed");
  m.def("encoder_block", &encoder_block, "one post-LayerNorm block (q/k/v, attention, o, LN, FFN, LN) in one call");
  m.def("float_ops_available", &float_ops_available, "whether attention / add_layer_norm can run");
  m.def("linear", &linear, "pack_activations + linear_packed");
  m.def("prepare_tiles", &prepare_tiles, "tile layout and 128 * column sums of int8 codes");
  m.def("quantize_activations", &quantize_activations, "int8 codes and scales as the kernel computes them");
  m.def("time_linears", &time_linears, "sum the time of the linears' work from now on (True) or stop; "
        "returns the seconds summed since the last call");
  m.def("measure_clock_ghz", &measure_clock_ghz, "core clock in GHz (a chain of dependent adds)");
  m.def("peak_macs_per_cycle", [] { return peak_macs_per_cycle(active_isa()); },
        "peak int8 multiply-accumulates per cycle and core of the active path");
  m.def("get_isa", &get_isa);
  m.def("host_isa", &host_isa);
  m.def("set_isa", &set_isa);
  m.def("block_rows", [] { return block_rows(active_isa()); });
}
