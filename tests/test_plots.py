"""The plots page renders with no network: DVC's `dvc plots show|diff`, opened in headless Chromium.

.dvc/config points `plots.html_template` at .dvc/plots/offline.html, which carries Vega, Vega-Lite
and Vega-Embed inlined (DVC's own page loads them from a CDN). The end-to-end tests run the
pipeline in a fresh git copy, make a second revision, render the pages, and check that every
declared chart drew, that the screenshot is not blank, and that the page made no request outside
the file system; a control shows the same checks fail on DVC's default page.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from configobj import ConfigObj
from PIL import Image

from reporting import vega_libraries
from reporting.plots_page import metrics_table, numeric_leaves
from testbed.repo import REPO_ROOT, DvcRepo, commit_all
from testbed.suite import RanPipeline

CHROMIUM = Path("/usr/bin/chromium")
TEMPLATE = REPO_ROOT / ".dvc/plots/offline.html"
LINKING_ATTRIBUTES = {"src", "href", "srcset", "data", "action", "poster", "background"}


class _Links(HTMLParser):
    """Every URL an element of the page links to (script contents are not markup: not looked at)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        for name, value in attrs:
            if name in LINKING_ATTRIBUTES and value:
                self.urls.extend(part.split()[0] for part in value.split(",") if part.strip())
            if name == "style" and value:
                self.urls.extend(re.findall(r"url\(\s*['\"]?([^'\")]+)", value))


def external_urls(page: str) -> list[str]:
    """URLs in the page's markup that leave the file system (http:, https:, //host, ...)."""
    parser = _Links()
    parser.feed(page)
    return [
        url
        for url in parser.urls
        if url.startswith("//") or urlsplit(url).scheme not in ("", "file", "data")
    ]


# -- fast: the template itself ------------------------------------------------------------------


def test_config_uses_the_offline_template() -> None:
    config = ConfigObj(str(REPO_ROOT / ".dvc/config"))
    assert (REPO_ROOT / ".dvc" / config["plots"]["html_template"]) == TEMPLATE


def test_template_has_plot_divs_and_no_external_url() -> None:
    page = TEMPLATE.read_text(encoding="utf-8")
    assert page.count("{plot_divs}") == 1
    assert "{scripts}" not in page  # DVC would put its CDN <script> tags there
    assert external_urls(page) == []
    assert "<!-- metrics -->" in page  # where reporting.plots_page puts the metrics table


def test_inlined_libraries_are_npms_files_byte_for_byte() -> None:
    page = TEMPLATE.read_text(encoding="utf-8")
    assert vega_libraries.problems(page) == []
    assert sorted(vega_libraries.inlined(page)) == [
        "vega-embed@6.18.2 build/vega-embed.min.js",
        "vega-lite@5.2.0 build/vega-lite.min.js",
        "vega@5.20.2 build/vega.min.js",
    ]
    # a one-byte change is caught
    tampered = page.replace("vegaEmbed=", "vegaEmbeD=", 1)
    assert any("vega-embed" in problem for problem in vega_libraries.problems(tampered))


def test_libraries_are_on_the_majors_dvc_renders_for() -> None:
    from dvc_render.vega import VegaRenderer

    pinned = {package for package, *_ in vega_libraries.PINNED}
    dvc_uses = set(re.findall(r"npm/([\w-]+@[\d.]+)", VegaRenderer.SCRIPTS))
    major = {p.split("@")[0]: p.split("@")[1].split(".")[0] for p in pinned}
    assert {p.split("@")[0]: p.split("@")[1].split(".")[0] for p in dvc_uses} == major


def test_external_url_check_flags_dvcs_default_page() -> None:
    from dvc_render.html import PAGE_HTML
    from dvc_render.vega import VegaRenderer

    page = PAGE_HTML.replace("{scripts}", VegaRenderer.SCRIPTS)
    assert len(external_urls(page)) == 3
    assert external_urls('<img src="static/a.png"><a href="file:///x">') == []


def test_metrics_table_lists_numbers_per_revision_with_the_change() -> None:
    assert numeric_leaves({"a": {"b": 1, "ok": True, "md5": "x"}, "c": 0.5}) == {"a.b": 1, "c": 0.5}
    table = metrics_table(
        {
            "HEAD~1": {("metrics/test.json", "accuracy"): 0.97, ("m.json", "n"): 3},
            "workspace": {("metrics/test.json", "accuracy"): 0.98, ("m.json", "n"): 3},
        }
    )
    assert "<th>HEAD~1</th><th>workspace</th><th>change</th>" in table
    assert "<td>accuracy</td><td>0.97</td><td>0.98</td><td>+0.01</td>" in table
    assert "<td>n</td><td>3</td><td>3</td><td></td>" in table


