// naslora's native engine: a thin N-API binding over libtorch's operator dispatcher.
//
// Instead of hand-binding hundreds of ATen functions, JS looks an operator up once by its schema
// name ("aten::conv2d", overload "") and then calls it through the boxed dispatcher. Arguments are
// converted by the operator's own schema, so every ATen op (with its autograd formula) is
// reachable, and adding an op to the TS API is one line there, not C++ here.
//
// Tensors live in a handle table; JS holds (slot, generation) numbers. A stale handle (used after
// dispose) is detected by its generation and raises a JS error instead of touching freed memory.
// A counting CPU allocator wraps libtorch's so that live native bytes are exact and can be
// reported to V8's garbage-collector heuristics.
#include "naslora.h"

#include <napi.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/version.h>

// NASLORA_WITH_CUDA_RUNTIME comes from native/torch-paths.cjs, only for a CUDA libtorch whose
// cuda_runtime_api.h was found at build time: the CUDA caching allocator's statistics (peak bytes).
// Everything else CUDA here goes through interfaces every libtorch has (CUDA hooks, device guards).
#ifdef NASLORA_WITH_CUDA_RUNTIME
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include <dlfcn.h>
#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// ---------------------------------------------------------------------------------------------
// Counting allocator: exact live/peak bytes of every CPU tensor storage.

std::atomic<int64_t> g_live_bytes{0};
std::atomic<int64_t> g_peak_bytes{0};
std::atomic<int64_t> g_live_allocs{0};

// The data pointer must equal the context pointer (Allocator::raw_allocate asserts it, and some
// kernels use raw_allocate), so the byte count is stored in a 64-byte header in front of the data.
constexpr size_t kHeader = 64;  // keeps libtorch's 64-byte alignment
at::DeleterFnPtr g_inner_raw_delete = nullptr;

void counting_delete(void* data) {
  if (!data) return;
  auto* base = static_cast<uint8_t*>(data) - kHeader;
  size_t n = *reinterpret_cast<size_t*>(base);
  g_live_bytes -= static_cast<int64_t>(n);
  g_live_allocs -= 1;
  g_inner_raw_delete(base);
}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
#define NASLORA_ALLOC_CONST
#else
#define NASLORA_ALLOC_CONST const
#endif

struct CountingAllocator final : public at::Allocator {
  at::Allocator* inner;
  explicit CountingAllocator(at::Allocator* a) : inner(a) {}
  at::DataPtr allocate(size_t n) NASLORA_ALLOC_CONST override {
    void* base = inner->raw_allocate(n + kHeader);
    *static_cast<size_t*>(base) = n;
    void* data = static_cast<uint8_t*>(base) + kHeader;
    int64_t now = (g_live_bytes += static_cast<int64_t>(n));
    g_live_allocs += 1;
    int64_t peak = g_peak_bytes.load();
    while (now > peak && !g_peak_bytes.compare_exchange_weak(peak, now)) {
    }
    return {data, data, &counting_delete, at::Device(at::kCPU)};
  }
  at::DeleterFnPtr raw_deleter() const override { return &counting_delete; }
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
#endif
};

// ---------------------------------------------------------------------------------------------
// Handle table.

constexpr double kSlotSpan = 4194304.0;  // 2^22 slots; handle = generation * 2^22 + slot
std::vector<at::Tensor> g_slots;
std::vector<uint32_t> g_gens;
std::vector<uint32_t> g_free;
int64_t g_live_handles = 0;
int64_t g_reported_bytes = 0;  // what V8 has been told about

double put(at::Tensor t) {
  uint32_t slot;
  if (!g_free.empty()) {
    slot = g_free.back();
    g_free.pop_back();
  } else {
    slot = static_cast<uint32_t>(g_slots.size());
    if (slot >= kSlotSpan) throw std::runtime_error("naslora: more than 4M live tensors (missing dispose?)");
    g_slots.emplace_back();
    g_gens.push_back(1);
  }
  g_slots[slot] = std::move(t);
  ++g_live_handles;
  return static_cast<double>(g_gens[slot]) * kSlotSpan + slot;
}

