"""Running a vendor's command-line tool and reading the JSON it prints.

Detection runs every heartbeat, so a tool that is missing, hangs or fails
must cost little and never raise: it reads as "no output" and the detector
that asked reports no devices.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence

logger = logging.getLogger(__name__)

ToolRunner = Callable[[Sequence[str]], str | None]
"""Runs ``argv`` and returns its standard output, or None when there is none to read."""

TOOL_TIMEOUT = 15.0
"""Seconds. amd-smi and rocm-smi are Python programs that take a second or
two to start on a busy machine; a tool still running after this is stuck."""


def run_tool(argv: Sequence[str]) -> str | None:
    """Standard output of ``argv``; None when the tool is not installed, fails
    to start, times out or prints nothing.

    A non-zero exit status alone does not discard the output: rocm-smi and
    amd-smi exit non-zero when one field of one GPU is unsupported, and still
    print everything else. The parsers decide whether what came back is usable.
    """
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=TOOL_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as e:
        logger.debug("%s did not run: %s", " ".join(argv), e)
        return None
    if done.returncode != 0:
        logger.debug(
            "%s exited with %d: %s", " ".join(argv), done.returncode, done.stderr.strip()[-500:]
        )
    return done.stdout if done.stdout.strip() else None


def json_document(text: str) -> object:
    """The JSON document in a tool's output, or None when there is none.

    Some releases print a warning line (missing ``render`` group, an old
    driver) ahead of the JSON on standard output; the document is read from
    the first line that opens an object or array.
    """
    try:
        return json.loads(text)
    except ValueError:
        pass
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.lstrip().startswith(("{", "[")):
            try:
                return json.loads("\n".join(lines[number:]))
            except ValueError:
                return None
    return None
