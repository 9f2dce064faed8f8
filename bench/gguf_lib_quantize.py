#!/usr/bin/env python3
"""What `qkern quantize-model MODEL -o OUT --type T --backend B` does to a float32
safetensors file, through the library alone, for bench/gguf-model-speed.sh's
LIBRARY mode (before the command has --type): every tensor of two or more
dimensions whose rows are whole blocks quantized with qk_ggml_quantize (host
tensors over an mmap of the file: OpenCL wraps them zero-copy), the others
copied, everything written to OUT in file order (raw blocks, no GGUF header).
Prints the seconds taken, library load and context creation included.

    /usr/bin/python3 bench/gguf_lib_quantize.py LIB MODEL.safetensors TYPE OUT [BACKEND]
"""
import ctypes as C
import json
import mmap
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from qkern_ctypes import QK_F32, QK_OK, QK_U8, Qkern, Tensor  # noqa: E402

TYPES = {"Q8_0": (8, 32), "Q4_0": (2, 32), "Q4_1": (3, 32), "Q5_0": (6, 32), "Q5_1": (7, 32), "Q2_K": (10, 256),
         "Q3_K": (11, 256), "Q4_K": (12, 256), "Q5_K": (13, 256), "Q6_K": (14, 256)}


def main():
    lib, path, tname, out = sys.argv[1:5]
    backend = sys.argv[5] if len(sys.argv) > 5 else "opencl"
    gtype, block = TYPES[tname]
    t0 = time.perf_counter()
    qk = Qkern(lib)
    st, ctx, msg = qk.context_create(backend)
    if st != QK_OK:
        raise SystemExit("backend %s: %s" % (backend, msg))
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        data = np.frombuffer(mm, dtype=np.uint8)
        items = sorted((v["data_offsets"][0], k) for k, v in head.items() if k != "__metadata__")
        with open(out, "wb") as o:
            for _, k in items:
                v = head[k]
                s, e = v["data_offsets"]
                raw = data[8 + n + s:8 + n + e]
                shape = v["shape"]
                if len(shape) >= 2 and shape[-1] % block == 0 and v["dtype"] == "F32":
                    x = raw.view(np.float32)
                    y = np.empty(qk.ggml_size(gtype, x.size), dtype=np.uint8)
                    tx = Tensor(QK_F32, x.size, x.ctypes.data, None, 0)
                    ty = Tensor(QK_U8, y.size, y.ctypes.data, None, 0)
                    qk.check(ctx, qk.lib.qk_ggml_quantize(ctx, C.byref(tx), gtype, C.byref(ty)), "qk_ggml_quantize")
                    o.write(memoryview(y))
                else:
                    o.write(memoryview(raw))
    qk.context_destroy(ctx)
    print("%.3f" % (time.perf_counter() - t0))


if __name__ == "__main__":
    main()
