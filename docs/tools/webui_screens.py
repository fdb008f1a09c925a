"""Drive the real Temporal Web UI of `taskrunner dev` in headless Chromium and take the
screenshots of docs/operators.md (docs/img/operators-*.png).

Not part of the test suite: it needs a running `taskrunner dev`, Debian's Chromium and
ChromeDriver, and Selenium and Pillow, which are not project dependencies. It checks each step
as it goes (the filtered list, the run's summary and current details, the `state` query's
answer, the run finishing after the UI's signal) and exits non-zero if one is not as expected.

To rerun it (loopback only; ports chosen so as not to collide with a `make run`):

    apt-get update && apt-get install -y chromium chromium-driver
    python3 -m venv /tmp/webui-venv && /tmp/webui-venv/bin/pip install selenium pillow
    .venv/bin/taskrunner dev --data-dir /tmp/tr-webui --port 17233 --api-port 18080 \\
        --ui-port 18233 &
    /tmp/webui-venv/bin/python docs/tools/webui_screens.py \\
        --api http://127.0.0.1:18080 --ui http://127.0.0.1:18233

It starts three runs through the REST API with curl (two of examples/gate-approval.yaml, which
wait at the `release-manager` gate, and one of examples/parallel.yaml, which just succeeds),
then, in the Web UI:

1. types `TaskRunnerStatus="awaiting-approval"` into the workflow list's query box
   (operators-1-awaiting-approval.png);
2. opens the first gate run's User Metadata tab: summary, details, current details
   (operators-2-summary-details.png);
3. runs the `state` query from the Queries tab (operators-3-query-state.png), then `logs` with
   an argument;
4. sends the `approval` signal from More Actions > Send a Signal
   (operators-4-signal-approval.png), sees the run complete (operators-5-completed.png) and the
   signal in its Event History (operators-6-history-signaled.png);
5. sends the `cancel` signal to the second gate run the same way
   (operators-7-signal-cancel.png) and sees it end cancelled (operators-8-cancelled.png).

Run ids carry a timestamp, so the script can be rerun against the same data directory.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement

REPO = Path(__file__).resolve().parents[2]
IMG = REPO / "docs" / "img"
MAX_BYTES = 300_000
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1100",
]
AWAITING = 'TaskRunnerStatus="awaiting-approval"'

T = TypeVar("T")


# ----------------------------------------------------------------- REST, with curl


def curl_json(*args: str) -> Any:
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def start_run(api: str, manifest: Path, run_id: str) -> dict[str, Any]:
    body = json.dumps({"manifest": manifest.read_text(), "runId": run_id})
    return curl_json(
        f"{api}/v1/task-runner/runs", "-H", "Content-Type: application/json", "-d", body
    )


def run_state(api: str, run_id: str) -> dict[str, Any]:
    return curl_json(f"{api}/v1/task-runner/runs/{run_id}")


# ----------------------------------------------------------------- the browser


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except WebDriverException as exc:  # not rendered yet, detached, ...
            last = exc
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}" + (f" ({last.msg})" if last else ""))


def check(condition: bool, shown: str) -> None:
    if not condition:
        raise SystemExit(f"not as expected: {shown}")


def visible(driver: webdriver.Chrome, by: str, selector: str) -> WebElement | None:
    for element in driver.find_elements(by, selector):
        if element.is_displayed():
            return element
    return None


def shot(
    driver: webdriver.Chrome,
    name: str,
    crop: tuple[int, int, int, int] | None = None,
    around: WebElement | None = None,
) -> Path:
    """Save the viewport as docs/img/NAME.png, cropped to (left, top, right, bottom) CSS px or
    to an element with a margin (headless Chromium here draws one pixel per CSS px)."""
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    if around is not None:
        r = around.rect
        m = 12
        crop = (
            max(0, int(r["x"]) - m),
            max(0, int(r["y"]) - m),
            int(r["x"] + r["width"]) + m,
            int(r["y"] + r["height"]) + m,
        )
    if crop:
        left, top, right, bottom = crop
        image = image.crop((left, top, min(right, image.width), min(bottom, image.height)))
    path = IMG / f"{name}.png"
    image.save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:  # a UI screenshot survives 256 colours well
        image.quantize(colors=256).save(path, optimize=True)
    print(f"  {path.relative_to(REPO)}  {image.width}x{image.height}  {path.stat().st_size} B")
    return path


def paste(driver: webdriver.Chrome, editor: WebElement, text: str) -> None:
    """Paste into a CodeMirror editor: typing would be mangled by its bracket auto-closing."""
    driver.execute_script(
        """
        const [el, text] = arguments;
        el.focus();
        const data = new DataTransfer();
        data.setData('text/plain', text);
        el.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                                       cancelable: true}));
        """,
        editor,
        text,
    )


def open_tab(driver: webdriver.Chrome, testid: str) -> None:
    tab = wait_for(testid, lambda: visible(driver, By.CSS_SELECTOR, f"[data-testid={testid}]"))
    tab.click()
    wait_for(f"{testid} selected", lambda: tab.get_attribute("aria-selected") == "true")


def choose(driver: webdriver.Chrome, button_testid: str, option: str) -> None:
    """Pick OPTION in one of the UI's custom selects (a button and a listbox)."""
    button = wait_for(
        button_testid, lambda: visible(driver, By.CSS_SELECTOR, f"[data-testid={button_testid}]")
    )
    button.click()
    item = wait_for(
        f"option {option}",
        lambda: visible(driver, By.XPATH, f"//li[@role='option'][.//span[text()='{option}']]"),
    )
    item.click()
    wait_for(  # looked up afresh: the UI re-renders the button once an option is chosen
        f"{option} chosen",
        lambda: driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])]"
            ".some(e => e.offsetParent !== null && e.value === arguments[1])",
            f"[data-testid={button_testid}] input",
            option,
        ),
    )


