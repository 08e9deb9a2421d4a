"""``corral backend install`` failing cleanly, and using an existing llama-server."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

from tests.backends import install_llama_cpp
from tests.helpers import CORRAL


def _corral(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CORRAL_CACHE_DIR": str(cache)}
    return subprocess.run([CORRAL, *args], capture_output=True, text=True, timeout=300, env=env)


def _fake_sdist(path: Path, cmakelists: str) -> None:
    """A source archive shaped like llama-cpp-python's, with a llama.cpp that cannot build."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "llama_cpp_python-9.9.9/vendor/llama.cpp/CMakeLists.txt": cmakelists,
        "llama_cpp_python-9.9.9/vendor/llama.cpp/tools/rpc/CMakeLists.txt": "# ggml-rpc-server\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_failed_build_names_the_step_and_leaves_nothing(tmp_path: Path) -> None:
    cache, data = tmp_path / "cache", tmp_path / "data"
    _fake_sdist(
        cache / "backends/llama.cpp/sources/llama_cpp_python-9.9.9.tar.gz",
        "cmake_minimum_required(VERSION 3.14)\nproject(x)\n"
        'message(FATAL_ERROR "this tree is broken on purpose")\n',
    )
    r = _corral(
        "backend",
        "install",
        "llama.cpp",
        "--version",
        "9.9.9",
        "--gpu",
        "cpu",
        "--data-dir",
        str(data),
        cache=cache,
    )
    assert r.returncode == 1
    assert "step 'cmake configure' failed" in r.stderr
    assert "this tree is broken on purpose" in r.stderr  # the tail of the build log
    assert "Traceback" not in r.stderr
    leftovers = [
        p.name for p in (cache / "backends/llama.cpp").iterdir() if not p.name.endswith(".lock")
    ]
    assert leftovers == ["sources"]
    assert not (data / "backends").exists() or not any((data / "backends").rglob("*"))


def test_an_unknown_version_fails_at_download(tmp_path: Path) -> None:
    r = _corral(
        "backend",
        "install",
        "llama.cpp",
        "--version",
        "0.0.0.404",
        "--gpu",
        "cpu",
        "--data-dir",
        str(tmp_path / "data"),
        cache=tmp_path / "cache",
    )
    assert r.returncode == 1
    assert "step 'download llama-cpp-python==0.0.0.404' failed" in r.stderr


def test_unknown_gpu_flavour_and_backend(tmp_path: Path) -> None:
    r = _corral(
        "backend",
        "install",
        "llama.cpp",
        "--gpu",
        "tpu",
        "--data-dir",
        str(tmp_path),
        cache=tmp_path / "cache",
    )
    assert r.returncode == 1 and "unknown --gpu 'tpu'" in r.stderr
    r = _corral("backend", "install", "tensorrt", cache=tmp_path / "cache")
    assert r.returncode == 1 and "unknown backend 'tensorrt'" in r.stderr


def test_an_existing_llama_server_can_be_registered(tmp_path: Path) -> None:
    built = install_llama_cpp(tmp_path / "seed")
    data = tmp_path / "data"
    r = _corral(
        "backend",
        "install",
        "llama.cpp",
        "--llama-server",
        str(built.executable),
        "--data-dir",
        str(data),
        cache=tmp_path / "unused-cache",
    )
    assert r.returncode == 0, r.stderr
    listed = _corral("backend", "list", "--data-dir", str(data), cache=tmp_path / "unused-cache")
    assert "external" in listed.stdout and "0.5.0-dev" in listed.stdout
