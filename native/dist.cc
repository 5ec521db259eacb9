// naslora's binding of PyTorch's c10d: a TCPStore for rendezvous, and process groups (Gloo for CPU
// tensors; NCCL for CUDA tensors where the libtorch is a CUDA build) with blocking collectives.
//
// Everything here is synchronous on the JS thread: a call returns when the collective is done on
// this rank, or throws a JS Error. Every wait is bounded (the group's timeout, or the call's), so
// a dead peer (its sockets close: Gloo fails at once) or a hung one (alive but never joining:
// Gloo's receive times out) raises an Error instead of hanging the process or crashing it. After
// such an error the group is unusable (peers may be mid-collective): close it and start over.
//
// Stores and groups live in id tables (like tensors in naslora.cc); JS holds the numbers and frees
// them with storeClose / pgClose. The tables are heap objects never destroyed, so process exit does
// not run c10d destructors (which join worker threads) from static destruction.
//
// Versions: in libtorch 1.13 ProcessGroupGloo/NCCL derive from c10d::ProcessGroup; from 2.0 on
// (the "Backend split") they derive from c10d::Backend, and ProcessGroup is a dispatching wrapper.
// Both bases declare the same virtual collectives, so a `PGBase` alias is the only #if needed for
// the groups. ProcessGroupGloo.hpp is guarded by USE_C10D_GLOO and includes Gloo's own headers,
// which libtorch zips and Debian's libtorch-dev may not ship (Debian: libgloo-dev); without them
// the addon builds without the gloo backend and says so when one is asked for. Other differences
// that need no #if: Gloo's createDevice* gained a defaulted lazyInit argument in 2.x, and
// TCPStoreOptions gained fields (useLibUV, masterListenFd) that keep their defaults here.
#include "naslora.h"

#include <napi.h>

#include <ATen/ATen.h>
#include <torch/version.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/distributed/c10d/Backend.hpp>
#endif

// NASLORA_WITH_GLOO comes from native/torch-paths.cjs when Gloo's headers were found.
#ifdef NASLORA_WITH_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

// NASLORA_WITH_NCCL (and USE_C10D_NCCL) come from native/torch-paths.cjs, only for a CUDA libtorch
// whose NCCL and CUDA headers were found; a CPU build never includes these headers.
#ifdef NASLORA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace naslora {
namespace {

#if TORCH_VERSION_MAJOR >= 2
using PGBase = c10d::Backend;
#else
using PGBase = c10d::ProcessGroup;
#endif

using Ms = std::chrono::milliseconds;

struct StoreEntry {
  c10::intrusive_ptr<c10d::Store> store;
  std::string desc;   // "127.0.0.1:29500 (master)", for error messages
  int64_t groups = 0;  // groups made over it: their key prefix, so that several can share a store
};

struct GroupEntry {
  c10::intrusive_ptr<PGBase> pg;
  std::string backend;
  int rank;
  int size;
  Ms timeout;
  bool broken = false;  // a collective failed: work may still run in c10d's threads
  std::string brokenBy;  // that failure's message
};

// Never destroyed (see the top of the file).
auto& g_stores = *new std::unordered_map<uint32_t, StoreEntry>();
auto& g_groups = *new std::unordered_map<uint32_t, GroupEntry>();
// Closed broken groups: never destroyed (their destructor would join threads still in a collective).
auto& g_abandoned = *new std::vector<c10::intrusive_ptr<PGBase>>();
uint32_t g_next_id = 1;

// ---------------------------------------------------------------------------------------------
// Arguments and errors.

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

std::string str_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) bad(std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

int64_t int_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) bad(std::string(name) + " must be an integer");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (std::floor(d) != d || std::fabs(d) > 9.007199254740992e15) bad(std::string(name) + " must be an integer");
  return static_cast<int64_t>(d);
}

Ms ms_arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  int64_t v = int_arg(info, i, name);
  if (v <= 0) bad(std::string(name) + " must be a positive number of milliseconds");
  return Ms(v);
}

// An optional timeout: undefined/null means `fallback`.
Ms opt_ms_arg(const Napi::CallbackInfo& info, size_t i, const char* name, Ms fallback) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return fallback;
  return ms_arg(info, i, name);
}

