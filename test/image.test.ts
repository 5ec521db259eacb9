// Image decoding (sharp vs PIL) and SAM's ResizeLongestSide (our Pillow Resample.c port vs PIL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeImage, decodeMask, encodeMaskPng, encodeOverlayPng, encodeRgbPng, writeImageFile, type RgbImage } from '../src/io/image.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { applyBoxes, applyCoords, getPreprocessShape, resizeBilinearU8, resizeImageU8 } from '../src/model/sam/transforms.js';

// Compiled to dist/test/: the repo root is two levels up, the shared folder next to it.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED = path.resolve(ROOT, '../shared');
const FIX = path.join(SHARED, 'fixtures/sam-reference');
const IMAGE = path.join(SHARED, 'data/kvasir-seg/images/cju0qkwl35piu0993l0dewei2.jpg');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-image-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));

// The Python that produced the references (Debian's python3-pil + python3-numpy).
const PY = '/usr/bin/python3';
const havePil = spawnSync(PY, ['-c', 'import PIL, numpy'], { encoding: 'utf8' }).status === 0;
const NO_PIL = `${PY} with PIL and numpy is not available (apt-get install -y python3-pil python3-numpy)`;

function python(script: string, ...args: string[]): string {
  const r = spawnSync(PY, ['-c', script, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`python failed: ${r.stderr}`);
  return r.stdout;
}

function assertBytesEqual(a: Uint8Array, b: Uint8Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  let bad = 0, first = -1, maxDiff = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] !== b[i]) { bad++; if (first < 0) first = i; maxDiff = Math.max(maxDiff, Math.abs(a[i] - b[i])); }
  }
  assert.equal(bad, 0, `${what}: ${bad} bytes differ (first at ${first}, max |diff| ${maxDiff})`);
}

const fixture = readSafetensors(path.join(FIX, 'sam-tiny.reference.safetensors')).tensors;

test('sharp decodes the fixture JPEG exactly as PIL did', async () => {
  const ref = fixture.get('image')!;
  const img = await decodeImage(IMAGE);
  assert.deepEqual([img.height, img.width, img.channels], ref.shape);
  assertBytesEqual(img.data, ref.data, 'decoded image');
  // Buffers decode the same as files.
  assertBytesEqual((await decodeImage(fs.readFileSync(IMAGE))).data, ref.data, 'decoded from buffer');
});

test('ResizeLongestSide(256) of the fixture image equals PIL bilinear byte for byte', async () => {
  const ref = fixture.get('resized_image')!;
  assert.deepEqual(ref.shape, [218, 256, 3]);
  const img = await decodeImage(IMAGE);
  const out = resizeImageU8(img, 256);
  assert.deepEqual([out.height, out.width, out.channels], ref.shape);
  assertBytesEqual(out.data, ref.data, 'resized image');
});

test('getPreprocessShape rounds like int(x + 0.5)', () => {
  const [h, w] = [529, 622]; // the fixture image
  assert.deepEqual(getPreprocessShape(h, w, 256), [Math.trunc(529 * (256 / 622) + 0.5), 256]);
  assert.deepEqual(getPreprocessShape(h, w, 256), [218, 256]);
  assert.deepEqual(getPreprocessShape(1000, 1000, 1024), [1024, 1024]);
  assert.deepEqual(getPreprocessShape(3, 2, 5), [5, 3]); // 2 * 5/3 = 3.33 → 3
  assert.deepEqual(getPreprocessShape(4, 2, 5), [5, 3]); // 2 * 5/4 = 2.5 → 3 (half rounds up)
  assert.deepEqual(getPreprocessShape(2, 4, 1024), [512, 1024]);
});

test('applyCoords and applyBoxes scale x by new_w/old_w and y by new_h/old_h', () => {
  // 529×622 → 218×256: x *= 256/622, y *= 218/529.
  const c = applyCoords([300, 250, 0, 0, 622, 529], [529, 622], 256);
  assert.deepEqual([...c], [300 * (256 / 622), 250 * (218 / 529), 0, 0, 256, 218]);
  const b = applyBoxes([10, 20, 600, 500], [529, 622], 256);
  assert.deepEqual([...b], [10 * (256 / 622), 20 * (218 / 529), 600 * (256 / 622), 500 * (218 / 529)]);
  assert.throws(() => applyBoxes([1, 2, 3], [10, 10], 5), /multiple of 4/);
  assert.throws(() => applyCoords([1, 2, 3], [10, 10], 5), /pairs/);
});

