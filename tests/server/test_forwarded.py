"""Issue 27, item 3: a trusted proxy names the client in X-Forwarded-For, read from the right;
what the client wrote itself (to the left) never counts, and an entry that is not an IP
address is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.app import create_app
from server.config import ConfigError, ServerConfig
from server.forwarded import TrustedProxies
from tests.support import recv_json, running

REAL = "203.0.113.7"


@pytest.mark.parametrize(("trusted", "header", "client"), [
    ("10.0.0.0/8", f"fake-1, {REAL}", REAL),  # the client's own entries are never read
    ("10.0.0.0/8", f"198.51.100.1, {REAL}, 10.1.2.3", REAL),  # past a trusted hop, not past the first untrusted
    ("10.0.0.0/8, 192.0.2.5", f"{REAL}, 192.0.2.5, 10.1.2.3", REAL),
    ("10.1.2.3", "10.1.2.3", "10.1.2.3"),  # only proxies: the farthest
    ("*", f"fake-1, 198.51.100.1, {REAL}", REAL),  # '*': the peer's own entry, the last
    ("127.0.0.1", f"{REAL}:4711", REAL),
    ("127.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
    ("127.0.0.1", f"{REAL}, fake", None),  # refused
    ("10.0.0.0/8", "fake, 10.1.2.3", None),
    ("127.0.0.1", "", None),
    ("127.0.0.1", "1.2.3.4:http", None),
    ("127.0.0.1", "[2001:db8::1", None),
])
def test_the_client_is_the_rightmost_untrusted_entry(trusted: str, header: str, client: str | None) -> None:
    assert TrustedProxies(trusted).client(header) == client


@pytest.mark.parametrize("bad", ["proxy", "10.0.0.0/33", "10.0.0.1, nginx", "*, 10.0.0.1"])
def test_trusted_proxies_are_addresses_or_networks(bad: str) -> None:
    with pytest.raises(ConfigError, match="forwarded_allow_ips"):
        ServerConfig(forwarded_allow_ips=bad)


@pytest.mark.anyio
@pytest.mark.parametrize("trusted", ["127.0.0.0/8", "*"])
async def test_a_spoofed_x_forwarded_for_counts_as_the_real_address(small_model_dir: Path, trusted: str) -> None:
    config = ServerConfig(index=str(small_model_dir), max_connections_per_address=2, forwarded_allow_ips=trusted)
    app = create_app(config)
    with running(app, config) as server:
        url = f"ws://{server}/ws"
        spoofed = [{"X-Forwarded-For": f"fake-{n}, {REAL}"} for n in range(3)]
        async with connect(url, additional_headers=spoofed[0]) as a, connect(url, additional_headers=spoofed[1]) as b:
            assert (await recv_json(a))["type"] == (await recv_json(b))["type"] == "hello"
            async with connect(url, additional_headers=spoofed[2]) as c:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(c.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert app.state.qac.limits._connections == {REAL: 2}
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            for n in range(5):
                spoofed_header = {"X-Forwarded-For": f"fake-{n}, {REAL}"}
                assert (await http.get("/complete", params={"prefix": "a"}, headers=spoofed_header)).status_code == 200
    assert list(app.state.qac.limits.completes._buckets) == [REAL]


@pytest.mark.anyio
async def test_an_entry_that_is_not_an_address_is_refused(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), forwarded_allow_ips="127.0.0.1")
    app = create_app(config)
    with running(app, config) as server:
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            answer = await http.get("/complete", params={"prefix": "a"}, headers={"X-Forwarded-For": "not-an-ip"})
            healthy = await http.get("/healthz", headers={"X-Forwarded-For": f"{REAL}, 127.0.0.1, junk"})
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://{server}/ws", additional_headers={"X-Forwarded-For": "evil"}):
                pass
    assert answer.status_code == 400 and answer.json()["code"] == "bad_message"
    assert answer.headers["x-content-type-options"] == "nosniff"  # the security headers, as on every answer
    assert healthy.status_code == 400
    assert refused.value.response.status_code == 403
    assert not app.state.qac.limits.completes._buckets  # nothing was counted for "not-an-ip"
