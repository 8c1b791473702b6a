"""The retrain workflow's steps: new data in, retrain judged against the champion, a pull request.

    python -m ci_jobs.retrain update         # dvc update every data import; bring the champion
    python -m ci_jobs.retrain news           # exit 0 if an import moved, 1 (and says so) if not
    python -m ci_jobs.retrain passed         # exit 0 if the gate passed (metrics/test.json)
    python -m ci_jobs.retrain pull-request   # branch + pull request with the report

``update`` runs ``dvc update`` (through ``ci_jobs.remote dvc``, stopped at a tampered object) on
every ``.dvc`` file that imports from a data registry (``dvc import``), then makes the release in
production the champion (``ci_jobs.champion --release stable``), and records what moved in
``retrain.json``. New data is an import whose locked revision moved; a new champion alone is not
(the same data would train the same model).

``pull-request`` commits the moved ``.dvc`` files, ``dvc.lock`` and ``params.yaml`` (the
champion) on a branch ``retrain/<id>``, ``<id>`` a hash of the imports' new revisions, pushes it
to ``origin`` (a deploy key with write access: docs/retraining.md) and opens a pull request
whose title and body are the report (``ci_jobs/retrain_report.py``), marked refused when the gate
refused. Merging it is the approval of the change; main's pipeline then releases after
``approve-release``. Nothing new: no branch, no pull request. A branch of that id already on
``origin``: that data is already proposed, nothing new. The pull request goes through GitHub's
REST API with ``GITHUB_TOKEN`` (context ``github-pr-report``; "Pull requests: write").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from ci_jobs import champion, retrain_report
from ci_jobs.main_lock import git
from ci_jobs.pr_report import TOKEN_ENV, GitHub, ReportSkipped, repository_of
from classifier.champion import release_dir
from classifier.errors import StageError, run_stage
from classifier.model_card import CARD_JSON
from classifier.params import PARAMS_FILE, load_params
from classifier.paths import Paths

STATE = Path("retrain.json")
BRANCH_PREFIX = "retrain/"
BASE = "main"
IDENTITY = {
    "GIT_AUTHOR_NAME": "CircleCI retrain",
    "GIT_AUTHOR_EMAIL": "retrain@circleci.invalid",
    "GIT_COMMITTER_NAME": "CircleCI retrain",
    "GIT_COMMITTER_EMAIL": "retrain@circleci.invalid",
}


def imports(root: Path = Path()) -> dict[str, dict]:
    """``.dvc`` file -> its import's ``repo`` record (url, rev_lock), for every data import."""
    found = {}
    for name in filter(None, git("ls-files", "-z", "*.dvc").split("\0")):
        document = yaml.safe_load((root / name).read_text()) or {}
        for dep in document.get("deps", []):
            if isinstance(dep.get("repo"), dict):
                found[name] = dep["repo"]
    return found


def update() -> dict:
    """Move every import to its registry's newest revision, bring the champion; the state."""
    before = imports()
    for path in sorted(before):
        done = subprocess.run([sys.executable, "-m", "ci_jobs.remote", "dvc", "update", path])
        if done.returncode:
            raise StageError(
                f"`dvc update {path}` failed (above); check that this job can reach"
                f" {before[path].get('url')} and its DVC remote"
            )
    after = imports()
    updated = [
        {
            "path": path,
            "repo": before[path].get("url"),
            "from": before[path].get("rev_lock", ""),
            "to": after[path].get("rev_lock", ""),
        }
        for path in sorted(before)
        if before[path].get("rev_lock") != after[path].get("rev_lock")
    ]
    if champion.main(["--release", "stable"]):
        raise StageError("the champion could not be brought (above)")
    state = {
        "updated": updated,
        "imports": sorted(before),
        "champion": load_params().test.champion,
        "reason": os.environ.get("RETRAIN_REASON") or "schedule",
    }
    STATE.write_text(json.dumps(state, indent=2) + "\n")
    return state


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing: {what}") from None


def read_state() -> dict:
    return read_json(STATE, "run `python -m ci_jobs.retrain update` first")


def nothing_new(state: dict) -> str:
    if not state["imports"]:
        return (
            "no data import to update (no .dvc file made by `dvc import`): bring your data from a"
            " registry with `dvc import` to retrain on new data (docs/retraining.md)"
        )
    return f"nothing new: {', '.join(state['imports'])} at the registry's newest revision"


