"""llama.cpp's memory, computed from a GGUF header and launch settings.

What goes where, as llama.cpp (0.3.36's tree) decides it:

* Layers: ``--n-gpu-layers N`` offloads the *last* N of ``n_layer + 1``
  layers, the output layer counting as the last one; offloaded layers are
  shared out over the devices in order by the tensor split. Token embeddings
  (and other input tensors) always stay on the CPU. Tied embeddings are
  copied to the output layer's device when that is not the CPU.
* KV cache: per layer, on the layer's device (the CPU with
  ``--no-kv-offload``): ``cells · (n_head_kv · head_dim_k · bytes(type_k) +
  n_head_kv · head_dim_v · bytes(type_v))``. Cells: the context padded to
  256; sliding-window layers hold ``pad256(min(ctx, window · parallel +
  ubatch))``; MLA (DeepSeek-2/3) keeps K only (the compressed latent).
* CPU repack: on x86 with AVX2 (AVX-512 adds Q2_K), matrices of Q4_0, Q4_K,
  IQ4_NL and MXFP4 whose row count is a multiple of 8 are copied into a
  repacked buffer at load. The CPU's weights are the memory-mapped span of
  the file from its first to its last tensor that stays on the CPU
  unrepacked (what llama.cpp reports as ``CPU_Mapped``).
* Compute buffers (measured on llama-server's CPU build; see
  ``bench/estimate_accuracy.py``): the inputs (attention mask, f16 with
  flash attention) plus the largest stage of one ubatch: the FFN
  (``4·n_embd + 3·n_ff`` floats per token; MoE counts the used experts) or,
  without flash attention, the attention scores (``cells · n_head`` floats).
* Output buffer (host): logits for one token per slot, plus embeddings. An
  embedding model with an output head computes logits for a whole ubatch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from corral.estimate.gguf import GGUFModel, TensorInfo
from corral.estimate.llama_cpp.hparams import ENCODERS, UNGATED_FFN, HParams, read_hparams
from corral.estimate.llama_cpp.projector import projector_compute
from corral.estimate.llama_cpp.settings import LlamaCppSettings

CPU = "CPU"
HOST_FOOTPRINT = 32 * 1024 * 1024
"""llama-server's own resident memory beyond its buffers (binary, threads, HTTP):
16-27 MiB measured by bench/estimate_accuracy.py, rounded up."""
GPU_FOOTPRINT = 384 * 1024 * 1024
"""A GPU runtime's context per device (CUDA/ROCm); not measured here (no GPU)."""

_REPACK_AVX2 = frozenset(
    {
        GGMLQuantizationType.Q4_0,
        GGMLQuantizationType.Q4_K,
        GGMLQuantizationType.IQ4_NL,
        GGMLQuantizationType.MXFP4,
    }
)


@dataclass(frozen=True)
class CpuFeatures:
    avx2: bool = True
    avx512: bool = False

    @classmethod
    def of_this_machine(cls) -> CpuFeatures:
        """From /proc/cpuinfo (Linux); other systems get the defaults."""
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return cls()
        return cls(avx2=" avx2" in flags, avx512=" avx512f" in flags)

    def repacks(self, t: TensorInfo) -> bool:
        types = _REPACK_AVX2 | ({GGMLQuantizationType.Q2_K} if self.avx512 else frozenset())
        return self.avx2 and t.type in types and len(t.shape) >= 2 and t.shape[1] % 8 == 0


@dataclass
class Usage:
    """Bytes on one device (or in host RAM), by what they are for."""

    device: str
    weights: int = 0
    repack: int = 0
    kv: int = 0
    compute: int = 0
    output: int = 0
    footprint: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.repack + self.kv + self.compute + self.output + self.footprint


@dataclass(frozen=True)
class OffloadRow:
    """Memory when ``gpu_layers`` of the ``n_layer + 1`` layers are offloaded."""

    gpu_layers: int
    host: Usage
    devices: tuple[Usage, ...] = field(default_factory=tuple)

    def device(self, name: str) -> Usage:
        return next(d for d in self.devices if d.device == name)


