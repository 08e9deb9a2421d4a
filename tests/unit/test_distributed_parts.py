"""The pure parts of distributed llama.cpp: where rpc-servers may listen,
what the engine's log says about layers, and a simulated primary's launch."""

from __future__ import annotations

import pytest

from corral.backends.base import Placement
from corral.backends.llama_cpp.layout import Span, parse_layers
from corral.backends.llama_cpp.simulated import local_share_on_cpu
from corral.estimate.llama_cpp.memory import layer_ranges
from corral.worker.rpc import RpcRefused, bind_address

MIB = 1024 * 1024

LOAD_LOG = """\
0.00.065.902 I llama_prepare_model_devices: using device RPC0 (10.0.0.2:40001) (unknown id)
0.00.065.903 I llama_prepare_model_devices: using device RPC0 (10.0.0.3:40007) (unknown id)
0.00.160.201 I load_tensors: offloading 8 repeating layers to GPU
0.00.160.202 I load_tensors: offloaded 6/9 layers to GPU
0.00.160.207 I load_tensors:   CPU_Mapped model buffer size =    60.00 MiB
0.00.160.208 I load_tensors: RPC0[10.0.0.2:40001] model buffer size =    40.00 MiB
0.00.160.209 I load_tensors: RPC0[10.0.0.3:40007] model buffer size =    50.00 MiB
0.00.632.188 I llama_kv_cache: RPC0[10.0.0.2:40001] KV buffer size =     4.00 MiB
"""


def test_the_cluster_address_is_where_rpc_servers_listen() -> None:
    assert bind_address("10.0.0.5", None, None) == "10.0.0.5"
    assert bind_address("10.0.0.5", None, "10.0.0.0/24") == "10.0.0.5"
    assert bind_address("localhost", None, None) in ("127.0.0.1", "::1")


def test_every_interface_only_when_named_explicitly() -> None:
    with pytest.raises(RpcRefused, match="unauthenticated RPC on every interface"):
        bind_address("0.0.0.0", None, None)
    with pytest.raises(RpcRefused, match="every interface"):
        bind_address("::", None, None)
    assert bind_address("10.0.0.5", "0.0.0.0", "10.0.0.0/24") == "0.0.0.0"


def test_outside_the_cluster_network_or_unknown_is_refused() -> None:
    with pytest.raises(RpcRefused, match=r"10.1.0.5 is outside .* 10.0.0.0/24"):
        bind_address("10.1.0.5", None, "10.0.0.0/24")
    with pytest.raises(RpcRefused, match="cannot tell which network"):
        bind_address("no-such-host.invalid", None, None)


def test_layers_from_the_load_log() -> None:
    spans = parse_layers(LOAD_LOG, (1.0, 2.0))
    # 3 layers stay on the CPU (the first ones); 6 shared 1:2 over the devices.
    assert spans == [
        Span("CPU", 0, 3, 60 * MIB),
        Span("RPC0[10.0.0.2:40001]", 3, 5, 44 * MIB),
        Span("RPC0[10.0.0.3:40007]", 5, 9, 50 * MIB),
    ]


def test_no_count_in_the_log_means_no_layout() -> None:
    assert parse_layers("llama-server starting\n") == []


def test_everything_on_the_cpu() -> None:
    log = (
        "load_tensors: offloaded 0/9 layers to GPU\n"
        "load_tensors: CPU_Mapped model buffer size = 1.00 MiB\n"
    )
    assert parse_layers(log) == [Span("CPU", 0, 9, MIB)]


def test_a_simulated_primary_keeps_its_share_on_the_cpu() -> None:
    split = (500.0, 500.0, 520.0)
    placement = Placement(
        gpu_indices=(0,),
        gpu_layers=9,
        tensor_split=split,
        rpc_endpoints=("10.0.0.2:40001", "10.0.0.3:40007"),
    )
    local = local_share_on_cpu(placement, total_layers=9)
    planned = layer_ranges(8, 9, split)
    on_helpers = sum(end - first for first, end in planned[:2])
    assert local.gpu_indices == ()
    assert local.gpu_layers == on_helpers
    assert local.tensor_split == (500.0, 500.0)
    assert local.rpc_endpoints == placement.rpc_endpoints
    # What llama.cpp then does: the primary's count of layers stays on the CPU.
    assert 9 - local.gpu_layers == planned[2][1] - planned[2][0]


def test_a_single_helper_needs_no_split() -> None:
    placement = Placement(
        gpu_indices=(0,), gpu_layers=9, tensor_split=(1.0, 1.0), rpc_endpoints=("h:1",)
    )
    local = local_share_on_cpu(placement, total_layers=9)
    assert local.tensor_split == () and local.gpu_layers == layer_ranges(8, 9, (1.0, 1.0))[0][1]
