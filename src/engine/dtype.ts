// Tensor element types and their libtorch ScalarType codes (stable across libtorch versions).
export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

export const DTYPE_BYTES: Record<DType, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

export const DTYPE_CODE: Record<DType, number> = {
  uint8: 0, int8: 1, int16: 2, int32: 3, int64: 4, float16: 5, float32: 6, float64: 7, bool: 11, bfloat16: 15,
};

export const CODE_DTYPE: Record<number, DType> = Object.fromEntries(
  Object.entries(DTYPE_CODE).map(([k, v]) => [v, k as DType]),
);

export interface TypedArrayFor {
  float32: Float32Array; float64: Float64Array; float16: Uint16Array; bfloat16: Uint16Array;
  int64: BigInt64Array; int32: Int32Array; int16: Int16Array; int8: Int8Array; uint8: Uint8Array; bool: Uint8Array;
}
export type AnyTypedArray = TypedArrayFor[DType];

export function typedArrayFor<D extends DType>(dtype: D, buf: ArrayBuffer): TypedArrayFor[D] {
  switch (dtype) {
    case 'float32': return new Float32Array(buf) as TypedArrayFor[D];
    case 'float64': return new Float64Array(buf) as TypedArrayFor[D];
    case 'float16': case 'bfloat16': return new Uint16Array(buf) as TypedArrayFor[D];
    case 'int64': return new BigInt64Array(buf) as TypedArrayFor[D];
    case 'int32': return new Int32Array(buf) as TypedArrayFor[D];
    case 'int16': return new Int16Array(buf) as TypedArrayFor[D];
    case 'int8': return new Int8Array(buf) as TypedArrayFor[D];
    default: return new Uint8Array(buf) as TypedArrayFor[D];
  }
}

/** The natural dtype of a typed array (Uint8Array → uint8; pass 'bool' explicitly for masks). */
export function dtypeOfArray(a: ArrayBufferView): DType {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof BigInt64Array) return 'int64';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int16Array) return 'int16';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Uint8Array || a instanceof Uint8ClampedArray) return 'uint8';
  throw new Error(`unsupported typed array ${a.constructor.name}`);
}

export function isFloating(d: DType): boolean {
  return d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';
}
