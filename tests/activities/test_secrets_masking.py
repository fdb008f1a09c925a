"""Secrets: the provider, placeholder filling, and masking in text, values and log lines."""

from __future__ import annotations

import logging

import pytest

from activities.masking import MASK, Masker, MaskingLogger
from activities.secrets import (
    EnvSecretProvider,
    MappingSecretProvider,
    SecretError,
    fill_placeholders,
    resolve_secrets,
)


def test_env_provider_reads_prefixed_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKRUNNER_SECRET_TOKEN", "tok-123")
    provider = EnvSecretProvider()
    assert provider.get("TOKEN") == "tok-123"
    assert provider.get("OTHER") is None
    assert EnvSecretProvider({"X_A": "1"}, prefix="X_").get("A") == "1"


def test_missing_secret_is_named_without_values() -> None:
    provider = MappingSecretProvider({"A": "value-a"})
    assert resolve_secrets(provider, ["A"]) == {"A": "value-a"}
    with pytest.raises(SecretError, match="'B'") as caught:
        resolve_secrets(provider, ["A", "B"])
    assert "value-a" not in str(caught.value)


def test_fill_placeholders_deeply() -> None:
    params = {
        "token": "{{ secrets.TOKEN }}",
        "header": "Bearer {{secrets.TOKEN}} and {{ secrets.USER }}",
        "list": ["{{ secrets.USER }}", 3, None],
        "nested": {"keep": "{{ inputs.x }}"},
    }
    filled = fill_placeholders(params, {"TOKEN": "t0k", "USER": "bob"})
    assert filled == {
        "token": "t0k",
        "header": "Bearer t0k and bob",
        "list": ["bob", 3, None],
        "nested": {"keep": "{{ inputs.x }}"},
    }


def test_fill_refuses_undeclared_secret() -> None:
    # An input value rendered into `with` must not pull out a secret the step did not declare.
    with pytest.raises(SecretError, match="'ADMIN'"):
        fill_placeholders({"x": "{{ secrets.ADMIN }}"}, {"TOKEN": "t"})


def test_masker_masks_raw_json_and_url_forms() -> None:
    mask = Masker(['pa"ss/word', "", "pa"])
    assert mask('x pa"ss/word y') == f"x {MASK} y"
    assert mask('{"p": "pa\\"ss/word"}') == f'{{"p": "{MASK}"}}'
    assert mask("?p=pa%22ss%2Fword") == f"?p={MASK}"
    # The longer secret wins over the shorter one it contains; the shorter is still masked alone.
    assert mask("pa") == MASK
    assert bool(Masker(["", ""])) is False


def test_masker_value_is_deep() -> None:
    mask = Masker(["s3cr3t"])
    value = {"a": ["s3cr3t", 1, {"s3cr3t-key": "x s3cr3t"}], "b": True, "c": None}
    assert mask.value(value) == {"a": [MASK, 1, {f"{MASK}-key": f"x {MASK}"}], "b": True, "c": None}


def test_masking_logger_masks_formatted_message_and_extra(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = MaskingLogger(logging.getLogger("test.masking"), Masker(["hunter2"]))
    with caplog.at_level(logging.INFO, logger="test.masking"):
        log.info("login password=%s", "hunter2", extra={"detail": "was hunter2"})
    record = caplog.records[-1]
    assert record.getMessage() == f"login password={MASK}"
    assert record.detail == f"was {MASK}"
    assert "hunter2" not in caplog.text
