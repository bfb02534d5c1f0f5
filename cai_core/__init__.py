"""cai_core: the services and adapters behind the Constitutional AI workbench.

Pages call these functions; so does `python -m cai_core ...`. Nothing here imports streamlit.
"""
import os as _os

# Offline by default: the hub is opt-in (CAI_ALLOW_HUB=1).
if _os.environ.get("CAI_ALLOW_HUB") != "1":
    _os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
