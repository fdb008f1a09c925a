"""Webhook registration under the operator's target policy: a literal internal address is
refused when the webhook is registered (400), before any delivery is tried; names are checked
by the worker at delivery (tests/activities/test_webhook_targets.py)."""

from __future__ import annotations

import pytest

from api.errors import InvalidRequest
from api.routes.webhooks import checked_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://[::ffff:127.0.0.1]/hook",
    ],
)
def test_internal_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidRequest, match="internal address"):
        checked_url(url)
    assert checked_url(url, allow_internal=True) == url


def test_public_targets_pass() -> None:
    assert checked_url("https://hooks.example.com/x") == "https://hooks.example.com/x"
    assert checked_url("https://93.184.216.34/x") == "https://93.184.216.34/x"
