"""Build llama.cpp's ``llama-server`` and RPC server from a pinned source.

The source is the llama.cpp tree that a release of the ``llama-cpp-python``
source distribution vendors: PyPI is the one package registry every corral
machine reaches, and the release number pins the llama.cpp commit. corral
names a llama.cpp install by that release (``0.3.36-cpu``); ``llama-server
--version`` reports the commit.

Binaries are linked statically (``BUILD_SHARED_LIBS=OFF``), so an install is
two self-contained files that can be copied anywhere.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from corral.backends.flags import read_flags
from corral.backends.paths import backend_cache, exclusive, install_root
from corral.backends.steps import InstallError, Progress, run_step

DEFAULT_VERSION = "0.3.36"
SDIST = "llama-cpp-python"
BACKEND_DIR = "llama.cpp"
MANIFEST = "corral-install.json"


class Flavour(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    ROCM = "rocm"
    METAL = "metal"
    VULKAN = "vulkan"


_FLAVOUR_FLAGS = {
    Flavour.CPU: [],
    Flavour.CUDA: ["-DGGML_CUDA=ON"],
    Flavour.ROCM: ["-DGGML_HIP=ON"],
    Flavour.METAL: ["-DGGML_METAL=ON"],
    Flavour.VULKAN: ["-DGGML_VULKAN=ON"],
}


def detect_flavour() -> Flavour:
    """The GPU build this machine can use: its toolkit must be installed *and*
    a device present (a CUDA build on a machine without a GPU takes an hour
    to compile and then runs on the CPU anyway)."""
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return Flavour.METAL
    if shutil.which("nvcc") and (Path("/dev/nvidia0").exists() or _lists_gpus("nvidia-smi", "-L")):
        return Flavour.CUDA
    if shutil.which("hipcc") and Path("/dev/kfd").exists():
        return Flavour.ROCM
    return Flavour.CPU


def _lists_gpus(*argv: str) -> bool:
    if shutil.which(argv[0]) is None:
        return False
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@dataclass(frozen=True)
class Build:
    """A finished build: ``bin/llama-server`` and ``bin/rpc-server``."""

    version: str
    flavour: Flavour
    path: Path

    @property
    def key(self) -> str:
        return f"{self.version}-{self.flavour}"

    @property
    def llama_server(self) -> Path:
        return self.path / "bin" / "llama-server"

    @property
    def rpc_server(self) -> Path:
        return self.path / "bin" / "rpc-server"


def cached_build(version: str, flavour: Flavour) -> Build | None:
    build = Build(version, flavour, backend_cache(BACKEND_DIR) / f"{version}-{flavour}")
    return build if (build.path / MANIFEST).exists() else None


def source_archive(version: str, progress: Progress) -> Path:
    """The ``llama-cpp-python`` sdist of ``version``, downloaded once per machine."""
    directory = backend_cache(BACKEND_DIR) / "sources"
    archive = directory / f"llama_cpp_python-{version}.tar.gz"
    with exclusive(directory / f"{version}.lock"):
        if archive.exists():
            return archive
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            run_step(
                f"download {SDIST}=={version}",
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"{SDIST}=={version}",
                    "-d",
                    tmp,
                ],
                Path(tmp) / "download.log",
                progress,
            )
            [downloaded] = Path(tmp).glob("*.tar.gz")
            downloaded.rename(archive)
    return archive


def vendored_source(archive: Path, destination: Path) -> Path:
    """Unpack the archive's ``vendor/llama.cpp`` tree into ``destination``."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name + "/"]
        tar.extractall(destination, members=members, filter="data")
    [root] = list(destination.glob("*/vendor/llama.cpp"))
    return root


def rpc_target(source: Path) -> str:
    """The RPC server's cmake target: ``ggml-rpc-server`` in newer trees, ``rpc-server`` before."""
    cmake = (source / "tools" / "rpc" / "CMakeLists.txt").read_text()
    return "ggml-rpc-server" if "ggml-rpc-server" in cmake else "rpc-server"


_PERCENT = re.compile(r"^\[\s*(\d+)%\]")