std::vector<std::string> keys_arg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsArray()) bad("keys must be an array of strings");
  auto arr = info[i].As<Napi::Array>();
  std::vector<std::string> keys;
  for (uint32_t k = 0; k < arr.Length(); ++k) {
    Napi::Value v = arr.Get(k);
    if (!v.IsString()) bad("keys must be an array of strings");
    keys.push_back(v.As<Napi::String>().Utf8Value());
  }
  return keys;
}

std::vector<uint8_t> bytes_arg(const Napi::CallbackInfo& info, size_t i) {
  if (i < info.Length() && info[i].IsString()) {
    std::string s = info[i].As<Napi::String>().Utf8Value();
    return {s.begin(), s.end()};
  }
  if (i < info.Length() && info[i].IsTypedArray()) {
    auto ta = info[i].As<Napi::TypedArray>();
    auto* p = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    return {p, p + ta.ByteLength()};
  }
  bad("value must be a string or a Uint8Array");
}

StoreEntry& store_of(const Napi::CallbackInfo& info, size_t i = 0) {
  auto id = static_cast<uint32_t>(int_arg(info, i, "store"));
  auto it = g_stores.find(id);
  if (it == g_stores.end()) throw std::runtime_error("store used after close");
  return it->second;
}

GroupEntry& group_of(const Napi::CallbackInfo& info, size_t i = 0) {
  auto id = static_cast<uint32_t>(int_arg(info, i, "group"));
  auto it = g_groups.find(id);
  if (it == g_groups.end()) throw std::runtime_error("process group used after close");
  return it->second;
}

// Runs f; any C++ exception becomes a JS Error "naslora dist: <what> failed: <c10d's text>".
// `what` is computed lazily (it may name the group, which is looked up inside f).
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, const std::string& what, F&& f) {
  std::string msg;
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const c10::Error& e) {
    msg = e.what_without_backtrace();
  } catch (const std::exception& e) {
    msg = e.what();
  } catch (...) {
    msg = "unknown C++ exception";
  }
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  throw Napi::Error::New(info.Env(), "naslora dist: " + what + " failed: " + msg);
}

std::string group_desc(const GroupEntry& g, Ms timeout) {
  return "(" + g.backend + ", rank " + std::to_string(g.rank) + " of " + std::to_string(g.size) + ", timeout " +
         std::to_string(timeout.count()) + " ms)";
}

// ---------------------------------------------------------------------------------------------
// Store.

// storeCreate(host, port, worldSize, isMaster, timeoutMs, waitWorkers) -> id
// The master listens on host:port (port 0: any free one; storePort tells which) and, with
// waitWorkers, returns only when all worldSize ranks have connected. Every rank's store is a
// client of the master; each later operation waits at most timeoutMs. Clients must pass
// waitWorkers = true: that is what makes them check in (c10d adds 1 to a key the master polls);
// a master waiting for clients that do not check in waits out its whole timeout.
Napi::Value StoreCreate(const Napi::CallbackInfo& info) {
  return guarded(info, "store create", [&]() -> Napi::Value {
    std::string host = str_arg(info, 0, "host");
    int64_t port = int_arg(info, 1, "port");
    int64_t world = int_arg(info, 2, "worldSize");
    if (port < 0 || port > 65535) bad("port must be in 0..65535");
    if (world < 1) bad("worldSize must be at least 1");
    if (info.Length() < 4 || !info[3].IsBoolean()) bad("isMaster must be a boolean");
    bool master = info[3].As<Napi::Boolean>().Value();
    Ms timeout = ms_arg(info, 4, "timeoutMs");
    bool waitWorkers = info.Length() > 5 && info[5].ToBoolean().Value();
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = master;
    opts.numWorkers = static_cast<std::size_t>(world);
    opts.waitWorkers = waitWorkers;
    opts.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(host, opts);
    uint32_t id = g_next_id++;
    g_stores[id] = StoreEntry{store, host + ":" + std::to_string(store->getPort()) + (master ? " (master)" : ""), 0};
    return Napi::Number::New(info.Env(), id);
  });
}

Napi::Value StorePort(const Napi::CallbackInfo& info) {
  return guarded(info, "store port", [&]() -> Napi::Value {
    auto* tcp = dynamic_cast<c10d::TCPStore*>(store_of(info).store.get());
    return Napi::Number::New(info.Env(), tcp ? tcp->getPort() : 0);
  });
}