def branch_name(state: dict) -> str:
    """One branch per data version: the same new data is never proposed twice."""
    revisions = "\n".join(f"{u['path']} {u['to']}" for u in state["updated"])
    return BRANCH_PREFIX + hashlib.sha256(revisions.encode()).hexdigest()[:12]


def champion_dataset(setting: int | str, model_name: str, paths: Paths) -> dict | None:
    """The data the champion was trained on, from its model card (None: no champion)."""
    if setting == "":
        return None
    folder = (
        release_dir(paths, model_name, setting)
        if isinstance(setting, int)
        else paths.root / setting
    )
    return read_json(folder / CARD_JSON, "bring the champion first").get("dataset")


def report(state: dict, paths: Paths) -> tuple[str, str, bool]:
    """The pull request's title, body, and whether the gate passed."""
    params = load_params()
    metrics = read_json(paths.test_metrics, "the retrain's `dvc repro` did not reach `test`")
    test_report = read_json(paths.test_report, "the retrain's `dvc repro` did not reach `test`")
    dataset = read_json(paths.prepared_dir / "dataset.json", "`prepare` did not run")
    before = champion_dataset(params.test.champion, params.package.model_name, paths)
    body = retrain_report.body(
        metrics, test_report, state["updated"], before, dataset, state["reason"]
    )
    return retrain_report.title(metrics), body, metrics["gate"] == "passed"


def push_branch(branch: str, title: str, files: list[str]) -> None:
    git("checkout", "-q", "-b", branch)
    git("add", "--", *files)
    git("commit", "-q", "-m", title, env=IDENTITY)
    git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")


def open_pull_request(branch: str, title: str, body: str) -> str:
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise StageError(
            f"no {TOKEN_ENV} (context github-pr-report): branch {branch} is pushed; open its pull"
            " request by hand, and give the retrain workflow the context"
        )
    api = os.environ.get("GITHUB_API_URL", "https://api.github.com")
    github = GitHub(api, token, repository_of(dict(os.environ)))
    try:
        created, _ = github.call(
            "POST",
            f"/repos/{github.repository}/pulls",
            {"title": title, "head": branch, "base": BASE, "body": body},
        )
    except ReportSkipped as refused:
        raise StageError(
            f"branch {branch} is pushed, but the pull request failed: {refused}"
        ) from None
    return created.get("html_url") or f"#{created.get('number')}"


def pull_request(paths: Paths) -> str:
    """Branch, commit, push, pull request: what was done, in one line."""
    state = read_state()
    if not state["updated"]:
        return f"{nothing_new(state)}; no branch, no pull request"
    branch = branch_name(state)
    if git("ls-remote", "--heads", "origin", f"refs/heads/{branch}"):
        return f"branch {branch} already proposes this data; no new pull request"
    title, body, passed = report(state, paths)
    Path("retrain-pull-request.md").write_text(f"# {title}\n\n{body}")
    files = [u["path"] for u in state["updated"]] + ["dvc.lock", str(PARAMS_FILE)]
    push_branch(branch, title, files)
    url = open_pull_request(branch, title, body)
    return f"pull request {url} opened from {branch}: {title}" + ("" if passed else " (refused)")


def step(name: str) -> int:
    """Run one step of the workflow; its exit status."""
    if name == "update":
        state = update()
        moved = ", ".join(f"{u['path']} → {u['to'][:12]}" for u in state["updated"])
        print(f"retrain: {f'new data: {moved}' if moved else nothing_new(state)}")
    elif name == "news":
        state = read_state()
        if not state["updated"]:
            print(f"retrain: {nothing_new(state)}; nothing to retrain")
            return 1
    elif name == "passed":
        metrics = read_json(Paths().test_metrics, "`test` did not run")
        print(f"retrain: quality gate {metrics['gate']}")
        return 0 if metrics["gate"] == "passed" else 1
    else:
        print(f"retrain: {pull_request(Paths())}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ci_jobs.retrain",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("step", choices=["update", "news", "passed", "pull-request"])
    args = parser.parse_args(argv)
    try:
        return step(args.step)
    except StageError as error:
        print(f"retrain: error: {error}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as error:
        lines = (error.stderr or b"").decode(errors="replace").strip().splitlines()
        detail = lines[-1] if lines else "no output"
        print(f"retrain: error: `{' '.join(error.cmd)}` failed: {detail}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    run_stage("retrain", lambda: main(sys.argv[1:]))
