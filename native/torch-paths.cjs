// Where libtorch lives, for binding.gyp. LIBTORCH may point at an official libtorch zip (CPU or
// CUDA), or at a pip torch package folder (site-packages/torch), which has the same include/ and
// lib/ layout. Without it, Debian's libtorch-dev in /usr is used.
const fs = require('node:fs');
const path = require('node:path');
const root = process.env.LIBTORCH;
const what = process.argv[2];
if (root) {
  const inc = path.join(root, 'include');
  const lib = path.join(root, 'lib');
  if (!fs.existsSync(path.join(inc, 'ATen', 'ATen.h'))) {
    console.error(`LIBTORCH=${root}: no include/ATen/ATen.h there`);
    process.exit(1);
  }
  if (what === 'include') console.log([inc, path.join(inc, 'torch/csrc/api/include')].join(' '));
  if (what === 'libs') console.log(`-L${lib} -Wl,-rpath,${lib}`);
} else {
  if (what === 'include') console.log('/usr/include /usr/include/torch/csrc/api/include');
  if (what === 'libs') console.log('');
}