at::Tensor& get(const Napi::Value& v) {
  if (!v.IsNumber()) throw std::runtime_error("expected a tensor");
  double h = v.As<Napi::Number>().DoubleValue();
  auto slot = static_cast<uint32_t>(std::fmod(h, kSlotSpan));
  auto gen = static_cast<uint32_t>(h / kSlotSpan);
  if (slot >= g_slots.size() || g_gens[slot] != gen || !g_slots[slot].defined()) {
    throw std::runtime_error("tensor used after dispose");
  }
  return g_slots[slot];
}

bool release(double h) {
  auto slot = static_cast<uint32_t>(std::fmod(h, kSlotSpan));
  auto gen = static_cast<uint32_t>(h / kSlotSpan);
  if (slot >= g_slots.size() || g_gens[slot] != gen || !g_slots[slot].defined()) return false;
  g_slots[slot] = at::Tensor();
  g_gens[slot] += 1;
  g_free.push_back(slot);
  --g_live_handles;
  return true;
}

// Tell V8 about native memory in 4 MiB steps, so that large tensors held only by unreachable JS
// objects push the collector to run the safety-net finalizers.
void report_memory(Napi::Env env) {
  int64_t now = g_live_bytes.load();
  int64_t delta = now - g_reported_bytes;
  if (delta > (4 << 20) || delta < -(4 << 20)) {
    Napi::MemoryManagement::AdjustExternalMemory(env, delta);
    g_reported_bytes = now;
  }
}

// ---------------------------------------------------------------------------------------------
// Operators.

struct ArgSpec {
  c10::TypePtr type;
  c10::optional<c10::IValue> def;
  c10::optional<int32_t> n;  // fixed list length, e.g. int[2]
  std::string name;
};

struct OpEntry {
  c10::OperatorHandle handle;
  std::string name;
  std::vector<ArgSpec> args;
};

std::vector<OpEntry> g_ops;

[[noreturn]] void arg_error(const OpEntry& op, const ArgSpec& a, const std::string& what) {
  throw std::runtime_error(op.name + ": argument '" + a.name + "' " + what);
}

int64_t to_int(const OpEntry& op, const ArgSpec& a, const Napi::Value& v) {
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  if (!v.IsNumber()) arg_error(op, a, "must be an integer");
  double d = v.As<Napi::Number>().DoubleValue();
  if (std::floor(d) != d) arg_error(op, a, "must be an integer, got " + std::to_string(d));
  return static_cast<int64_t>(d);
}

