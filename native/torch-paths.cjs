// Where libtorch lives, for binding.gyp. LIBTORCH may point at an official libtorch zip (CPU or
// CUDA), or at a pip torch package folder (site-packages/torch), which has the same include/ and
// lib/ layout. Without it, Debian's libtorch-dev in /usr is used.
//
//   node native/torch-paths.cjs include|libs|defines
//
// c10d (native/dist.cc) needs two more sets of headers that libtorch itself may not ship:
// - Gloo's (gloo/*.h), included by ProcessGroupGloo.hpp, which must match the Gloo that libtorch
//   was built with: for Debian's libtorch, libgloo-dev (the Gloo it links); for LIBTORCH, its own
//   include/gloo if it ships one; or GLOO_INCLUDE=dir. (Debian's headers are not used for another
//   libtorch: they may be older than its ProcessGroupGloo.hpp expects.) Without them the addon
//   builds without the gloo backend, says so here, and a gloo group throws saying why.
// - NCCL's and CUDA's (nccl.h, cuda_runtime_api.h, cublas_v2.h, cusparse.h), only for a CUDA
//   libtorch (lib/libtorch_cuda.so present): found under NCCL_HOME/include, CUDA_HOME (default
//   /usr/local/cuda)/include, libtorch's include/, /usr/include, or the ':'-separated
//   NASLORA_CUDA_INCLUDE (e.g. pip's nvidia/*/include folders). Without them the addon builds
//   without the nccl backend, and says so at build time.
// - CUDA's runtime header alone (cuda_runtime_api.h) is enough for the CUDA caching allocator's
//   statistics (cudaMemory: peak bytes); NASLORA_NO_CUDA_MEMSTATS=1 leaves them out (e.g. if those
//   c10/cuda headers do not compile against the CUDA headers found). A CUDA libtorch's own libraries
//   (libtorch_cuda, libc10_cuda) are always linked, so its CUDA kernels are registered.
// - The C++ ABI: NASLORA_CXX11_ABI=0|1 sets _GLIBCXX_USE_CXX11_ABI to match the libtorch (pip torch:
//   python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))'); unset: the compiler's default.
const fs = require('node:fs');
const path = require('node:path');
const root = process.env.LIBTORCH;
const what = process.argv[2];
const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu' }[process.arch];

let incs;
let libdir;
let libs = '';
if (root) {
  const inc = path.join(root, 'include');
  libdir = path.join(root, 'lib');
  if (!fs.existsSync(path.join(inc, 'ATen', 'ATen.h'))) {
    console.error(`LIBTORCH=${root}: no include/ATen/ATen.h there`);
    process.exit(1);
  }
  incs = [inc, path.join(inc, 'torch/csrc/api/include')];
  libs = `-L${libdir} -Wl,-rpath,${libdir}`;
} else {
  incs = ['/usr/include', '/usr/include/torch/csrc/api/include'];
  libdir = multiarch ? `/usr/lib/${multiarch}` : '/usr/lib';
}
const defines = [];
const glooDir = process.env.GLOO_INCLUDE || incs[0];
if (fs.existsSync(path.join(glooDir, 'gloo', 'algorithm.h'))) {
  defines.push('NASLORA_WITH_GLOO');
  if (!incs.includes(glooDir)) incs.push(glooDir);
} else if (what === 'defines') {
  console.error(`naslora: no Gloo headers in ${glooDir}/gloo: building without the gloo backend ` +
    `(${root ? 'set GLOO_INCLUDE to the headers of the Gloo this libtorch was built with' : 'apt-get install libgloo-dev'}, and rebuild)`);
}

if (process.env.NASLORA_CXX11_ABI !== undefined && process.env.NASLORA_CXX11_ABI !== '') {
  if (!['0', '1'].includes(process.env.NASLORA_CXX11_ABI)) {
    console.error(`NASLORA_CXX11_ABI=${process.env.NASLORA_CXX11_ABI}: expected 0 or 1`);
    process.exit(1);
  }
  defines.push(`_GLIBCXX_USE_CXX11_ABI=${process.env.NASLORA_CXX11_ABI}`);
}

// NCCL: only a CUDA libtorch has ProcessGroupNCCL compiled in.
if (fs.existsSync(path.join(libdir, 'libtorch_cuda.so'))) {
  defines.push('NASLORA_LIBTORCH_CUDA');
  libs += ' -Wl,--no-as-needed -ltorch_cuda -lc10_cuda';
  const cudaHome = process.env.CUDA_HOME || process.env.CUDA_PATH || '/usr/local/cuda';
  const dirs = [
    ...(process.env.NASLORA_CUDA_INCLUDE || '').split(':').filter(Boolean),
    ...(process.env.NCCL_HOME ? [path.join(process.env.NCCL_HOME, 'include')] : []),
    path.join(cudaHome, 'include'), incs[0], '/usr/include',
  ];
  const need = ['nccl.h', 'cuda_runtime_api.h', 'cublas_v2.h', 'cusparse.h'];
  const found = need.map((h) => dirs.find((d) => fs.existsSync(path.join(d, h))));
  const missing = need.filter((_, i) => !found[i]);
  // Every NASLORA_CUDA_INCLUDE folder goes on the include path: the CUDA headers of ATen/cuda and c10/cuda
  // include others than the four looked for (cusolverDn.h, cuda.h, ...), each in its own pip nvidia-* folder.
  const given = (process.env.NASLORA_CUDA_INCLUDE || '').split(':').filter((d) => d && fs.existsSync(d));
  const addCudaIncludes = () => { for (const d of [...given, ...found]) if (d && !incs.includes(d)) incs.push(d); };
  if (missing.length === 0) {
    defines.push('NASLORA_WITH_NCCL', 'USE_C10D_NCCL');
    addCudaIncludes();
  } else if (what === 'defines') {
    console.error(`naslora: CUDA libtorch, but ${missing.join(', ')} not found (looked in ${dirs.join(', ')}): ` +
      'building without the nccl backend (set NCCL_HOME / CUDA_HOME / NASLORA_CUDA_INCLUDE and rebuild)');
  }
  // The caching allocator's statistics need only the CUDA runtime header.
  const rt = found[need.indexOf('cuda_runtime_api.h')];
  if (rt && process.env.NASLORA_NO_CUDA_MEMSTATS !== '1') {
    defines.push('NASLORA_WITH_CUDA_RUNTIME');
    addCudaIncludes();
  } else if (what === 'defines' && !rt) {
    console.error('naslora: CUDA libtorch, but cuda_runtime_api.h not found: building without CUDA memory statistics (cudaMemory)');
  }
}

if (what === 'include') console.log(incs.join(' '));
if (what === 'libs') console.log(libs.trim());
if (what === 'defines') console.log(defines.join(' '));
