"""``docker-compose.yml``, ``Dockerfile`` and ``deploy/nginx.conf`` hold together (no Docker engine needed).

The services exist and depend on each other as the demo needs, every ``qac`` command they run
parses with the real CLI into a valid configuration, the paths those commands use exist in the
image and the volume, and the proxy reaches the replicas with WebSocket upgrades.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import ipaddress
import posixpath
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from qac.main import make_parser
from qac.serve import config_from_args
from server.app import create_app, security_headers
from server.config import ServerConfig
from server.forwarded import TrustedProxies

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


# --- reading the files ---------------------------------------------------------------------


@dataclass
class Dockerfile:
    """What the tests need of a Dockerfile: copies (source, destination in the image), env, user."""

    copies: list[tuple[str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    user: str | None = None
    cmd: list[str] = field(default_factory=list)
    healthcheck: str | None = None

    def repo_path(self, image_path: str) -> Path | None:
        """The file of the build context that lands at ``image_path``, if a COPY puts one there."""
        for source, dest in reversed(self.copies):
            if image_path == dest or image_path.startswith(dest.rstrip("/") + "/"):
                return ROOT / source / posixpath.relpath(image_path, dest)
        return None


def read_dockerfile(path: Path) -> Dockerfile:
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = Dockerfile()
    workdir = "/"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, rest)
        elif word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            for source in parts[:-1]:
                out.copies.append((source, posixpath.normpath(posixpath.join(workdir, parts[-1]))))
        elif word == "ENV":
            out.env.update(part.split("=", 1) for part in shlex.split(rest))  # type: ignore[misc]
        elif word == "RUN":
            out.runs.append(rest)
        elif word == "USER":
            out.user = rest
        elif word == "CMD":
            out.cmd = yaml.safe_load(rest) if rest.startswith("[") else shlex.split(rest)
        elif word == "HEALTHCHECK":
            out.healthcheck = rest
    return out


@pytest.fixture(scope="module")
def dockerfile(services: dict[str, dict[str, Any]]) -> Dockerfile:
    contexts = {context_of(s) for s in services.values() if "build" in s}
    assert contexts == {ROOT}, f"expected one image built from the repository, got contexts {contexts}"
    return read_dockerfile(ROOT / "Dockerfile")


def context_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    return (COMPOSE.parent / context).resolve()


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service.get("healthcheck", {}).get("test", [])
    return test if isinstance(test, str) else " ".join(str(part) for part in test)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts_of(service: dict[str, Any]) -> list[Mount]:
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            out.append(Mount(source, target, "ro" in "".join(mode).split(",")))
        else:
            out.append(Mount(volume["source"], volume["target"], bool(volume.get("read_only"))))
    return out


def mount_holding(service: dict[str, Any], path: str) -> Mount | None:
    """The mount under which ``path`` lies in the service's container."""
    for mount in mounts_of(service):
        if path == mount.target or path.startswith(mount.target.rstrip("/") + "/"):
            return mount
    return None


def parse_qac(argv: list[str]) -> argparse.Namespace:
    """``argv`` (``qac ...``) parsed by the real ``qac`` parser; fails the test on an unknown flag."""
    assert argv[:1] == ["qac"], f"expected a qac command, got {argv}"
    try:
        return make_parser().parse_args(argv[1:])
    except SystemExit as exc:
        pytest.fail(f"`{shlex.join(argv)}` does not parse with qac's CLI (exit {exc.code})")


def qac_commands(services: dict[str, dict[str, Any]], name: str) -> dict[str, argparse.Namespace]:
    """Services running ``qac <name>``, with their parsed arguments."""
    return {s: parse_qac(command_of(svc)) for s, svc in services.items()
            if command_of(svc)[:2] == ["qac", name]}


def replicas(service: dict[str, Any]) -> int:
    return int(service.get("deploy", {}).get("replicas", 1))


def condition(service: dict[str, Any], on: str) -> str | None:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return "service_started" if on in depends else None
    return depends.get(on, {}).get("condition") if on in depends else None


