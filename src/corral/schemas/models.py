"""Model specs on the wire, and the rule that picks a backend for them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from corral.schemas.common import GpuId, InputModel, LabelKey, LabelValue, OutputModel


class Backend(StrEnum):
    LLAMA_CPP = "llama.cpp"
    VLLM = "vllm"


BACKEND_ALIASES = {"llama-box": Backend.LLAMA_CPP}
"""Other names users may give for a backend; stored under the canonical id."""

VLLM_DEFAULT_WORKER_SELECTOR = {"os": "linux", "arch": "amd64"}


class PlacementStrategy(StrEnum):
    SPREAD = "spread"
    BINPACK = "binpack"


class ModelCategory(StrEnum):
    LLM = "llm"
    EMBEDDING = "embedding"
    RERANKER = "reranker"
    VISION = "vision"


# An OpenAI model id as clients send it: "gpt-4o", "Qwen/Qwen2.5-7B-Instruct",
# "ft:gpt-4o:org:x". Letters, digits and . _ - : / ; no spaces; 128 at most.
ModelName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"),
    Field(description="The OpenAI model id clients use."),
]
FileGlob = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Revision = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._/-]{1,255}$")]
Version = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")]
BackendParameter = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class HuggingFaceSource(InputModel):
    type: Literal["huggingface"]
    repo_id: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    filename: FileGlob | None = Field(
        default=None, description="File name or glob, e.g. `*Q4_K_M.gguf`."
    )
    revision: Revision = "main"
    mmproj: FileGlob | None = Field(
        default=None,
        description="GGUF only: the multimodal projector's file name or glob in the repo "
        "(default: a `*mmproj*.gguf` next to the model, when there is one).",
    )


class ModelScopeSource(InputModel):
    type: Literal["modelscope"]
    model_id: Annotated[
        str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
    ]
    filename: FileGlob | None = None
    revision: Revision | None = None
    mmproj: FileGlob | None = Field(
        default=None, description="GGUF only: the projector's file name or glob in the repo."
    )


class LocalSource(InputModel):
    type: Literal["local"]
    path: Annotated[
        str,
        StringConstraints(pattern=r"^/", max_length=4096),
        Field(description="Absolute path on the worker: a file or a model directory."),
    ]
    mmproj: (
        Annotated[
            str,
            StringConstraints(pattern=r"^/.*\.gguf$", max_length=4096),
            Field(
                description="GGUF only: the projector's absolute path (default: a "
                "`*mmproj*.gguf` in the model's directory, when there is one)."
            ),
        ]
        | None
    ) = None


ModelSource = Annotated[
    HuggingFaceSource | ModelScopeSource | LocalSource, Field(discriminator="type")
]


def is_gguf_source(source: HuggingFaceSource | ModelScopeSource | LocalSource) -> bool:
    """True when the source names GGUF files (a `.gguf` file or glob)."""
    name = source.path if isinstance(source, LocalSource) else source.filename
    return name is not None and name.lower().endswith(".gguf")


def resolve_backend(
    source: HuggingFaceSource | ModelScopeSource | LocalSource, requested: str
) -> Backend:
    """The backend a model runs on: the user's choice, else llama.cpp for GGUF, else vLLM."""
    if requested != "auto":
        return BACKEND_ALIASES.get(requested) or Backend(requested)
    return Backend.LLAMA_CPP if is_gguf_source(source) else Backend.VLLM


class _ModelSettings(InputModel):
    """The fields a model shares between create and update."""

    @field_validator("gpu_selector", check_fields=False)
    @classmethod
    def _unique_gpus(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("gpu_selector lists a GPU twice")
        return value


class ModelCreate(_ModelSettings):
    name: ModelName
    source: ModelSource
    backend: Literal["auto", "llama.cpp", "llama-box", "vllm"] = "auto"
    backend_version: Version | None = None
    backend_parameters: list[BackendParameter] = Field(
        default_factory=list, description="Extra CLI arguments, appended last so they win."
    )
    env: dict[EnvName, str] = Field(default_factory=dict)
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    placement_strategy: PlacementStrategy = PlacementStrategy.SPREAD
    worker_selector: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        description="Labels a worker must have. For vLLM, unset means "
        '`{"os": "linux", "arch": "amd64"}`; `{}` means any worker.',
    )
    gpu_selector: list[GpuId] = Field(default_factory=list)
    cpu_offloading: bool = True
    distributed_inference: bool = True
    restart_on_error: bool = True
    categories: list[ModelCategory] = Field(default_factory=list)

    @model_validator(mode="after")
    def _projector_with_llama_cpp(self) -> Self:
        if self.source.mmproj is not None and resolve_backend(self.source, self.backend) is not (
            Backend.LLAMA_CPP
        ):
            raise ValueError(
                "source.mmproj names a llama.cpp projector; it goes with a GGUF model on "
                "llama.cpp (vLLM reads a vision model's encoder from its checkpoint)"
            )
        return self


class ModelUpdate(_ModelSettings):
    """Fields that can change on a deployed model; those left out stay as they are."""

    backend_version: Version | None = None
    backend_parameters: list[BackendParameter] | None = None
    env: dict[EnvName, str] | None = None
    replicas: Annotated[int, Field(ge=0, le=1000)] | None = None
    placement_strategy: PlacementStrategy | None = None
    worker_selector: dict[LabelKey, LabelValue] | None = None
    gpu_selector: list[GpuId] | None = None
    cpu_offloading: bool | None = None
    distributed_inference: bool | None = None
    restart_on_error: bool | None = None
    categories: list[ModelCategory] | None = None


class ModelRead(OutputModel):
    id: int
    name: str
    source: HuggingFaceSource | ModelScopeSource | LocalSource = Field(discriminator="type")
    backend: Backend
    backend_version: str | None
    backend_parameters: list[str]
    env: dict[str, str]
    replicas: int
    ready_replicas: int
    placement_strategy: PlacementStrategy
    worker_selector: dict[str, str]
    gpu_selector: list[str]
    cpu_offloading: bool
    distributed_inference: bool
    restart_on_error: bool
    categories: list[ModelCategory]
    created_at: datetime
    updated_at: datetime