double to_double(const OpEntry& op, const ArgSpec& a, const Napi::Value& v) {
  if (!v.IsNumber()) arg_error(op, a, "must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

c10::IValue to_ivalue(const OpEntry& op, const ArgSpec& a, const c10::TypePtr& type, const Napi::Value& v) {
  switch (type->kind()) {
    case c10::TypeKind::TensorType:
      if (v.IsNull() || v.IsUndefined()) arg_error(op, a, "must be a tensor, got null");
      return get(v);
    case c10::TypeKind::OptionalType:
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      return to_ivalue(op, a, type->castRaw<c10::OptionalType>()->getElementType(), v);
    case c10::TypeKind::IntType:
    case c10::TypeKind::SymIntType:
    case c10::TypeKind::ScalarTypeType:
    case c10::TypeKind::LayoutType:
    case c10::TypeKind::MemoryFormatType:
      return to_int(op, a, v);
    case c10::TypeKind::FloatType:
      return to_double(op, a, v);
    case c10::TypeKind::BoolType:
      if (!v.IsBoolean()) arg_error(op, a, "must be a boolean");
      return v.As<Napi::Boolean>().Value();
    case c10::TypeKind::NumberType: {  // Scalar: integral JS numbers become integer scalars, as in Python
      if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
      double d = to_double(op, a, v);
      if (std::floor(d) == d && std::fabs(d) < 9.007199254740992e15) return static_cast<int64_t>(d);
      return d;
    }
    case c10::TypeKind::StringType:
      if (!v.IsString()) arg_error(op, a, "must be a string");
      return v.As<Napi::String>().Utf8Value();
    case c10::TypeKind::DeviceObjType:
      if (!v.IsString()) arg_error(op, a, "must be a device string such as 'cpu' or 'cuda:0'");
      return c10::Device(v.As<Napi::String>().Utf8Value());
    case c10::TypeKind::GeneratorType:
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      arg_error(op, a, "generators are not supported (use manualSeed)");
    case c10::TypeKind::ListType: {
      auto elem = type->castRaw<c10::ListType>()->getElementType();
      std::vector<Napi::Value> items;
      if (v.IsArray()) {
        auto arr = v.As<Napi::Array>();
        for (uint32_t i = 0; i < arr.Length(); ++i) items.push_back(arr.Get(i));
      } else {
        items.assign(a.n.value_or(1), v);  // int[2] stride=1 means [1, 1], as in Python
      }
      switch (elem->kind()) {
        case c10::TypeKind::IntType:
        case c10::TypeKind::SymIntType: {
          c10::List<int64_t> l;
          l.reserve(items.size());
          for (auto& x : items) l.push_back(to_int(op, a, x));
          return l;
        }
        case c10::TypeKind::FloatType: {
          c10::List<double> l;
          for (auto& x : items) l.push_back(to_double(op, a, x));
          return l;
        }
        case c10::TypeKind::BoolType: {
          c10::List<bool> l;
          for (auto& x : items) l.push_back(x.ToBoolean().Value());
          return l;
        }
        case c10::TypeKind::TensorType: {
          c10::List<at::Tensor> l;
          l.reserve(items.size());
          for (auto& x : items) l.push_back(get(x));
          return l;
        }
        case c10::TypeKind::OptionalType: {
          c10::List<c10::optional<at::Tensor>> l;
          for (auto& x : items) {
            if (x.IsNull() || x.IsUndefined()) l.push_back(c10::nullopt);
            else l.push_back(get(x));
          }
          return l;
        }
        default:
          arg_error(op, a, "has an unsupported list type " + type->str());
      }
    }
    default:
      arg_error(op, a, "has an unsupported type " + type->str());
  }
}

Napi::Value from_ivalue(Napi::Env env, const c10::IValue& v) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) return env.Null();
    return Napi::Number::New(env, put(t));
  }
  if (v.isNone()) return env.Null();
  if (v.isInt()) return Napi::Number::New(env, static_cast<double>(v.toInt()));
  if (v.isDouble()) return Napi::Number::New(env, v.toDouble());
  if (v.isBool()) return Napi::Boolean::New(env, v.toBool());
  if (v.isString()) return Napi::String::New(env, v.toStringRef());
  if (v.isTuple()) {
    const auto& elems = v.toTupleRef().elements();
    auto arr = Napi::Array::New(env, elems.size());
    for (size_t i = 0; i < elems.size(); ++i) arr.Set(i, from_ivalue(env, elems[i]));
    return arr;
  }
  if (v.isList()) {
    auto list = v.toListRef();
    auto arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) arr.Set(i, from_ivalue(env, list[i]));
    return arr;
  }
  throw std::runtime_error("unsupported return type " + v.tagKind());
}

template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
  try {
    return f();
  } catch (const c10::Error& e) {
    throw Napi::Error::New(info.Env(), e.what_without_backtrace());
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
}

// opLookup(name, overload) -> id. Throws if the operator does not exist.
Napi::Value OpLookup(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    std::string name = info[0].As<Napi::String>().Utf8Value();
    std::string overload = info[1].As<Napi::String>().Utf8Value();
    auto h = c10::Dispatcher::singleton().findSchema({name, overload});
    if (!h) throw std::runtime_error("no such operator: " + name + (overload.empty() ? "" : "." + overload));
    OpEntry e{*h, name + (overload.empty() ? "" : "." + overload), {}};
    for (const auto& a : h->schema().arguments()) e.args.push_back({a.type(), a.default_value(), a.N(), a.name()});
    g_ops.push_back(std::move(e));
    return Napi::Number::New(info.Env(), static_cast<double>(g_ops.size() - 1));
  });
}

