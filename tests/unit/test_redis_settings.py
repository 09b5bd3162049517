"""``RedisSettings``: URL parsing, defaults, refusals that name the option, a hidden password."""

from __future__ import annotations

import pytest

from eventkit.errors import ConfigurationError
from eventkit.idempotency.memory import DEFAULT_ATTEMPTS_TTL
from eventkit.idempotency.redis_settings import RedisSettings, redact

SECRET = "s3cr3t-pa55"


def test_a_bare_url_takes_the_defaults() -> None:
    """Host and port from the URL; database 0, no TLS, 2 s timeouts, no eviction allowed."""
    settings = RedisSettings.from_url("redis://cache.internal:6380")
    assert settings == RedisSettings(host="cache.internal", port=6380)
    assert settings.db == 0
    assert settings.tls is False
    assert settings.socket_timeout == 2.0
    assert settings.socket_connect_timeout == 2.0
    assert settings.allow_eviction is False
    assert settings.attempts_ttl_seconds == DEFAULT_ATTEMPTS_TTL
    assert settings.username is None
    assert settings.password is None


def test_the_port_defaults_to_6379_and_the_database_comes_from_the_path() -> None:
    """``redis://HOST/3`` is port 6379, database 3."""
    settings = RedisSettings.from_url("redis://localhost/3")
    assert (settings.host, settings.port, settings.db) == ("localhost", 6379, 3)


def test_credentials_are_percent_decoded_and_rediss_turns_tls_on() -> None:
    """User and password come from the URL, decoded; ``rediss://`` means TLS."""
    settings = RedisSettings.from_url("rediss://worker:p%40ss%3Aword@redis.example:6390/1")
    assert settings.username == "worker"
    assert settings.password == "p@ss:word"
    assert settings.tls is True
    assert settings.address == "redis.example:6390"


def test_query_options_set_the_client_options() -> None:
    """Every query option reaches its field, typed."""
    settings = RedisSettings.from_url(
        "rediss://h:1/0?socket_timeout=0.5&socket_connect_timeout=1&allow_eviction=true"
        "&attempts_ttl_seconds=3600&tls_ca_certs=/etc/ca.pem&client_name=billing"
    )
    assert settings.socket_timeout == 0.5
    assert settings.socket_connect_timeout == 1.0
    assert settings.allow_eviction is True
    assert settings.attempts_ttl_seconds == 3600.0
    assert settings.tls_ca_certs == "/etc/ca.pem"
    assert settings.client_name == "billing"


def test_keyword_overrides_win_over_the_url() -> None:
    """``from_url(url, allow_eviction=False)`` overrides the URL's option."""
    settings = RedisSettings.from_url("redis://h:1?allow_eviction=true", allow_eviction=False)
    assert settings.allow_eviction is False


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://h:1?sockettimeout=1&colour=blue", "['colour', 'sockettimeout']"),
        ("redis://h:1?host=other", "['host']"),
        ("redis://h:1?socket_timeout=soon", "socket_timeout='soon'"),
        ("redis://h:1?allow_eviction=maybe", "allow_eviction='maybe'"),
        ("redis://h:1?socket_timeout=0", "RedisSettings.socket_timeout"),
        ("redis://h:1?socket_timeout=nan", "RedisSettings.socket_timeout"),
        ("redis://h:1?attempts_ttl_seconds=-5", "RedisSettings.attempts_ttl_seconds"),
        ("redis://h:1?socket_timeout=1&socket_timeout=2", "'socket_timeout' is given twice"),
        ("redis://h:1?client_name=", "client_name"),
        ("redis://h:1?tls_ca_certs=/ca.pem", "tls_ca_certs needs TLS"),
        ("redis://h:1/zero", "database"),
        ("redis://h:99999", "port"),
        ("redis://h:0", "RedisSettings.port"),
        ("redis://:1", "no host"),
        ("http://h:1", "not a Redis URL"),
        ("unix:///tmp/redis.sock", "not a Redis URL"),
        ("redis://h:1#frag", "fragment"),
    ],
)
def test_a_bad_url_is_refused_naming_what_is_wrong(url: str, named: str) -> None:
    """Unknown options, bad values and malformed URLs raise ``ConfigurationError`` naming them."""
    with pytest.raises(ConfigurationError) as raised:
        RedisSettings.from_url(url)
    assert named in str(raised.value)


def test_an_unknown_keyword_override_is_refused() -> None:
    """A misspelt override is named, not silently ignored."""
    with pytest.raises(ConfigurationError, match="allow_evictions"):
        RedisSettings.from_url("redis://h:1", allow_evictions=True)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("host", " "),
        ("port", 70000),
        ("db", -1),
        ("socket_connect_timeout", float("inf")),
        ("client_name", "two words"),
    ],
)
def test_invalid_fields_are_refused_naming_the_field(field: str, value: object) -> None:
    """``__post_init__`` names the field it refuses."""
    with pytest.raises(ConfigurationError, match=f"RedisSettings.{field}"):
        RedisSettings(**{field: value})  # type: ignore[arg-type]


def test_the_password_is_never_in_the_repr() -> None:
    """``repr`` and ``str`` of the settings leave the password out."""
    settings = RedisSettings.from_url(f"redis://app:{SECRET}@h:1/0")
    assert settings.password == SECRET
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "username='app'" in repr(settings)


def test_the_password_is_never_in_an_error_message() -> None:
    """A refused URL is shown with its password masked."""
    with pytest.raises(ConfigurationError) as raised:
        RedisSettings.from_url(f"redis://app:{SECRET}@h:1/0?bogus=1")
    assert SECRET not in str(raised.value)
    assert "redis://app:***@h:1/0?bogus=1" in str(raised.value)


def test_a_url_too_malformed_to_split_is_a_configuration_error_with_its_password_masked() -> None:
    """An unclosed IPv6 bracket makes the URL parser raise: that is a ``ConfigurationError``
    (exit code 2 from the CLI), and the message still hides the password."""
    with pytest.raises(ConfigurationError, match="not a Redis URL") as raised:
        RedisSettings.from_url(f"redis://app:{SECRET}@[::1/0")
    assert SECRET not in str(raised.value)
    assert "redis://app:***@[::1/0" in str(raised.value)


def test_redact_masks_only_a_password() -> None:
    """URLs without a password are unchanged; a password becomes ``***``."""
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact("redis://user@h:1/0") == "redis://user@h:1/0"
    assert redact(f"rediss://:{SECRET}@h:1") == "rediss://:***@h:1"


def test_the_client_never_retries_and_carries_the_settings() -> None:
    """``client()`` disables client-side retries and passes timeouts, database and name."""
    settings = RedisSettings.from_url("redis://app:pw@h:7000/2?socket_timeout=0.7")
    client = settings.client()
    retry = client.get_retry()
    assert retry is not None
    assert retry.get_retries() == 0
    options = client.connection_pool.connection_kwargs
    assert options["host"] == "h"
    assert options["port"] == 7000
    assert options["db"] == 2
    assert options["username"] == "app"
    assert options["password"] == "pw"
    assert options["socket_timeout"] == 0.7
    assert options["socket_connect_timeout"] == 2.0
    assert options["client_name"] == "eventkit"