def send_signal(driver: webdriver.Chrome, name: str, payload: dict[str, Any], image: str) -> None:
    """More Actions > Send a Signal: choose NAME, paste PAYLOAD, screenshot, Submit."""
    more = wait_for(
        "More Actions", lambda: visible(driver, By.XPATH, "//button[contains(., 'More Actions')]")
    )
    more.click()
    wait_for(
        "Send a Signal", lambda: visible(driver, By.CSS_SELECTOR, "[data-testid=signal-button]")
    ).click()
    dialog = wait_for(
        "signal dialog",
        lambda: visible(driver, By.CSS_SELECTOR, "[data-testid=signal-confirmation-modal]"),
    )
    choose(driver, "signal-select-button", name)
    editor = dialog.find_element(By.CSS_SELECTOR, "[contenteditable=true][aria-label=Data]")
    text = json.dumps(payload)
    paste(driver, editor, text)
    wait_for("payload in the editor", lambda: json.loads(editor.text) == payload)
    # The editor pretty-prints its JSON when it loses focus, which grows the dialog and moves
    # Submit: blur it first (a click elsewhere in the dialog may close it), so the click lands.
    driver.execute_script("document.activeElement.blur()")
    wait_for("payload pretty-printed", lambda: "\n" in editor.text)
    plain = dialog.find_element(By.CSS_SELECTOR, "input[value='json/plain']")
    if not plain.is_selected():
        driver.execute_script("arguments[0].click()", plain)
    submit = dialog.find_element(By.CSS_SELECTOR, "[data-testid=confirm-modal-button]")
    wait_for("Submit enabled", submit.is_enabled)
    shot(driver, image, around=dialog)
    submit.click()
    wait_for("dialog closed", lambda: not dialog.is_displayed())


def frame_text(driver: webdriver.Chrome, frame_id: str) -> str:
    """Text of a User Metadata panel: each is Markdown rendered in its own iframe."""
    frame = driver.find_element(By.ID, frame_id)
    driver.switch_to.frame(frame)
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.switch_to.default_content()