// Shared by call/callVoid: builds the stack from positional JS arguments (missing trailing ones
// take the schema default) and runs the operator.
torch::jit::Stack run_op(const Napi::CallbackInfo& info) {
  auto id = info[0].As<Napi::Number>().Uint32Value();
  if (id >= g_ops.size()) throw std::runtime_error("bad operator id");
  const OpEntry& op = g_ops[id];
  torch::jit::Stack stack;
  stack.reserve(op.args.size());
  size_t given = info.Length() - 1;
  if (given > op.args.size()) throw std::runtime_error(op.name + ": too many arguments");
  for (size_t i = 0; i < op.args.size(); ++i) {
    const ArgSpec& a = op.args[i];
    if (i < given && !info[i + 1].IsUndefined()) {
      stack.push_back(to_ivalue(op, a, a.type, info[i + 1]));
    } else if (a.def) {
      stack.push_back(*a.def);
    } else {
      throw std::runtime_error(op.name + ": missing argument '" + a.name + "'");
    }
  }
  op.handle.callBoxed(&stack);
  return stack;
}

// call(id, ...args) -> tensor handle | array | number | boolean | null
Napi::Value Call(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto stack = run_op(info);
    Napi::Env env = info.Env();
    Napi::Value out;
    if (stack.size() == 1) {
      out = from_ivalue(env, stack[0]);
    } else {
      auto arr = Napi::Array::New(env, stack.size());
      for (size_t i = 0; i < stack.size(); ++i) arr.Set(i, from_ivalue(env, stack[i]));
      out = arr;
    }
    report_memory(env);
    return out;
  });
}

// callVoid(id, ...args): for in-place ops whose result is the (already held) input.
Napi::Value CallVoid(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    run_op(info);
    report_memory(info.Env());
    return info.Env().Undefined();
  });
}

// ---------------------------------------------------------------------------------------------
// Tensor utilities.

Napi::Value Release(const Napi::CallbackInfo& info) {
  bool ok = release(info[0].As<Napi::Number>().DoubleValue());
  report_memory(info.Env());
  return Napi::Boolean::New(info.Env(), ok);
}

// fromBuffer(typedArray, shape[], dtypeCode) -> handle (the data is copied)
Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto ta = info[0].As<Napi::TypedArray>();
    auto shapeArr = info[1].As<Napi::Array>();
    std::vector<int64_t> shape;
    for (uint32_t i = 0; i < shapeArr.Length(); ++i) shape.push_back(shapeArr.Get(i).As<Napi::Number>().Int64Value());
    auto dtype = static_cast<at::ScalarType>(info[2].As<Napi::Number>().Int32Value());
    at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
    size_t nbytes = t.nbytes();
    if (nbytes != ta.ByteLength()) {
      throw std::runtime_error("fromBuffer: " + std::to_string(ta.ByteLength()) + " bytes given, shape " +
                               c10::str(t.sizes()) + " of " + c10::toString(dtype) + " needs " + std::to_string(nbytes));
    }
    auto* src = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    if (nbytes) std::memcpy(t.data_ptr(), src, nbytes);
    double h = put(std::move(t));
    report_memory(info.Env());
    return Napi::Number::New(info.Env(), h);
  });
}

// toBuffer(handle) -> ArrayBuffer with the contiguous CPU bytes
Napi::Value ToBuffer(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    at::Tensor t = get(info[0]).detach();
    if (t.is_conj()) t = t.resolve_conj();
    t = t.to(at::kCPU).contiguous();
    auto ab = Napi::ArrayBuffer::New(info.Env(), t.nbytes());
    if (t.nbytes()) std::memcpy(ab.Data(), t.data_ptr(), t.nbytes());
    return ab;
  });
}

// meta(handle) -> [shape[], dtypeCode, device string, requiresGrad]
Napi::Value Meta(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const at::Tensor& t = get(info[0]);
    Napi::Env env = info.Env();
    auto sizes = t.sizes();
    auto shape = Napi::Array::New(env, sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) shape.Set(i, Napi::Number::New(env, static_cast<double>(sizes[i])));
    auto out = Napi::Array::New(env, 4);
    out.Set(0u, shape);
    out.Set(1u, Napi::Number::New(env, static_cast<int>(t.scalar_type())));
    out.Set(2u, Napi::String::New(env, t.device().str()));
    out.Set(3u, Napi::Boolean::New(env, t.requires_grad()));
    return out;
  });
}

