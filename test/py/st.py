"""Minimal safetensors read/write for the reference scripts (no extra packages needed)."""
import json, struct
import torch

DT = {'F32': torch.float32, 'F64': torch.float64, 'I64': torch.int64, 'U8': torch.uint8, 'BOOL': torch.bool}
RDT = {v: k for k, v in DT.items()}


def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == '__metadata__':
            continue
        s, e = v['data_offsets']
        t = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=DT[v['dtype']]) if e > s else torch.empty(0, dtype=DT[v['dtype']])
        out[k] = t.reshape(v['shape']).clone()
    return out


def save(path, tensors):
    h, off, blobs = {}, 0, []
    for k, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        h[k] = {'dtype': RDT[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    js = json.dumps(h).encode()
    js += b' ' * ((8 - len(js) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(js)) + js + b''.join(blobs))
