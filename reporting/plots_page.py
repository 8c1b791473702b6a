"""``python -m reporting.plots_page [REV [REV]]``: DVC's plots page, with a metrics table on top.

    python -m reporting.plots_page           # the workspace             (dvc plots show)
    python -m reporting.plots_page HEAD~1    # HEAD~1 and the workspace  (dvc plots diff HEAD~1)
    python -m reporting.plots_page v1 v2     # two revisions             (dvc plots diff v1 v2)

DVC's plots page shows plots only; ``dvc metrics show|diff`` print to the terminal. This puts a
table of the numeric metrics (one column per revision, and the change when there are two) at the
``<!-- metrics -->`` marker of the page template named by ``plots.html_template`` in .dvc/config,
then runs DVC's own ``dvc plots show|diff`` with that page as ``--html-template``: DVC still
writes ``dvc_plots/index.html`` (or ``-o DIR``). Not a pipeline stage; run it from the repository.
"""

from __future__ import annotations

import argparse
import html
import subprocess
import sys
import tempfile
from pathlib import Path

from classifier.errors import StageError, run_stage

MARKER = "<!-- metrics -->"
WORKSPACE = "workspace"


def numeric_leaves(data: dict, prefix: str = "") -> dict[str, float]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, numbers only (as ``dvc metrics diff`` shows them)."""
    leaves: dict[str, float] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves.update(numeric_leaves(value, f"{name}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            leaves[name] = value
    return leaves


def columns_for(revs: list[str]) -> list[str]:
    """The revisions ``dvc plots show|diff`` draws for these arguments, in the page's terms."""
    return [*revs, WORKSPACE] if len(revs) < 2 else list(revs)


def metrics_by_rev(repo_root: Path, columns: list[str]) -> dict[str, dict[tuple[str, str], float]]:
    """rev -> {(file, metric): value}, read through DVC from git and the DVC cache."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo_root)) as repo:
            shown = repo.metrics.show(revs=[c for c in columns if c != WORKSPACE] or [WORKSPACE])
    except DvcException as error:
        raise StageError(f"cannot read metrics: {error}") from None
    table = {}
    for rev in columns:
        files = shown.get(rev, {}).get("data", {})
        table[rev] = {
            (file, metric): value
            for file, content in files.items()
            for metric, value in numeric_leaves(content.get("data") or {}).items()
        }
    return table


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.5g}"


def metrics_table(table: dict[str, dict[tuple[str, str], float]]) -> str:
    """An HTML table: one row per metric, one column per revision, and the change for two."""
    revs = list(table)
    rows = list(dict.fromkeys(key for values in table.values() for key in values))
    change = len(revs) == 2
    head = ["file", "metric", *revs, *(["change"] if change else [])]
    lines = [
        "<h2>Metrics</h2>",
        "<table>",
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>",
    ]
    for file, metric in rows:
        values = [table[rev].get((file, metric)) for rev in revs]
        cells = [file, metric, *map(_number, values)]
        if change:
            old, new = values
            delta = new - old if old is not None and new is not None else None
            cells.append("" if not delta else f"{delta:+.5g}")
        lines.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        lines.append(f'<tr><td colspan="{len(head)}">no metrics</td></tr>')
    lines.append("</table>")
    return "\n".join(lines)


def page_template(repo_root: Path) -> Path:
    """The page template .dvc/config names (``plots.html_template``, relative to .dvc/)."""
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        configured = repo.config.get("plots", {}).get("html_template")
        dvc_dir = Path(repo.dvc_dir)
    if not configured:
        raise StageError("no plots.html_template in .dvc/config; set it to plots/offline.html")
    path = dvc_dir / configured
    if MARKER not in path.read_text(encoding="utf-8"):
        raise StageError(f"{path} has no {MARKER} marker for the metrics table")
    return path


def report(revs: list[str], out: str | None, repo_root: Path) -> int:
    """Write the page with DVC; return DVC's exit status."""
    if len(revs) > 2:
        raise StageError("give at most two revisions (dvc metrics compares two)")
    template = page_template(repo_root)
    table = metrics_table(metrics_by_rev(repo_root, columns_for(revs)))
    page = template.read_text(encoding="utf-8").replace(MARKER, table)
    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False, encoding="utf-8") as file:
        file.write(page)
    staged = Path(file.name)
    try:
        command = ["plots", "diff", *revs] if revs else ["plots", "show"]
        command += ["--html-template", str(staged), *(["-o", out] if out else [])]
        return subprocess.run([sys.executable, "-m", "dvc", *command], cwd=repo_root).returncode
    finally:
        staged.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revs", nargs="*", help="none: the workspace; one: it and the workspace")
    parser.add_argument("-o", "--out", help="output folder (default: DVC's, dvc_plots)")
    args = parser.parse_args()
    status = report(args.revs, args.out, Path.cwd())
    if status:
        sys.exit(status)


if __name__ == "__main__":
    run_stage("report", main)
