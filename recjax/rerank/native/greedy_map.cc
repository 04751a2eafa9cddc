// Algorithm 1 of Chen, Zhang & Zhou (NeurIPS 2018), fast greedy MAP inference for a DPP, as an XLA FFI
// kernel for the CPU. Same semantics as the XLA path of recjax.rerank.dpp.greedy_map (see its module
// docstring): ties go to the lowest index, d^2 is clamped at 0, selected and masked items are held at -inf,
// the first pick skips the epsilon check, and steps after the first failed check are -1 / false.
//
// Layout (our choice): the Cholesky rows of a request are stored item-block-major, element (r, i) at
// c[(i / kBlock) * pitch + r * kBlock + i % kBlock] with pitch = (k - 1) * kBlock, so the projection of one
// block of kBlock items at step t reads one contiguous t * kBlock run (hardware prefetch friendly) into
// kBlock / lanes vector accumulators that stay in registers. The d^2 update, the masking and the argmax
// are fused into the same pass. The calling thread and one task per other thread of XLA's intra-op pool
// claim requests one at a time, so a request's rows stay in one core's L2 cache; scratch memory is
// pooled across calls.
//
// Inputs: L [B..., M, M] f32/f64, mask [B..., M] pred, eps [B...] (dtype of L).
// Attributes: eps_mode (0 absolute, 1 relative), stop_rule (0 epsilon, 1 gain_lt_one).
// Outputs: indices [B..., k] s32, valid [B..., k] pred.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Native vector width and register budget: kVecs accumulators of kBytes each hold one block of items in
// registers during the projection (AVX-512 and AArch64 have 32 vector registers, AVX2 and SSE 16).
#if defined(__AVX512F__)
constexpr int kBytes = 64, kVecs = 16;
#elif defined(__AVX__)
constexpr int kBytes = 32, kVecs = 8;
#elif defined(__aarch64__)
constexpr int kBytes = 16, kVecs = 16;
#else
constexpr int kBytes = 16, kVecs = 8;
#endif

template <typename T>
struct Vec {
  typedef T V __attribute__((vector_size(kBytes)));
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> Int;
  typedef Int I __attribute__((vector_size(kBytes)));  // lane-matched integers (item indices)
  static constexpr int kLanes = kBytes / sizeof(T);
  static constexpr int64_t kBlock = kVecs * kLanes;  // items per block (256 floats with AVX-512)
  static V Load(const T* p) { V x; std::memcpy(&x, p, sizeof(V)); return x; }
  static void Store(T* p, V x) { std::memcpy(p, &x, sizeof(V)); }
  static V Splat(T a) { return V{} + a; }  // one broadcast (a per-lane loop compiles to 16 masked ones)
  static I Iota() { I x; for (int l = 0; l < kLanes; ++l) x[l] = l; return x; }
};

// Cache-line-aligned array (vector loads must not straddle two lines), grown on demand and never shrunk.
template <typename T>
struct Aligned {
  bool Reserve(int64_t n) {
    if (n <= size) return true;
    const size_t bytes = (static_cast<size_t>(n) * sizeof(T) + 63) / 64 * 64;
    p.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
    size = p ? n : 0;
    return p != nullptr;
  }
  T* data() const { return p.get(); }
  struct Free { void operator()(T* q) const { std::free(q); } };
  std::unique_ptr<T, Free> p;
  int64_t size = 0;
};

// Scratch for one request at a time: Cholesky rows c (layout above), d^2 (-inf for non-candidates), the
// pick's column of c and a zero-padded copy of a kernel row's last block. Every element a request reads it
// has written first, so a scratch is reused across requests and calls without clearing.
template <typename T>
struct Scratch {
  static constexpr int64_t kBlock = Vec<T>::kBlock;
  bool Reset(int64_t m, int64_t k) {
    mp = (m + kBlock - 1) / kBlock * kBlock;
    pitch = std::max<int64_t>(k - 1, 1) * kBlock;
    return c.Reserve(mp / kBlock * pitch) && d2.Reserve(mp) && cj.Reserve(k) &&
           lt.Reserve(kBlock);
  }
  int64_t mp = 0, pitch = 0;
  Aligned<T> c, d2, cj, lt;
};

