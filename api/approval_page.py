"""The page a person sees when they open a signed approval link in a browser.

A GET only shows what the link would decide (pack, run, gate message, plan hash, what the gate
still needs) and a button per decision the holder has; only the button's POST decides. Mail
scanners and link previewers that fetch every URL in a message therefore decide nothing.

Link holders are untrusted, and so is what the page shows (pack names, gate messages and
summaries come from pack authors and callers): every value is HTML-escaped, the page loads
nothing from anywhere (its one stylesheet is inline, allowed by its hash in the CSP), runs no
script, may only submit forms to this service, cannot be framed, and sends no Referer (the
token is in the URL).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape

from fastapi.responses import HTMLResponse

from workflows.contract.signing import ApprovalToken
from workflows.contract.state import ApprovalOutcome, ApprovalState, RunStateSnapshot

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;"
    "color:#1d1d1f}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.4rem 1rem}"
    "dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}"
    "code{font-size:.85rem}"
    ".message{white-space:pre-wrap;border-left:3px solid #888;padding-left:.75rem}"
    "form{display:inline-block;margin-right:1rem}"
    "button{font-size:1rem;padding:.5rem 1.25rem;border-radius:.3rem;border:1px solid #555;"
    "cursor:pointer}"
    "button.approved{background:#1a7f37;color:#fff}"
    "button.rejected{background:#cf222e;color:#fff}"
    ".note{color:#555}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

CSP = (
    "default-src 'none'; "
    f"style-src 'sha256-{_STYLE_HASH}'; "
    "img-src 'none'; script-src 'none'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
OPEN = ("waiting", "pending")
VERBS = {"approved": "Approve", "rejected": "Reject"}


@dataclass(frozen=True)
class Button:
    decision: str
    token: str


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta name='robots' content='noindex, nofollow'>"
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _row(label: str, value: str | None, *, code: bool = False) -> str:
    if value is None or value == "":
        return ""
    shown = f"<code>{escape(value)}</code>" if code else escape(value)
    return f"<dt>{escape(label)}</dt><dd>{shown}</dd>"


def review_page(
    claims: ApprovalToken,
    run: RunStateSnapshot,
    approval: ApprovalState | None,
    buttons: list[Button],
) -> HTMLResponse:
    """What the link would decide, and a POST form per decision the holder can make."""
    gate_id = claims.approvalId
    status = approval.status if approval else "unknown"
    votes = sum(1 for d in approval.decisions if d.decision == "approved") if approval else 0
    rows = "".join(
        [
            _row("Pack", f"{run.pack} {run.packVersion}".strip()),
            _row("Run", run.runId, code=True),
            _row("Run status", run.status),
            _row("Gate", gate_id, code=True),
            _row("Gate status", status),
            _row("Plan hash", claims.planHash, code=True),
            _row(
                "Approvals",
                f"{votes} of {approval.requiredApprovals}" if approval else None,
            ),
            _row("Still missing", ", ".join(approval.missing) if approval else None),
            _row("Expires", approval.expiresAt if approval else None),
            _row("Decides as", claims.identity, code=True),
        ]
    )
    parts = [f"<dl>{rows}</dl>"]
    if approval and approval.message:
        parts.append(f"<p class='message'>{escape(approval.message)}</p>")
    if run.planHash != claims.planHash:
        parts.append(
            "<p class='note'>The run's plan hash is not the one this link was issued for: "
            "a decision through it will be refused.</p>"
        )
    if approval is None:
        parts.append("<p class='note'>This run has no such gate.</p>")
    elif status not in OPEN or run.status in ("succeeded", "failed", "cancelled"):
        parts.append(f"<p class='note'>Nothing left to decide: the gate is {escape(status)}.</p>")
    elif any(d.actorId == claims.identity for d in approval.decisions):
        # One vote per identity (the run refuses a second): a gate still waiting for other
        # people has nothing left for this link's holder, whichever button it pressed.
        parts.append(
            f"<p class='note'>{escape(claims.identity)} has decided already: this link has "
            "nothing left to decide.</p>"
        )
    else:
        for button in buttons:
            # A relative action: the form posts back to this service, under whatever prefix a
            # proxy serves it (the CSP allows 'self' only). No fields: the token is the claim.
            parts.append(
                f"<form method='post' action='{escape(button.token)}'>"
                f"<button type='submit' class='{escape(button.decision)}'>"
                f"{VERBS[button.decision]}</button></form>"
            )
        parts.append(
            "<p class='note'>Opening this page decided nothing; only a button does, once.</p>"
        )
    return _page(f"Approval: {gate_id}", "".join(parts))


def outcome_page(claims: ApprovalToken, outcome: ApprovalOutcome) -> HTMLResponse:
    """The answer to a button's POST."""
    verb = "approved" if outcome.status == "approved" else outcome.status
    lines = [f"<p>Your decision on <code>{escape(claims.approvalId)}</code> of run "]
    lines.append(f"<code>{escape(claims.runId)}</code> was recorded: {escape(verb)}.</p>")
    if outcome.resumed:
        lines.append("<p>The run moved on past the gate.</p>")
    elif outcome.missing:
        lines.append(f"<p>The gate still needs: {escape(', '.join(outcome.missing))}.</p>")
    return _page("Decision recorded", "".join(lines))


def error_page(status: int, code: str, message: str) -> HTMLResponse:
    body = f"<p>{escape(message)}</p><p class='note'>Error code: <code>{escape(code)}</code></p>"
    return _page("This link cannot be used", body, status)
