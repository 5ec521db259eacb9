// What naslora.cc shares with the other native files (dist.cc): the tensor handle table.
//
// Handles are created and resolved on the JS thread only (the table is not locked); other threads
// (c10d's workers) may use the at::Tensor itself, which keeps its storage alive by reference count.
#pragma once

#include <napi.h>

#include <ATen/ATen.h>

namespace naslora {

// The tensor behind a JS handle; throws std::runtime_error for a non-number or a stale handle.
at::Tensor& tensorOf(const Napi::Value& v);
// Puts a tensor into the handle table and returns its JS handle (the caller's JS side owns it).
double putTensor(at::Tensor t);
// Tells V8 about native memory growth (call after creating tensors).
void reportMemory(Napi::Env env);

// native/dist.cc: c10d stores, process groups and collectives.
void registerDist(Napi::Env env, Napi::Object exports);

}  // namespace naslora