def _build_progress() -> Callable[[str], str | None]:
    last = [-1]

    def watch(line: str) -> str | None:
        match = _PERCENT.match(line)
        if match and int(match.group(1)) >= last[0] + 5:
            last[0] = int(match.group(1))
            return f"  compiling: {last[0]}%"
        return None

    return watch


def build(version: str, flavour: Flavour, progress: Progress, *, jobs: int | None = None) -> Build:
    """Build (or find in the cache) llama.cpp ``version`` for ``flavour``."""
    cache = backend_cache(BACKEND_DIR)
    with exclusive(cache / f"{version}-{flavour}.lock"):
        if (found := cached_build(version, flavour)) is not None:
            progress(f"llama.cpp {found.key} is already built in {found.path}")
            return found
        archive = source_archive(version, progress)
        target = cache / f"{version}-{flavour}"
        work = Path(tempfile.mkdtemp(prefix=f"build-{version}-{flavour}-", dir=cache))
        log = work / "build.log"
        try:
            progress(f"unpacking llama.cpp from {archive.name}")
            source = vendored_source(archive, work / "src")
            rpc = rpc_target(source)
            cmake = [
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=OFF",
                "-DGGML_RPC=ON",
                "-DLLAMA_CURL=OFF",
                "-DGGML_NATIVE=ON",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                *_FLAVOUR_FLAGS[flavour],
            ]
            run_step(
                "cmake configure",
                ["cmake", "-S", str(source), "-B", str(work / "build"), *cmake],
                log,
                progress,
            )
            run_step(
                "cmake build (llama-server, rpc server)",
                [
                    "cmake",
                    "--build",
                    str(work / "build"),
                    "--target",
                    "llama-server",
                    rpc,
                    "-j",
                    str(jobs or os.cpu_count() or 2),
                ],
                log,
                progress,
                watch=_build_progress(),
            )
            staged = work / "install"
            (staged / "bin").mkdir(parents=True)
            shutil.copy2(work / "build" / "bin" / "llama-server", staged / "bin" / "llama-server")
            shutil.copy2(work / "build" / "bin" / rpc, staged / "bin" / "rpc-server")
            reported = server_version(staged / "bin" / "llama-server")
            flags = read_flags([str(staged / "bin" / "llama-server"), "--help"])
            shutil.copy2(log, staged / "build.log")
            (staged / MANIFEST).write_text(
                json.dumps(
                    {
                        "backend": "llama.cpp",
                        "version": version,
                        "flavour": str(flavour),
                        "llama_server_version": reported,
                        "flags": sorted(flags),
                        "cmake_flags": cmake,
                        "built_at": datetime.now(UTC).isoformat(),
                    },
                    indent=2,
                )
            )
            staged.rename(target)
        except InstallError:
            raise
        except (OSError, ValueError, tarfile.TarError) as e:
            raise InstallError(f"building llama.cpp {version}-{flavour} failed: {e}") from e
        finally:
            shutil.rmtree(work, ignore_errors=True)
    progress(f"built llama.cpp {version}-{flavour}")
    return Build(version, flavour, target)


def server_version(llama_server: Path) -> str:
    """What ``llama-server --version`` says, e.g. ``0.5.0-dev (build 1, commit 0c1e570)``."""
    try:
        out = subprocess.run(
            [str(llama_server), "--version"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InstallError(f"{llama_server} --version failed: {e}") from e
    match = re.search(r"version: (.+)", out.stdout + out.stderr)
    if out.returncode != 0 or match is None:
        raise InstallError(f"{llama_server} --version printed no version:\n{out.stderr[-2000:]}")
    return match.group(1).strip()


def install(data_dir: Path, version: str, flavour: Flavour, progress: Progress) -> Build:
    """Build if needed, then copy it to ``<data dir>/backends/llama.cpp/<version>-<flavour>``."""
    built = build(version, flavour, progress)
    root = install_root(data_dir, BACKEND_DIR)
    target = root / built.key
    if (target / MANIFEST).exists():
        return Build(version, flavour, target)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{built.key}-", dir=root))
    try:
        shutil.copytree(built.path, staging, dirs_exist_ok=True)
        staging.rename(target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / MANIFEST).exists():
            raise
    progress(f"installed llama.cpp {built.key} into {target}")
    return Build(version, flavour, target)
