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


def test_a_misspelled_variable_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """A misspelled TOML key is an error; a misspelled VIDEOSVC_ variable was silently ignored."""
    with caplog.at_level("WARNING", logger="videosvc.config"):
        settings = load_settings(
            None, env={"VIDEOSVC_PROT": "9000", "VIDEOSVC_PORT": "9001", "VIDEOSVC_URL": "x"}
        )
    assert settings.http.port == 9001
    assert "VIDEOSVC_PROT" in caplog.text and "unknown" in caplog.text
    assert "VIDEOSVC_URL" not in caplog.text  # the command-line client's own variables are known


def test_a_boolean_is_a_boolean_or_an_error() -> None:
    assert load_settings(None, env={"VIDEOSVC_KEEP_ORIGINAL": "off"}).storage.keep_original is False
    with pytest.raises(ConfigError, match="VIDEOSVC_KEEP_ORIGINAL"):
        load_settings(None, env={"VIDEOSVC_KEEP_ORIGINAL": "flase"})