def nginx_config(services: dict[str, dict[str, Any]]) -> str:
    proxy = services["proxy"]
    (mount,) = [m for m in mounts_of(proxy) if m.target.startswith("/etc/nginx/")]
    path = (COMPOSE.parent / mount.source).resolve()
    assert path.is_file(), f"the proxy mounts {mount.source}, which does not exist"
    return re.sub(r"#[^\n]*", "", path.read_text(encoding="utf-8"))


# --- the compose file -------------------------------------------------------------------------


def test_the_demo_has_redis_a_build_the_servers_and_a_proxy(services: dict[str, dict[str, Any]]) -> None:
    assert {"redis", "build", "server", "proxy"} <= set(services)


def test_every_service_has_an_image_or_a_build_context_with_a_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    built = {svc.get("image") for svc in services.values() if "build" in svc}
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            build = svc["build"]
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (context_of(svc) / dockerfile).is_file(), f"{name}: no {dockerfile} in {context_of(svc)}"
        elif svc.get("pull_policy") == "never":
            assert svc["image"] in built, f"{name}: image {svc['image']} is neither built nor pulled"


def test_two_server_replicas_run_qac_serve_with_redis_sessions(services: dict[str, dict[str, Any]]) -> None:
    serving = qac_commands(services, "serve")
    assert "server" in serving
    assert sum(replicas(services[name]) for name in serving) >= 2
    for name, args in serving.items():
        environ = {k: str(v) for k, v in (services[name].get("environment") or {}).items()}
        config = config_from_args(args, environ)  # validates every value, as `qac serve` does
        assert config.sessions == "redis://redis:6379/0", name
        assert config.host == "0.0.0.0", f"{name} must listen on every interface of its container"
        assert "ports" not in services[name], f"{name}: replicas cannot share a published port"


def test_no_command_carries_the_sessions_url(services: dict[str, dict[str, Any]]) -> None:
    """A Redis password in argv shows in `ps`: the URL comes from QAC_SESSIONS or a file."""
    for name, svc in services.items():
        command = svc.get("command") or []
        words = command.split() if isinstance(command, str) else [str(word) for word in command]
        assert "--sessions" not in words and not any("redis://" in word for word in words), name


def test_the_build_writes_into_the_named_volume_the_servers_read(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], dockerfile: Dockerfile
) -> None:
    (build,) = qac_commands(services, "build").values()
    out = str(build.out)
    written = mount_holding(services["build"], out)
    assert written is not None and not written.read_only, f"`qac build --out {out}` writes outside a volume"
    assert written.source in (compose.get("volumes") or {}), f"{written.source} is not a declared named volume"
    for log in build.log or ():  # none: the sample log, shipped as package data
        source = dockerfile.repo_path(str(log))
        assert source is not None and source.is_file(), f"--log {log} is not in the image"
    for name, args in qac_commands(services, "serve").items():
        assert args.index == out, f"{name} serves {args.index}, the build writes {out}"
        read = mount_holding(services[name], args.index)
        assert read is not None and read.source == written.source, f"{name} does not mount {written.source}"


def test_the_servers_start_after_a_successful_build_and_a_healthy_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in qac_commands(services, "serve"):
        assert condition(services[name], "build") == "service_completed_successfully", name
        assert condition(services[name], "redis") == "service_healthy", name
        assert condition(services["proxy"], name) == "service_healthy"
    assert services["build"].get("restart", "no") == "no"


def test_redis_and_the_servers_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    assert re.search(r"redis-cli\b.*\bping\b", healthcheck_text(services["redis"]))
    for name, args in qac_commands(services, "serve").items():
        assert f"127.0.0.1:{args.port}/healthz" in healthcheck_text(services[name]), name


def test_the_proxy_publishes_port_8080(services: dict[str, dict[str, Any]]) -> None:
    ports = [str(p) for p in services["proxy"].get("ports", [])]
    assert "8080:80" in ports
    assert re.search(r"\blisten\s+80\s*;", nginx_config(services))


