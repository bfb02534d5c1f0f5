"""`python -m ui.launch [streamlit run options]`: start the app the way `make run` does.

Streamlit treats any app with a pages/ folder next to its entry script as an old-style (v1)
multipage app until the first script run calls st.navigation. That first run resolves the URL
against file-derived page names ("Training", not app.py's "training"), so the first browser that
opens a deep link after a server start got a "Page not found" dialog. app.py always routes through
st.navigation, so the server is told so before it starts. `streamlit run app.py` still works; it
only brings the dialog back for that first deep link.
"""
from __future__ import annotations

import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app.py"


def main(argv: list[str] | None = None) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    if hasattr(PagesManager, "uses_pages_directory"):
        PagesManager.uses_pages_directory = False  # what app.py's st.navigation call would set
    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main()


if __name__ == "__main__":
    main()
