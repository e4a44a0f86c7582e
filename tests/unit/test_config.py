"""ServerConfig: defaults < BLAZE_* variables < flags, and errors that name the option."""

from __future__ import annotations

import pytest

from blazerpc import ConfigError, ServerConfig


def test_defaults_listen_on_loopback_with_grpc_core_limits() -> None:
    config = ServerConfig.load({}, {})
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 50051, 1)
    assert config.max_request_bytes == config.max_response_bytes == 4 * 1024 * 1024
    assert config.reflection is True and config.metrics_port is None


def test_flags_win_over_variables_which_win_over_defaults() -> None:
    environ = {"BLAZE_PORT": "9000", "BLAZE_GRACE": "2.5", "BLAZE_REFLECTION": "false"}
    config = ServerConfig.load({"port": 8000, "workers": None}, environ)
    assert config.port == 8000  # the flag
    assert config.grace == 2.5 and config.reflection is False  # the variables, parsed
    assert config.workers == 1  # a flag left unset does not hide anything


def test_variables_outside_the_prefix_are_ignored() -> None:
    assert ServerConfig.load({}, {"PORT": "1", "BLAZERPC_X": "2"}) == ServerConfig()


@pytest.mark.parametrize(
    ("flags", "environ", "message"),
    [
        ({"port": 70000}, {}, "option --port (--port=70000): expected `int` <= 65535."),
        ({}, {"BLAZE_PORT": "abc"}, "option --port (BLAZE_PORT='abc'): expected `int`."),
        ({}, {"BLAZE_WORKERS": "0"}, "option --workers (BLAZE_WORKERS='0'): expected `int` >= 1."),
        ({"log_level": "loud"}, {}, "option --log-level (--log-level='loud'): invalid enum"),
    ],
)
def test_a_bad_value_names_the_option_and_where_it_came_from(
    flags: dict[str, object], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        ServerConfig.load(flags, environ)
    assert str(err.value).startswith(message)


def test_an_unknown_variable_is_a_typo_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError, match="BLAZE_PROT is not a blazerpc option. Did you mean BLAZE_PORT"
    ):
        ServerConfig.load({}, {"BLAZE_PROT": "8080"})


def test_replace_validates_like_load() -> None:
    assert ServerConfig().replace(port=0).port == 0
    with pytest.raises(
        ConfigError, match=r"option --max-streams \(max_streams=\): expected `int` >= 1"
    ):
        ServerConfig().replace(max_streams=0)


def test_blaze_ray_variables_are_another_commands_options() -> None:
    """`blaze ray`'s own options (BLAZE_RAY_*) may sit in the environment of `blaze serve`."""
    config = ServerConfig.load({}, {"BLAZE_RAY_ADDRESS": "auto", "BLAZE_PORT": "9000"})
    assert config.port == 9000