test('resizeBilinearU8 on tiny hand cases', () => {
  // Same size: a copy. 2×1 → 1×1 (downscale by 2, support 2): both pixels weigh 1/2 → (10+20)/2 = 15.
  const one: RgbImage = { data: new Uint8Array([10, 20, 30, 20, 40, 60]), width: 2, height: 1, channels: 3 };
  assert.deepEqual([...resizeBilinearU8(one, 2, 1).data], [...one.data]);
  assert.deepEqual([...resizeBilinearU8(one, 1, 1).data], [15, 30, 45]);
  // 2 → 4 upscale: output centres at 0.25, 0.75, 1.25, 1.75 input pixels, input centres at 0.5, 1.5.
  // Output 1: triangle(0.25) = 0.75 on x=0, triangle(0.75) = 0.25 on x=1 → 25; output 0 only reaches
  // x=0 (window [-0.75, 1.25) rounded to [0, 1)) → 0; symmetric on the right.
  const g = { data: new Uint8Array([0, 100]), width: 2, height: 1, channels: 1 };
  assert.deepEqual([...resizeBilinearU8(g, 4, 1).data], [0, 25, 75, 100]);
});

test('resizeBilinearU8 matches PIL on random images, up- and downscaling, 1/3/4 channels', { skip: havePil ? false : NO_PIL }, () => {
  // [inW, inH, outW, outH, channels]: big and small factors, non-integer ratios, one axis unchanged.
  const cases: Array<[number, number, number, number, number]> = [
    [97, 61, 256, 161, 3], [640, 480, 256, 192, 3], [37, 53, 1024, 777, 3], [300, 200, 300, 77, 3],
    [123, 45, 17, 45, 3], [5, 3, 1, 1, 3], [1, 1, 7, 5, 3], [333, 222, 1000, 999, 1], [81, 64, 29, 300, 4],
  ];
  let seed = 12345;
  const rand = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 24; };
  const script = `
import sys, json, numpy as np
from PIL import Image
for c in json.loads(sys.argv[1]):
    iw, ih, ow, oh, ch, f = c
    a = np.fromfile(f, dtype=np.uint8).reshape(ih, iw, ch)
    # Bands are resampled independently; 'RGBA' would be alpha-premultiplied, so use 'RGBX' for 4.
    mode = {1: 'L', 3: 'RGB', 4: 'RGBX'}[ch]
    im = Image.frombytes(mode, (iw, ih), a.tobytes())
    open(f + '.out', 'wb').write(im.resize((ow, oh), Image.BILINEAR).tobytes())
`;
  const args = cases.map(([iw, ih, ow, oh, ch], k) => {
    const data = new Uint8Array(iw * ih * ch);
    // Half smooth gradients, half noise: exercises rounding and the clip at 0/255.
    for (let i = 0; i < data.length; i++) data[i] = k % 2 ? rand() : (i * 7 + (i >> 5)) & 255;
    const f = path.join(TMP, `resize${k}.u8`);
    fs.writeFileSync(f, data);
    return [iw, ih, ow, oh, ch, f] as const;
  });
  python(script, JSON.stringify(args));
  for (const [iw, ih, ow, oh, ch, f] of args) {
    const out = resizeBilinearU8({ data: new Uint8Array(fs.readFileSync(f)), width: iw, height: ih, channels: ch }, ow, oh);
    assertBytesEqual(out.data, new Uint8Array(fs.readFileSync(f + '.out')), `${iw}x${ih}x${ch} → ${ow}x${oh}`);
  }
});

