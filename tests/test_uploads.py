"""Uploads: safetensors/JSON/YAML accepted, pickles refused by extension and by their bytes."""
from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile

import pytest

from cai_core.errors import CaiError
from cai_core.data.uploads import check_upload, looks_like_pickle


def safetensors_bytes() -> bytes:
    from safetensors.numpy import save
    import numpy as np

    return save({"w": np.zeros((2, 2), dtype="float32")})


def test_accepts_safetensors_json_yaml():
    assert check_upload("w.safetensors", safetensors_bytes()) == "safetensors"
    assert check_upload("c.json", b'{"name": "x"}') == "json"
    assert check_upload("p.jsonl", b'{"prompt": "a"}\n\n{"prompt": "b"}\n') == "jsonl"
    assert check_upload("c.yaml", b"name: x\nprinciples: []\n") == "yaml"
    assert check_upload("c.YML", b"a: 1") == "yaml"
    assert check_upload("dir/sub/c.json", b"[]") == "json"  # browsers may send a path; the base name counts


@pytest.mark.parametrize("name", ["model.pkl", "model.pt", "pytorch_model.bin", "x.pickle", "a.ckpt", "a.PTH"])
def test_pickle_extensions_refused(name):
    with pytest.raises(CaiError, match="pickled files are refused"):
        check_upload(name, pickle.dumps({"a": 1}))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickle_bytes_refused_whatever_the_name(protocol):
    data = pickle.dumps({"weights": [1, 2, 3]}, protocol=protocol)
    for name in ("weights.safetensors", "c.json", "c.yaml", "p.jsonl"):
        with pytest.raises(CaiError, match="pickle"):
            check_upload(name, data)


def test_torch_zip_refused():
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    data = buf.getvalue()
    assert looks_like_pickle(data)
    with pytest.raises(CaiError, match="pickle"):
        check_upload("model.safetensors", data)
    with pytest.raises(CaiError, match="pickle"):
        check_upload("model.json", data)


def test_safetensors_whose_header_length_starts_with_0x80_is_accepted():
    header = json.dumps({"__metadata__": {"pad": "x" * (0x280 - 30)}}).encode()
    header += b" " * (0x280 - len(header))
    data = struct.pack("<Q", len(header)) + header
    assert data[0] == 0x80 and data[1] == 0x02  # looks like a pickle protocol-2 header, but is not
    assert check_upload("w.safetensors", data) == "safetensors"


def test_other_types_and_bad_content_refused():
    with pytest.raises(CaiError, match="not accepted here"):
        check_upload("run.sh", b"echo hi")
    with pytest.raises(CaiError, match="not accepted here"):
        check_upload("prompts.csv", b"a,b")  # csv only where a page allows it
    assert check_upload("prompts.csv", b"prompt\nhi\n", allowed=("csv",)) == "csv"
    with pytest.raises(CaiError, match="not valid JSON"):
        check_upload("c.json", b"{nope")
    with pytest.raises(CaiError, match="line 2"):
        check_upload("p.jsonl", b'{"a": 1}\n{bad\n')
    with pytest.raises(CaiError, match="YAML"):
        check_upload("c.yaml", b"!!python/object/apply:os.system ['echo pwned']")
    with pytest.raises(CaiError, match="not a valid safetensors"):
        check_upload("w.safetensors", b"\x00" * 64)
    with pytest.raises(CaiError, match="empty"):
        check_upload("c.json", b"  \n")
    with pytest.raises(CaiError, match="UTF-8"):
        check_upload("c.yaml", b"\xff\xfe\x00bad")
    with pytest.raises(CaiError, match="limit"):
        check_upload("c.json", b"[]" * 100, max_bytes=10)


def test_zip_without_pickle_is_not_called_a_pickle():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert not looks_like_pickle(buf.getvalue())
