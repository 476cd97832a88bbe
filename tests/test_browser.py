"""The mask explorer (:func:`cagnet.widgets.mask_explorer`) in a real browser.

JupyterLab runs on localhost (a free port, a random token, a temporary root folder) and
headless Chromium, driven by selenium, opens a notebook that shows the explorer on three
scenes of the embedded benchmark with two sets of predicted masks. The test runs the notebook,
moves the image slider, switches the method, and checks that the shown PNG changes each time
and that neither the notebook nor the browser console reports an error. Screenshots go to
``runs/browser/``.

Needs Chromium and its driver (Debian packages ``chromium`` and ``chromium-driver``, which
``make setup`` installs where it can: ``scripts/setup_browser.sh``; other locations through
``$CAGNET_CHROMIUM`` / ``$CAGNET_CHROMEDRIVER``) and selenium (the ``test`` extra); the test
skips, naming what is missing, without them, or fails when ``CAGNET_REQUIRE_BROWSER=1`` (CI).
Nothing is fetched from the network: selenium is given the driver's path, Chromium's
background services are switched off, and JupyterLab's news and update checks are off.
"""
from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path(os.environ.get("CAGNET_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CAGNET_CHROMEDRIVER", "/usr/bin/chromedriver"))
SCREENSHOTS = REPO_ROOT / "runs" / "browser"
WAIT_S = 90.0  # generous upper bounds: a loaded 2-core machine starts JupyterLab and a kernel slowly
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1500,1100"]

# The notebook the browser runs: 3 test scenes of the benchmark (64 px) in evaluation order, and
# two methods' masks: the ground truth, and a "colour only" segmenter that gives every unseen
# pixel the first seen class of the same colour (the typical zero-shot failure).
NOTEBOOK_CELLS = [
    """\
    import numpy as np

    from cagnet.data.synthetic import CLASS_NAMES, SEEN_IDS, UNSEEN_IDS, SyntheticConfig, class_colour, generate_sample
    from cagnet.widgets import mask_explorer

    eval_ids = list(SEEN_IDS) + list(UNSEEN_IDS)          # evaluation order: seen classes, then unseen
    class_names = [CLASS_NAMES[i] for i in eval_ids]
    S = len(SEEN_IDS)
    to_eval = np.full(256, 255, dtype=np.int64)
    to_eval[eval_ids] = np.arange(len(eval_ids))
    scenes = [generate_sample(SyntheticConfig(seed=1, num_test=3, image_size=64), "test", i) for i in range(3)]
    images = [image for image, _ in scenes]
    labels = [to_eval[raw] for _, raw in scenes]
    colour_only = np.arange(256)
    for u in range(S, len(eval_ids)):
        colour_only[u] = next(s for s in range(S) if class_colour(eval_ids[s]) == class_colour(eval_ids[u]))
    predictions = {"ground truth copy": labels, "colour only": [colour_only[label] for label in labels]}
    print(len(images), "images,", len(class_names), "classes")
    """,
    """\
    explorer = mask_explorer(images, labels, predictions, class_names, S, dpi=80)
    explorer
    """,
]


def _missing_tools() -> list[str]:
    missing = []
    for module, package in (("selenium", "selenium"), ("jupyterlab", "jupyterlab"), ("ipywidgets", "ipywidgets"),
                            ("nbformat", "nbformat")):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"the Python package {package} (pip install -e '.[notebooks,test]')")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            missing.append(f"{path} (Debian package {package}; make setup installs it as root)")
    return missing


