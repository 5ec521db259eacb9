// COCO run-length encoding of a binary mask, as pycocotools' uncompressed form: runs over the mask in
// column-major (Fortran) order, starting with a run of zeros (0 when the first pixel is set).
export interface CocoRle { size: [number, number]; counts: number[] }

export function rleEncode(mask: Uint8Array, width: number, height: number): CocoRle {
  if (mask.length !== width * height) throw new Error(`rleEncode: ${mask.length} values for a ${width}×${height} mask`);
  const counts: number[] = [];
  let cur = 0, run = 0;
  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) {
      const v = mask[y * width + x] ? 1 : 0;
      if (v !== cur) { counts.push(run); run = 0; cur = v; }
      run++;
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

export function rleDecode(r: CocoRle): Uint8Array {
  const [height, width] = r.size;
  const out = new Uint8Array(width * height);
  let i = 0, v = 0;
  for (const c of r.counts) {
    for (let k = 0; k < c; k++, i++) if (v) out[(i % height) * width + Math.floor(i / height)] = 1;
    v ^= 1;
  }
  if (i !== width * height) throw new Error(`rleDecode: counts cover ${i} pixels, the mask has ${width * height}`);
  return out;
}