def test_the_proxy_spreads_websockets_over_every_replica(services: dict[str, dict[str, Any]]) -> None:
    conf = nginx_config(services)
    upstreams = dict(re.findall(r"\bupstream\s+([\w.-]+)\s*\{([^}]*)\}", conf))
    passes = re.findall(r"\bproxy_pass\s+http://([\w.-]+)\s*;", conf)
    assert passes and set(passes) <= set(upstreams), f"proxy_pass to {passes}, upstreams {sorted(upstreams)}"
    servers = {(host, int(port)) for body in upstreams.values()
               for host, port in re.findall(r"\bserver\s+([\w.-]+):(\d+)", body)}
    assert servers == {(name, args.port) for name, args in qac_commands(services, "serve").items()}
    assert re.search(r"\bproxy_http_version\s+1\.1\s*;", conf)
    assert re.search(r"\bproxy_set_header\s+Upgrade\s+\$http_upgrade\s*;", conf)
    assert re.search(r"\bproxy_set_header\s+Connection\s+(\$connection_upgrade|\"?upgrade\"?)\s*;", conf)
    assert re.search(r"\bmap\s+\$http_upgrade\s+\$connection_upgrade\b", conf) or "$connection_upgrade" not in conf
    # The server allows a WebSocket whose Origin matches its Host: the Host must keep the port.
    assert re.search(r"\bproxy_set_header\s+Host\s+\$http_host\s*;", conf)


