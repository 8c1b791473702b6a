"""Build or check ``offline.html``: DVC's plots page with Vega, Vega-Lite and Vega-Embed inlined.

``dvc plots show`` / ``dvc plots diff`` use it through ``plots.html_template`` in ``.dvc/config``.
DVC's own page loads the three libraries from a CDN, so offline (or behind a proxy) its charts are
blank; this page carries them, byte for byte as npm publishes them, and needs no network at all.

    python -m reporting.vega_libraries          # check offline.html against the pins (offline)
    python -m reporting.vega_libraries --build  # npm pack the pins, verify, rewrite offline.html

To upgrade, change ``PINNED`` (stay on the majors DVC's specs need: vega 5, vega-lite 5,
vega-embed 6; see ``VegaRenderer.SCRIPTS`` in dvc_render/vega.py), run ``--build``, and record the
new hashes it prints here and in THIRD-PARTY.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from classifier.errors import run_stage

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / ".dvc" / "plots"
PAGE = TEMPLATE_DIR / "offline.html"

# package@version, file in the package, npm's integrity of the tarball, sha256 of the file
PINNED = [
    (
        "vega@5.20.2",
        "build/vega.min.js",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
        "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be",
    ),
    (
        "vega-lite@5.2.0",
        "build/vega-lite.min.js",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
        "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb",
    ),
    (
        "vega-embed@6.18.2",
        "build/vega-embed.min.js",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
        "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e",
    ),
]

# DVC fills these with str.replace over the whole page; inlined code must not contain them.
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
METRICS_MARKER = "<!-- metrics -->"  # where `python -m reporting.plots_page` puts the metrics table

HEAD = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<!-- Built by reporting/vega_libraries.py: Vega, Vega-Lite and Vega-Embed are inlined below,
     verbatim from npm (licenses and hashes in THIRD-PARTY.md), so the page needs no network. No
     scripts placeholder: DVC would put its CDN script tags there. -->
<style>
  body { font-family: sans-serif; margin: 16px; }
  table { border-spacing: 15px; }
  #metrics table { border-collapse: collapse; border-spacing: 0; font-size: 13px; }
  #metrics th, #metrics td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
  #metrics th:first-child, #metrics td:first-child { text-align: left; }
</style>
"""

# DVC's divs call vegaEmbed(el, spec) with no options; draw SVG rather than canvas: sharp at any
# zoom, and what each chart drew can be read from the DOM (tests/test_plots.py does).
SVG_DEFAULT = """<script>
(function () {
  var embed = window.vegaEmbed;
  window.vegaEmbed = function (el, spec, options) {
    return embed(el, spec, Object.assign({ renderer: "svg" }, options));
  };
})();
</script>
"""

BODY = """</head>
<body>
<section id="metrics">
<!-- metrics -->
</section>
{plot_divs}
</body>
</html>
"""

SCRIPT_RE = re.compile(r'<script data-vendored="([^"]+)">(.*?)</script>\n', re.DOTALL)


def sri(data: bytes, algorithm: str = "sha512") -> str:
    return f"{algorithm}-" + base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def inlined(page: str) -> dict[str, bytes]:
    """``"package@version file"`` -> the bytes of each library inlined in ``page``."""
    return {name: code.encode() for name, code in SCRIPT_RE.findall(page)}


def problems(page: str) -> list[str]:
    """What is wrong with ``page`` against the pins (empty: nothing)."""
    found = inlined(page)
    wanted = {f"{package} {file}": sha256 for package, file, _, sha256 in PINNED}
    errors = [f"{name}: not inlined" for name in wanted if name not in found]
    errors += [f"{name}: not pinned" for name in found if name not in wanted]
    errors += [
        f"{name}: sha256 {hashlib.sha256(found[name]).hexdigest()}, pinned {sha256}"
        for name, sha256 in wanted.items()
        if name in found and hashlib.sha256(found[name]).hexdigest() != sha256
    ]
    if page.count("{plot_divs}") != 1:
        errors.append("the page must contain {plot_divs} exactly once")
    if "{scripts}" in page:
        errors.append("the page contains {scripts}: DVC would add its CDN script tags")
    return errors


def library(tarball: Path, file: str) -> bytes:
    with tarfile.open(tarball) as archive:
        member = archive.extractfile(f"package/{file}")
        if member is None:
            raise SystemExit(f"{tarball.name} has no package/{file}")
        return member.read()


def build() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("--build needs npm (and the npm registry)")
    parts = [HEAD]
    with tempfile.TemporaryDirectory() as scratch:
        for package, file, integrity, sha256 in PINNED:
            packed = subprocess.run(
                [npm, "pack", package, "--pack-destination", scratch, "--silent"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            tarball = Path(scratch) / packed.splitlines()[-1]
            if sri(tarball.read_bytes()) != integrity:
                raise SystemExit(f"{package}: tarball integrity {sri(tarball.read_bytes())}")
            code = library(tarball, file)
            print(f"{package} {file}: sha256 {hashlib.sha256(code).hexdigest()}")
            if hashlib.sha256(code).hexdigest() != sha256:
                raise SystemExit(f"{package} {file}: sha256 differs from the pin")
            text = code.decode()
            if "</script" in text.lower() or any(p in text for p in DVC_PLACEHOLDERS):
                raise SystemExit(f"{package} {file}: cannot be inlined as is")
            parts.append(f'<script data-vendored="{package} {file}">{text}</script>\n')
    return "".join([*parts, SVG_DEFAULT, BODY])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="rewrite offline.html from npm")
    args = parser.parse_args()
    if args.build:
        PAGE.write_text(build(), encoding="utf-8")
    assert METRICS_MARKER in BODY
    errors = problems(PAGE.read_text(encoding="utf-8"))
    for error in errors:
        print(f"{PAGE.name}: {error}", file=sys.stderr)
    if not errors:
        print(f"{PAGE.name}: ok ({', '.join(package for package, *_ in PINNED)})")
    return 1 if errors else 0


if __name__ == "__main__":
    run_stage("vega_libraries", main)