// storeSet(id, key, string | Uint8Array)
Napi::Value StoreSet(const Napi::CallbackInfo& info) {
  std::string key = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "?";
  return guarded(info, "store.set('" + key + "')", [&]() -> Napi::Value {
    auto& s = store_of(info);
    s.store->set(str_arg(info, 1, "key"), bytes_arg(info, 2));
    return info.Env().Undefined();
  });
}

// storeGet(id, key, timeoutMs?) -> Buffer: waits for the key (at most timeoutMs, default the
// store's timeout), then reads it.
Napi::Value StoreGet(const Napi::CallbackInfo& info) {
  std::string key = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "?";
  std::string what = "store.get('" + key + "')";
  return guarded(info, what, [&]() -> Napi::Value {
    auto& s = store_of(info);
    std::string k = str_arg(info, 1, "key");
    Ms timeout = opt_ms_arg(info, 2, "timeoutMs", s.store->getTimeout());
    what += " on " + s.desc + " (waits up to " + std::to_string(timeout.count()) + " ms for the key)";
    s.store->wait({k}, timeout);
    std::vector<uint8_t> v = s.store->get(k);
    return Napi::Buffer<uint8_t>::Copy(info.Env(), v.data(), v.size());
  });
}

// storeAdd(id, key, n) -> the new value (a missing key counts from 0)
Napi::Value StoreAdd(const Napi::CallbackInfo& info) {
  std::string key = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "?";
  return guarded(info, "store.add('" + key + "')", [&]() -> Napi::Value {
    auto& s = store_of(info);
    int64_t v = s.store->add(str_arg(info, 1, "key"), int_arg(info, 2, "n"));
    return Napi::Number::New(info.Env(), static_cast<double>(v));
  });
}

// storeCheck(id, keys) -> whether all keys exist (does not wait)
Napi::Value StoreCheck(const Napi::CallbackInfo& info) {
  return guarded(info, "store.check", [&]() -> Napi::Value {
    auto& s = store_of(info);
    return Napi::Boolean::New(info.Env(), s.store->check(keys_arg(info, 1)));
  });
}

// storeWait(id, keys, timeoutMs?): returns when all keys exist; throws after the timeout.
Napi::Value StoreWait(const Napi::CallbackInfo& info) {
  std::string what = "store.wait";
  return guarded(info, what, [&]() -> Napi::Value {
    auto& s = store_of(info);
    auto keys = keys_arg(info, 1);
    Ms timeout = opt_ms_arg(info, 2, "timeoutMs", s.store->getTimeout());
    what += " on " + s.desc + " (up to " + std::to_string(timeout.count()) + " ms)";
    s.store->wait(keys, timeout);
    return info.Env().Undefined();
  });
}

// storeDelete(id, key) -> whether it existed
Napi::Value StoreDelete(const Napi::CallbackInfo& info) {
  return guarded(info, "store.delete", [&]() -> Napi::Value {
    auto& s = store_of(info);
    return Napi::Boolean::New(info.Env(), s.store->deleteKey(str_arg(info, 1, "key")));
  });
}

Napi::Value StoreNumKeys(const Napi::CallbackInfo& info) {
  return guarded(info, "store.numKeys", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), static_cast<double>(store_of(info).store->getNumKeys()));
  });
}

// storeClose(id) -> false if already closed. Groups made over the store keep it alive natively;
// a master's listening socket closes when the last reference goes.
Napi::Value StoreClose(const Napi::CallbackInfo& info) {
  return guarded(info, "store.close", [&]() -> Napi::Value {
    auto id = static_cast<uint32_t>(int_arg(info, 0, "store"));
    auto it = g_stores.find(id);
    if (it == g_stores.end()) return Napi::Boolean::New(info.Env(), false);
    auto keep = std::move(it->second.store);
    g_stores.erase(it);
    keep.reset();
    return Napi::Boolean::New(info.Env(), true);
  });
}

// ---------------------------------------------------------------------------------------------
// Process groups.