def test_compose_config_is_valid(tmp_path: Path) -> None:
    """``docker compose config`` needs no daemon; skipped without the docker CLI's compose."""
    for compose_cli in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(compose_cli[0]) and subprocess.run(
            [*compose_cli, "version"], capture_output=True, cwd=tmp_path
        ).returncode == 0:
            break
    else:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    done = subprocess.run([*compose_cli, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr


# --- the image --------------------------------------------------------------------------------


def test_every_copy_source_exists_and_is_not_docker_ignored(dockerfile: Dockerfile) -> None:
    ignored = [p.strip().rstrip("/") for p in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
               if p.strip() and not p.startswith("#")]
    assert {".git", ".venv"} <= set(ignored)
    assert dockerfile.copies
    for source, _ in dockerfile.copies:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not any(fnmatch.fnmatch(source.rstrip("/"), p) for p in ignored), f"COPY {source} is ignored"


def test_the_image_installs_the_package_runs_as_a_user_and_bakes_no_model(dockerfile: Dockerfile) -> None:
    assert dockerfile.user and dockerfile.user.split(":")[0] not in ("root", "0")
    installs = [r for r in dockerfile.runs if re.search(r"\bpip install\b", r)]
    assert installs and not any(re.search(r"\s(-e|--editable)\b", r) for r in installs)
    assert not any(re.search(r"\bqac\s+build\b", r) for r in dockerfile.runs)


def test_the_image_copies_every_package_it_installs_and_no_optional_extra(dockerfile: Dockerfile) -> None:
    # The demo page and the sample log are package data: a plain install finds them.
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    copied = {source.rstrip("/") for source, _ in dockerfile.copies}
    assert {p.split(".")[0] for p in packages} <= copied
    installs = [r for r in dockerfile.runs if re.search(r"\bpip install\b", r)]
    assert not any("[" in r for r in installs), "the server image installs neither [bench] nor [dask]"


def test_the_image_default_command_is_a_valid_qac_command(dockerfile: Dockerfile) -> None:
    parse_qac(dockerfile.cmd)


def test_every_replica_gets_the_same_required_secret(services: dict[str, dict[str, Any]]) -> None:
    env = services["server"].get("environment", {})
    secret = env["QAC_SECRET"] if isinstance(env, dict) else dict(e.split("=", 1) for e in env)["QAC_SECRET"]
    # One value for the whole service (so for every replica), from the operator, never a default.
    assert re.fullmatch(r"\$\{QAC_SECRET:\?[^}]+\}", secret)


def test_redis_has_bounded_memory_and_evicts_expiring_keys_first(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    maxmemory = command[command.index("--maxmemory") + 1]
    assert maxmemory.endswith(("mb", "gb"))
    # Of the keys that expire, those closest to it go first: sessions before personal histories.
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-ttl"
    # The server bounds anonymous histories well under that (at most ~600 bytes an entry in
    # Redis, OPERATIONS.md), so one address's junk never makes Redis evict anyone's history.
    anonymous = int(services["server"]["environment"]["QAC_HISTORY_ANONYMOUS_MAX"])
    assert anonymous * 600 <= int(maxmemory[:-2]) * 2 ** (20 if maxmemory.endswith("mb") else 30) // 2


def test_metrics_and_admin_stay_on_an_internal_port_the_proxy_never_reaches(
    services: dict[str, dict[str, Any]]
) -> None:
    command = services["server"]["command"]
    internal = command[command.index("--internal-port") + 1]
    assert internal != command[command.index("--port") + 1]
    assert f":{internal}" not in nginx_config(services)


def test_the_proxy_limits_each_address_and_sends_the_security_headers(services: dict[str, dict[str, Any]]) -> None:
    conf = nginx_config(services)
    assert re.search(r"^\s*limit_conn\s+\w+\s+\d+;", conf, re.M)
    assert re.search(r"^\s*limit_req\s+zone=\w+", conf, re.M)
    for header in ("Content-Security-Policy", "X-Content-Type-Options nosniff", "Referrer-Policy no-referrer"):
        assert re.search(rf"^\s*add_header {header}.* always;", conf, re.M), header
    # The proxy's CSP replaces the replicas': it must say what theirs says (compose sets no
    # allowed origin, so neither names one).
    assert not any("ALLOWED_ORIGIN" in key for key in services["server"].get("environment", {}))
    (csp,) = re.findall(r'map \$host \$qac_csp \{\s*default "([^"]+)";', conf)
    server_csp = dict(security_headers(ServerConfig()))[b"content-security-policy"].decode()
    assert csp == server_csp
    raw = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
    assert re.search(r"#\s*listen 443 ssl;", raw)  # the TLS example


def test_the_replicas_trust_the_proxy_alone_to_name_the_client(
    compose: dict[str, Any], services: dict[str, dict[str, Any]], small_model_dir: Path
) -> None:
    """Issue 27: a client that writes ``X-Forwarded-For: fake-N, <real>`` (nginx appends <real>)
    gets the limits of <real>, no more; a peer other than the proxy names nobody."""
    (network, settings), = services["proxy"]["networks"].items()
    proxy = ipaddress.ip_address(settings["ipv4_address"])
    (ipam,) = compose["networks"][network]["ipam"]["config"]
    others = ipaddress.ip_network(ipam["ip_range"])  # every other container's address comes from here
    assert proxy in ipaddress.ip_network(ipam["subnet"]) and proxy not in others
    args = parse_qac(command_of(services["server"]))
    environ = {k: str(v) for k, v in services["server"]["environment"].items()}
    config = dataclasses.replace(config_from_args(args, environ), index=str(small_model_dir), sessions="memory",
                                 internal_port=None)
    trusted = TrustedProxies(config.forwarded_allow_ips)
    assert trusted.trusts(proxy) and not trusted.any
    assert not any(net.overlaps(others) for net in trusted.networks)

    real, limit = "203.0.113.7", config.max_connections_per_address
    app = create_app(config)
    with TestClient(app, client=(str(proxy), 40000)) as via_proxy, contextlib.ExitStack() as held:
        refused = 0
        for n in range(limit + 10):
            spoofed = {"X-Forwarded-For": f"fake-{n}, {real}"}
            ws = held.enter_context(via_proxy.websocket_connect("/ws", headers=spoofed))
            try:
                ws.receive_json()
            except WebSocketDisconnect as closed:
                assert closed.code == 1013
                refused += 1
        state = app.state.qac
        assert refused == 10 and state.limits._connections == {real: limit}
        for n in range(50):
            via_proxy.get("/complete", params={"prefix": "a"}, headers={"X-Forwarded-For": f"fake-{n}, {real}"})
        assert list(state.limits.completes._buckets) == [real]
        assert via_proxy.get("/healthz", headers={"X-Forwarded-For": "fake"}).status_code == 400
    with TestClient(app, client=("198.51.100.20", 40000)) as direct:  # not the proxy: its header is ignored
        assert direct.get("/complete", params={"prefix": "a"}, headers={"X-Forwarded-For": real}).status_code == 200
        assert list(app.state.qac.limits.completes._buckets) == ["198.51.100.20"]
