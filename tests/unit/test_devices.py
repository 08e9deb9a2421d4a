"""Device and host detection, against recorded tool output.

The fixtures under ``tests/unit/data/devices/`` are reconstructions, faithful
to each tool's JSON shape (keys, units, nesting, "N/A" fields) as its source
of that release writes it; serials and usage figures are made up:

- ``amd_smi_rocm6.0_*``: amd-smi 23.4 (ROCm 6.0): a bare list of GPUs,
  quantities as bare integers in MB (``vram_size_mb``, ``fb_usage``), no
  gfx target in ``asic``.
- ``amd_smi_rocm6.2_*``: amd-smi 24.6 (ROCm 6.2): a bare list, quantities as
  ``{"value": ..., "unit": "MB"}``, ``target_graphics_version`` in ``asic``;
  two MI300X.
- ``amd_smi_rocm7_*``: amd-smi 26 (ROCm 7): the list under ``gpu_data``; an
  RX 7900 XTX, an iGPU whose VRAM reads "N/A", a GPU with no serial and no
  metric entry.
- ``rocm_smi_rocm5.7.json``: rocm-smi 1.x (ROCm 5.7), one-line JSON with the
  older lowercase "Card series" key and no GFX Version.
- ``rocm_smi_rocm6.1.json``: rocm-smi 2.x (ROCm 6.1), pretty-printed with a
  warning line before the JSON, "Card Series" and "GFX Version".
- ``system_profiler_m2pro.json``: ``system_profiler SPDisplaysDataType -json``
  on macOS 14, an M2 Pro MacBook Pro; ``system_profiler_intel_mac.json``, an
  Intel MacBook Pro with an AMD GPU (no Apple GPU in it).

NVML is replayed by ``FakeNvml`` below, with figures recorded from nvidia-smi
on an RTX 4090 and an A100 80GB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from corral.errors import InvalidInputError
from corral.schemas.workers import Device
from corral.worker.devices import (
    AmdDetector,
    AppleDetector,
    DeviceDetector,
    NvidiaDetector,
    SimulatedDetector,
    build_detector,
    builtin_labels,
    host,
    labels,
    load_devices_file,
    normalise_arch,
    parse_amd_smi,
    parse_label,
    parse_rocm_smi,
    parse_size,
    parse_system_profiler,
    read_status,
)
from corral.worker.devices.amd import AMD_SMI_METRIC, AMD_SMI_STATIC, ROCM_SMI
from corral.worker.devices.apple import MEMSIZE, SYSTEM_PROFILER, parse_memsize
from corral.worker.devices.tools import json_document, run_tool

DATA = Path(__file__).parent / "data" / "devices"
MIB = 1 << 20
GIB = 1 << 30


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# NVIDIA ---------------------------------------------------------------------


class FakeNVMLError(Exception):
    """Stands in for ``pynvml.NVMLError``."""


@dataclass
class FakeMemory:
    total: int
    used: int


@dataclass
class FakeGpu:
    name: str
    uuid: str
    memory: FakeMemory | None  # None: nvmlDeviceGetMemoryInfo fails ("GPU is lost")
    capability: tuple[int, int]


RTX_4090 = FakeGpu(
    "NVIDIA GeForce RTX 4090",
    "GPU-4b6d8e2a-93c1-5f07-b1de-2c8a7f6e5d41",
    FakeMemory(total=25757220864, used=1051459584),
    (8, 9),
)
A100_80GB = FakeGpu(
    "NVIDIA A100-SXM4-80GB",
    "GPU-9e1f0c3b-6a2d-4e58-8f7a-1b3c5d7e9f02",
    FakeMemory(total=85899345920, used=4718592),
    (8, 0),
)


class FakeNvml:
    """Replays recorded NVML answers; counts calls so tests can see what is cached."""

    NVMLError = FakeNVMLError

    def __init__(self, gpus: Sequence[FakeGpu], *, init_error: str | None = None) -> None:
        self.gpus = list(gpus)
        self.init_error = init_error
        self.calls: dict[str, int] = {}
        self.shut_down = 0

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def nvmlInit(self) -> None:
        self._count("init")
        if self.init_error is not None:
            raise FakeNVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shut_down += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: Any) -> str | bytes:
        self._count("name")
        return str(handle.name).encode()  # as pynvml before 11.5 did

    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes:
        return str(handle.uuid)

    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> FakeMemory:
        self._count("memory")
        if handle.memory is None:
            raise FakeNVMLError("GPU is lost")
        memory: FakeMemory = handle.memory
        return memory

    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]:
        capability: tuple[int, int] = handle.capability
        return capability


def test_nvml_reports_each_gpu_with_its_memory_and_capability() -> None:
    nvml = FakeNvml([RTX_4090, A100_80GB])
    devices = NvidiaDetector(nvml=nvml).detect()
    assert devices == [
        Device(
            index=0,
            uuid="GPU-4b6d8e2a-93c1-5f07-b1de-2c8a7f6e5d41",
            vendor="nvidia",
            name="NVIDIA GeForce RTX 4090",
            memory_total=25757220864,
            memory_used=1051459584,
            compute_capability="8.9",
        ),
        Device(
            index=1,
            uuid="GPU-9e1f0c3b-6a2d-4e58-8f7a-1b3c5d7e9f02",
            vendor="nvidia",
            name="NVIDIA A100-SXM4-80GB",
            memory_total=85899345920,
            memory_used=4718592,
            compute_capability="8.0",
        ),
    ]


def test_nvml_is_initialised_once_and_only_memory_is_read_again() -> None:
    a100 = dataclasses.replace(A100_80GB)
    nvml = FakeNvml([RTX_4090, a100])
    detector = NvidiaDetector(nvml=nvml)
    assert detector.detect()[1].memory_used == 4718592
    a100.memory = FakeMemory(total=85899345920, used=7 * GIB)  # a model loaded meanwhile
    assert detector.detect()[1].memory_used == 7 * GIB
    assert nvml.calls == {"init": 1, "name": 2, "memory": 4}
    detector.close()
    detector.close()
    assert nvml.shut_down == 1


def test_a_gpu_whose_memory_cannot_be_read_is_left_out_and_the_others_keep_their_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lost = FakeGpu(
        "NVIDIA H100 80GB HBM3", "GPU-0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5", None, (9, 0)
    )
    detector = NvidiaDetector(nvml=FakeNvml([lost, RTX_4090]))
    with caplog.at_level(logging.WARNING):
        first = detector.detect()
        detector.detect()
    assert [(d.index, d.name) for d in first] == [(1, "NVIDIA GeForce RTX 4090")]
    lost_messages = [r for r in caplog.records if "left out" in r.getMessage()]
    assert len(lost_messages) == 1
    assert "GPU is lost" in lost_messages[0].getMessage()


def test_no_nvidia_driver_means_no_devices_logged_once_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvml = FakeNvml([], init_error="Driver Not Loaded")
    detector = NvidiaDetector(nvml=nvml)
    with caplog.at_level(logging.DEBUG, logger="corral.worker.devices.nvidia"):
        assert detector.detect() == []
        assert detector.detect() == []
    assert nvml.calls == {"init": 1}
    messages = [r for r in caplog.records if "Driver Not Loaded" in r.getMessage()]
    assert [r.levelno for r in messages] == [logging.DEBUG]
    detector.close()
    assert nvml.shut_down == 0  # nothing was opened


def test_no_pynvml_module_means_no_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes the import raise ImportError
    assert NvidiaDetector().detect() == []


# AMD ------------------------------------------------------------------------


def test_amd_smi_rocm_6_0_bare_integers_in_mebibytes() -> None:
    devices = parse_amd_smi(
        recorded("amd_smi_rocm6.0_static.json"), recorded("amd_smi_rocm6.0_metric.json")
    )
    assert [(d.index, d.name, d.memory_total, d.memory_used) for d in devices] == [
        (0, "AMD Instinct MI210", 65520 * MIB, 10 * MIB),
        (1, "AMD Instinct MI210", 65520 * MIB, 48211 * MIB),
    ]
    assert devices[0].uuid == "GPU-d1cc8f3f10e5d9a4"
    assert devices[0].compute_capability is None  # 6.0 does not print the gfx target
    assert {d.vendor for d in devices} == {"amd"}


def test_amd_smi_rocm_6_2_value_unit_pairs() -> None:
    devices = parse_amd_smi(
        recorded("amd_smi_rocm6.2_static.json"), recorded("amd_smi_rocm6.2_metric.json")
    )
    assert devices == [
        Device(
            index=0,
            uuid="GPU-8a2b47d1c05e93f6",
            vendor="amd",
            name="AMD Instinct MI300X",
            memory_total=196592 * MIB,
            memory_used=283 * MIB,
            compute_capability="gfx942",
        ),
        Device(
            index=1,
            uuid="GPU-1f7e0c55a39d2b48",
            vendor="amd",
            name="AMD Instinct MI300X",
            memory_total=196592 * MIB,
            memory_used=150423 * MIB,
            compute_capability="gfx942",
        ),
    ]


def test_amd_smi_rocm_7_gpu_data_envelope_and_missing_fields() -> None:
    devices = parse_amd_smi(
        recorded("amd_smi_rocm7_static.json"), recorded("amd_smi_rocm7_metric.json")
    )
    # GPU 1 (an iGPU) has no VRAM size anywhere: left out. GPU 2 has no
    # metric entry (nothing in use known), no market name and a zero serial.
    assert devices == [
        Device(
            index=0,
            uuid="GPU-5c88007d760374f3",
            vendor="amd",
            name="Radeon RX 7900 XTX",
            memory_total=24560 * MIB,
            memory_used=1536 * MIB,
            compute_capability="gfx1100",
        ),
        Device(
            index=2,
            uuid=None,
            vendor="amd",
            name="AMD GPU",
            memory_total=49136 * MIB,
            memory_used=0,
            compute_capability="gfx1100",
        ),
    ]


def test_amd_smi_quantities_printed_as_strings_with_units() -> None:
    static = (
        '[{"gpu": 0, "asic": {"market_name": "AMD Instinct MI100"}, "vram": {"size": "32 GB"}}]'
    )
    metric = '[{"gpu": 0, "mem_usage": {"used_vram": "512 MB"}}]'
    [device] = parse_amd_smi(static, metric)
    assert (device.memory_total, device.memory_used) == (32 * GIB, 512 * MIB)


@pytest.mark.parametrize("garbage", ["", "not json", "{}", "[1, 2]", '{"gpu_data": "N/A"}'])
def test_amd_smi_output_that_is_not_a_gpu_list_gives_no_devices(garbage: str) -> None:
    assert parse_amd_smi(garbage, garbage) == []


def test_rocm_smi_rocm_5_7_lowercase_keys() -> None:
    devices = parse_rocm_smi(recorded("rocm_smi_rocm5.7.json"))
    assert devices == [
        Device(
            index=0,
            uuid="GPU-8c2a5b3c7d1e9f01",
            vendor="amd",
            name="AMD Instinct MI210",
            memory_total=68702699520,
            memory_used=10960896,
        ),
        Device(
            index=1,
            uuid=None,
            vendor="amd",
            name="AMD Instinct MI210",
            memory_total=68702699520,
            memory_used=50553585664,
        ),
    ]


def test_rocm_smi_rocm_6_1_after_a_warning_line() -> None:
    devices = parse_rocm_smi(recorded("rocm_smi_rocm6.1.json"))
    # card1, the iGPU, has no VRAM size: left out.
    assert devices == [
        Device(
            index=0,
            uuid="GPU-5c88007d760374f3",
            vendor="amd",
            name="Radeon RX 7900 XT",
            memory_total=21458059264,
            memory_used=27856896,
            compute_capability="gfx1100",
        )
    ]


class FakeTools:
    """A ToolRunner answering from recorded outputs; records what was run."""

    def __init__(self, outputs: dict[tuple[str, ...], str]) -> None:
        self.outputs = outputs
        self.ran: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> str | None:
        self.ran.append(tuple(argv))
        return self.outputs.get(tuple(argv))


def test_amd_detector_reads_static_once_and_metric_every_time() -> None:
    tools = FakeTools(
        {
            AMD_SMI_STATIC: recorded("amd_smi_rocm6.2_static.json"),
            AMD_SMI_METRIC: recorded("amd_smi_rocm6.2_metric.json"),
        }
    )
    detector = AmdDetector(run=tools)
    assert len(detector.detect()) == 2
    assert len(detector.detect()) == 2
    assert tools.ran == [AMD_SMI_STATIC, AMD_SMI_METRIC, AMD_SMI_METRIC]


def test_amd_detector_falls_back_to_rocm_smi() -> None:
    tools = FakeTools({ROCM_SMI: recorded("rocm_smi_rocm6.1.json")})
    detector = AmdDetector(run=tools)
    assert [d.name for d in detector.detect()] == ["Radeon RX 7900 XT"]
    assert [d.name for d in detector.detect()] == ["Radeon RX 7900 XT"]
    assert tools.ran == [AMD_SMI_STATIC, ROCM_SMI, ROCM_SMI]  # amd-smi is not asked again


def test_amd_detector_without_either_tool_reports_nothing() -> None:
    assert AmdDetector(run=FakeTools({})).detect() == []


# Apple ----------------------------------------------------------------------


def test_system_profiler_apple_silicon_gpu_has_the_machines_memory() -> None:
    [device] = parse_system_profiler(recorded("system_profiler_m2pro.json"), 32 * GIB, 20 * GIB)
    assert device == Device(
        index=0,
        vendor="apple",
        name="Apple M2 Pro (19-core GPU)",
        memory_total=32 * GIB,
        memory_used=20 * GIB,
        compute_capability="metal3",
    )


def test_system_profiler_on_an_intel_mac_has_no_apple_gpu() -> None:
    assert parse_system_profiler(recorded("system_profiler_intel_mac.json"), 16 * GIB, 0) == []


def test_memsize() -> None:
    assert parse_memsize("34359738368\n") == 32 * GIB
    assert parse_memsize("sysctl: unknown oid 'hw.memsize'") is None


def test_apple_detector_runs_nothing_off_apple_silicon() -> None:
    tools = FakeTools({})
    assert AppleDetector(run=tools, system="Linux", machine="x86_64").detect() == []
    assert AppleDetector(run=tools, system="Darwin", machine="x86_64").detect() == []
    assert tools.ran == []


def test_apple_detector_reads_the_profile_once() -> None:
    tools = FakeTools(
        {SYSTEM_PROFILER: recorded("system_profiler_m2pro.json"), MEMSIZE: "34359738368\n"}
    )
    detector = AppleDetector(run=tools, system="Darwin", machine="arm64")
    [device] = detector.detect()
    detector.detect()
    assert device.memory_total == 32 * GIB
    assert 0 <= device.memory_used <= device.memory_total
    assert tools.ran == [SYSTEM_PROFILER, MEMSIZE]


# Tools ----------------------------------------------------------------------


def test_run_tool_keeps_the_output_of_a_failing_tool() -> None:
    script = "print('{\"card0\": {}}'); raise SystemExit(2)"
    assert run_tool([sys.executable, "-c", script]) == '{"card0": {}}\n'


def test_run_tool_without_the_tool_or_its_output() -> None:
    assert run_tool(["corral-no-such-tool-anywhere", "--json"]) is None
    assert run_tool([sys.executable, "-c", "pass"]) is None


def test_json_document_after_warnings() -> None:
    assert json_document('WARNING: something\n[{"gpu": 0}]') == [{"gpu": 0}]
    assert json_document("WARNING: only words") is None


# Simulated devices ----------------------------------------------------------


GOOD_FILE = """\
# simulated GPUs: nothing is detected on this worker, these are reported instead
devices:
  - name: Simulated RTX 4090
    memory: 24GiB
    used: 512MiB
    compute_capability: "8.9"
  - name: Simulated MI300X
    vendor: amd
    memory: 192 GB
  - name: Simulated A100
    memory: 85899345920
    index: 7
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "devices.yaml"
    path.write_text(text)
    return path