#ifdef NASLORA_WITH_GLOO
c10::intrusive_ptr<PGBase> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, Ms timeout,
                                     const std::string& host, const std::string& iface) {
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  std::string ifname = iface;
  if (ifname.empty() && host.empty()) {
    const char* env = std::getenv("GLOO_SOCKET_IFNAME");
    if (env && *env) ifname = env;
  }
  if (!ifname.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  else if (!host.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
  else opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  opts->threads = 2;  // Gloo's worker threads (PyTorch's default: 2 per device)
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
}
#endif

#ifdef NASLORA_WITH_NCCL
c10::intrusive_ptr<PGBase> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size, Ms timeout) {
  if (!at::hasCUDA()) throw std::runtime_error("nccl: this CUDA libtorch sees no CUDA device");
  // Make Work::wait block the CPU (bounded by the timeout) and throw, instead of only ordering
  // streams and leaving timeouts to the watchdog (which tears the process down). User settings win.
  setenv("TORCH_NCCL_BLOCKING_WAIT", "1", 0);  // 2.2+
  setenv("NCCL_BLOCKING_WAIT", "1", 0);        // older names
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  opts->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
}
#endif

// pgCreate(storeId, backend, rank, worldSize, timeoutMs, host, iface, name) -> id
// Blocks until all worldSize ranks have created their group (rendezvous through the store), at
// most timeoutMs. Groups made over one store in the same order on every rank meet each other:
// their store keys are prefixed "<name>/" (name: "pg<n>" for the store's n-th group by default).
Napi::Value PgCreate(const Napi::CallbackInfo& info) {
  std::string backend = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "?";
  return guarded(info, "process group create (" + backend + ")", [&]() -> Napi::Value {
    auto& s = store_of(info, 0);
    int64_t rank = int_arg(info, 2, "rank");
    int64_t size = int_arg(info, 3, "worldSize");
    if (size < 1) bad("worldSize must be at least 1");
    if (rank < 0 || rank >= size) bad("rank must be in 0.." + std::to_string(size - 1));
    Ms timeout = ms_arg(info, 4, "timeoutMs");
    std::string host = info.Length() > 5 && info[5].IsString() ? info[5].As<Napi::String>().Utf8Value() : "";
    std::string iface = info.Length() > 6 && info[6].IsString() ? info[6].As<Napi::String>().Utf8Value() : "";
    std::string name = info.Length() > 7 && info[7].IsString() ? info[7].As<Napi::String>().Utf8Value() : "";
    if (name.empty()) name = "pg" + std::to_string(s.groups);
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(name, s.store);
    c10::intrusive_ptr<PGBase> pg;
    if (backend == "gloo") {
#ifdef NASLORA_WITH_GLOO
      pg = make_gloo(prefixed, static_cast<int>(rank), static_cast<int>(size), timeout, host, iface);
#else
      throw std::runtime_error(
          "this addon was built without Gloo's headers (gloo/*.h), so it has no gloo backend: install libgloo-dev "
          "(Debian) or set GLOO_INCLUDE, and run npm run build:native");
#endif
    } else if (backend == "nccl") {
#ifdef NASLORA_WITH_NCCL
      pg = make_nccl(prefixed, static_cast<int>(rank), static_cast<int>(size), timeout);
#elif defined(NASLORA_LIBTORCH_CUDA)
      throw std::runtime_error(
          "this addon was built without NCCL: the libtorch is a CUDA build, but nccl.h or the CUDA headers were not "
          "found at build time (set NCCL_HOME / CUDA_HOME / NASLORA_CUDA_INCLUDE and run npm run build:native)");
#else
      throw std::runtime_error("this libtorch has no NCCL (a CPU build); use the gloo backend");
#endif
    } else {
      bad("backend must be 'gloo' or 'nccl', got '" + backend + "'");
    }
    s.groups += 1;
    uint32_t id = g_next_id++;
    g_groups[id] = GroupEntry{pg, backend, static_cast<int>(rank), static_cast<int>(size), timeout};
    return Napi::Number::New(info.Env(), id);
  });
}

// Waits for a collective: at most `timeout`, then throws. Work::wait rethrows the collective's
// own error (a closed peer connection, Gloo's receive timeout); past the timeout it throws
// "Operation timed out!" while the work goes on in c10d's thread until Gloo's own timeout (the
// group's) ends it. Any failure marks the group broken (see PgClose).
void wait_work(GroupEntry& g, const char* op, const c10::intrusive_ptr<c10d::Work>& work, Ms timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto fail = [&](const std::string& msg) {
    g.broken = true;
    g.brokenBy = std::string(op) + ": " + msg;
    throw std::runtime_error(msg);
  };
  auto timed_out = [&](const std::string& detail) {
    fail("timed out after " + std::to_string(timeout.count()) +
         " ms: a peer is alive but has not joined this collective, or is slower than the timeout" +
         (detail.empty() ? "" : " (c10d: " + detail + ")"));
  };
  std::string err;
  try {
    work->wait(timeout);
  } catch (const c10::Error& e) {
    err = e.what_without_backtrace();
  } catch (const std::exception& e) {
    err = e.what();
  }
  if (!err.empty()) {
    if (!work->isCompleted()) timed_out(err);
    fail(err);
  }
  // NCCL's wait may only order CUDA streams; make the CPU wait too, still bounded.
  while (!work->isCompleted()) {
    if (std::chrono::steady_clock::now() > deadline) timed_out("");
    std::this_thread::sleep_for(Ms(1));
  }
  if (auto e = work->exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      fail(x.what());
    }
  }
}

