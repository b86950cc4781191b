"""Settings: TOML, then VIDEOSVC_* variables, then flags; bad values fail with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from videosvc.config import ConfigError, load_settings


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[http]\nport = 9000\nhost = "0.0.0.0"\n[jobs]\nworkers = 3\n')
    settings = load_settings(
        config, env={"VIDEOSVC_PORT": "9100", "VIDEOSVC_API_KEYS": "a, b"}, overrides={"port": 9200}
    )
    assert settings.http.port == 9200
    assert settings.http.host == "0.0.0.0"
    assert settings.http.api_keys == ("a", "b")
    assert settings.jobs.workers == 3
    assert settings.worker_count == 3


@pytest.mark.parametrize(
    ("toml", "env", "words"),
    [
        ("[http]\nprot = 1\n", {}, "unknown setting(s) in [http]: prot"),
        ("[htp]\n", {}, "unknown config section(s): htp"),
        ("", {"VIDEOSVC_PORT": "eighty"}, "VIDEOSVC_PORT: expected int"),
        ("", {"VIDEOSVC_PORT": "70000"}, "port must be between"),
        ("", {"VIDEOSVC_X264_PRESET": "quick"}, "x264_preset must be one of"),
        ("", {"VIDEOSVC_LOG_FORMAT": "xml"}, "log_format"),
        ("[jobs]\nworkers = 1.5\n", {}, "[jobs] workers: expected int"),
        ("not toml = = =", {}, "not valid TOML"),
    ],
)
def test_bad_settings_fail_with_a_message_naming_them(
    tmp_path: Path, toml: str, env: dict, words: str
) -> None:  # type: ignore[type-arg]
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env=env)
    assert words in str(caught.value)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml", env={})