def test_devices_file(tmp_path: Path) -> None:
    devices = load_devices_file(write(tmp_path, GOOD_FILE))
    assert [(d.index, d.vendor, d.name, d.memory_total, d.memory_used) for d in devices] == [
        (0, "nvidia", "Simulated RTX 4090", 24 * GIB, 512 * MIB),
        (1, "amd", "Simulated MI300X", 192 * 10**9, 0),
        (7, "nvidia", "Simulated A100", 85899345920, 0),
    ]
    assert devices[0].compute_capability == "8.9"
    assert all(d.simulated for d in devices)
    uuids = [d.uuid for d in devices]
    assert all(u is not None and u.startswith("SIM-") for u in uuids)
    assert len(set(uuids)) == 3


def test_simulated_uuids_are_the_same_on_every_run(tmp_path: Path) -> None:
    first = load_devices_file(write(tmp_path, GOOD_FILE))
    other = tmp_path / "elsewhere"
    other.mkdir()
    again = load_devices_file(write(other, GOOD_FILE))
    assert [d.uuid for d in first] == [d.uuid for d in again]
    # The uuid is a function of the device, not of its position in the file.
    identity = f"0\0nvidia\0Simulated RTX 4090\0{24 * GIB}".encode()
    assert first[0].uuid == "SIM-" + hashlib.sha256(identity).hexdigest()[:16]


