"""Personal history at serve time: users named by signed tokens, their own queries suggested to
them alone, forget and remove, the bound, and the serve-time blocklist over every source."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from indexer.model import Model
from server.app import create_app
from server.config import ServerConfig
from server.users import Signer, issue_anonymous
from tests.support import TOKEN, recv_json, running

pytestmark = pytest.mark.anyio

SECRET = "a test secret of enough characters"
MINE = "zqxj plugh"  # in no log: only a user's own history can suggest it


@pytest.fixture(scope="module")
def server(small_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, admin_token=TOKEN, rate=100_000,
                          burst=100_000)
    with running(create_app(config), config) as address:
        yield address


async def hello(ws: ClientConnection, token: str | None = None) -> dict[str, Any]:
    """Present ``token`` (or ask for one) after the ``hello``: the server's answer."""
    frame = await recv_json(ws)
    assert frame["type"] == "hello"
    await ws.send(json.dumps({"type": "user", "token": token} if token else {"type": "user"}))
    return await recv_json(ws)


async def submit(ws: ClientConnection, text: str) -> None:
    await ws.send(json.dumps({"type": "submit", "query": text}))
    answer = await recv_json(ws)
    assert answer["type"] == "ack", answer


async def suggest(ws: ClientConnection, qid: int, prefix: str) -> list[dict[str, Any]]:
    await ws.send(json.dumps({"type": "query", "id": qid, "prefix": prefix}))
    frame = await recv_json(ws)
    assert frame["type"] == "suggestions", frame
    items: list[dict[str, Any]] = frame["items"]
    return items


def personal(items: list[dict[str, Any]]) -> list[str]:
    return [item["query"] for item in items if item.get("personal")]


async def new_user(server: str, *queries: str) -> str:
    """A new anonymous user who submitted ``queries``: their token."""
    async with connect(f"ws://{server}/ws") as ws:
        answer = await hello(ws)
        assert answer["type"] == "user" and answer["history"] == 0
        for query in queries:
            await submit(ws, query)
    token: str = answer["token"]
    return token