// Scratches kept between calls, so a call does not allocate (and page-fault) fresh memory.
template <typename T>
class ScratchPool {
 public:
  static ScratchPool& Get() {
    static ScratchPool* pool = new ScratchPool;  // never destroyed: pool tasks may outlive static teardown
    return *pool;
  }
  std::unique_ptr<Scratch<T>> Take(int64_t m, int64_t k) {
    std::unique_ptr<Scratch<T>> s;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        s = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!s) s = std::make_unique<Scratch<T>>();
    return s->Reset(m, k) ? std::move(s) : nullptr;
  }
  void Return(std::unique_ptr<Scratch<T>> s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxKept) free_.push_back(std::move(s));
  }

 private:
  static constexpr size_t kMaxKept = 64;
  std::mutex mu_;
  std::vector<std::unique_ptr<Scratch<T>>> free_;
};

// A non-finite kernel entry met by a request: on the diagonal (kind 1) or in the row of a pick (kind 2).
struct BadEntry {
  int kind = 0;  // 0: none
  int64_t item = 0;
};

template <typename T>
BadEntry GreedyOne(const T* L, const bool* mask, int64_t m, int64_t k, T eps, int32_t eps_mode,
                   int32_t stop_rule, int32_t* idx, bool* valid, Scratch<T>& s) {
  using VT = Vec<T>;
  using V = typename VT::V;
  constexpr int64_t kBlock = VT::kBlock;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  const T tiny = std::numeric_limits<T>::min();
  const int64_t mp = s.mp, pitch = s.pitch;
  T *c = s.c.data(), *d2 = s.d2.data(), *cj = s.cj.data(), *lt = s.lt.data();
  constexpr int64_t kAhead = 64;  // diagonal prefetch distance (one cache line per item; 16 measured slower)
  for (int64_t i = 0; i < std::min(m, kAhead); ++i) __builtin_prefetch(L + i * m + i);
  T dmax = neg_inf;
  for (int64_t i = 0; i < mp; ++i) {
    if (i + kAhead < m) __builtin_prefetch(L + (i + kAhead) * (m + 1));
    const bool in = i < m && mask[i];
    d2[i] = in ? L[i * m + i] : neg_inf;
    if (in && !std::isfinite(d2[i])) return {1, i};
    dmax = std::max(dmax, d2[i]);
  }
  const T thresh = stop_rule == 1 ? T(1) : (eps_mode == 1 ? eps * std::max(dmax, T(0)) : eps);
  int64_t j = 0;
  T gain = neg_inf;
  for (int64_t i = 0; i < m; ++i)
    if (d2[i] > gain) { gain = d2[i]; j = i; }
  for (int64_t t = 0; t < k; ++t) { idx[t] = -1; valid[t] = false; }
  if (!(stop_rule == 1 ? gain >= thresh : gain > neg_inf)) return {};
  idx[0] = static_cast<int32_t>(j);
  valid[0] = true;
  const V vninf = VT::Splat(neg_inf), vzero = VT::Splat(T(0));
  for (int64_t t = 0; t + 1 < k; ++t) {
    // Step t: write Cholesky row t for pick j, update d^2, then pick for step t + 1.
    const T* lj = L + j * m;
    for (int64_t i = 0; i < m; i += 64 / sizeof(T)) __builtin_prefetch(lj + i);
    const V vinv = VT::Splat(T(1) / std::sqrt(std::max(gain, tiny)));
    const T* cjb = c + (j / kBlock) * pitch + j % kBlock;
    for (int64_t r = 0; r < t; ++r) cj[r] = cjb[r * kBlock];
    d2[j] = neg_inf;
    // Running per-lane max of the new d^2 and the first item index attaining it (strict >, items in
    // ascending order), reduced across lanes once per step: the argmax with ties to the lowest index.
    V best = vninf;
    typename VT::I bad = typename VT::I{};
    typename VT::I best_i = VT::Iota() + static_cast<typename VT::Int>(mp);
    const int64_t nb = mp / kBlock;
    for (int64_t b = 0; b < nb; ++b) {
      // Alternate the block order between steps, so the block written last (still in L1) is read first.
      const int64_t i0 = (t & 1 ? nb - 1 - b : b) * kBlock;
      T* cb = c + (i0 / kBlock) * pitch;
      V acc[kVecs];
      for (int v = 0; v < kVecs; ++v) acc[v] = vzero;
      for (int64_t r = 0; r < t; ++r) {
        const V a = VT::Splat(cj[r]);
        const T* cr = cb + r * kBlock;
        for (int v = 0; v < kVecs; ++v) acc[v] += a * VT::Load(cr + v * VT::kLanes);
      }
      const T* lrow = lj + i0;
      if (i0 + kBlock > m) {  // last, partial block: read the kernel row through a zero-padded copy
        std::fill(lt, lt + kBlock, T(0));
        std::copy(lj + i0, lj + m, lt);
        lrow = lt;
      }
      typename VT::I lane_i = VT::Iota() + static_cast<typename VT::Int>(i0);
      for (int v = 0; v < kVecs; ++v) {
        const int64_t o = i0 + v * VT::kLanes;
        // Candidates are the items with d^2 > -inf: masked, padded and selected items are -inf. Entries of
        // c for non-candidates are never read (a projection only reads the column of a candidate), so
        // they are written as 0 without looking at the kernel row.
        const V d = VT::Load(d2 + o);
        const auto in = d > vninf;
        const V lv = VT::Load(lrow + v * VT::kLanes);
        bad |= in & ((lv - lv) != vzero);  // a NaN or infinity in the kernel (x - x = 0 for finite x)
        const V e = in ? (lv - acc[v]) * vinv : vzero;
        VT::Store(cb + t * kBlock + v * VT::kLanes, e);
        V nd = d - e * e;
        nd = nd > vzero ? nd : vzero;
        nd = in ? nd : vninf;
        VT::Store(d2 + o, nd);
        // Per-lane running argmax, ties to the lower index whatever the block order.
        const auto up = (nd > best) | ((nd == best) & (lane_i < best_i));
        best = up ? nd : best;
        best_i = up ? lane_i : best_i;
        lane_i += VT::kLanes;
      }
    }
    T gmax = best[0];
    for (int l = 1; l < VT::kLanes; ++l) gmax = std::max(gmax, best[l]);
    // When every item is -inf (the step then fails), ties make this index 0, as on the XLA path.
    int64_t bi = mp;
    for (int l = 0; l < VT::kLanes; ++l)
      if (best[l] == gmax) bi = std::min<int64_t>(bi, best_i[l]);
    j = bi;
    gain = gmax;
    bool any_bad = false;
    for (int l = 0; l < VT::kLanes; ++l) any_bad |= bad[l] != 0;
    if (any_bad) return {2, (lj - L) / m};
    if (!(gain >= thresh)) return {};
    idx[t + 1] = static_cast<int32_t>(j);
    valid[t + 1] = true;
  }
  return {};
}