test('ResizeLongestSide(1024), the real SAM size (an upscale here), equals PIL on the fixture image', { skip: havePil ? false : NO_PIL }, async () => {
  const script = `
import sys, numpy as np
from PIL import Image
im = Image.open(sys.argv[1]).convert('RGB')
w, h = im.size
s = 1024 / max(h, w)
im.resize((int(w * s + 0.5), int(h * s + 0.5)), Image.BILINEAR).save(sys.argv[2])
`;
  const ref = path.join(TMP, 'resized1024.png');
  python(script, IMAGE, ref);
  const out = resizeImageU8(await decodeImage(IMAGE), 1024);
  const want = await decodeImage(ref);
  assert.deepEqual([out.height, out.width], [want.height, want.width]);
  assert.deepEqual([out.height, out.width], [871, 1024]);
  assertBytesEqual(out.data, want.data, 'resized to 1024');
});

test('decodeImage/decodeMask equal PIL convert("RGB")/convert("L") across formats', { skip: havePil ? false : NO_PIL }, async () => {
  // PIL writes the inputs: alpha, grey, grey+alpha, palette, 1-bit, CMYK JPEG, EXIF-rotated JPEG,
  // 16-bit grey, lossless WebP; then its own decodes are the references.
  const dir = path.join(TMP, 'fmt');
  fs.mkdirSync(dir);
  const script = `
import sys, numpy as np
from PIL import Image
d = sys.argv[1]
rng = np.random.default_rng(0)
a = (rng.random((37, 53, 4)) * 255).astype(np.uint8)
Image.fromarray(a, 'RGBA').save(d + '/rgba.png')
Image.fromarray(a[..., :3], 'RGB').save(d + '/rgb.png')
Image.fromarray(a[..., 0], 'L').save(d + '/l.png')
Image.fromarray(a[..., :2].copy(), 'LA').save(d + '/la.png')
Image.fromarray(a[..., :3]).convert('P', palette=Image.ADAPTIVE, colors=50).save(d + '/p.png')
Image.fromarray(a[..., 0] > 127).save(d + '/one.png')
Image.fromarray(a[..., 0], 'L').save(d + '/l.jpg', quality=90)
Image.fromarray(a[..., :3]).save(d + '/rgb.jpg', quality=75)
Image.fromarray(a[..., :3]).convert('CMYK').save(d + '/cmyk.jpg')
im = Image.fromarray(a[..., :3]); ex = im.getexif(); ex[0x0112] = 6; im.save(d + '/rot6.jpg', exif=ex)
Image.fromarray(a[..., 0].astype(np.uint16) * 257 + 3).save(d + '/l16.png')
Image.fromarray(a[..., :3]).save(d + '/rgb.webp', lossless=True)
import os
for f in sorted(os.listdir(d)):
    im = Image.open(d + '/' + f)
    open(d + '/' + f + '.rgb', 'wb').write(im.convert('RGB').tobytes())
    open(d + '/' + f + '.l', 'wb').write(Image.open(d + '/' + f).convert('L').tobytes())
    print(f)
`;
  const files = python(script, dir).trim().split('\n');
  assert.ok(files.length >= 12);
  for (const f of files) {
    const img = await decodeImage(path.join(dir, f));
    assert.deepEqual([img.width, img.height, img.channels], [53, 37, 3], f);
    assertBytesEqual(img.data, new Uint8Array(fs.readFileSync(path.join(dir, f + '.rgb'))), `${f} RGB`);
    const grey = new Uint8Array(fs.readFileSync(path.join(dir, f + '.l')));
    for (const thr of [0, 127, 200]) {
      const m = await decodeMask(path.join(dir, f), thr);
      assertBytesEqual(m.data, grey.map((v) => (v > thr ? 1 : 0)), `${f} mask > ${thr}`);
    }
  }
});