Napi::Value Shape(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    auto sizes = get(info[0]).sizes();
    auto shape = Napi::Array::New(info.Env(), sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) shape.Set(i, Napi::Number::New(info.Env(), static_cast<double>(sizes[i])));
    return shape;
  });
}

Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    get(info[0]).set_requires_grad(info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

Napi::Value Grad(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const at::Tensor& g = get(info[0]).grad();
    if (!g.defined()) return info.Env().Null();
    return Napi::Number::New(info.Env(), put(g));
  });
}

// setGrad(handle, gradHandle | null)
Napi::Value SetGrad(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    at::Tensor& t = get(info[0]);
    if (info[1].IsNull() || info[1].IsUndefined()) t.mutable_grad() = at::Tensor();
    else t.mutable_grad() = get(info[1]);
    report_memory(info.Env());
    return info.Env().Undefined();
  });
}

// backward(handle, gradHandle | null, retainGraph)
Napi::Value Backward(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    at::Tensor t = get(info[0]);
    at::Tensor g;
    if (!info[1].IsNull() && !info[1].IsUndefined()) g = get(info[1]);
    bool retain = info.Length() > 2 && info[2].ToBoolean().Value();
    torch::autograd::backward({t}, g.defined() ? torch::autograd::variable_list{g} : torch::autograd::variable_list{},
                              retain, false);
    report_memory(info.Env());
    return info.Env().Undefined();
  });
}

Napi::Value SetGradEnabled(const Napi::CallbackInfo& info) {
  bool prev = at::GradMode::is_enabled();
  at::GradMode::set_enabled(info[0].As<Napi::Boolean>().Value());
  return Napi::Boolean::New(info.Env(), prev);
}

Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled());
}

Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    at::manual_seed(static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value()));
    return info.Env().Undefined();
  });
}

// OpenBLAS runs its own thread pool (one thread per core) beside libtorch's intra-op threads, and
// its idle workers spin on sched_yield() for a while after every BLAS call: on a 2-core machine,
// where libtorch runs 1 intra-op thread, that was most of the demo's system time (600k involuntary
// context switches, sys ≈ 60 % of user). Like PyTorch does with MKL, the BLAS thread count follows
// libtorch's intra-op count, unless OPENBLAS_NUM_THREADS or GOTO_NUM_THREADS says otherwise.
using BlasSetThreads = void (*)(int);
using BlasGetThreads = int (*)();
BlasSetThreads g_blas_set = nullptr;
BlasGetThreads g_blas_get = nullptr;
bool g_blas_follows = false;

void find_blas() {
  // dlsym on this addon's own handle searches its dependency tree (libtorch_cpu -> libblas -> OpenBLAS).
  Dl_info di;
  if (!dladdr(reinterpret_cast<void*>(&find_blas), &di) || !di.dli_fname) return;
  void* self = dlopen(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (!self) return;
  g_blas_set = reinterpret_cast<BlasSetThreads>(dlsym(self, "openblas_set_num_threads"));
  g_blas_get = reinterpret_cast<BlasGetThreads>(dlsym(self, "openblas_get_num_threads"));
  dlclose(self);
  g_blas_follows = g_blas_set && !std::getenv("OPENBLAS_NUM_THREADS") && !std::getenv("GOTO_NUM_THREADS");
}

void sync_blas_threads() {
  if (g_blas_follows) g_blas_set(at::get_num_threads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    int n = info[0].As<Napi::Number>().Int32Value();
    if (n < 1) throw std::runtime_error("setNumThreads: need at least 1 thread");
    at::set_num_threads(n);
    sync_blas_threads();
    return info.Env().Undefined();
  });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), at::get_num_threads());
}

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("liveTensors", Napi::Number::New(env, static_cast<double>(g_live_handles)));
  o.Set("liveBytes", Napi::Number::New(env, static_cast<double>(g_live_bytes.load())));
  o.Set("peakBytes", Napi::Number::New(env, static_cast<double>(g_peak_bytes.load())));
  o.Set("liveAllocations", Napi::Number::New(env, static_cast<double>(g_live_allocs.load())));
  // glibc's own counters, over all arenas: bytes handed out by malloc (everyone's: libtorch, Node's
  // buffers, libvips) and bytes malloc holds from the OS. In use is the leak measure for native
  // memory outside libtorch; held is what the raised trim threshold keeps for reuse.
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  struct mallinfo2 mi = mallinfo2();
  o.Set("mallocInUse", Napi::Number::New(env, static_cast<double>(mi.uordblks + mi.hblkhd)));
  o.Set("mallocHeld", Napi::Number::New(env, static_cast<double>(mi.arena + mi.hblkhd)));