def _cache_bytes(cache_type: str, elements: int) -> int:
    qtype = GGMLQuantizationType[cache_type.upper()]
    block, size = GGML_QUANT_SIZES[qtype]
    return -(-elements // block) * size


def _pad(n: int, to: int = 256) -> int:
    return -(-n // to) * to


def _tensor_layer(t: TensorInfo, hp: HParams) -> int | None:
    """The layer a tensor belongs to (``n_layer`` = the output layer); None
    for input tensors, which stay on the CPU."""
    if t.name.startswith("blk."):
        il = int(t.name.split(".", 2)[1])
        return il if il < hp.n_layer else None
    if t.name.startswith(("output", "cls")):
        return hp.n_layer
    return None


def _mapped_span(model: GGUFModel, hp: HParams, first_gpu_layer: int, cpu: CpuFeatures) -> int:
    """Per file, the bytes from the first to the last tensor mapped on the CPU
    when layers ``first_gpu_layer`` and above are offloaded."""
    total = 0
    for part in model.parts:
        starts, ends = [], []
        for t in part.tensors:
            il = _tensor_layer(t, hp)
            on_cpu = il is None or il < first_gpu_layer
            if on_cpu and not (il is not None and cpu.repacks(t)):
                starts.append(t.offset)
                ends.append(t.offset + t.nbytes)
        if starts:
            total += max(ends) - min(starts)
    return total


def _split_points(split: Sequence[float]) -> list[float]:
    total = sum(split)
    points, running = [], 0.0
    for s in split:
        running += s
        points.append(running / total)
    return points


def _first_at_or_after(point: float, active: int) -> int:
    """The smallest i in 0..active with ``i / active >= point``, computed with
    the same float division llama.cpp's split uses, so borders match exactly."""
    i = min(max(math.ceil(point * active), 0), active)
    while i > 0 and (i - 1) / active >= point:
        i -= 1
    while i < active and i / active < point:
        i += 1
    return i


def layer_ranges(n_layer: int, gpu_layers: int, split: Sequence[float]) -> list[tuple[int, int]]:
    """For each device, the layers ``[first, end)`` it holds (of 0..n_layer,
    n_layer being the output layer).

    llama.cpp offloads the last ``gpu_layers`` layers and gives device ``j``
    the layers whose relative position falls in its share of the split.
    """
    layers = n_layer + 1
    start = max(layers - gpu_layers, 0)
    active = min(gpu_layers, layers)
    if not split:
        return []
    if active == 0:
        return [(start, start)] * len(split)
    points = _split_points(split)
    borders = [0, *(_first_at_or_after(p, active) for p in points[:-1]), active]
    return [(start + borders[j], start + borders[j + 1]) for j in range(len(split))]


@dataclass(frozen=True)
class LlamaCppEstimate:
    """What a model needs, precomputed once for all placements.

    Host memory depends only on how many layers are offloaded; a device's
    memory only on which layers it holds. So any placement (devices, tensor
    split, offloaded layers) is priced in O(devices) from prefix sums: what
    the scheduler searches over, and what ``rows`` tabulates for display.
    """

    hparams: HParams
    settings: LlamaCppSettings
    devices: tuple[str, ...]
    """The devices ``rows`` is tabulated for (in llama.cpp's order)."""
    layer_weights: tuple[int, ...]
    """Bytes of each layer 0..n_layer (n_layer = the output layer)."""
    layer_kv: tuple[int, ...]
    """KV cache bytes of each layer 0..n_layer (the output layer has none)."""
    tied_output: int
    """Token embeddings copied to the output layer's device (tied embeddings)."""
    compute: int
    """Compute buffer on each device that runs at least one layer."""
    projector: int
    """The projector's weights and its encoder's compute buffer (``--mmproj``)."""
    hosts: tuple[Usage, ...]
    """Host memory with 0..n_layer+1 layers offloaded."""
    rows: tuple[OffloadRow, ...]
    """``rows[n]``: n layers offloaded over ``devices`` by ``settings.tensor_split``
    (empty devices: row 0 only)."""
    _prefix_weights: tuple[int, ...] = field(repr=False, default=())
    _prefix_kv: tuple[int, ...] = field(repr=False, default=())

    @property
    def layers(self) -> int:
        """Offloadable layers, the output layer included."""
        return self.hparams.n_layer + 1

    @property
    def full_offload(self) -> OffloadRow:
        return self.rows[-1]

    def host(self, gpu_layers: int) -> Usage:
        return self.hosts[min(gpu_layers, self.layers)]

    def device_usage(
        self,
        gpu_layers: int,
        devices: Sequence[str],
        split: Sequence[float] | None = None,
        *,
        projector_at: int | None = None,
    ) -> tuple[Usage, ...]:
        """Memory on each device when ``gpu_layers`` are offloaded over ``devices``
        in llama.cpp's order, shared by ``split`` (default: equal). The
        projector, if any, goes to device ``projector_at`` (default: the first
        whose name is not ``RPC…``, else the first)."""
        split = split or (1.0,) * len(devices)
        if len(split) < len(devices):
            split = (*split, *(0.0,) * (len(devices) - len(split)))
        ranges = layer_ranges(self.hparams.n_layer, gpu_layers, split[: len(devices)])
        output_layer = self.hparams.n_layer
        pw, pk = self._prefix_weights, self._prefix_kv
        if projector_at is None:
            # mtmd puts the projector on the first local GPU (RPC devices come
            # first in llama.cpp's order); with RPC devices only, on the first one.
            projector_at = next((j for j, d in enumerate(devices) if not d.startswith("RPC")), 0)
        out = []
        for j, (name, (a, b)) in enumerate(zip(devices, ranges, strict=True)):
            u = Usage(name, footprint=0 if name.startswith("RPC") else GPU_FOOTPRINT)
            u.weights = pw[b] - pw[a]
            if a <= output_layer < b:
                u.weights += self.tied_output
            if j == projector_at and gpu_layers > 0 and self.settings.mmproj_offload:
                u.weights += self.projector
            if self.settings.kv_offload:
                u.kv = pk[b] - pk[a]
            if b > a:
                u.compute = self.compute
            out.append(u)
        return tuple(out)

    def row(
        self, gpu_layers: int, devices: Sequence[str], split: Sequence[float] | None = None
    ) -> OffloadRow:
        return OffloadRow(
            gpu_layers, self.host(gpu_layers), self.device_usage(gpu_layers, devices, split)
        )


def _prefix(values: Sequence[int]) -> tuple[int, ...]:
    out, running = [0], 0
    for v in values:
        running += v
        out.append(running)
    return tuple(out)


def _compute(hp: HParams, s: LlamaCppSettings, cells: int, swa_cells: int) -> tuple[int, int]:
    """A compute buffer's two parts: the graph inputs (on the host too) and
    the largest stage of one ubatch (on each device that runs layers)."""
    tokens = min(s.ubatch, s.batch, s.ctx_size) if hp.causal else min(s.ubatch, s.batch)
    flash = s.flash_attn != "off"
    kv_len = cells if hp.causal else tokens
    mask_bytes = 2 if flash else 4
    inputs = kv_len * tokens * mask_bytes + tokens * 4 * 5
    if hp.swa_layers:
        inputs += swa_cells * tokens * mask_bytes
    if hp.arch in UNGATED_FFN:
        ffn = 3 * hp.n_embd + hp.n_ff
    elif hp.n_expert:
        ffn = 4 * hp.n_embd + 3 * hp.n_expert_used * (hp.n_ff_expert or hp.n_ff) + hp.n_expert
    else:
        ffn = 4 * hp.n_embd + 3 * hp.n_ff
    stage = tokens * 4 * ffn
    if s.embeddings and hp.arch not in ENCODERS:
        # Pooling needs every token's output, so a decoder with an output head
        # computes logits for the whole ubatch.
        stage = max(stage, tokens * 4 * (hp.n_vocab + hp.n_embd))
    if not flash:
        stage = max(stage, kv_len * tokens * hp.n_head * 4 + tokens * 4 * 7 * hp.n_embd)
    return inputs, stage


def estimate(
    model: GGUFModel,
    settings: LlamaCppSettings,
    devices: Sequence[str] = (),
    *,
    cpu: CpuFeatures | None = None,
    projector: GGUFModel | None = None,
) -> LlamaCppEstimate:
    """Memory per device and in RAM for every number of offloaded layers.

    ``devices`` are llama.cpp's device names in its order (RPC devices, then
    local GPUs); ``settings.tensor_split`` (default: equal) shares layers
    among them. Any other placement is priced with ``device_usage``.
    """
    hp = read_hparams(model)
    cpu = cpu or CpuFeatures()
    layers = hp.n_layer + 1
    layer_bytes = [0] * layers
    layer_repack = [0] * layers
    tied = not any(t.name == "output.weight" for t in model.tensors)
    embd_bytes = 0
    for t in model.tensors:
        if t.name == "token_embd.weight":
            embd_bytes = t.nbytes
        il = _tensor_layer(t, hp)
        if il is None:
            continue
        layer_bytes[il] += t.nbytes
        if cpu.repacks(t):
            layer_repack[il] += t.nbytes

    cells = _pad(settings.ctx_size)
    swa_cells = (
        _pad(
            min(
                cells,
                hp.n_swa * (settings.parallel if settings.kv_unified else 1) + settings.ubatch,
            )
        )
        if hp.swa_layers
        else 0
    )
    kv_layer = [0] * layers
    for il in range(hp.n_layer):
        layer_cells = swa_cells if hp.is_swa(il) else cells
        k = _cache_bytes(settings.cache_type_k, hp.n_head_kv[il] * hp.head_dim_k * layer_cells)
        v = (
            0
            if hp.mla
            else _cache_bytes(settings.cache_type_v, hp.n_head_kv[il] * hp.head_dim_v * layer_cells)
        )
        kv_layer[il] = 0 if not hp.causal else k + v

    inputs, stage = _compute(hp, settings, cells, swa_cells)
    output = settings.parallel * hp.n_vocab * 4
    if settings.embeddings:
        output += settings.parallel * hp.n_embd * 4
    projector_bytes = (
        projector.tensor_bytes + projector_compute(projector) if projector is not None else 0
    )

    hosts = []
    for gpu_layers in range(layers + 1):
        first_gpu = layers - gpu_layers
        host = Usage(CPU, output=output, footprint=HOST_FOOTPRINT)
        host.repack = sum(layer_repack[:first_gpu])
        host.kv = sum(kv_layer[:first_gpu] if settings.kv_offload else kv_layer)
        host.weights = _mapped_span(model, hp, first_gpu, cpu)
        host.compute = inputs + (stage if first_gpu > 0 else 0)
        if gpu_layers == 0 or not settings.mmproj_offload:
            host.weights += projector_bytes
        hosts.append(host)

    table = LlamaCppEstimate(
        hparams=hp,
        settings=settings,
        devices=tuple(devices),
        layer_weights=tuple(layer_bytes),
        layer_kv=tuple(kv_layer),
        tied_output=embd_bytes if tied else 0,
        compute=inputs + stage,
        projector=projector_bytes,
        hosts=tuple(hosts),
        rows=(),
        _prefix_weights=_prefix(layer_bytes),
        _prefix_kv=_prefix(kv_layer),
    )
    split = settings.tensor_split
    rows = tuple(table.row(n, devices, split) for n in range(layers + 1 if devices else 1))
    return replace(table, rows=rows)
