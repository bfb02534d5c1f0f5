"""Write an F32 copy of a GGUF file: every tensor dequantized, every metadata key kept.

Why: the workbench's transformers and CTranslate2 engines run the default model from a float32
folder that transformers dequantized from the embedded Q4_1/Q8_0 GGUF. A llama.cpp server given
the quantized GGUF computes with quantized activations too, so it is not "the same model" in the
sense bench_option_scoring.py compares. Served from this F32 copy, llama.cpp has exactly the
weights the other engines have (the dequantization is gguf's, the one transformers uses).

    python bench/gguf_f32.py [SRC.gguf] OUT.gguf      (SRC defaults to the embedded default model)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADER_FIELDS = ("GGUF.version", "GGUF.tensor_count", "GGUF.kv_count")
FILE_TYPE_ALL_F32 = 0


def write_f32(src: Path, out: Path) -> int:
    """Copy src to out with F32 tensors; returns the number of tensors written."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(str(src))
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(str(out), arch)
    for name, field in reader.fields.items():
        if name in HEADER_FIELDS or name == "general.architecture":
            continue
        value = FILE_TYPE_ALL_F32 if name == "general.file_type" else field.contents()
        kind = field.types[0]
        sub = field.types[1] if kind == GGUFValueType.ARRAY and len(field.types) > 1 else None
        writer.add_key_value(name, value, kind, sub_type=sub)
    for tensor in reader.tensors:
        data = dequantize(tensor.data, GGMLQuantizationType(tensor.tensor_type)).astype(np.float32)
        # the reader's shape is GGML order (fastest dimension first); numpy wants the reverse
        writer.add_tensor(tensor.name, data.reshape(tuple(int(d) for d in reversed(tensor.shape))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return len(reader.tensors)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="[SRC.gguf] OUT.gguf")
    args = p.parse_args()
    if len(args.paths) > 2:
        p.error("give OUT.gguf, or SRC.gguf OUT.gguf")
    if len(args.paths) == 1:
        from cai_core.models.specs import embedded_gguf

        src, out = Path(embedded_gguf()), Path(args.paths[0])
    else:
        src, out = Path(args.paths[0]), Path(args.paths[1])
    n = write_f32(src, out)
    print(f"wrote {out} ({n} tensors, F32, {out.stat().st_size / 2**20:.0f} MiB) from {src}")


if __name__ == "__main__":
    main()
