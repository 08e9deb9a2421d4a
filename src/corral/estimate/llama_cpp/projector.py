"""What a multimodal projector (``--mmproj``) costs llama-server: its weights
and the compute buffer its image encoder reserves.

The projector is a GGUF file of architecture ``clip``. llama.cpp's mtmd
loads it on the first GPU (``--no-mmproj-offload`` keeps it on the CPU) and
reserves, when it loads, a compute buffer for encoding the largest image it
accepts: ``clip.vision.image_size`` square, or for models that take images
at their own resolution (Qwen2-VL and the like) up to
``clip.vision.image_max_pixels``.
"""

from __future__ import annotations

from corral.errors import InvalidInputError
from corral.estimate.gguf import GGUFModel

PROJECTOR_ARCHITECTURE = "clip"
_DEFAULT_MAX_PIXELS = 1024 * 1024


def check_projector(model: GGUFModel, name: str) -> None:
    """A 400-class error unless ``model`` is a multimodal projector."""
    if model.architecture != PROJECTOR_ARCHITECTURE:
        raise InvalidInputError(
            f"{name} is not a multimodal projector: its architecture is "
            f"{model.architecture!r}, not 'clip'"
        )
    if (
        not isinstance(model.metadata.get("clip.has_vision_encoder"), bool)
        or not model.metadata["clip.has_vision_encoder"]
    ):
        # Audio-only projectors exist (Ultravox); corral routes images only.
        raise InvalidInputError(f"{name} has no vision encoder (clip.has_vision_encoder)")


def _int(model: GGUFModel, key: str, default: int) -> int:
    value = model.metadata.get(key, default)
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else default
    )


def projector_compute(model: GGUFModel) -> int:
    """The encoder's compute buffer for the largest image, in bytes.

    The graph's largest stage is one transformer block over every patch: the
    attention scores (patches² per head, f32) and the feed-forward
    activations. Generous on purpose: mtmd measures its real buffer at load
    and would fail to load if this were short.
    """
    hidden = _int(model, "clip.vision.embedding_length", 1024)
    ffn = _int(model, "clip.vision.feed_forward_length", 4 * hidden)
    heads = _int(model, "clip.vision.attention.head_count", 16)
    patch = _int(model, "clip.vision.patch_size", 14)
    size = _int(model, "clip.vision.image_size", 0)
    max_pixels = _int(model, "clip.vision.image_max_pixels", 0)
    if max_pixels:
        patches = max_pixels // (patch * patch)
    elif size:
        patches = (size // patch) ** 2
    else:
        patches = _DEFAULT_MAX_PIXELS // (patch * patch)
    attention = patches * patches * heads * 4
    activations = patches * (4 * hidden + 2 * ffn) * 4
    return attention + activations