test('decoding matches PIL on the shared datasets (images and masks)', { skip: havePil ? false : NO_PIL }, async () => {
  // Every 10th file of each folder keeps the test quick; all 840 files matched when this was written.
  const files: string[] = [];
  for (const ds of ['kvasir-seg', 'cvc-clinicdb', 'ph2']) {
    for (const sub of ['images', 'masks']) {
      const dir = path.join(SHARED, 'data', ds, sub);
      fs.readdirSync(dir).sort().filter((_, i) => i % 10 === 0).forEach((f) => files.push(path.join(dir, f)));
    }
  }
  const script = `
import sys, json, numpy as np
from PIL import Image
for k, f in enumerate(json.loads(sys.argv[1])):
    im = Image.open(f)
    open(sys.argv[2] + '/ds%d.rgb' % k, 'wb').write(im.convert('RGB').tobytes())
    if '/masks/' in f:
        open(sys.argv[2] + '/ds%d.mask' % k, 'wb').write((np.asarray(Image.open(f).convert('L')) > 127).astype(np.uint8).tobytes())
`;
  python(script, JSON.stringify(files), TMP);
  for (const [k, f] of files.entries()) {
    const img = await decodeImage(f);
    assertBytesEqual(img.data, new Uint8Array(fs.readFileSync(path.join(TMP, `ds${k}.rgb`))), f);
    if (f.includes('/masks/')) {
      const m = await decodeMask(f);
      assertBytesEqual(m.data, new Uint8Array(fs.readFileSync(path.join(TMP, `ds${k}.mask`))), `${f} mask`);
    }
  }
});

test('unreadable inputs give a clear error naming the file', async () => {
  const empty = path.join(TMP, 'empty.png');
  fs.writeFileSync(empty, '');
  const junk = path.join(TMP, 'junk.jpg');
  fs.writeFileSync(junk, 'this is not an image');
  const truncated = path.join(TMP, 'truncated.jpg');
  fs.writeFileSync(truncated, fs.readFileSync(IMAGE).subarray(0, 2000));
  await assert.rejects(decodeImage(path.join(TMP, 'missing.png')), /^Error: cannot decode image .*missing\.png: no such file$/);
  await assert.rejects(decodeImage(empty), /cannot decode image .*empty\.png: the file is empty/);
  await assert.rejects(decodeImage(junk), /cannot decode image .*junk\.jpg: .+/);
  await assert.rejects(decodeImage(truncated), /cannot decode image .*truncated\.jpg: .+/);
  await assert.rejects(decodeMask(junk), /cannot decode image .*junk\.jpg/);
  await assert.rejects(decodeImage(new Uint8Array(0)), /cannot decode image <buffer>: the buffer is empty/);
});

test('mask and overlay PNGs round-trip', async () => {
  const w = 13, h = 7;
  const mask = new Uint8Array(w * h).map((_, i) => ((i * 5) % 3 === 0 ? 1 : 0));
  const f = path.join(TMP, 'out/mask.png');
  writeImageFile(f, await encodeMaskPng(mask, w, h));
  const back = await decodeMask(f);
  assert.deepEqual([back.width, back.height], [w, h]);
  assertBytesEqual(back.data, mask, 'mask round trip');
  // Probabilities are stored as round(255 p).
  const probs = new Float32Array([0, 0.2, 0.5, 1]);
  const grey = await decodeImage(await encodeMaskPng(probs, 4, 1));
  assert.deepEqual([...grey.data.filter((_, i) => i % 3 === 0)], [0, 51, 128, 255]);
  // Overlay: unmasked pixels unchanged, masked ones blended towards the colour.
  const img: RgbImage = { data: new Uint8Array(w * h * 3).map((_, i) => (i * 37) & 255), width: w, height: h, channels: 3 };
  const ov = await decodeImage(await encodeOverlayPng(img, mask, { color: [255, 0, 0], alpha: 0.5 }));
  for (let i = 0; i < w * h; i++) {
    const want = mask[i] ? [Math.round(img.data[3 * i] * 0.5 + 127.5), Math.round(img.data[3 * i + 1] * 0.5), Math.round(img.data[3 * i + 2] * 0.5)] : [...img.data.subarray(3 * i, 3 * i + 3)];
    assert.deepEqual([...ov.data.subarray(3 * i, 3 * i + 3)], want, `pixel ${i}`);
  }
  assertBytesEqual((await decodeImage(await encodeRgbPng(img))).data, img.data, 'RGB round trip');
  await assert.rejects(encodeMaskPng(mask, w, h + 1), /values for a/);
});
