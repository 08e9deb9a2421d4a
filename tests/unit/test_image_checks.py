"""The gateway's image checks that need no network: which addresses an image
URL may reach, data URIs, and requests without images left untouched."""

from __future__ import annotations

import asyncio
import ipaddress

import orjson
import pytest

from corral.server.gateway.errors import GatewayError
from corral.server.gateway.fetch import address_allowed
from corral.server.gateway.images import ImageLimits, Images, decode_data_uri


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),  # carrier-grade NAT
        ("169.254.169.254", False),  # cloud metadata
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped
        ("::ffff:93.184.215.14", True),
        ("2002:7f00:1::1", False),  # 6to4 around 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 around 10.0.0.1
        ("ff02::1", False),
    ],
)
def test_only_public_addresses_are_fetched_from(address: str, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address)) is allowed


def test_an_operator_can_let_a_private_network_through() -> None:
    intranet = (ipaddress.ip_network("10.0.0.0/8"),)
    assert address_allowed(ipaddress.ip_address("10.9.8.7"), intranet)
    assert address_allowed(ipaddress.ip_address("::ffff:10.9.8.7"), intranet)
    assert not address_allowed(ipaddress.ip_address("192.168.0.1"), intranet)
    assert not address_allowed(ipaddress.ip_address("127.0.0.1"), intranet)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("data:image/png;base64", "no comma"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:application/pdf;base64,AAAA", "not an image"),
        ("data:image/png;base64,AA=A", "base64"),
        ("data:image/png;base64," + "A" * 4000, "over the limit"),
    ],
)
def test_malformed_data_uris_are_refused(uri: str, words: str) -> None:
    with pytest.raises(GatewayError) as e:
        decode_data_uri(uri, ImageLimits(max_bytes=1024), "messages[0].content[0]")
    assert e.value.status == 400
    assert words in e.value.message


def test_a_request_without_images_is_passed_on_as_the_same_bytes() -> None:
    images = Images(ImageLimits(), fetcher=None)
    request = {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    body = orjson.dumps(request)
    out = asyncio.run(images.prepare(request, body, model="m", vision=False))
    assert out is body


def test_image_urls_are_refused_when_fetching_is_off() -> None:
    images = Images(ImageLimits(), fetcher=None)
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    request = {"model": "m", "messages": [{"role": "user", "content": [part]}]}
    with pytest.raises(GatewayError) as e:
        asyncio.run(images.prepare(request, orjson.dumps(request), model="m", vision=True))
    assert e.value.code == "invalid_image_url"
    assert "data: URI" in e.value.message