// A group whose collective failed is out of step with its peers: refuse further collectives.
GroupEntry& live_group(const Napi::CallbackInfo& info) {
  GroupEntry& g = group_of(info);
  if (g.broken) throw std::runtime_error("this group is broken by an earlier failed collective (" + g.brokenBy + "); close it");
  return g;
}

at::Tensor tensor_arg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length()) bad("missing tensor");
  at::Tensor t = tensorOf(info[i]).detach();  // shares storage; keeps autograd out of it
  if (t.layout() != at::kStrided) bad("collectives need a dense (strided) tensor");
  return t;
}

// pgAllreduce(id, tensor, op 'sum'|'avg'|'max'|'min', timeoutMs?): in place.
// Gloo has no AVG: 'avg' is SUM, then ÷ worldSize in place (floating tensors only).
Napi::Value PgAllreduce(const Napi::CallbackInfo& info) {
  std::string what = "allreduce";
  return guarded(info, what, [&]() -> Napi::Value {
    auto& g = live_group(info);
    at::Tensor t = tensor_arg(info, 1);
    std::string op = str_arg(info, 2, "op");
    Ms timeout = opt_ms_arg(info, 3, "timeoutMs", g.timeout);
    what += " " + group_desc(g, timeout);
    c10d::AllreduceOptions opts;
    if (op == "sum" || op == "avg") opts.reduceOp = c10d::ReduceOp::SUM;
    else if (op == "max") opts.reduceOp = c10d::ReduceOp::MAX;
    else if (op == "min") opts.reduceOp = c10d::ReduceOp::MIN;
    else bad("op must be 'sum', 'avg', 'max' or 'min', got '" + op + "'");
    if (op == "avg" && !at::isFloatingType(t.scalar_type())) {
      bad("'avg' needs a floating tensor (got " + std::string(c10::toString(t.scalar_type())) + "); use 'sum'");
    }
    opts.timeout = timeout;
    bool copy = !t.is_contiguous();
    std::vector<at::Tensor> ts{copy ? t.contiguous() : t};
    wait_work(g, "allreduce", g.pg->allreduce(ts, opts), timeout);
    if (op == "avg") ts[0].div_(g.size);
    if (copy) t.copy_(ts[0]);
    return info.Env().Undefined();
  });
}

// pgBroadcast(id, tensor, root, timeoutMs?): in place; every rank ends with root's values.
Napi::Value PgBroadcast(const Napi::CallbackInfo& info) {
  std::string what = "broadcast";
  return guarded(info, what, [&]() -> Napi::Value {
    auto& g = live_group(info);
    at::Tensor t = tensor_arg(info, 1);
    int64_t root = int_arg(info, 2, "root");
    Ms timeout = opt_ms_arg(info, 3, "timeoutMs", g.timeout);
    what += " " + group_desc(g, timeout);
    if (root < 0 || root >= g.size) bad("root must be in 0.." + std::to_string(g.size - 1));
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    opts.timeout = timeout;
    bool copy = !t.is_contiguous();
    std::vector<at::Tensor> ts{copy ? t.contiguous() : t};
    wait_work(g, "broadcast", g.pg->broadcast(ts, opts), timeout);
    if (copy) t.copy_(ts[0]);
    return info.Env().Undefined();
  });
}