async def test_a_query_one_user_submitted_is_suggested_to_that_user_only(server: str) -> None:
    alice = await new_user(server, MINE)
    async with connect(f"ws://{server}/ws") as ws:  # another tab: a new session, the same user
        answer = await hello(ws, alice)
        assert answer == {"type": "user", "token": alice, "history": 1}
        items = await suggest(ws, 1, "zqxj")
        assert personal(items) == [MINE]
        assert all(set(item) == {"query", "score"} for item in items if not item.get("personal"))

    bob = await new_user(server)
    async with connect(f"ws://{server}/ws") as ws:
        assert (await hello(ws, bob))["history"] == 0
        for qid, prefix in enumerate(["z", "zq", "zqxj", "zqxj ", "zqxj p"]):
            items = await suggest(ws, qid, prefix)
            assert MINE not in [item["query"] for item in items] and personal(items) == []
    async with connect(f"ws://{server}/ws") as ws:  # no user at all
        await recv_json(ws)
        assert MINE not in [item["query"] for item in await suggest(ws, 1, "zqxj")]

    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        def complete(token: str | None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            return http.get("/complete", params={"prefix": "zqxj"}, headers=headers)

        mine = (await complete(alice)).json()["items"]
        assert [i["query"] for i in mine if i.get("personal")] == [MINE]
        for other in (bob, None):
            assert MINE not in [i["query"] for i in (await complete(other)).json()["items"]]
        refused = await complete("alice")
        assert refused.status_code == 401 and refused.json()["code"] == "bad_user"


def forged_expired_and_bare() -> dict[str, str]:
    other = Signer(b"another secret, not the server's")
    ours = Signer(SECRET.encode())
    anonymous, user = issue_anonymous(ours)
    text = anonymous.rpartition(".")[0]
    return {
        "forged": other.sign("s", "alice", int(time.time()) + 3600),
        "forged anonymous": issue_anonymous(other)[0],
        "expired": ours.sign("s", "alice", int(time.time()) - 1),
        "bare id": "alice",
        "bare anonymous id": user.id,
        "unsigned": text,
        "empty signature": text + ".",
        "value signed for another purpose": ours.sign_value("session", user.id),
        "too long": "v1." + "a" * 600,
        "anonymous without expiry": _signed(f"v1.a.{anonymous.split('.')[2]}.0"),  # as issued before
    }


def _signed(text: str) -> str:
    mac = hmac.new(SECRET.encode(), text.encode("ascii"), hashlib.sha256).digest()
    return f"{text}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode('ascii')}"


async def test_forged_expired_and_bare_tokens_are_refused_and_the_connection_goes_on(server: str) -> None:
    ours = Signer(SECRET.encode())
    signed_in = ours.sign("s", "alice", int(time.time()) + 3600)
    async with connect(f"ws://{server}/ws") as ws:
        await recv_json(ws)
        for name, token in forged_expired_and_bare().items():
            await ws.send(json.dumps({"type": "user", "token": token}))
            answer = await recv_json(ws)
            assert answer["type"] == "error" and answer["code"] == "bad_user", name
            assert token not in answer["message"] or len(token) < 6, name
        await ws.send(json.dumps({"type": "forget"}))  # no user: nothing to forget
        assert (await recv_json(ws))["code"] == "no_user"
        assert (await suggest(ws, 1, "weat"))  # still serving
        await ws.send(json.dumps({"type": "user", "token": signed_in}))
        assert await recv_json(ws) == {"type": "user", "token": signed_in, "history": 0}

    async with httpx.AsyncClient(base_url=f"http://{server}") as http:
        for route in ("/history/forget", "/history/remove"):
            missing = await http.post(route, json={"query": "x"})
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
            for name, token in forged_expired_and_bare().items():
                answer = await http.post(route, json={"query": "x"}, headers={"Authorization": f"Bearer {token}"})
                assert (answer.status_code, answer.json()["code"]) == (401, "bad_user"), (route, name)
        metrics = (await http.get("/metrics")).text
    refused = [line for line in metrics.splitlines() if line.startswith('qac_user_tokens_total{result="refused"}')]
    assert float(refused[0].split()[-1]) >= 3 * len(forged_expired_and_bare())


async def test_the_answer_to_remove_carries_the_sessions_queries_without_the_removed_one(server: str) -> None:
    async with connect(f"ws://{server}/ws") as ws:
        session = (await recv_json(ws))["session"]
        await ws.send(json.dumps({"type": "user"}))
        token = (await recv_json(ws))["token"]
        for text in ("weather", "zqxj quux", "news", "Zqxj  Quux!"):
            await submit(ws, text)
        await ws.send(json.dumps({"type": "remove", "query": "zqxj quux"}))
        answer = await recv_json(ws)
        assert answer == {"type": "user", "token": token, "history": 2, "removed": True, "queries": ["weather", "news"]}
        await ws.send(json.dumps({"type": "remove", "query": "never asked"}))
        assert (await recv_json(ws))["queries"] == ["weather", "news"]
    async with connect(f"ws://{server}/ws") as ws:  # the store agrees
        assert (await recv_json(ws))["type"] == "hello"
        await ws.send(json.dumps({"type": "user", "token": token}))
        assert (await recv_json(ws))["type"] == "user"
        await ws.send(json.dumps({"type": "resume", "session": session}))
        resumed = await recv_json(ws)
    assert (resumed["session"], resumed["queries"], resumed["restored"]) == (session, ["weather", "news"], True)


async def test_remove_and_forget_over_the_socket_and_http(server: str) -> None:
    token = await new_user(server, MINE, "zqxj xyzzy", "zqxj quux")
    async with connect(f"ws://{server}/ws") as ws:
        assert (await hello(ws, token))["history"] == 3
        assert sorted(personal(await suggest(ws, 1, "zqxj"))) == ["zqxj plugh", "zqxj quux", "zqxj xyzzy"]
        await ws.send(json.dumps({"type": "remove", "query": "ZQXJ  Plugh!"}))  # normalized like a submit
        # This connection's session is empty: the answer says so (a page redraws its strip).
        assert await recv_json(ws) == {"type": "user", "token": token, "history": 2, "removed": True, "queries": []}
        assert sorted(personal(await suggest(ws, 2, "zqxj"))) == ["zqxj quux", "zqxj xyzzy"]
        await ws.send(json.dumps({"type": "remove", "query": "never asked"}))
        assert (await recv_json(ws))["removed"] is False

        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            auth = {"Authorization": f"Bearer {token}"}
            answer = await http.post("/history/remove", json={"query": "zqxj quux"}, headers=auth)
            assert answer.json() == {"history": 1, "removed": True}
            assert personal(await suggest(ws, 3, "zqxj")) == ["zqxj xyzzy"]
            bad = await http.post("/history/remove", content=b"{", headers=auth)
            assert (bad.status_code, bad.json()["code"]) == (400, "bad_json")
            forgotten = (await http.post("/history/forget", headers=auth)).json()
            assert forgotten.keys() == {"history", "token"} and forgotten["history"] == 0
            assert personal(await suggest(ws, 4, "zqxj")) == []
            token = forgotten["token"]  # the old one is refused from now on
            assert (await http.post("/history/forget", headers=auth)).status_code == 401

        await ws.send(json.dumps({"type": "user", "token": token}))
        assert (await recv_json(ws))["history"] == 0
        await submit(ws, "zqxj again")
        assert personal(await suggest(ws, 5, "zqxj")) == ["zqxj again"]
        await ws.send(json.dumps({"type": "forget"}))
        answer = await recv_json(ws)
        assert answer["token"] != token and (answer["history"], answer["queries"]) == (0, [])
        assert all(item["query"] != "zqxj again" for item in await suggest(ws, 6, "zqxj"))


async def test_the_server_keeps_the_last_history_max_queries_of_a_user(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, history_max=3)
    with running(create_app(config), config) as server:
        queries = [f"zqxj {word}" for word in ("one", "two", "three", "four", "five")]
        token = await new_user(server, *queries)
        async with connect(f"ws://{server}/ws") as ws:
            assert (await hello(ws, token))["history"] == 3
            assert sorted(personal(await suggest(ws, 1, "zqxj"))) == sorted(queries[-3:])


def write(path: Path, text: str) -> None:
    """Replace a file the way an editor or a deploy does (a new inode, so any change shows)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


async def eventually_absent(ws: ClientConnection, prefix: str, query: str, first_id: int,
                            timeout: float = 10.0) -> int:
    """Ask until ``query`` is no longer suggested for ``prefix``; the next free id."""
    qid = first_id
    deadline = time.monotonic() + timeout
    while query in [item["query"] for item in await suggest(ws, qid, prefix)]:
        qid += 1
        assert time.monotonic() < deadline, f"{query!r} is still suggested"
        await asyncio.sleep(0.05)
    return qid + 1


async def test_a_blocked_term_never_comes_out_of_personal_history(small_model_dir: Path, tmp_path: Path) -> None:
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("# a term added for this deployment\nplugh\n", encoding="utf-8")
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, blocklist=(str(blocklist),))
    with running(create_app(config), config) as server:
        token = await new_user(server, MINE, "zqxj xyzzy")
        async with connect(f"ws://{server}/ws") as ws:
            await hello(ws, token)
            for qid, prefix in enumerate(["z", "zqxj", "zqxj ", "zqxj p", "zqxj plu"]):
                assert MINE not in [item["query"] for item in await suggest(ws, qid, prefix)], prefix
            assert personal(await suggest(ws, 10, "zqxj")) == ["zqxj xyzzy"]


async def test_the_blocklist_is_reloaded_when_its_file_changes(
    small_model_dir: Path, small_model: Model, tmp_path: Path
) -> None:
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("nothing here yet\n", encoding="utf-8")
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, blocklist=(str(blocklist),),
                          blocklist_interval=0.05)
    popular = small_model.complete("weat")[1].query  # a logged query, from the model
    with running(create_app(config), config) as server:
        token = await new_user(server, MINE)
        async with connect(f"ws://{server}/ws") as ws:
            await hello(ws, token)
            assert popular in [item["query"] for item in await suggest(ws, 1, "weat")]
            assert MINE in personal(await suggest(ws, 2, "zqxj"))

            write(blocklist, f"{popular}\nplugh\n")
            qid = await eventually_absent(ws, "weat", popular, 3)
            qid = await eventually_absent(ws, "zqxj", MINE, qid)

            blocklist.write_bytes(b"\xff\xfe not utf-8")  # a bad file: logged, the last good list stays
            async with httpx.AsyncClient(base_url=f"http://{server}") as http:
                for _ in range(100):  # until the watcher has seen it
                    if 'qac_blocklist_reloads_total{result="failed"} 1.0' in (await http.get("/metrics")).text:
                        break
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError("the bad blocklist file was never read")
            assert popular not in [item["query"] for item in await suggest(ws, qid, "weat")]

            write(blocklist, "")  # unblocked again
            await eventually_absent_not(ws, "zqxj", MINE, qid + 1)


async def eventually_absent_not(ws: ClientConnection, prefix: str, query: str, first_id: int) -> None:
    """Ask until ``query`` is suggested again."""
    qid = first_id
    deadline = time.monotonic() + 10
    while query not in [item["query"] for item in await suggest(ws, qid, prefix)]:
        qid += 1
        assert time.monotonic() < deadline, f"{query!r} never came back"
        await asyncio.sleep(0.05)


async def test_admin_reload_rereads_the_blocklist_at_once(
    small_model_dir: Path, small_model: Model, tmp_path: Path
) -> None:
    blocklist = tmp_path / "blocked.txt"
    blocklist.write_text("", encoding="utf-8")
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, blocklist=(str(blocklist),),
                          blocklist_interval=3600, admin_token=TOKEN)
    popular = small_model.complete("weat")[1].query
    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            assert popular in [item["query"] for item in await suggest(ws, 1, "weat")]
            blocklist.write_text(popular + "\n", encoding="utf-8")
            async with httpx.AsyncClient(base_url=f"http://{server}") as http:
                answer = await http.post("/admin/reload", json={"index": str(small_model_dir)},
                                         headers={"Authorization": f"Bearer {TOKEN}"})
                assert answer.status_code == 200
            assert popular not in [item["query"] for item in await suggest(ws, 2, "weat")]


def test_a_bad_blocklist_file_stops_the_server_at_start(small_model_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from qac.main import main

    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    for path in (tmp_path / "missing.txt", bad):
        assert main(["serve", "--index", str(small_model_dir), "--blocklist", str(path), "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert f"blocklist {path}" in err and len(err.strip().splitlines()) == 1


async def test_no_token_ever_reaches_a_log_line(small_model_dir: Path, tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    """Everything the server logs (uvicorn's access and error logs, qac's) goes to stdout and
    stderr: tokens and the secret appear in none of it."""
    config = ServerConfig(index=str(small_model_dir), secret_file=str(tmp_path / "secret"))
    with running(create_app(config), config) as server:
        token = await new_user(server, MINE)
        async with connect(f"ws://{server}/ws") as ws:
            await hello(ws, token)
            await suggest(ws, 1, "zqxj")
            await ws.send(json.dumps({"type": "user", "token": token[:-2] + "xx"}))
            assert (await recv_json(ws))["code"] == "bad_user"
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            auth = {"Authorization": f"Bearer {token}"}
            await http.get("/complete", params={"prefix": "zqxj"}, headers=auth)
            await http.post("/history/remove", json={"query": MINE}, headers=auth)
            await http.post("/history/forget", headers={"Authorization": f"Bearer {token}x"})
    out, err = capfd.readouterr()
    text = out + err
    assert "generated a new secret" in text and "/history/remove" in text  # the logs were captured
    secret = (tmp_path / "secret").read_text().strip()
    for needle in (token, token.rpartition(".")[0], token.rpartition(".")[2], secret):
        assert needle not in text


async def test_replicas_with_one_secret_file_accept_each_others_tokens(small_model_dir: Path,
                                                                       tmp_path: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), secret_file=str(tmp_path / "qac" / "secret"))
    with running(create_app(config), config) as one:
        token = await new_user(one)
    assert (tmp_path / "qac" / "secret").stat().st_mode & 0o777 == 0o600
    with running(create_app(config), config) as two:
        async with connect(f"ws://{two}/ws") as ws:
            assert (await hello(ws, token))["type"] == "user"
    other = ServerConfig(index=str(small_model_dir), secret_file=str(tmp_path / "other"))
    with running(create_app(other), other) as three:
        async with connect(f"ws://{three}/ws") as ws:
            assert (await hello(ws, token))["code"] == "bad_user"


def test_the_new_serve_flags(tmp_path: Path) -> None:
    import argparse

    from qac.serve import add_parser, config_from_args

    parser = argparse.ArgumentParser(prog="qac")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["serve", "--blocklist", "a.txt", "--blocklist", "b.txt", "--history-max", "5",
                              "--history-days", "1.5", "--secret-file", "s"])
    config = config_from_args(args, {"QAC_SECRET": "x" * 20})
    assert (config.blocklist, config.history_max, config.history_days) == (("a.txt", "b.txt"), 5, 1.5)
    assert (config.secret_file, config.secret) == ("s", "x" * 20)
    assert "x" * 20 not in repr(config)
    assert ServerConfig.from_env(config.to_env()) == config
    assert config_from_args(parser.parse_args(["serve"]), {"QAC_BLOCKLIST": "a.txt, b.txt"}).blocklist == (
        "a.txt", "b.txt")


async def test_a_submit_updates_the_copy_in_place_and_a_change_elsewhere_still_drops_it() -> None:
    from server.history import MemoryHistoryStore
    from server.metrics import Metrics
    from server.personal import PersonalHub

    store = MemoryHistoryStore()
    hub = PersonalHub(Signer(SECRET.encode()), store, Metrics())
    follow = asyncio.create_task(hub.follow())
    key = "a:" + "0" * 32
    try:
        await store.record(key, "before")
        await asyncio.sleep(0.01)
        hub.attach(key)
        copy = await hub.personal(key)
        assert copy is not None and copy.keys == ["before"]
        assert await hub.record(key, MINE)
        await asyncio.sleep(0.01)  # the store's notice of this record reached the follower: skipped
        assert await hub.personal(key) is copy and copy.keys == ["before", MINE]
        await store.remove(key, MINE)  # as another replica would: the notice drops the copy
        await asyncio.sleep(0.01)
        again = await hub.personal(key)
        assert again is not copy and again is not None and again.keys == ["before"]
        assert await hub.record(key, "x")  # a change elsewhere while a record is on its way
        await store.forget(key)
        await asyncio.sleep(0.01)
        late = await hub.personal(key)
        assert late is not None and late.keys == []
    finally:
        follow.cancel()


async def test_an_anonymous_token_a_day_old_is_renewed_by_the_user_frame(server: str) -> None:
    old, _ = issue_anonymous(Signer(SECRET.encode(), clock=lambda: time.time() - 2 * 86400))
    async with connect(f"ws://{server}/ws") as ws:
        answer = await hello(ws, old)
        renewed = answer["token"]
        assert renewed != old and renewed.split(".")[2] == old.split(".")[2]  # the same user
        assert int(renewed.split(".")[3]) >= time.time() + 30 * 86400 - 60
        await submit(ws, MINE)
    async with connect(f"ws://{server}/ws") as ws:
        assert await hello(ws, renewed) == {"type": "user", "token": renewed, "history": 1}  # fresh: kept


async def test_submits_have_a_rate_per_user_and_per_address(small_model_dir: Path) -> None:
    config = ServerConfig(index=str(small_model_dir), secret=SECRET, rate=100_000, burst=100_000,
                          submit_rate=0.6, submit_burst=3, address_submit_rate=0.6, address_submit_burst=5)

    async def refused(ws: ClientConnection, text: str) -> None:
        await ws.send(json.dumps({"type": "submit", "query": text}))
        error = await recv_json(ws)
        assert (error["type"], error["code"], error["for"]) == ("error", "rate_limited", "submit"), error
        assert "submits per minute" in error["message"]

    with running(create_app(config), config) as server:
        async with connect(f"ws://{server}/ws") as ws:
            alice = (await hello(ws))["token"]
            for text in ("zqxj one", "zqxj two", "zqxj three"):
                await submit(ws, text)
            await refused(ws, "zqxj four")  # alice's 3 are spent
            await submit(ws, "   ")  # writes nothing: not counted
            await ws.send(json.dumps({"type": "query", "id": 1, "prefix": "zqxj"}))
            assert (await recv_json(ws))["type"] == "suggestions"  # keystrokes go on
        async with connect(f"ws://{server}/ws") as ws:  # another user at the same address
            await hello(ws)
            for text in ("zqxj five", "zqxj six"):
                await submit(ws, text)
            await refused(ws, "zqxj seven")  # the address's 5 are spent (this user has 1 left)
        async with connect(f"ws://{server}/ws") as ws:
            await recv_json(ws)
            for text in ("zqxj eight", "zqxj nine"):  # without a user: only the session holds it
                await submit(ws, text)
            await ws.send(json.dumps({"type": "user", "token": alice}))
            answer = await recv_json(ws)  # (in a session of her own: this one was used without her)
            assert (answer["type"], answer["token"], answer["history"]) == ("user", alice, 3)
            await refused(ws, "zqxj ten")
        async with httpx.AsyncClient(base_url=f"http://{server}") as http:
            metrics = (await http.get("/metrics")).text
        assert 'qac_submits_refused_total{at="read"} 3.0' in metrics


async def test_with_ranking_threads_a_submit_changes_a_copy_of_the_history_a_thread_may_be_reading() -> None:
    from server.history import MemoryHistoryStore
    from server.metrics import Metrics
    from server.personal import PersonalHub

    hub = PersonalHub(Signer(SECRET.encode()), MemoryHistoryStore(), Metrics(), copy_on_write=True)
    key = "a:" + "1" * 32
    await hub.store.record(key, "before")
    hub.attach(key)
    read = await hub.personal(key)
    assert read is not None and await hub.record(key, MINE)
    after = await hub.personal(key)
    assert after is not read and after is not None
    assert read.keys == ["before"] and after.keys == ["before", MINE] and after.features(MINE)[0] > 0
