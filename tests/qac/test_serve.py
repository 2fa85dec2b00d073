"""Server configuration and the ``qac serve`` flags: one set of defaults, flags over environment."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from qac.serve import add_parser, config_from_args
from server.config import ConfigError, ServerConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="qac")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["serve", *argv])


def test_no_flags_and_no_environment_give_the_dataclass_defaults() -> None:
    assert config_from_args(parse(), {}) == ServerConfig()


def test_every_flag_is_read() -> None:
    args = parse("--index", "m", "--host", "0.0.0.0", "--port", "9000", "--workers", "3",
                 "--sessions", "redis://h:6379/1", "--session-ttl", "60",
                 "--allowed-origin", "https://a.example", "https://b.example", "--allowed-origin", "http://c:8")
    config = config_from_args(args, {})
    assert (config.index, config.host, config.port, config.workers) == ("m", "0.0.0.0", 9000, 3)
    assert (config.sessions, config.session_ttl) == ("redis://h:6379/1", 60.0)
    assert config.allowed_origins == ("https://a.example", "https://b.example", "http://c:8")


def test_environment_variables_fill_in_flags_not_given() -> None:
    env = {"QAC_PORT": "9001", "QAC_INDEX": "from-env", "QAC_SESSION_TTL": "90",
           "QAC_ALLOWED_ORIGIN": "https://a.example, https://b.example", "QAC_ADMIN_TOKEN": "s3cr3t",
           "QAC_HOST": ""}
    config = config_from_args(parse("--index", "from-flag"), env)
    assert (config.index, config.port, config.session_ttl) == ("from-flag", 9001, 90.0)
    assert config.host == "127.0.0.1"  # an empty variable counts as unset
    assert config.allowed_origins == ("https://a.example", "https://b.example")
    assert config.admin_token == "s3cr3t"
    assert "s3cr3t" not in repr(config)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "70000"], {}, "port must be in 0..65535, got 70000"),
        (["--workers", "0"], {}, "workers must be >= 1, got 0"),
        (["--session-ttl", "0"], {}, "session_ttl must be > 0"),
        (["--sessions", "postgres://x"], {}, "redis:// URL, got 'postgres://x'"),
        (["--allowed-origin", "example.com"], {}, "scheme://host[:port], got 'example.com'"),
        ([], {"QAC_PORT": "eighty"}, "QAC_PORT='eighty'"),
    ],
)
def test_bad_values_are_command_errors_naming_the_value(
    argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        config_from_args(parse(*argv), env)


def test_the_environment_round_trips_a_configuration() -> None:
    config = ServerConfig(index="/m", port=0, workers=2, sessions="redis://h/0", allowed_origins=("https://a.b",),
                          admin_token="secret", rate=5.5)
    assert ServerConfig.from_env(config.to_env()) == config


def test_origins_are_normalized() -> None:
    config = ServerConfig(allowed_origins=("HTTPS://Qac.Example/", "http://localhost:8000"))
    assert config.allowed_origins == ("https://qac.example", "http://localhost:8000")
    with pytest.raises(ConfigError):
        ServerConfig(allowed_origins=("https://qac.example/path",))


def test_help_names_each_default_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    for words in ["(default: 8000); env QAC_PORT", "env QAC_INDEX", "(default: memory); env QAC_SESSIONS",
                  "env QAC_ALLOWED_ORIGIN", "QAC_ADMIN_TOKEN"]:
        assert words in text


def test_keystrokes_are_ranked_on_the_event_loop_unless_threads_are_asked_for() -> None:
    assert ServerConfig().rank_threads == 0 and ServerConfig(workers=2).rank_threads == 0
    assert ServerConfig(workers=2, rank_threads=2).rank_threads == 2
    assert ServerConfig.from_env({"QAC_RANK_THREADS": "3"}).rank_threads == 3
    with pytest.raises(ConfigError, match="rank_threads"):
        ServerConfig(rank_threads=-1)


def test_seed_history_is_repeatable_and_read_from_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("--seed-history", "train.tsv.gz", "--seed-history", "dev.tsv.gz")
    assert config_from_args(args, {}).seed_history == ("train.tsv.gz", "dev.tsv.gz")
    assert config_from_args(parse(), {"QAC_SEED_HISTORY": "a.tsv,b.tsv"}).seed_history == ("a.tsv", "b.tsv")
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--seed-history LOG" in text and "latest row (of all the logs given) is the moment of start" in text


def test_each_flag_shows_the_metavar_its_field_declares(capsys: pytest.CaptureFixture[str]) -> None:
    """The flag's metavar comes from its ServerConfig field, as its type does: no table beside it."""
    with pytest.raises(SystemExit):
        parse("--help")
    text = " ".join(capsys.readouterr().out.split())
    fields = [f for f in dataclasses.fields(ServerConfig) if f.metadata["flag"]]
    flags = [(f.metadata["flag"], f.metadata["metavar"]) for f in fields]
    assert len(flags) >= 20 and all(metavar for _, metavar in flags)
    for flag, metavar in flags:
        assert f"{flag} {metavar}" in text
