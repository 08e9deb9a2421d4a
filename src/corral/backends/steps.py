"""Running the external steps of an install, with progress and a clear failure."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from corral.errors import CorralError

Progress = Callable[[str], None]


class InstallError(CorralError):
    """An install step failed; the message names the step and ends with its log tail."""

    code = "install_failed"


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def run_step(
    name: str,
    argv: Sequence[str],
    log: Path,
    progress: Progress,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    watch: Callable[[str], str | None] | None = None,
) -> None:
    """Run one step, appending its output to ``log``.

    ``watch`` sees each output line and may return a progress message
    (e.g. a build percentage) to show.
    """
    progress(f"{name} ...")
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        try:
            process = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as e:
            raise InstallError(f"step '{name}' could not start {argv[0]}: {e}") from e
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            if watch is not None and (message := watch(line)):
                progress(message)
        code = process.wait()
    if code != 0:
        raise InstallError(f"step '{name}' failed (exit {code}); full log: {log}\n{tail(log)}")
