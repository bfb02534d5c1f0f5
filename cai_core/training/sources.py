"""What a run reads: its dataset (an export name, a .jsonl file or an HF folder) and its models.

Checked before launch without torch: a dataset's columns must fit the run kind (messages for
SFT, prompt/chosen/rejected for reward and DPO, prompts for the online kinds), and a model
reference must name something that exists. The worker then loads the rows with `load_rows`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cai_core.errors import CaiError
from cai_core.exports import get_export
from cai_core.jsonl import read_jsonl
from cai_core.models.specs import DEFAULT_FOLDER, embedded_gguf
from cai_core.store import Store
from cai_core.training.specs import DATA_NEEDS, RunSpec

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclass
class DatasetRef:
    """A resolved dataset: where its rows are, which export it is (lineage) and its card."""

    given: str
    jsonl: Path | None = None
    hf_dir: Path | None = None
    export_id: int | None = None
    export_name: str | None = None
    export_kind: str | None = None
    card: dict = field(default_factory=dict)

    @property
    def location(self) -> str:
        return str(self.jsonl or self.hf_dir)


def resolve_dataset(store: Store | None, given: str) -> DatasetRef:
    """An export name (table `exports`), a .jsonl file, or a folder with data.jsonl or HF save_to_disk files."""
    given = str(given or "").strip()
    if not given:
        raise CaiError("no dataset given: use an export name, a .jsonl file or an HF dataset folder")
    if store is not None:
        row = get_export(store, given)
        if row is not None:
            path = store.workspace.resolve(row["path"])
            ref = _from_path(path, given)
            ref.export_id, ref.export_name, ref.export_kind = row["id"], row["name"], row["kind"]
            ref.card = row["card"]
            return ref
    path = Path(given).expanduser()
    if path.exists():
        ref = _from_path(path, given)
        card = path / "card.json" if path.is_dir() else path.parent / "card.json"
        if card.exists():
            try:
                ref.card = json.loads(card.read_text(encoding="utf-8"))
            except ValueError:
                pass
        return ref
    raise CaiError(f"dataset {given!r} is neither an export name nor an existing .jsonl file or folder")


def _from_path(path: Path, given: str) -> DatasetRef:
    if path.is_file():
        if path.suffix != ".jsonl":
            raise CaiError(f"dataset file {path} is not a .jsonl file")
        return DatasetRef(given, jsonl=path.resolve())
    if path.is_dir():
        if (path / "data.jsonl").exists():
            return DatasetRef(given, jsonl=(path / "data.jsonl").resolve())
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            return DatasetRef(given, hf_dir=path.resolve())
        raise CaiError(f"dataset folder {path} has neither data.jsonl nor HF save_to_disk files")
    raise CaiError(f"dataset {path} does not exist")


def columns_of(ref: DatasetRef) -> tuple[set[str], list[dict]]:
    """Column names and a few sample rows, read cheaply (first lines of the JSONL, or HF features)."""
    if ref.jsonl is not None:
        rows = []
        try:
            with open(ref.jsonl, encoding="utf-8") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        rows.append(json.loads(line))
                    if len(rows) >= 5:
                        break
        except (OSError, ValueError) as exc:
            raise CaiError(f"{ref.jsonl}: not readable JSONL ({exc})") from exc
        if not rows:
            raise CaiError(f"{ref.jsonl} has no rows")
        if not all(isinstance(r, dict) for r in rows):
            raise CaiError(f"{ref.jsonl}: every line must be a JSON object")
        return set().union(*(r.keys() for r in rows)), rows
    info = ref.hf_dir / "dataset_info.json"
    if info.exists():
        try:
            feats = json.loads(info.read_text()).get("features") or {}
        except ValueError as exc:
            raise CaiError(f"{info} is not valid JSON") from exc
        return set(feats), []
    return set(), []


def check_dataset(ref: DatasetRef, kind: str) -> None:
    """Does this dataset have what the run kind needs? Clear message if not."""
    need = DATA_NEEDS[kind]
    cols, rows = columns_of(ref)
    if need == "sft":
        if "messages" not in cols and not {"prompt", "completion"} <= cols:
            raise CaiError(f"dataset {ref.given!r} has columns {sorted(cols)}; SFT needs 'messages' "
                           "(conversational) or 'prompt' + 'completion'")
        for r in rows:
            msgs = r.get("messages")
            if msgs is not None and not (isinstance(msgs, list) and msgs and all(
                    isinstance(m, dict) and "role" in m and "content" in m for m in msgs)):
                raise CaiError(f"dataset {ref.given!r}: 'messages' must be a list of {{role, content}} objects")
    elif need == "preference":
        missing = [c for c in PREFERENCE_COLUMNS if c not in cols]
        if missing:
            raise CaiError(f"dataset {ref.given!r} has columns {sorted(cols)}; {kind} needs a preference dataset "
                           f"with prompt, chosen and rejected (missing {', '.join(missing)})")
    else:
        if "prompt" not in cols and "messages" not in cols:
            raise CaiError(f"dataset {ref.given!r} has columns {sorted(cols)}; {kind} needs prompts "
                           "(a 'prompt' column, or 'messages' whose user turns become prompts)")


def load_rows(ref: DatasetRef) -> list[dict]:
    """All rows (the worker's view); HF folders go through datasets.load_from_disk."""
    if ref.jsonl is not None:
        return read_jsonl(ref.jsonl)
    import datasets

    ds = datasets.load_from_disk(str(ref.hf_dir))
    if isinstance(ds, datasets.DatasetDict):
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    return ds.to_list()


def as_messages(value) -> list[dict]:
    """A prompt as chat messages: strings become one user turn."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return list(value)


def prompts_of(rows: list[dict]) -> list[list[dict]]:
    """Prompts for the online kinds: the 'prompt' column, or a conversation up to its last assistant turn."""
    out = []
    for r in rows:
        if "prompt" in r and r["prompt"]:
            out.append(as_messages(r["prompt"]))
        elif r.get("messages"):
            msgs = list(r["messages"])
            while msgs and msgs[-1].get("role") == "assistant":
                msgs.pop()
            if msgs:
                out.append(msgs)
    return out


def lineage_summary(card: dict) -> dict:
    """The lineage facts a run shows from its export's card (whatever keys the card has)."""
    keys = ("constitution_version", "constitution_versions", "constitution", "constitution_name", "models", "model",
            "judges", "judge_keys", "human_overrides", "human_override_share", "override_share", "counts", "filters")
    return {k: card[k] for k in keys if k in card}


# -- models ------------------------------------------------------------------------------------
def run_output_dir(store: Store, name: str) -> Path | None:
    row = store.one("SELECT run_dir FROM runs WHERE name=?", (name,))
    return store.workspace.resolve(row["run_dir"]) if row else None


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").exists() or (path / "adapter_config.json").exists()


def resolve_model_ref(store: Store | None, ref: str, *, what: str = "model", check_only: bool = False) -> str:
    """A model reference -> what the worker loads: 'default', 'hf:ID', or an absolute model folder.

    A run name resolves to that run's folder; a LoRA run with a merged copy resolves to the merged
    copy when a full base is needed (the worker asks with `prefer_merged`).
    """
    ref = str(ref or "").strip()
    if not ref:
        raise CaiError(f"no {what} given")
    if ref == "default" or ref.startswith("hf:"):
        if ref == "default" and check_only:
            if store is None or not (store.workspace.models_dir / DEFAULT_FOLDER / "config.json").exists():
                embedded_gguf()  # raises a clear error when the embedded model is not installed
        return ref
    name = ref[4:] if ref.startswith("run:") else ref
    if store is not None:
        run_dir = run_output_dir(store, name)
        if run_dir is not None:
            if not is_model_dir(run_dir):
                raise CaiError(f"run {name!r} has no saved model yet (it has to finish or be stopped first)")
            return str(run_dir)
    path = Path(ref).expanduser()
    if not path.exists():
        raise CaiError(f"{what} {ref!r} is not 'default', a run name, or an existing folder")
    if not path.is_dir() or not is_model_dir(path):
        raise CaiError(f"{what} {ref!r} is not a model folder (no config.json or adapter_config.json)")
    return str(path.resolve())


def soft_label_of(row: dict, n: int, given: str) -> float:
    """A row's p_chosen as a probability, or a clear error (soft-label reward runs)."""
    p = row.get("p_chosen")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise CaiError(f"dataset {given!r} row {n}: p_chosen must be a probability between 0 and 1 for a soft-label "
                       f"reward run (got {p!r}); export it with `export-prefs --soft-labels`")
    return float(p)


def check_spec_sources(store: Store | None, spec: RunSpec) -> DatasetRef:
    """All reference checks before launch; returns the resolved dataset (with export lineage)."""
    ref = resolve_dataset(store, spec.dataset)
    check_dataset(ref, spec.kind)
    if getattr(spec, "soft_labels", False):
        cols, rows = columns_of(ref)
        if "p_chosen" not in cols:
            raise CaiError(f"dataset {ref.given!r} has no p_chosen column, so it cannot train on soft labels: "
                           "export it with `export-prefs --soft-labels`")
        for n, row in enumerate(rows, start=1):
            soft_label_of(row, n, ref.given)
    if spec.parent_run:
        if store is None or run_output_dir(store, spec.parent_run) is None:
            raise CaiError(f"parent run {spec.parent_run!r} does not exist")
        resolve_model_ref(store, spec.parent_run, what="parent run", check_only=True)
    else:
        resolve_model_ref(store, spec.model, check_only=True)
    for attr in ("reward_model", "value_model"):
        value = getattr(spec, attr, None)
        if value:
            path = resolve_model_ref(store, value, what=attr.replace("_", " "), check_only=True)
            if path not in ("default",) and not path.startswith("hf:"):
                _check_reward_dir(Path(path), attr)
    return ref


def _check_reward_dir(path: Path, attr: str) -> None:
    """A reward/value model must be a sequence classifier (a reward run's output), not a causal LM."""
    cfg = path / "config.json"
    if (path / "merged" / "config.json").exists():
        cfg = path / "merged" / "config.json"
    if cfg.exists():
        archs = json.loads(cfg.read_text()).get("architectures") or []
        if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
            raise CaiError(f"{attr.replace('_', ' ')} {path} is a {archs[0]}, not a reward model "
                           "(train one with a reward run first)")
    elif (path / "adapter_config.json").exists():
        task = json.loads((path / "adapter_config.json").read_text()).get("task_type")
        if task and task != "SEQ_CLS":
            raise CaiError(f"{attr.replace('_', ' ')} {path} is a {task} adapter, not a reward model")


def model_dir_for_estimate(store: Store | None, ref: str | None) -> Path | None:
    """A local folder whose config/safetensors header sizes the memory estimate (None = default model shape)."""
    if not ref:
        return None
    if ref == "default":
        folder = store.workspace.models_dir / DEFAULT_FOLDER if store is not None else None
        return folder if folder is not None and (folder / "config.json").exists() else None
    try:
        resolved = resolve_model_ref(store, ref)
    except CaiError:
        return None
    path = Path(resolved)
    if (path / "merged" / "config.json").exists():
        return path / "merged"
    return path if path.exists() else None