# ----------------------------------------------------------------- the walk-through


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default="http://127.0.0.1:18080", help="the API's base URL")
    parser.add_argument("--ui", default="http://127.0.0.1:18233", help="the Web UI's base URL")
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()
    IMG.mkdir(parents=True, exist_ok=True)

    stamp = time.strftime("%H%M%S")
    gate_a, gate_b, plain = f"release-{stamp}a", f"release-{stamp}b", f"nightly-{stamp}"
    print("starting runs with curl:", gate_a, gate_b, plain)
    started = start_run(args.api, REPO / "examples" / "gate-approval.yaml", gate_a)
    plan_hash = started["planHash"]
    start_run(args.api, REPO / "examples" / "gate-approval.yaml", gate_b)
    start_run(args.api, REPO / "examples" / "parallel.yaml", plain)
    for run_id, status in ((gate_a, "awaiting-approval"), (gate_b, "awaiting-approval")):
        wait_for(
            f"{run_id} {status}", lambda r=run_id, s=status: run_state(args.api, r)["status"] == s
        )
    wait_for(f"{plain} succeeded", lambda: run_state(args.api, plain)["status"] == "succeeded")

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.TemporaryDirectory(prefix="tr-webui-chromium-")
    options.add_argument(f"--user-data-dir={profile.name}")
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    ns = f"{args.ui}/namespaces/{args.namespace}"
    try:
        # 1. The list, filtered by typing the query into the query box.
        print("1. filter the workflow list")
        driver.get(f"{ns}/workflows")
        wait_for("the list", lambda: visible(driver, By.LINK_TEXT, f"taskrunner/default/{plain}"))
        driver.find_element(By.CSS_SELECTOR, "[data-testid=toggle-manual-query]").click()
        box = wait_for(
            "query box",
            lambda: visible(driver, By.CSS_SELECTOR, "[data-testid=workflow-manual-search-input]"),
        )
        box.clear()
        box.send_keys(AWAITING, Keys.ENTER)
        ActionChains(driver).move_to_element(driver.find_element(By.TAG_NAME, "h1")).perform()
        wait_for("query in the URL", lambda: "query=" in driver.current_url)
        wait_for(
            "the nightly run filtered out",
            lambda: not driver.find_elements(By.LINK_TEXT, f"taskrunner/default/{plain}"),
        )
        for run_id in (gate_a, gate_b):
            wait_for(
                run_id, lambda r=run_id: visible(driver, By.LINK_TEXT, f"taskrunner/default/{r}")
            )
        print("  URL:", urllib.parse.unquote(driver.current_url))
        shot(driver, "operators-1-awaiting-approval", crop=(256, 0, 1400, 560))

        # 2. The run's page: summary, details, current details.
        print("2. summary and current details")
        driver.find_element(By.LINK_TEXT, f"taskrunner/default/{gate_a}").click()
        wait_for("the run's page", lambda: "/timeline" in driver.current_url)
        page = driver.current_url.rsplit("/", 1)[0]
        open_tab(driver, "user-metadata-tab")
        summary = wait_for("summary", lambda: frame_text(driver, "user-metadata-summary"))
        current = wait_for(
            "current details", lambda: frame_text(driver, "user-metadata-current-details")
        )
        check(summary.strip() == f"pack example-gate-approval@1.0.0 run {gate_a}", summary)
        check("Waiting for approval release-manager" in current, current)
        check(plan_hash in current, current)
        print("  summary:", summary.strip())
        print("  current details:", current.strip())
        shot(driver, "operators-2-summary-details", crop=(256, 60, 1400, 880))

        # 3. The `state` query.
        print("3. query state")
        open_tab(driver, "queries-tab")
        choose(driver, "query-select-button", "state")
        wait_for(
            "Run Query",
            lambda: visible(driver, By.XPATH, "//button[normalize-space()='Run Query']"),
        ).click()
        for text in (gate_a, "awaiting-approval", "release-manager"):
            wait_for(
                f"{text} in the query's answer",
                lambda t=text: visible(driver, By.XPATH, f"//*[contains(text(), '{t}')]"),
            )
        shot(driver, "operators-3-query-state", crop=(256, 60, 1400, 1000))
        # A query with an argument: the Query Arg box takes one JSON object.
        choose(driver, "query-select-button", "logs")
        arg = wait_for(
            "Query Arg",
            lambda: visible(
                driver, By.CSS_SELECTOR, "[contenteditable=true][aria-label='Query Arg']"
            ),
        )
        paste(driver, arg, json.dumps({"after": 3, "limit": 10}))
        driver.execute_script("document.activeElement.blur()")
        wait_for(
            "Run Query",
            lambda: visible(
                driver,
                By.XPATH,
                "//button[normalize-space()='Refresh Query' or normalize-space()='Run Query']",
            ),
        ).click()
        wait_for(
            "gate.awaiting in the logs query's answer",
            lambda: visible(driver, By.XPATH, "//*[contains(text(), 'gate.awaiting')]"),
        )
        check(
            not visible(driver, By.XPATH, "//*[contains(text(), 'run.created')]"),
            "logs after 3 still shows run.created",
        )
        print("  logs {after: 3, limit: 10}: from step.completed on, as asked")

        # 4. Approve from the UI.
        print("4. send the approval signal")
        decision = {
            "approvalId": "release-manager",
            "decision": "approved",
            "planHash": plan_hash,
            "actorId": "user:ops",
        }
        send_signal(driver, "approval", decision, "operators-4-signal-approval")
        wait_for(
            f"{gate_a} succeeded", lambda: run_state(args.api, gate_a)["status"] == "succeeded"
        )
        driver.get(f"{page}/user-metadata")
        wait_for(
            "COMPLETED",
            lambda: visible(driver, By.XPATH, "//*[text()='Completed' or text()='COMPLETED']"),
        )
        done = wait_for(
            "final details",
            lambda: (
                "succeeded" in frame_text(driver, "user-metadata-current-details")
                and frame_text(driver, "user-metadata-current-details")
            ),
        )
        print("  current details:", done.strip())
        state = run_state(args.api, gate_a)
        print("  REST:", state["status"], [(s["stepId"], s["status"]) for s in state["steps"]])
        gate = next(a for a in state["approvals"] if a["approvalId"] == "release-manager")
        check([d["actorId"] for d in gate["decisions"]] == ["user:ops"], str(gate))
        shot(driver, "operators-5-completed", crop=(256, 60, 1400, 660))
        # The signal as Temporal recorded it, in the run's Event History.
        open_tab(driver, "history-tab")
        signaled = wait_for(
            "the Workflow Execution Signaled event",
            lambda: visible(
                driver, By.XPATH, "//*[normalize-space(text())='Workflow Execution Signaled']"
            ),
        )
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", signaled)
        signaled.click()  # expands it: the payload the UI sent
        ActionChains(driver).move_to_element(signaled).perform()
        wait_for(
            "the signal's input",
            lambda: visible(driver, By.XPATH, "//*[contains(text(), 'user:ops')]"),
        )
        shot(driver, "operators-6-history-signaled", crop=(256, 0, 1400, 1100))

        # 5. Cancel the other run with the `cancel` signal.
        print("5. send the cancel signal")
        driver.get(f"{ns}/workflows/{urllib.parse.quote(f'taskrunner/default/{gate_b}', safe='')}")
        wait_for("the run's page", lambda: "/timeline" in driver.current_url)
        send_signal(
            driver,
            "cancel",
            {"actorId": "user:ops", "reason": "wrong build"},
            "operators-7-signal-cancel",
        )
        wait_for(
            f"{gate_b} cancelled", lambda: run_state(args.api, gate_b)["status"] == "cancelled"
        )
        state = run_state(args.api, gate_b)
        print(
            "  REST:",
            state["status"],
            [(s["stepId"], s["status"], s.get("statusReason")) for s in state["steps"]],
        )
        driver.get(driver.current_url.rsplit("/", 1)[0] + "/user-metadata")
        ended = wait_for(
            "final details",
            lambda: (
                "cancelled" in frame_text(driver, "user-metadata-current-details")
                and frame_text(driver, "user-metadata-current-details")
            ),
        )
        print("  current details:", ended.strip())
        shot(driver, "operators-8-cancelled", crop=(256, 60, 1400, 660))

        # The list again: neither run waits any more.
        driver.get(f"{ns}/workflows?query={urllib.parse.quote(AWAITING)}")
        wait_for(
            "both runs gone from the filtered list",
            lambda: (
                not driver.find_elements(By.LINK_TEXT, f"taskrunner/default/{gate_a}")
                and not driver.find_elements(By.LINK_TEXT, f"taskrunner/default/{gate_b}")
            ),
        )
    finally:
        driver.quit()
        profile.cleanup()
    print("all steps as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