#else
  o.Set("mallocInUse", Napi::Number::New(env, -1));
  o.Set("mallocHeld", Napi::Number::New(env, -1));
#endif
  return o;
}

Napi::Value ResetPeak(const Napi::CallbackInfo& info) {
  g_peak_bytes = g_live_bytes.load();
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------------------------
// Devices: CUDA through the hooks and device-guard interfaces that every libtorch has (a CPU build
// answers "no CUDA"), parameters moved in place, autocast.

#ifdef NASLORA_LIBTORCH_CUDA
constexpr bool kCudaBuild = true;
#else
constexpr bool kCudaBuild = false;
#endif

int cuda_device_count() {
  if (!at::hasCUDA()) return 0;
  return at::detail::getCUDAHooks().getNumGPUs();
}

// setData(handle, newDataHandle): the tensor's data (and so its device and dtype) becomes new_data's,
// keeping the tensor itself (its handle, requires_grad, and every JS reference): `param.data = x`.
// Between tensor types that cannot share an implementation (CPU ↔ meta, used by shape-only tests)
// the handle's slot takes a detached new_data with the old requires_grad instead: the same for JS,
// but other handles to the old tensor (views made earlier) keep the old data.
Napi::Value SetData(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    at::Tensor& t = get(info[0]);
    const at::Tensor& d = get(info[1]);
    if (at::_has_compatible_shallow_copy_type(t, d)) {
      t.set_data(d);
    } else {
      bool rg = t.requires_grad();
      t = d.detach();
      if (rg) t.set_requires_grad(true);
    }
    report_memory(info.Env());
    return info.Env().Undefined();
  });
}

// cudaDeviceCount() -> visible CUDA devices (0 on a CPU build or without a driver/device).
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value { return Napi::Number::New(info.Env(), cuda_device_count()); });
}

// setCudaDevice(index): the current CUDA device of this thread (what 'cuda' means, and where NCCL runs).
Napi::Value SetCudaDevice(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    int idx = info[0].As<Napi::Number>().Int32Value();
    int n = cuda_device_count();
    if (n == 0) throw std::runtime_error(kCudaBuild ? "setCudaDevice: this CUDA libtorch sees no CUDA device" : "setCudaDevice: this libtorch has no CUDA (a CPU build)");
    if (idx < 0 || idx >= n) throw std::runtime_error("setCudaDevice: device " + std::to_string(idx) + " does not exist (" + std::to_string(n) + " visible)");
    c10::impl::getDeviceGuardImpl(c10::DeviceType::CUDA)->setDevice(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(idx)));
    return info.Env().Undefined();
  });
}

// cudaMemory(index) -> {allocated, peak, reserved} bytes of the CUDA caching allocator, or null where
// this addon was built without the CUDA runtime headers (or on a CPU build).
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
#ifdef NASLORA_WITH_CUDA_RUNTIME
    int idx = info[0].As<Napi::Number>().Int32Value();
    if (idx < 0 || idx >= cuda_device_count()) throw std::runtime_error("cudaMemory: no CUDA device " + std::to_string(idx));
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(idx));
    Napi::Env env = info.Env();
    auto o = Napi::Object::New(env);
    // Index 0 is StatType::AGGREGATE in every version (the enum moved namespaces in 2.x).
    o.Set("allocated", Napi::Number::New(env, static_cast<double>(stats.allocated_bytes[0].current)));
    o.Set("peak", Napi::Number::New(env, static_cast<double>(stats.allocated_bytes[0].peak)));
    o.Set("reserved", Napi::Number::New(env, static_cast<double>(stats.reserved_bytes[0].current)));
    return o;
