"""The command line a placement implies, as the server can know it.

The worker builds the real command from its own installation and files; the
server records what the placement decides (layers, split, devices, tensor
parallel size, helpers) in the same driver's words, with placeholders for
what only the worker knows: ``$MODEL_PATH``, ``$MMPROJ_PATH``, ``$PORT``,
helpers' ``$RPC_PORT``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from corral.backends.base import Installation, LaunchRequest
from corral.backends.base import Placement as LaunchPlacement
from corral.backends.registry import driver
from corral.scheduler import Placement
from corral.schemas.models import Backend, ModelCategory
from corral.sources.projectors import user_projector

_NOMINAL_FLAGS = frozenset(
    {
        "--kv-unified",
        "--log-verbosity",
        "--no-webui",
        "--fit",
        "LLAMA_API_KEY",
        "--runner",
        "--limit-mm-per-prompt",
    }
)
_EXECUTABLE = {Backend.LLAMA_CPP: ("llama-server",), Backend.VLLM: ("vllm", "serve")}


def implied_command(
    *,
    backend: Backend,
    model_name: str,
    source: dict[str, Any],
    categories: frozenset[ModelCategory],
    parameters: list[str],
    context_length: int | None,
    placement: Placement,
    helper_addresses: dict[int, str],
    projector: str | None = None,
) -> list[str]:
    launcher = _EXECUTABLE[backend]
    installation = Installation(
        backend=backend,
        version="",
        flavour="",
        path=Path(),
        executable=Path(launcher[0]),
        reported_version="",
        flags=_NOMINAL_FLAGS,
        launcher=launcher if len(launcher) > 1 else (),
    )
    local = source.get("type") == "local"
    model_path = source["path"] if local else "$MODEL_PATH"
    mmproj = None
    if projector is not None and not user_projector(parameters):
        mmproj = Path(projector if local else "$MMPROJ_PATH")
    request = LaunchRequest(
        model_name=model_name,
        model_path=Path(model_path),
        host="$HOST",
        port=1,
        api_key="",
        categories=categories or frozenset({ModelCategory.LLM}),
        context_length=context_length,
        mmproj_path=mmproj,
        placement=LaunchPlacement(
            gpu_indices=placement.gpus,
            gpu_layers=placement.gpu_layers,
            tensor_split=placement.tensor_split,
            rpc_endpoints=tuple(
                f"{helper_addresses.get(h.worker_id, h.worker_name)}:$RPC_PORT"
                for h in placement.helpers
                for _ in h.gpus
            ),
            tensor_parallel_size=placement.tensor_parallel_size,
        ),
        backend_parameters=parameters,
    )
    argv = driver(backend).command(installation, request).argv
    return ["$PORT" if i > 0 and argv[i - 1] == "--port" else arg for i, arg in enumerate(argv)]
