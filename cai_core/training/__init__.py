"""Training runs: specs (what to train), the run manager (processes, status, metrics) and the worker.

`specs` and `runs` import neither torch nor TRL, so pages and the CLI stay fast; only
`worker` (the trainer process itself) loads them.
"""
from cai_core.training.specs import (
    KINDS,
    RunSpec,
    estimate_memory,
    load_spec,
    new_spec,
    save_spec,
    spec_from_dict,
)

__all__ = ["KINDS", "RunSpec", "estimate_memory", "load_spec", "new_spec", "save_spec", "spec_from_dict"]