# -- slow: a real pipeline, DVC's pages, headless Chromium --------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    reason = f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def plotted(
    tmp_path_factory: pytest.TempPathFactory,
    ran_pipeline: RanPipeline,
    http_mirror: str,
    chromium: Path,
) -> DvcRepo:
    """Two committed revisions: the suite's shared run trained for 2 epochs (a curve, not a
    point), then a `test` re-run showing fewer misclassified digits."""
    pipeline = ran_pipeline.copy(tmp_path_factory.mktemp("plots"), MNIST_MIRROR=http_mirror)
    repo = pipeline.repo
    pipeline.set_params(train={"epochs": 2})
    ran, result = pipeline.repro()
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran == ["train", "test", "package"]
    commit_all(repo, "first run")
    pipeline.set_params(test={"worst_examples": 6})
    ran, result = pipeline.repro()
    assert result.returncode == 0, result.stdout + result.stderr
    assert ran == ["test", "package"]
    commit_all(repo, "fewer worst examples")
    return pipeline


def render(chromium: Path, page: Path, scratch: Path) -> tuple[str, list[str], Image.Image]:
    """The DOM after scripts ran, the URLs the page requested from the network, a screenshot."""
    scratch.mkdir()
    netlog, screenshot = scratch / "netlog.json", scratch / "screenshot.png"
    common = [
        str(chromium),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={scratch / 'profile'}",
        "--virtual-time-budget=10000",
    ]
    dom = subprocess.run(
        [*common, f"--log-net-log={netlog}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    subprocess.run(
        [
            *common,
            "--hide-scrollbars",
            "--window-size=1280,4000",
            f"--screenshot={screenshot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=180,
        check=True,
    )
    return dom, page_requests(netlog), Image.open(screenshot).convert("RGB")


def page_requests(netlog: Path) -> list[str]:
    """URLs the page asked the network stack for. Chromium's own background requests (updates,
    time, accounts) are left out: only the page's requests are keyed by its site, file://."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        event["params"]["url"]
        for event in log["events"]
        if event["type"] == start_job
        and "file://" in event["params"].get("network_isolation_key", "")
    ]


class _Charts(HTMLParser):
    """What each chart (an element whose id is in ``ids``) drew in its Vega SVG: per id, its
    classes, its ``<svg class="marks">`` count, and the data marks with geometry: line paths
    through two or more points, and rect cells."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta"})

    def __init__(self, ids: set[str]) -> None:
        super().__init__()
        self.ids = ids
        self.stack: list[tuple[str | None, str | None]] = []  # (chart id, data mark kind) opened
        self.found: dict[str, dict] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        owner = next((o for o, _ in reversed(self.stack) if o), None)
        mark = next((m for _, m in reversed(self.stack) if m), None)
        if owner:
            chart = self.found[owner]
            chart["svgs"] += tag == "svg" and "marks" in classes
            geometry = (attributes.get("d") or "") if tag == "path" else ""
            chart["lines"] += mark == "mark-line" and "L" in geometry
            chart["cells"] += mark == "mark-rect" and bool(geometry)
        if tag in self.VOID:
            return
        if attributes.get("id") in self.ids:
            self.found[attributes["id"]] = {"class": classes, "svgs": 0, "lines": 0, "cells": 0}
        kind = next((c for c in classes if c.startswith("mark-")), None)
        self.stack.append(
            (
                attributes.get("id") if attributes.get("id") in self.ids else None,
                kind if tag == "g" and "role-mark" in classes else None,
            )
        )

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if self.stack and tag not in self.VOID:
            self.stack.pop()


def declared_plots(pipeline: DvcRepo, *revs: str) -> dict[str, str]:
    """DVC's own list of what the page shows: plot name -> renderer type (vega or image)."""
    command = ["plots", "diff", *revs, "--json"] if revs else ["plots", "show", "--json"]
    result = pipeline.dvc(*command)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    return {name: entries[0]["type"] for name, entries in data.items()}