@pytest.fixture(scope="module")
def browser_tools():
    """Skips the test, naming what is missing, unless ``CAGNET_REQUIRE_BROWSER=1`` (CI, where the
    set-up installs Chromium) makes a missing tool a failure."""
    missing = _missing_tools()
    if missing:
        reason = "browser test needs " + "; ".join(missing)
        if os.environ.get("CAGNET_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (CAGNET_REQUIRE_BROWSER=1)")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _write_notebook(path: Path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_code_cell(textwrap.dedent(source)) for source in NOTEBOOK_CELLS]
    nbformat.write(notebook, path)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (the server shuts its kernels down), SIGKILL what is left."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # kernels left behind, if any
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def jupyter_lab(browser_tools, tmp_path_factory):
    """A JupyterLab server on localhost serving a temporary folder with ``explorer.ipynb``.

    Yields ``(base_url, token)``. Every Jupyter folder (config, data, runtime, settings,
    workspaces, IPython) is temporary; announcements and update checks are off; the kernel
    imports ``cagnet`` from this checkout.
    """
    home = tmp_path_factory.mktemp("jupyter")
    root = home / "root"
    root.mkdir()
    _write_notebook(root / "explorer.ipynb")
    config = home / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps({
        "LabApp": {"news_url": None, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                   "extension_manager": "readonly", "expose_app_in_browser": True},
    }))
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config), JUPYTER_DATA_DIR=str(home / "data"),
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), IPYTHONDIR=str(home / "ipython"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS="1")
    port, token = _free_port(), secrets.token_hex(16)
    log_path = home / "jupyter.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
             "--port-retries=0", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
             "--ServerApp.allow_root=True"],
            env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with code {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {WAIT_S:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield base, token
    finally:
        _stop(process)


@pytest.fixture()
def browser(browser_tools, tmp_path):
    """Headless Chromium through the Debian chromedriver (selenium is never left to find or fetch a
    driver); ``goog:loggingPrefs`` keeps the console for the error check."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(WAIT_S)
        driver.set_script_timeout(WAIT_S)
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------------
# reading the page
# ---------------------------------------------------------------------------------------------
KERNEL_IDLE_JS = """
const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
return !!(panel && panel.content && panel.content.widgets && panel.content.widgets.length === arguments[0]
          && kernel && kernel.status === 'idle');
"""
SHOWN_PNG_JS = """
const done = arguments[arguments.length - 1];
const image = document.querySelector('.jp-OutputArea-output img.widget-image');
if (!image || !image.complete || !image.naturalWidth) { done(null); return; }
fetch(image.src).then(r => r.arrayBuffer()).then(buffer => {
    const bytes = new Uint8Array(buffer);
    let text = '';
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    done(btoa(text));
}).catch(error => done('error: ' + error));
"""
GEOMETRY_JS = """
const image = document.querySelector('.jp-OutputArea-output img.widget-image');
const box = image.closest('.widget-vbox');
const output = image.closest('.jp-OutputArea-output').getBoundingClientRect();
const shown = image.getBoundingClientRect();
return {natural: [image.naturalWidth, image.naturalHeight], shown: [shown.width, shown.height],
        inside: shown.left >= output.left - 1 && shown.right <= output.right + 1,
        overflow: [box, ...box.querySelectorAll('.widget-box')].map(
            node => Math.max(node.scrollWidth - node.clientWidth, node.scrollHeight - node.clientHeight))};
"""
ERROR_OUTPUTS_JS = """
const panel = window.jupyterapp.shell.currentWidget;
const problems = [];
for (const cell of panel.content.widgets) {
    if (cell.model.type !== 'code') continue;
    for (let i = 0; i < cell.model.outputs.length; i++) {
        const output = cell.model.outputs.get(i).toJSON();
        if (output.output_type === 'error') problems.push(output.ename + ': ' + output.evalue);
        if (output.output_type === 'stream' && output.name === 'stderr') problems.push('stderr: ' + output.text);
    }
}
for (const node of document.querySelectorAll('.jp-OutputArea-output')) {
    if (/Error displaying widget|Traceback/.test(node.textContent)) problems.push('page: ' + node.textContent.slice(0, 300));
}
return problems;
"""


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        _screenshot(driver, "failure")
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                             f"screenshot in {SCREENSHOTS / 'failure.png'}") from None


def _screenshot(driver, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def _shown_png(driver) -> bytes | None:
    encoded = driver.execute_async_script(SHOWN_PNG_JS)
    if encoded is None:
        return None
    assert not encoded.startswith("error"), f"could not read the explorer's image: {encoded}"
    return base64.b64decode(encoded)


def _summary(driver) -> str:
    from selenium.webdriver.common.by import By

    nodes = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-html-content")
    return " ".join(node.text for node in nodes)


def _wait_for_view(driver, previous: set[bytes], summary: str, what: str) -> bytes:
    """Wait until the explorer shows a PNG not seen before and its summary contains ``summary``."""
    def changed(d):
        png = _shown_png(d)
        return png if png is not None and png not in previous and summary in _summary(d) else False

    return _wait(driver, changed, what)


def _assert_view_undistorted(driver) -> None:
    """The explorer's figure is drawn at its own aspect ratio, inside the output area, and the
    explorer needs no scroll bar."""
    geometry = driver.execute_script(GEOMETRY_JS)
    (natural_w, natural_h), (shown_w, shown_h) = geometry["natural"], geometry["shown"]
    assert abs(shown_w / shown_h - natural_w / natural_h) <= 0.02 * natural_w / natural_h, geometry
    assert geometry["inside"] and max(geometry["overflow"]) <= 1, geometry  # no box scrolls


def _severe_console_entries(driver) -> list[str]:
    return [f"{entry.get('source')}: {entry.get('message')}" for entry in driver.get_log("browser")
            if entry.get("level") == "SEVERE"]


def test_mask_explorer_reacts_in_jupyterlab(jupyter_lab, browser):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    base, token = jupyter_lab
    driver = browser
    started = time.monotonic()
    driver.get(f"{base}/lab/tree/explorer.ipynb?token={token}")
    _wait(driver, lambda d: d.execute_script(KERNEL_IDLE_JS, len(NOTEBOOK_CELLS)), "the notebook and an idle kernel")
    driver.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells');")

    first = _wait_for_view(driver, set(), "image 0: ground truth copy", "the explorer's first view")
    slider = driver.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-slider .noUi-handle")
    explorer = slider.find_element(By.XPATH, "./ancestor::div[contains(@class, 'widget-vbox')][1]")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", explorer)
    _screenshot(driver, "1_explorer")
    explorer.screenshot(str(SCREENSHOTS / "1_explorer_widget.png"))
    shown = Image.open(io.BytesIO(first))
    assert shown.width >= 400 and shown.height >= 200  # a three-panel figure, not an empty image
    _assert_view_undistorted(driver)

    slider.send_keys(Keys.ARROW_RIGHT)  # image 0 -> 1 (the slider's keyboard step, as a user would)
    second = _wait_for_view(driver, {first}, "image 1: ground truth copy", "a new view after moving the image slider")
    _screenshot(driver, "2_image_slider")

    method = Select(driver.find_element(By.CSS_SELECTOR, ".jp-OutputArea-output .widget-dropdown select"))
    method.select_by_visible_text("colour only")
    _wait_for_view(driver, {first, second}, "image 1: colour only", "a new view after switching the method")
    _screenshot(driver, "3_method")
    _assert_view_undistorted(driver)
    explorer.screenshot(str(SCREENSHOTS / "3_explorer_widget.png"))

    assert driver.execute_script(ERROR_OUTPUTS_JS) == []
    assert _severe_console_entries(driver) == []
    print(f"browser session: {time.monotonic() - started:.1f} s; screenshots in {SCREENSHOTS}")
