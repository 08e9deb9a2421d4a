"""The web UI: plain HTML, CSS and JavaScript modules, no build step.

The server serves ``ASSETS`` at ``/ui/`` and ``index.html`` at ``/``; the page
talks only to the management API (``/api/v1``) and the gateway (``/v1``),
like any other client. See docs/ui.md.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).parent / "static"
INDEX = ASSETS / "index.html"