// pgAllgather(id, tensor, timeoutMs?) -> worldSize new tensor handles, rank order (every rank's
// tensor must have the same shape and dtype).
Napi::Value PgAllgather(const Napi::CallbackInfo& info) {
  std::string what = "allgather";
  return guarded(info, what, [&]() -> Napi::Value {
    auto& g = live_group(info);
    at::Tensor t = tensor_arg(info, 1).contiguous();
    Ms timeout = opt_ms_arg(info, 2, "timeoutMs", g.timeout);
    what += " " + group_desc(g, timeout);
    c10d::AllgatherOptions opts;
    opts.timeout = timeout;
    std::vector<at::Tensor> in{t};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < g.size; ++r) out[0].push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
    wait_work(g, "allgather", g.pg->allgather(out, in, opts), timeout);
    Napi::Env env = info.Env();
    auto arr = Napi::Array::New(env, out[0].size());
    for (size_t r = 0; r < out[0].size(); ++r) arr.Set(static_cast<uint32_t>(r), Napi::Number::New(env, putTensor(out[0][r])));
    reportMemory(env);
    return arr;
  });
}

// pgBarrier(id, timeoutMs?)
Napi::Value PgBarrier(const Napi::CallbackInfo& info) {
  std::string what = "barrier";
  return guarded(info, what, [&]() -> Napi::Value {
    auto& g = live_group(info);
    Ms timeout = opt_ms_arg(info, 1, "timeoutMs", g.timeout);
    what += " " + group_desc(g, timeout);
    c10d::BarrierOptions opts;
    opts.timeout = timeout;
    wait_work(g, "barrier", g.pg->barrier(opts), timeout);
    return info.Env().Undefined();
  });
}

// pgClose(id) -> false if already closed. A healthy group is destroyed (its worker threads
// joined, its connections closed). A broken one (a collective failed) may still have a collective
// running in a worker thread until Gloo's own timeout, and destroying it would wait for that: it is
// set aside instead, never destroyed, so close returns at once; its threads and sockets stay until
// the process exits (which is what normally follows).
Napi::Value PgClose(const Napi::CallbackInfo& info) {
  return guarded(info, "process group close", [&]() -> Napi::Value {
    auto id = static_cast<uint32_t>(int_arg(info, 0, "group"));
    auto it = g_groups.find(id);
    if (it == g_groups.end()) return Napi::Boolean::New(info.Env(), false);
    auto keep = std::move(it->second.pg);
    bool broken = it->second.broken;
    g_groups.erase(it);
    if (broken) g_abandoned.push_back(std::move(keep));
    else keep.reset();
    return Napi::Boolean::New(info.Env(), true);
  });
}

// distInfo() -> which backends this addon has
Napi::Value DistInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
#ifdef NASLORA_WITH_GLOO
  o.Set("gloo", Napi::Boolean::New(env, true));
#else
  o.Set("gloo", Napi::Boolean::New(env, false));
#endif
#ifdef NASLORA_WITH_NCCL
  o.Set("nccl", Napi::Boolean::New(env, at::hasCUDA()));
#else
  o.Set("nccl", Napi::Boolean::New(env, false));
#endif
  return o;
}

}  // namespace

void registerDist(Napi::Env env, Napi::Object exports) {
  exports.Set("storeCreate", Napi::Function::New(env, StoreCreate));
  exports.Set("storePort", Napi::Function::New(env, StorePort));
  exports.Set("storeSet", Napi::Function::New(env, StoreSet));
  exports.Set("storeGet", Napi::Function::New(env, StoreGet));
  exports.Set("storeAdd", Napi::Function::New(env, StoreAdd));
  exports.Set("storeCheck", Napi::Function::New(env, StoreCheck));
  exports.Set("storeWait", Napi::Function::New(env, StoreWait));
  exports.Set("storeDelete", Napi::Function::New(env, StoreDelete));
  exports.Set("storeNumKeys", Napi::Function::New(env, StoreNumKeys));
  exports.Set("storeClose", Napi::Function::New(env, StoreClose));
  exports.Set("pgCreate", Napi::Function::New(env, PgCreate));
  exports.Set("pgAllreduce", Napi::Function::New(env, PgAllreduce));
  exports.Set("pgBroadcast", Napi::Function::New(env, PgBroadcast));
  exports.Set("pgAllgather", Napi::Function::New(env, PgAllgather));
  exports.Set("pgBarrier", Napi::Function::New(env, PgBarrier));
  exports.Set("pgClose", Napi::Function::New(env, PgClose));
  exports.Set("distInfo", Napi::Function::New(env, DistInfo));
}

}  // namespace naslora