// Requests are claimed one at a time from `next` by the workers, each with its own scratch slot. The
// state is held by shared_ptr, so a task that starts after all requests are done touches nothing the
// caller has released.
template <typename T>
struct Progress {
  std::atomic<int64_t> next{0}, slot{0}, finished{0};
  std::atomic<int64_t> bad_request{-1};  // the first request that met a non-finite entry (-1: none)
  BadEntry bad;                           // what it met
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<Scratch<T>>> scratch;
  ~Progress() {
    for (auto& s : scratch)
      if (s) ScratchPool<T>::Get().Return(std::move(s));
  }
};

template <typename T>
ffi::Error Run(ffi::ThreadPool pool, ffi::AnyBuffer L, ffi::Buffer<ffi::PRED> mask, ffi::AnyBuffer eps,
               int32_t eps_mode, int32_t stop_rule, ffi::Result<ffi::Buffer<ffi::S32>> idx,
               ffi::Result<ffi::Buffer<ffi::PRED>> valid) {
  const auto dims = L.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (rank < 2 || dims[rank - 1] != dims[rank - 2])
    return ffi::Error::InvalidArgument("recjax greedy_map: L must be [..., M, M]");
  const int64_t m = dims[rank - 1];
  const int64_t r = m == 0 ? 0 : static_cast<int64_t>(L.element_count()) / (m * m);
  const auto idims = idx->dimensions();
  const int64_t k = idims.size() ? idims[idims.size() - 1] : 0;
  if (m == 0 || m > std::numeric_limits<int32_t>::max() || k < 1 || k > m ||
      static_cast<int64_t>(mask.element_count()) != r * m || static_cast<int64_t>(eps.element_count()) != r ||
      static_cast<int64_t>(idx->element_count()) != r * k)
    return ffi::Error::InvalidArgument("recjax greedy_map: inconsistent shapes");
  if (r == 0) return ffi::Error::Success();
  const T* l = L.typed_data<T>();
  const bool* msk = mask.typed_data();
  const T* ep = eps.typed_data<T>();
  int32_t* out_i = idx->typed_data();
  bool* out_v = valid->typed_data();
  const int64_t tasks = std::min<int64_t>(pool.num_threads(), r);
  auto progress = std::make_shared<Progress<T>>();
  for (int64_t w = 0; w < std::max<int64_t>(tasks, 1); ++w) {  // this thread and tasks - 1 pool tasks
    progress->scratch.push_back(ScratchPool<T>::Get().Take(m, k));
    if (!progress->scratch.back())
      return ffi::Error(ffi::ErrorCode::kResourceExhausted, "recjax greedy_map: out of memory for scratch");
  }
  auto work = [=]() {
    Scratch<T>& scratch = *progress->scratch[progress->slot.fetch_add(1)];
    for (int64_t q = progress->next.fetch_add(1); q < r; q = progress->next.fetch_add(1)) {
      const BadEntry b = GreedyOne<T>(l + q * m * m, msk + q * m, m, k, ep[q], eps_mode, stop_rule,
                                      out_i + q * k, out_v + q * k, scratch);
      int64_t none = -1;
      if (b.kind && progress->bad_request.compare_exchange_strong(none, q)) progress->bad = b;
      if (progress->finished.fetch_add(1) + 1 == r) {
        std::lock_guard<std::mutex> lock(progress->mu);
        progress->cv.notify_all();
      }
    }
  };
  // This thread works too, with one pool task per other pool thread (XLA's pool threads may be asleep:
  // waking one costs tens of microseconds, so a small batch is mostly done by this thread).
  for (int64_t h = 0; h + 1 < tasks; ++h) pool.Schedule(decltype(work)(work));
  work();
  std::unique_lock<std::mutex> lock(progress->mu);
  progress->cv.wait(lock, [&] { return progress->finished.load() == r; });
  if (const int64_t q = progress->bad_request.load(); q >= 0) {
    const BadEntry b = progress->bad;
    return ffi::Error::InvalidArgument(
        "recjax greedy_map: L has a NaN or infinity " +
        (b.kind == 1 ? "on its diagonal at item " + std::to_string(b.item)
                     : "in the row of picked item " + std::to_string(b.item)) +
        " of request " + std::to_string(q) + " (requests counted over the flattened batch dimensions)");
  }
  return ffi::Error::Success();
}

ffi::Error GreedyMap(ffi::ThreadPool pool, ffi::AnyBuffer L, ffi::Buffer<ffi::PRED> mask, ffi::AnyBuffer eps,
                     int32_t eps_mode, int32_t stop_rule, ffi::Result<ffi::Buffer<ffi::S32>> idx,
                     ffi::Result<ffi::Buffer<ffi::PRED>> valid) {
  if (eps.element_type() != L.element_type())
    return ffi::Error::InvalidArgument("recjax greedy_map: eps must have the dtype of L");
  if (L.element_type() == ffi::DataType::F32)
    return Run<float>(pool, L, mask, eps, eps_mode, stop_rule, idx, valid);
  if (L.element_type() == ffi::DataType::F64)
    return Run<double>(pool, L, mask, eps, eps_mode, stop_rule, idx, valid);
  return ffi::Error::InvalidArgument("recjax greedy_map: L must be float32 or float64");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(RecjaxGreedyMap, GreedyMap,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<int32_t>("eps_mode")
                                  .Attr<int32_t>("stop_rule")
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::PRED>>());