#else
    return info.Env().Null();
#endif
  });
}

// cudaResetPeak(index) -> false where cudaMemory is unavailable.
Napi::Value CudaResetPeak(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
#ifdef NASLORA_WITH_CUDA_RUNTIME
    int idx = info[0].As<Napi::Number>().Int32Value();
    if (idx < 0 || idx >= cuda_device_count()) throw std::runtime_error("cudaResetPeak: no CUDA device " + std::to_string(idx));
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(idx));
    return Napi::Boolean::New(info.Env(), true);
#else
    return Napi::Boolean::New(info.Env(), false);
#endif
  });
}

// Autocast: libtorch's dispatcher-level mixed precision (thread-local dispatch keys, so the boxed
// calls of this addon are cast too). 2.4 made the API device-generic and deprecated the per-device
// functions that 1.13–2.3 have.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define NASLORA_AUTOCAST_GENERIC 1
#endif

bool autocast_enabled(at::DeviceType d) {
#ifdef NASLORA_AUTOCAST_GENERIC
  return at::autocast::is_autocast_enabled(d);
#else
  return d == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

void autocast_set_enabled(at::DeviceType d, bool on) {
#ifdef NASLORA_AUTOCAST_GENERIC
  at::autocast::set_autocast_enabled(d, on);
#else
  if (d == at::kCUDA) at::autocast::set_enabled(on);
  else at::autocast::set_cpu_enabled(on);
#endif
}

at::ScalarType autocast_dtype(at::DeviceType d) {
#ifdef NASLORA_AUTOCAST_GENERIC
  return at::autocast::get_autocast_dtype(d);
#else
  return d == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

void autocast_set_dtype(at::DeviceType d, at::ScalarType t) {
#ifdef NASLORA_AUTOCAST_GENERIC
  at::autocast::set_autocast_dtype(d, t);
#else
  if (d == at::kCUDA) at::autocast::set_autocast_gpu_dtype(t);
  else at::autocast::set_autocast_cpu_dtype(t);
#endif
}

// setAutocast('cpu' | 'cuda', enabled, dtypeCode) -> [previous enabled, previous dtypeCode]
Napi::Value SetAutocast(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    std::string dev = info[0].As<Napi::String>().Utf8Value();
    at::DeviceType d;
    if (dev == "cpu") d = at::kCPU;
    else if (dev == "cuda") d = at::kCUDA;
    else throw std::runtime_error("setAutocast: device type must be 'cpu' or 'cuda', got '" + dev + "'");
    bool on = info[1].As<Napi::Boolean>().Value();
    auto dtype = static_cast<at::ScalarType>(info[2].As<Napi::Number>().Int32Value());
    if (dtype != at::kBFloat16 && dtype != at::kHalf) throw std::runtime_error("setAutocast: the lower precision must be bfloat16 or float16");
    Napi::Env env = info.Env();
    auto prev = Napi::Array::New(env, 2);
    prev.Set(0u, Napi::Boolean::New(env, autocast_enabled(d)));
    prev.Set(1u, Napi::Number::New(env, static_cast<int>(autocast_dtype(d))));
    autocast_set_dtype(d, dtype);
    autocast_set_enabled(d, on);
    return prev;
  });
}

// autocastClearCache(): drops the cached low-precision copies of weights (done when the outermost
// autocast region ends, as torch.autocast's __exit__ does: the weights change at the next step).
Napi::Value AutocastClearCache(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    at::autocast::clear_cache();
    return info.Env().Undefined();
  });
}

