"""The pages read uploads through ui.common.read_upload: the upload checks run before any parsing."""
import pickle

import pytest

from cai_core.errors import CaiError
from ui.common import read_upload


class Uploaded:
    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_text_comes_back_for_allowed_types():
    assert read_upload(Uploaded("c.yaml", b"name: x\n"), ("json", "yaml")) == "name: x\n"
    assert read_upload(Uploaded("p.txt", "\ufeffa prompt\n".encode()), ("jsonl", "csv", "text")) == "a prompt\n"


@pytest.mark.parametrize("name, data, message", [
    ("c.pkl", pickle.dumps({"a": 1}), "pickle"),
    ("c.yaml", pickle.dumps({"a": 1}), "pickle"),
    ("c.yaml", b"!!python/object/apply:os.system ['true']\n", "python"),
    ("c.exe", b"MZ", "not accepted"),
    ("labels.jsonl", b"", "empty"),
])
def test_bad_uploads_are_refused_with_a_reason(name, data, message):
    with pytest.raises(CaiError, match=message):
        read_upload(Uploaded(name, data), ("json", "yaml", "jsonl"))
