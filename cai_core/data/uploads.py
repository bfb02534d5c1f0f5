"""Checks for files users upload: only safetensors, JSON/JSONL, YAML (and plain text/CSV where a page
asks for it) get through; pickles never do.

A pickle runs code when loaded, so it is refused by its extension (.pkl, .pt, .bin, ...) AND by its
bytes (the pickle protocol header 0x80 0x02-0x05, or a zip holding `data.pkl` as torch.save writes),
whatever the file is called. Content is checked as well as the name (a .json must parse, a
.safetensors must have a valid header), so a renamed file cannot slip through. Pages call
`check_upload` before they store or parse anything.

Size: text files a user hands over (prompt files, constitutions, pairs, label and gold files) are
capped at MAX_TEXT_FILE_BYTES, uploaded or imported by path (`read_user_file`), before a byte is
parsed: a 200 MB prompt file used to import (and then every page listed it). Model weights
(safetensors) keep the large MAX_UPLOAD_BYTES limit.
"""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from cai_core.errors import CaiError

EXTENSIONS = {
    ".safetensors": "safetensors",
    ".json": "json",
    ".jsonl": "jsonl",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".csv": "csv",
    ".txt": "text",
}
DEFAULT_ALLOWED = ("safetensors", "json", "jsonl", "yaml")
PICKLE_EXTENSIONS = {".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".joblib", ".dill", ".npz", ".npy", ".tar"}
DEFAULT_MAX_BYTES = 2 * 1024**3   # safetensors weights
MAX_TEXT_FILE_BYTES = 20 * 1024**2  # prompt files, constitutions, pairs, label and gold files (the paper's largest is 1 MB)
TEXT_KINDS = ("json", "jsonl", "yaml", "csv", "text")
_REFUSE = "pickled files are refused because loading them runs code; upload safetensors, JSON or YAML instead"


def looks_like_pickle(data: bytes) -> bool:
    """True for a pickle (protocol 2-5 header) or a torch.save zip archive (holds data.pkl)."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                return any(n.endswith(".pkl") or n.endswith("/data.pkl") for n in zf.namelist())
        except zipfile.BadZipFile:
            return False
    return False


def _basename(name: str) -> str:
    return PureWindowsPath(PurePosixPath(name or "").name).name


def _safetensors_ok(data: bytes) -> bool:
    """A safetensors file: 8-byte little-endian header length, then that many bytes of a JSON object."""
    if len(data) < 10:
        return False
    (n,) = struct.unpack("<Q", data[:8])
    if n < 2 or n > len(data) - 8 or n > 100 * 1024**2:
        return False
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(header, dict)


def _text(name: str, data: bytes, kind: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CaiError(f"{name}: not UTF-8 text, so not a valid {kind} file (byte {exc.start})") from exc


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n < 10 * 2**20 else f"{n / 2**20:.0f} MB"


def check_size(name: str, size: int, limit: int = MAX_TEXT_FILE_BYTES) -> None:
    """Refuse a file over `limit` bytes, naming both sizes (checked before anything is read or parsed)."""
    if size > limit:
        raise CaiError(f"{name}: the file is {_mb(size)}, over the {_mb(limit)} limit for files read here "
                       "(MAX_TEXT_FILE_BYTES in cai_core/data/uploads.py); split it into smaller files")


def read_user_file(path: str | os.PathLike, *, encoding: str = "utf-8-sig") -> str:
    """The text of a file a user points at (prompts, constitution, pairs, labels): it must exist, be at
    most MAX_TEXT_FILE_BYTES (checked before reading) and be UTF-8. Raises CaiError naming the file."""
    p = Path(path)
    if not p.is_file():
        raise CaiError("file not found", where=str(p))
    check_size(str(p), p.stat().st_size)
    try:
        return p.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise CaiError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", where=str(p)) from exc


def check_upload(name: str, data: bytes, allowed: tuple[str, ...] | list[str] = DEFAULT_ALLOWED,
                 *, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Validate one uploaded file; returns its kind (one of `allowed`) or raises CaiError saying why not."""
    base = _basename(name)
    if not base:
        raise CaiError("the uploaded file has no name")
    suffix = PurePosixPath(base.lower()).suffix
    if suffix in PICKLE_EXTENSIONS:
        raise CaiError(f"{base}: {_REFUSE}")
    kind = EXTENSIONS.get(suffix)
    accepted = ", ".join(sorted(s for s, k in EXTENSIONS.items() if k in allowed))
    if kind is None or kind not in allowed:
        raise CaiError(f"{base}: this file type is not accepted here; accepted: {accepted}")
    check_size(base, len(data), min(max_bytes, MAX_TEXT_FILE_BYTES) if kind in TEXT_KINDS else max_bytes)
    if kind == "safetensors":
        if _safetensors_ok(data):
            return kind
        if looks_like_pickle(data):
            raise CaiError(f"{base}: this is a pickle renamed to .safetensors; {_REFUSE}")
        raise CaiError(f"{base}: not a valid safetensors file (bad header)")
    if looks_like_pickle(data):
        raise CaiError(f"{base}: this is a pickle, not {kind}; {_REFUSE}")
    if not data.strip():
        raise CaiError(f"{base}: the file is empty")
    text = _text(base, data, kind)
    if kind == "json":
        try:
            json.loads(text)
        except ValueError as exc:
            raise CaiError(f"{base}: not valid JSON ({exc})") from exc
    elif kind == "jsonl":
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    json.loads(line)
                except ValueError as exc:
                    raise CaiError(f"{base}: line {i} is not valid JSON ({exc})") from exc
    elif kind == "yaml":
        import yaml

        try:
            yaml.safe_load(text)  # safe_load builds only plain data, never Python objects
        except yaml.YAMLError as exc:
            raise CaiError(f"{base}: not valid YAML (or uses Python object tags, which are refused): {exc}") from exc
    return kind