bool g_malloc_tuned = false;

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("version", Napi::String::New(env, TORCH_VERSION));
  o.Set("config", Napi::String::New(env, at::show_config()));
  o.Set("parallel", Napi::String::New(env, at::get_parallel_info()));
  o.Set("cudaAvailable", Napi::Boolean::New(env, at::hasCUDA()));
  o.Set("cudaBuild", Napi::Boolean::New(env, kCudaBuild));
#ifdef NASLORA_WITH_CUDA_RUNTIME
  o.Set("cudaMemoryStats", Napi::Boolean::New(env, true));
#else
  o.Set("cudaMemoryStats", Napi::Boolean::New(env, false));
#endif
  o.Set("mallocTuned", Napi::Boolean::New(env, g_malloc_tuned));
  o.Set("blasThreads", Napi::Number::New(env, g_blas_get ? g_blas_get() : -1));
  o.Set("blasFollowsIntraOp", Napi::Boolean::New(env, g_blas_follows));
  return o;
}

// Keep glibc from handing big tensor buffers back to the OS after every step (mmap'd chunks are
// unmapped on free, and the heap top is trimmed): re-faulting those pages cost up to 2x per step.
// Users who set the MALLOC_*_ variables themselves, or NASLORA_MALLOC_TUNE=0, keep glibc's.
void tune_malloc() {
  const char* opt = std::getenv("NASLORA_MALLOC_TUNE");
  if (opt && std::string(opt) == "0") return;
  if (std::getenv("MALLOC_MMAP_THRESHOLD_") || std::getenv("MALLOC_TRIM_THRESHOLD_")) return;
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);  // glibc's maximum on 64-bit; bigger stays mmap'd
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024 * 1024);
  g_malloc_tuned = true;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  tune_malloc();
  find_blas();
  sync_blas_threads();
  // Count only where libtorch's allocator supports raw allocation (its default one does).
  at::Allocator* inner = c10::GetCPUAllocator();
  if (inner->raw_deleter() != nullptr) {
    g_inner_raw_delete = inner->raw_deleter();
    static CountingAllocator counting(inner);
    c10::SetCPUAllocator(&counting, /*priority=*/100);
  }
  exports.Set("opLookup", Napi::Function::New(env, OpLookup));
  exports.Set("call", Napi::Function::New(env, Call));
  exports.Set("callVoid", Napi::Function::New(env, CallVoid));
  exports.Set("release", Napi::Function::New(env, Release));
  exports.Set("fromBuffer", Napi::Function::New(env, FromBuffer));
  exports.Set("toBuffer", Napi::Function::New(env, ToBuffer));
  exports.Set("meta", Napi::Function::New(env, Meta));
  exports.Set("shape", Napi::Function::New(env, Shape));
  exports.Set("setRequiresGrad", Napi::Function::New(env, SetRequiresGrad));
  exports.Set("grad", Napi::Function::New(env, Grad));
  exports.Set("setGrad", Napi::Function::New(env, SetGrad));
  exports.Set("backward", Napi::Function::New(env, Backward));
  exports.Set("setGradEnabled", Napi::Function::New(env, SetGradEnabled));
  exports.Set("isGradEnabled", Napi::Function::New(env, IsGradEnabled));
  exports.Set("manualSeed", Napi::Function::New(env, ManualSeed));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("resetPeak", Napi::Function::New(env, ResetPeak));
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setData", Napi::Function::New(env, SetData));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount));
  exports.Set("setCudaDevice", Napi::Function::New(env, SetCudaDevice));
  exports.Set("cudaMemory", Napi::Function::New(env, CudaMemory));
  exports.Set("cudaResetPeak", Napi::Function::New(env, CudaResetPeak));
  exports.Set("setAutocast", Napi::Function::New(env, SetAutocast));
  exports.Set("autocastClearCache", Napi::Function::New(env, AutocastClearCache));
  naslora::registerDist(env, exports);
  return exports;
}

}  // namespace

namespace naslora {
at::Tensor& tensorOf(const Napi::Value& v) { return get(v); }
double putTensor(at::Tensor t) { return put(std::move(t)); }
void reportMemory(Napi::Env env) { report_memory(env); }
}  // namespace naslora

NODE_API_MODULE(naslora, Init)
