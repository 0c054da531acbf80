"""The static interp dashboard: files, escaping, and a real headless Chromium render."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from saekit.interp.dashboard import write_dashboard
from saekit.interp.histogram import histogram_svg

TRICKY = ["</script>", "<b>", " &", "\n", " café", " ☕", "<!--", " Monday"]


def _example(tokens, acts, window=0):
    return {"tokens": tokens, "acts": acts, "max": max(acts), "window": window}


def _records() -> list[dict]:
    edges = [-2 + 4 * i / 64 for i in range(65)]  # log10(act) from 0.01 to 100
    counts = [max(0, 30 - abs(i - 32)) for i in range(64)]
    ex_tricky = _example([" On", *TRICKY, " went"], [0.0, 2.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 4.0, 0.0])
    ex_plain = _example([" the", " Friday", " night"], [0.0, 3.0, 0.25], window=7)
    monday = {
        "feature": 3, "count": 412, "frequency": 0.0063, "max": 4.0, "mean": 1.3,
        "histogram": {"edges": edges, "counts": counts, "scale": "log10"},
        "examples": [ex_tricky, ex_plain],
        "samples": [[ex_plain], [], [ex_tricky]],
        "top_tokens": [{"token": " Monday", "mean": 3.2, "count": 41, "lift": 2.3},
                       {"token": "</script>", "mean": 2.0, "count": 3, "lift": 1.1}],
        "logit_lens": {"promoted": [{"token": " went", "value": 0.42},
                                    {"token": "<b>", "value": 0.40}],
                       "suppressed": [{"token": " zebra", "value": -0.31}]},
        "descriptions": [{"method": "offline", "text": "weekdays: Monday, Friday",
                          "scores": {"cosy_auc": 0.93, "cosy_p": 1e-05}},
                         {"method": "llm", "text": "days of the week",
                          "scores": {"embedding_auroc": 0.81}}],
        "clusters": [{"label": "weekday after <b>On</b>", "size": 2, "mean_act": 3.5,
                      "examples": [ex_plain]}],
        "polysemanticity": 0.42,
    }
    html_tags = {
        "feature": 17, "count": 90, "frequency": 0.002, "max": float("inf"), "mean": 1.0,
        "examples": [_example(["<b>", "x", "</script>"], [5.0, 0.0, 1.0])],
        "top_tokens": [{"token": "<b>", "mean": 5.0, "count": 9, "lift": 4.0}],
        "logit_lens": None,
        "descriptions": [{"method": "offline", "text": "HTML tags like </script> & <b>",
                          "scores": {"cosy_auc": float("nan"), "embedding_auroc": 0.6}},
                         {"method": "llm", "text": "markup", "scores": {"cosy_auc": 0.7}}],
        "polysemanticity": float("nan"),
    }
    numbers = {"feature": 42, "count": 3000, "frequency": 0.05, "max": 2.0,
               "descriptions": [{"method": "offline", "text": "numbers and dates", "scores": {}}]}
    bare = {"feature": 250}  # everything but the index missing
    return [monday, html_tags, numbers, bare]


META = {"title": "saekit interp: topk-1024 <test>", "dictionary": "runs/demo/sae", "kind": "topk",
        "d_dict": 1024, "hook": "blocks.2.mlp.hook_post", "model": "demo-lm", "n_tokens": 65536,
        "n_features_shown": 4, "score_columns": ["cosy_auc", "embedding_auroc"],
        "notes": "made by hand & checked"}


@pytest.fixture
def site(tmp_path) -> Path:
    return write_dashboard(tmp_path / "site", META, _records())


def _inline_data(index_html: str) -> dict:
    script = index_html.split("<script>", 1)[1].split("</script>", 1)[0]
    assert "</" not in script and "<!--" not in script  # nothing from the data closes the tag
    return json.loads(re.search(r"const DATA = (.*);\n", script).group(1))


def test_files_json_and_escaping(site):
    out = site.parent
    assert site == out / "index.html" and site.is_file()
    pages = sorted(p.name for p in (out / "features").iterdir())
    assert pages == ["00003.html", "00017.html", "00042.html", "00250.html"]
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # atomic writes left nothing

    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    doc = json.loads((out / "features.json").read_text("utf-8"), parse_constant=no_constants)
    assert doc["meta"] == META
    recs = _records()
    recs[1]["max"] = recs[1]["polysemanticity"] = None
    recs[1]["descriptions"][0]["scores"]["cosy_auc"] = None
    assert doc["features"] == recs

    index = site.read_text("utf-8")
    assert "saekit interp: topk-1024 &lt;test&gt;" in index and "made by hand &amp; checked" in index
    data = _inline_data(index)
    assert [c["key"] for c in data["cols"]] == ["feature", "frequency", "count", "max",
                                                "description", "cosy_auc", "embedding_auroc"]
    by_f = {r["f"]: r["v"] for r in data["rows"]}
    # The NaN cosy_auc of feature 17's first description falls through to the next one.
    assert by_f[17] == [17, 0.002, 90, None, "HTML tags like </script> & <b>", 0.7, 0.6]
    assert by_f[3][4:] == ["weekdays: Monday, Friday", 0.93, 0.81]
    assert by_f[250] == [250, None, None, None, None, None, None]

    page = (out / "features" / "00003.html").read_text("utf-8")
    assert "<script" not in page and "</script>" not in page and "<b>" not in page
    assert "&lt;/script&gt;" in page and "&lt;b&gt;" in page and " &amp;" in page
    assert "\u21b5" in page and " café" in page and "☕" in page and "&lt;!--" in page
    assert page.count("<svg") == 1 and page.count("<details>") == 3
    assert 'href="../index.html"' in page and 'href="00017.html"' in page
    assert "weekday after &lt;b&gt;On&lt;/b&gt;" in page and "1.00e-05" in page
    last = (out / "features" / "00250.html").read_text("utf-8")
    assert 'href="00042.html"' in last and "Feature 250" in last


def test_bad_input_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="features must be a list"):
        write_dashboard(tmp_path, META, {"feature": 1})
    with pytest.raises(ValueError, match=r"features\[1\] must be a dict"):
        write_dashboard(tmp_path, META, [{"feature": 1}, "x"])
    with pytest.raises(ValueError, match=r"features\[0\]\['feature'\]"):
        write_dashboard(tmp_path, META, [{"count": 3}])
    with pytest.raises(ValueError, match="appears twice"):
        write_dashboard(tmp_path, META, [{"feature": 1}, {"feature": 1}])
    with pytest.raises(ValueError, match="score_columns"):
        write_dashboard(tmp_path, {**META, "score_columns": "cosy_auc"}, [{"feature": 1}])
    assert not (tmp_path / "index.html").exists()


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium found: install Debian's chromium package (apt-get install chromium)")


def _dump_dom(browser: str, url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran, as headless Chromium serialises it."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           f"--user-data-dir={profile}", "--dump-dom", url]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "<html" in r.stdout, r.stderr[-2000:]
    return r.stdout


def _rows(dom: str) -> list[int]:
    tbody = dom.split('<tbody id="rows">', 1)[1].split("</tbody>", 1)[0]
    return [int(f) for f in re.findall(r'<tr data-feature="(\d+)"', tbody)]


@pytest.mark.timeout(120)
def test_chromium_render(site, tmp_path):
    browser = _chromium()
    base = site.as_uri()
    urls = {"monday": base + "#q=MONDAY", "tag": base + "#q=%3C%2Fscript%3E",
            "index": base + "#q=42", "up": base + "#sort=frequency",
            "down": base + "#sort=-frequency", "desc": base + "#q=a&sort=description",
            "page": (site.parent / "features" / "00003.html").as_uri()}
    # One browser per URL, in parallel: each run is a separate profile, so they cannot clash.
    with ThreadPoolExecutor(len(urls)) as pool:
        doms = dict(zip(urls, pool.map(lambda kv: _dump_dom(browser, kv[1], tmp_path / kv[0]),
                                       urls.items()), strict=True))
    assert _rows(doms["monday"]) == [3]  # case-insensitive, description text
    assert "1 of 4 features" in doms["monday"]
    assert _rows(doms["tag"]) == [3, 17]  # a top token of 3, a description of 17
    assert _rows(doms["index"]) == [42]
    assert _rows(doms["up"]) == [17, 3, 42, 250]  # nulls last
    assert "4 of 4 features" in doms["up"]
    assert _rows(doms["down"]) == [42, 3, 17, 250]  # nulls still last
    assert _rows(doms["desc"]) == [17, 42, 3]  # text sort; 250 has no text to match "a"
    assert 'data-dir="desc"' in doms["down"]
    assert 'href="features/00017.html"' in doms["up"]
    # The description column got text, not markup: the browser shows escaped tags.
    assert "HTML tags like &lt;/script&gt; &amp; &lt;b&gt;" in doms["up"]

    page = doms["page"]
    spans = re.findall(r'<span class="t" style="background: ?rgba\(255, ?110, ?0, ?([\d.]+)\);?"'
                       r' title="act ([\d.]+)">([^<]*)</span>', page)
    # alpha = act / feature max (4.0); the title carries the activation.
    assert ("1.00", "4", " Monday") in spans, spans[:4]
    assert ("0.50", "2", "&lt;/script&gt;") in spans and ("0.25", "1", "&lt;b&gt;") in spans
    assert ("0.12", "0.5", " &amp;") in spans
    assert len(spans) == 14  # 4 + 2 per window, top examples + deciles + cluster
    assert "<svg" in page and len(re.findall(r"<rect ", page)) == 59
    lens = page.split("Logit lens", 1)[1]
    assert "went" in lens and "&lt;b&gt;" in lens and "zebra" in lens and "-0.31" in lens
    assert "\u21b5" in page


def _store_histogram(values: list[float]) -> dict:
    """``values`` binned as the interp store bins them: 64 log10 bins from 1e-4 to 1e4."""
    lo, hi, n = -4.0, 4.0, 64
    counts = [0] * n
    for v in values:
        counts[min(n - 1, int((math.log10(v) - lo) / (hi - lo) * n))] += 1
    return {"edges": [lo + (hi - lo) * i / n for i in range(n + 1)], "counts": counts, "scale": "log10"}


def _ticks(svg: str) -> tuple[list[float], list[float]]:
    """The x and y tick labels of a histogram SVG, as numbers."""
    xs = [float(t) for t in re.findall(r'text-anchor="middle">([-\d.e+]+)</text>', svg)]
    ys = [float(t) for t in re.findall(r'text-anchor="end">([-\d.e+]+)</text>', svg)]
    return xs, ys


def test_histogram_axes_fit_the_data():
    """The issue's page: data in 0.3-5 drawn on an axis from 1e-4 to 1e4 with two y ticks."""
    rng = random.Random(0)
    wide = histogram_svg(_store_histogram([10 ** rng.uniform(math.log10(0.3), math.log10(5)) for _ in range(500)]))
    xs, ys = _ticks(wide)
    assert "(log scale)" in wide  # a factor of 16: log
    assert 0.25 <= min(xs) and max(xs) <= 6 and {0.5, 1.0, 2.0} <= set(xs), xs
    assert len(ys) >= 3 and ys[0] == 0 and all(b > a for a, b in zip(ys, ys[1:], strict=False)), ys
    narrow = histogram_svg(_store_histogram([rng.uniform(1.0, 2.0) for _ in range(500)]))
    xs, ys = _ticks(narrow)
    assert "(log scale)" not in narrow  # a factor of 2: linear, ticks evenly spaced round numbers
    steps = {round(b - a, 9) for a, b in zip(xs, xs[1:], strict=False)}
    assert len(xs) >= 3 and len(steps) == 1 and 0.8 <= min(xs) and max(xs) <= 2.3, xs
    # Re-binned to equal widths, the bars still hold every token.
    heights = [float(c) for c in re.findall(r": (\d+)</title></rect>", narrow)]
    assert sum(heights) == pytest.approx(500, abs=len(heights))
    assert histogram_svg({"edges": [0, 1], "counts": [0], "scale": "log10"}) == "<p class=meta>no activations recorded</p>"
