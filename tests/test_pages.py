"""Every kind of page the demo writes, in a real headless Chromium at 1,280 and 1,920 px.

The pages come from small real runs: the demo on a tiny plan (the demo LM, 16 held-out
windows, a small SAE and SNMF, its interp dashboards) and a short sensitivity run on the
shipped TopK SAE. Each page is loaded with a checking script appended (in a copy beside
it, so relative links still resolve); the script measures the laid-out page and writes
what it found into the DOM, which Chromium dumps. A screenshot of each is kept under the
test's tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import DEMO_LM, ROOT

import saekit
from saekit.demo import DEMO_PLAN, run_demo
from saekit.evals import sensitivity

WIDTHS = (1280, 1920)

#: Appended to a copy of each page: after load, report the page's width against the
#: viewport's, the header cells without an explanation, and the elements that stick out
#: of the viewport on the right other than inside a scrolling box.
CHECK = """<script>window.addEventListener("load", () => {
  const w = window.innerWidth;
  const out = [...document.querySelectorAll("body *")].filter(e => !e.closest(".scroll")
      && e.getBoundingClientRect().right > w + 1).map(e => e.tagName + "." + e.className).slice(0, 10);
  const r = {scrollWidth: document.documentElement.scrollWidth, innerWidth: w, sticking_out: out,
    untitled: [...document.querySelectorAll("th")].filter(t => !(t.title || "").trim()).map(t => t.textContent),
    headers: document.querySelectorAll("th").length,
    tables_outside_scroll: [...document.querySelectorAll("table")].filter(t => !t.closest(".scroll")).length};
  const pre = document.createElement("pre"); pre.id = "layout-check"; pre.style.whiteSpace = "pre-wrap";
  pre.textContent = JSON.stringify(r); document.body.appendChild(pre);
});</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium found: install Debian's chromium package (apt-get install chromium)")


@pytest.fixture(scope="module")
def site(tmp_path_factory, demo_model) -> dict[str, Path]:
    """The demo's page, a feature dashboard, a feature page, and a sensitivity page."""
    out = tmp_path_factory.mktemp("pages")
    plan = dataclasses.replace(DEMO_PLAN, n_tokens=2048, train_tokens=4096, snmf_tokens=2048, ce_windows=8,
                               sae=dict(d_dict=1.0, k=8, batch_size=512, epochs=1),
                               snmf=dict(d_dict=32, k=8, wta_fraction=0.05, max_iter=5), effects=False)
    run_demo(None, out / "demo", plan=plan, model_path=DEMO_LM)
    topk = saekit.load_dictionary(ROOT / "checkpoints" / "demo-topk")
    cfg = sensitivity.Config(hook=topk.cfg.hook, dictionaries=[topk], n_tokens=512, ctx_len=64, radii=[0.1, 0.3],
                             feature_classes=["active"], pathology_families=["isotropic", "cov_mixture"])
    sensitivity.run(cfg, model=demo_model).save(out / "sensitivity")
    feature = sorted((out / "demo" / "interp" / "sae" / "features").glob("*.html"))[0]
    return {"demo": out / "demo" / "index.html", "dashboard": out / "demo" / "interp" / "sae" / "index.html",
            "feature": feature, "sensitivity": out / "sensitivity" / "index.html"}


def _render(browser: str, kind: str, page: Path, width: int, shots: Path) -> dict:
    """Load a checked copy of ``page`` at ``width`` px; return what the check found. The
    screenshot and the browser profile are named by ``kind`` and ``width``: one each."""
    checked = page.with_name(f"{page.stem}.check{width}.html")
    checked.write_text(page.read_text("utf-8").replace("</body>", CHECK + "</body>"), "utf-8")
    shot = shots / f"{kind}-{width}.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
           f"--user-data-dir={shots / f'profile-{kind}-{width}'}", f"--window-size={width},1200",
           f"--screenshot={shot}", "--dump-dom", checked.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="layout-check"[^>]*>(.*?)</pre>', r.stdout, re.S)
    assert r.returncode == 0 and found, (page, r.stderr[-2000:])
    assert shot.read_bytes()[:4] == b"\x89PNG", shot
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))


@pytest.mark.timeout(240)
def test_every_page_fits_the_window_and_explains_its_columns(site, tmp_path):
    browser = _chromium()
    jobs = [(kind, page, w) for kind, page in site.items() for w in WIDTHS]
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda j: _render(browser, *j, tmp_path), jobs))
    for (kind, _, width), r in zip(jobs, found, strict=True):
        where = f"{kind} page at {width} px"
        assert r["innerWidth"] == width, where
        # Nothing widens the page: wide tables scroll inside their own box.
        assert r["scrollWidth"] <= r["innerWidth"], (where, r)
        assert not r["sticking_out"], (where, r["sticking_out"])
        assert r["tables_outside_scroll"] == 0, where
        assert r["headers"] > 0 and not r["untitled"], (where, r["untitled"])
    assert len(list(tmp_path.glob("*.png"))) == len(jobs)


def test_pages_say_what_they_show(site):
    demo = site["demo"].read_text("utf-8")
    # The interp table: each score with its n, the low-n ones greyed with a tooltip.
    assert re.search(r"\d\.\d+ ± \d\.\d+ \(n=\d+\)", demo)
    assert "None" not in re.sub(r"<pre>.*?</pre>", "", demo, flags=re.S)  # the settings block is JSON
    assert "Where the time went" in demo and "CPU seconds" in demo
    sens = site["sensitivity"].read_text("utf-8")
    first = sens.split("<h2>", 2)[1]
    assert first.startswith("What this page shows") and "How to read it" in first
    feature = site["feature"].read_text("utf-8")
    assert 'title="PRISM' in feature  # polysemanticity explained where it appears
    report = (site["demo"].parent / "report.md").read_text("utf-8")
    assert "- **CoSy AUC**:" in report and "| total |" in report
    times = {r["stage"]: r for r in json.loads((site["demo"].parent / "demo.json").read_text())["tables"]["times"]}
    assert {"harvest held-out text", "fit the TopK SAE", "interp (TopK SAE)", "total"} <= set(times)
    assert times["total"]["seconds"] >= sum(r["seconds"] for k, r in times.items() if k != "total") - 0.5
