"""`python -m ui.launch [streamlit run options]`: start the app the way `make run` does.

Streamlit treats any app with a pages/ folder next to its entry script as an old-style (v1)
multipage app until the first script run calls st.navigation. That first run resolves the URL
against file-derived page names ("Training", not app.py's "training"), so the first browser that
opens a deep link after a server start got a "Page not found" dialog. app.py always routes through
st.navigation, so the server is told so before it starts. `streamlit run app.py` still works; it
only brings the dialog back for that first deep link.

The launcher also carries the app's safe defaults itself, so they hold from any working directory
(.streamlit/config.toml is only read from the current one): the server binds 127.0.0.1 (issue 15:
it bound every interface unless the Makefile said otherwise), the toolbar has no Deploy button,
and no usage statistics leave the machine. An option given on the command line, or through its
STREAMLIT_* environment variable, wins.

A deep link (/training) first made the browser probe /training/_stcore/health and
/training/_stcore/host-config (two 404s on every page load) before it tried the root: the frontend
guesses the server's base path from the page's URL unless the page says where the server is
(window.__streamlit.BACKEND_BASE_URL). The launcher has the served index.html say so.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cai_core.data.uploads import MAX_TEXT_FILE_BYTES

APP = Path(__file__).resolve().parent.parent / "app.py"

# option -> value unless the caller sets it (flag or STREAMLIT_<SECTION>_<NAME> env var)
DEFAULTS = {
    "server.address": "127.0.0.1",
    "client.toolbarMode": "minimal",
    "browser.gatherUsageStats": "false",
    # every uploader takes text files, capped by cai_core.data.uploads at 20 MB: the browser refuses a bigger one
    # before sending it (Streamlit's default, 200 MB, was read into memory first)
    "server.maxUploadSize": str(MAX_TEXT_FILE_BYTES // 2**20),
    # no source watching: Streamlit watched the whole repository (.venv and workspace/ included), and the
    # store's writes during a live run overflowed inotify; re-scanning the tree after every overflow took
    # the CPU from the model (a live 2-round run crawled at ~1 token/s in the app, ~25 in a script).
    # A developer who wants reload-on-save passes --server.fileWatcherType auto
    "server.fileWatcherType": "none",
}


def _env_name(option: str) -> str:
    """server.address -> STREAMLIT_SERVER_ADDRESS (Streamlit's own env-var naming)."""
    section, name = option.split(".", 1)
    snake = "".join("_" + ch if ch.isupper() else ch for ch in name)
    return f"STREAMLIT_{section}_{snake}".upper()


def with_defaults(args: list[str], environ=os.environ) -> list[str]:
    """The streamlit run options with DEFAULTS filled in where neither args nor the environment set them."""
    given = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    extra = []
    for option, value in DEFAULTS.items():
        if option not in given and _env_name(option) not in environ:
            extra += [f"--{option}", value]
    return [*extra, *args]


def _pin_backend_base_url() -> bool:
    """Make the served index.html name the server's base URL, so the frontend does not probe a page's
    path for the server first. False (nothing changed) on a Streamlit without that static handler."""
    try:
        from starlette.responses import HTMLResponse
        from streamlit.web.server.starlette import starlette_static_routes as routes
    except ImportError:
        return False
    original = getattr(routes, "create_streamlit_static_handler", None)
    if original is None or getattr(original, "pins_base_url", False):
        return original is not None

    def create(directory: str, base_url: str | None):
        handler = original(directory, base_url)
        index = Path(directory) / "index.html"
        base = json.dumps("/" + (base_url or "").strip("/"))
        script = f"<script>window.__streamlit = {{BACKEND_BASE_URL: window.location.origin + {base}}};</script>"

        class PinnedBase(type(handler)):
            async def get_response(self, path, scope):
                response = await super().get_response(path, scope)
                if Path(str(getattr(response, "path", ""))) == index:
                    html = index.read_text(encoding="utf-8").replace("<head>", "<head>" + script, 1)
                    response = HTMLResponse(html, headers={"Cache-Control": "no-cache"})
                return response

        handler.__class__ = PinnedBase
        return handler

    create.pins_base_url = True
    routes.create_streamlit_static_handler = create
    return True


def main(argv: list[str] | None = None) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    if hasattr(PagesManager, "uses_pages_directory"):
        PagesManager.uses_pages_directory = False  # what app.py's st.navigation call would set
    _pin_backend_base_url()
    args = with_defaults(list(sys.argv[1:] if argv is None else argv))
    sys.argv = ["streamlit", "run", str(APP), *args]
    cli.main()


if __name__ == "__main__":
    main()