def assert_rendered_offline(
    page: Path,
    dom: str,
    requests: list[str],
    shot: Image.Image,
    plots: dict[str, str],
    revisions: int,
) -> None:
    from dvc_render.base import Renderer

    assert external_urls(page.read_text(encoding="utf-8")) == []
    assert requests == []
    vega = {Renderer.remove_special_chars(name) for name, kind in plots.items() if kind == "vega"}
    charts = _Charts(vega)
    charts.feed(dom)
    assert set(charts.found) == vega
    for chart_id, chart in charts.found.items():
        assert "vega-embed" in chart["class"], chart_id
        assert chart["svgs"] == 1, chart_id
        if chart_id in ("plots_confusion_json", "plots_class_recall_json"):
            # >= 10 cells (the diagonal), or a bar per class, per revision
            assert chart["cells"] >= 10 * revisions, chart
        else:  # a curve per revision (2 epochs: 2 points)
            assert chart["lines"] >= revisions, chart
    assert dom.count('class="vega-embed') == len(vega)
    colours = shot.getcolors(maxcolors=1 << 20)
    assert len(colours) > 100  # anti-aliased lines, the confusion colour scale, digits
    white = max(count for count, colour in colours if colour == (255, 255, 255))
    assert white < 0.97 * shot.width * shot.height


@pytest.mark.slow
def test_plots_show_renders_offline(plotted: DvcRepo, chromium: Path, tmp_path: Path) -> None:
    result = plotted.dvc("plots", "show")
    assert result.returncode == 0, result.stderr
    page = plotted.repo / "dvc_plots/index.html"
    assert page.as_uri() in result.stdout
    plots = declared_plots(plotted)
    # 4 DVCLive curves, the confusion matrix, each class's recall beside the champion's
    assert sorted(plots.values()).count("vega") == 6
    assert plots["plots/worst_misclassified.png"] == "image"
    dom, requests, shot = render(chromium, page, tmp_path / "show")
    assert_rendered_offline(page, dom, requests, shot, plots, revisions=1)
    image = plotted.repo / "dvc_plots/static/workspace_plots_worst_misclassified.png"
    assert '<img src="static/workspace_plots_worst_misclassified.png">' in dom
    assert image.read_bytes() == (plotted.repo / "plots/worst_misclassified.png").read_bytes()
    assert "dvc_plots" not in plotted.run("git", "status", "--short", "-uall").stdout  # ignored


@pytest.mark.slow
def test_plots_diff_renders_both_revisions_offline(
    plotted: DvcRepo, chromium: Path, tmp_path: Path
) -> None:
    result = plotted.dvc("plots", "diff", "HEAD~1")
    assert result.returncode == 0, result.stderr
    page = plotted.repo / "dvc_plots/index.html"
    plots = declared_plots(plotted, "HEAD~1")
    dom, requests, shot = render(chromium, page, tmp_path / "diff")
    assert_rendered_offline(page, dom, requests, shot, plots, revisions=2)
    charts = re.findall(r'<svg [^>]*class="marks".*?</svg>', dom, re.DOTALL)
    assert all("HEAD~1" in chart and "workspace" in chart for chart in charts)  # legend / facets
    static = plotted.repo / "dvc_plots/static"
    old, new = (static / f"{rev}_plots_worst_misclassified.png" for rev in ("HEAD~1", "workspace"))
    assert f'<img src="static/{old.name}">' in dom and f'<img src="static/{new.name}">' in dom
    assert Image.open(old).height > Image.open(new).height  # 12 digits, then 6


@pytest.mark.slow
def test_report_adds_the_metrics_table(plotted: DvcRepo, chromium: Path, tmp_path: Path) -> None:
    result = plotted.run(sys.executable, "-m", "reporting.plots_page", "HEAD~1", "-o", "report")
    assert result.returncode == 0, result.stdout + result.stderr
    page = plotted.repo / "report/index.html"
    dom, requests, shot = render(chromium, page, tmp_path / "report")
    plots = declared_plots(plotted, "HEAD~1")
    assert_rendered_offline(page, dom, requests, shot, plots, revisions=2)
    accuracy = json.loads((plotted.repo / "metrics/test.json").read_text())["accuracy"]
    assert "<th>HEAD~1</th><th>workspace</th><th>change</th>" in dom
    value = f"<td>{accuracy:.5g}</td>"
    assert f"<td>metrics/test.json</td><td>accuracy</td>{value}{value}" in dom


@pytest.mark.slow
def test_checks_fail_on_dvcs_default_cdn_page(
    plotted: DvcRepo, chromium: Path, tmp_path: Path
) -> None:
    """The control: DVC's own page (no template) fails the offline checks, network or not."""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    result = plotted.dvc("plots", "show", "--html-template", str(default), "-o", "cdn_plots")
    assert result.returncode == 0, result.stderr
    page = plotted.repo / "cdn_plots/index.html"
    _, requests, _ = render(chromium, page, tmp_path / "cdn")
    assert sorted(external_urls(page.read_text())) == sorted(requests)
    assert [urlsplit(url).hostname for url in requests] == ["cdn.jsdelivr.net"] * 3