def test_an_empty_device_list_is_a_worker_without_gpus(tmp_path: Path) -> None:
    assert load_devices_file(write(tmp_path, "devices: []\n")) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("devices:\n  - name: x\n    memory: 1GiB\n    colour: red\n", "unknown key 'colour'"),
        ("devices:\n  - name: x\n", "device 1: missing 'memory'"),
        ("devices:\n  - memory: 1GiB\n", "missing 'name'"),
        ("devices:\n  - name: x\n    memory: 24 gigs\n", "'memory': '24 gigs' is not a size"),
        ("devices:\n  - name: x\n    memory: 0\n", "'memory' must be more than 0"),
        ("devices:\n  - name: x\n    memory: 1GiB\n    used: 2GiB\n", "'used' is more than"),
        (
            "devices:\n  - {name: a, memory: 1GiB}\n  - {name: b, memory: 1GiB, index: 0}\n",
            "devices 1 and 2 both have index 0",
        ),
        ("devices:\n  - {name: a, memory: 1GiB, index: -1}\n", "'index' must be a whole number"),
        ("devices:\n  - {name: a, memory: 1GiB, vendor: intel}\n", "vendor 'intel' is not one"),
        ("devices:\n  - {name: a, memory: 1GiB, compute_capability: 8.9}\n", "quote"),
        ("devices: [\n", "not valid YAML"),
        ("devices: {name: x}\n", "'devices' must be a list"),
        ("- name: x\n  memory: 1GiB\n", "expected a mapping with a 'devices' list"),
        ("devices: []\ngpus: []\n", "unknown key 'gpus'"),
        ("devices:\n  - just a string\n", "device 1: expected a mapping"),
    ],
)
def test_bad_devices_files_say_which_file_and_what_is_wrong(
    tmp_path: Path, content: str, message: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(InvalidInputError) as raised:
        load_devices_file(path)
    assert message in raised.value.message
    assert str(path) in raised.value.message


def test_a_missing_devices_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read it"):
        load_devices_file(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("24GiB", 24 * GIB),
        ("24 GiB", 24 * GIB),
        ("24gib", 24 * GIB),
        ("16GB", 16 * 10**9),
        ("24576MiB", 24 * GIB),
        ("1.5GiB", 3 * GIB // 2),
        ("512", 512),
        ("2TB", 2 * 10**12),
        (1024, 1024),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["24 gigs", "GiB", "", "-1GiB", "1.5", True, 2.5, -3, None])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


# Labels ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("machine", "arch"),
    [
        ("x86_64", "amd64"),
        ("AMD64", "amd64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("ppc64le", "ppc64le"),
        ("RISCV64", "riscv64"),
    ],
)
def test_arch_names_follow_go(machine: str, arch: str) -> None:
    assert normalise_arch(machine) == arch


@pytest.mark.parametrize(
    ("system", "machine", "os", "arch"),
    [
        ("Linux", "x86_64", "linux", "amd64"),
        ("Linux", "aarch64", "linux", "arm64"),
        ("Darwin", "arm64", "darwin", "arm64"),
        ("Windows", "AMD64", "windows", "amd64"),
    ],
)
def test_builtin_labels(
    monkeypatch: pytest.MonkeyPatch, system: str, machine: str, os: str, arch: str
) -> None:
    monkeypatch.setattr(labels.platform, "system", lambda: system)
    monkeypatch.setattr(labels.platform, "machine", lambda: machine)
    assert builtin_labels("gpu-box-1") == {"os": os, "arch": arch, "worker-name": "gpu-box-1"}


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("zone=eu-west", ("zone", "eu-west")),
        ("corral.dev/tier=gold", ("corral.dev/tier", "gold")),
        ("spare=", ("spare", "")),
    ],
)
def test_parse_label(text: str, pair: tuple[str, str]) -> None:
    assert parse_label(text) == pair


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zone", "expected key=value"),
        ("=eu", "is not a valid key"),
        ("-zone=eu", "is not a valid key"),
        ("zone=eu west", "is not a valid value"),
        ("zone=a=b", "is not a valid value"),
        ("os=plan9", "set by the worker itself"),
    ],
)
def test_bad_labels(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_label(text)


# Putting it together --------------------------------------------------------


class BrokenDetector:
    name = "broken"

    def detect(self) -> list[Device]:
        raise RuntimeError("a bug in a detector")

    def close(self) -> None:
        raise RuntimeError("and in closing it")


def test_one_failing_detector_does_not_hide_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nvidia = NvidiaDetector(nvml=FakeNvml([RTX_4090]))
    amd = AmdDetector(run=FakeTools({ROCM_SMI: recorded("rocm_smi_rocm6.1.json")}))
    detector = DeviceDetector([BrokenDetector(), nvidia, amd])
    with caplog.at_level(logging.WARNING):
        first = detector.detect()
        detector.detect()
        detector.close()
    assert [(d.vendor, d.index) for d in first] == [("nvidia", 0), ("amd", 0)]
    failures = [r for r in caplog.records if r.getMessage() == "broken device detection failed"]
    assert len(failures) == 1  # once, not at every heartbeat
    assert any("more than one vendor" in r.getMessage() for r in caplog.records)


def test_a_devices_file_replaces_detection(tmp_path: Path) -> None:
    detector = build_detector(write(tmp_path, GOOD_FILE))
    devices = detector.detect()
    assert [d.name for d in devices] == ["Simulated RTX 4090", "Simulated MI300X", "Simulated A100"]
    assert all(d.simulated for d in devices)
    devices[0].memory_used = 0
    assert detector.detect()[0].memory_used == 512 * MIB  # callers get copies


def test_a_bad_devices_file_fails_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        build_detector(write(tmp_path, "devices:\n  - name: x\n"))


def test_memory_in_use_leaves_out_what_the_kernel_would_give_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Recorded from psutil on a 64 GiB machine with a large page cache.
    reading = SimpleNamespace(total=67108864000, available=50331648000, free=2147483648)
    monkeypatch.setattr(host.psutil, "virtual_memory", lambda: reading)
    memory = host.read_memory()
    assert (memory.total, memory.used) == (67108864000, 67108864000 - 50331648000)


def test_status_of_this_machine(tmp_path: Path) -> None:
    nested = tmp_path / "models"
    nested.mkdir()
    simulated = SimulatedDetector(load_devices_file(write(tmp_path, GOOD_FILE)))
    status = read_status(DeviceDetector([simulated]), [tmp_path, nested, tmp_path / "not-yet-made"])
    assert status.cpu.cores >= 1
    assert 0 <= status.cpu.utilization <= 100
    assert status.memory.total > status.memory.used > 0
    # tmp_path and its subdirectory share a filesystem: one disk, the first path.
    assert [d.path for d in status.disks] == [str(tmp_path)]
    assert status.disks[0].total >= status.disks[0].used > 0
    assert len(status.devices) == 3
