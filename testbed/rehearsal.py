"""Rehearse a job of ``.circleci/config.yml`` on this machine, against the S3 + OIDC test bed.

    python -m testbed.rehearsal repro [--branch main] [--param sweep=...] [--node-index 0]

The job's steps are read from the config file of the commit being built and run in order, as
CircleCI runs them: reusable ``commands`` expanded with their parameters,
``<< pipeline.parameters.* >>`` filled in, each ``run`` step in ``/bin/bash -eo pipefail -c``
from the checkout, with the job's ``environment``, ``when`` honoured, the job stopped by the
first failing step. So a config that drifts from what the tests rehearse fails them.
``workflows_selected`` says which workflows a pipeline with given parameters runs, evaluating
each workflow's ``when`` with CircleCI's logic statements (``and``, ``or``, ``not``,
``equal``, ``matches``, literals' truth).

The variables CircleCI sets: ``CI``, ``CIRCLECI``, ``CIRCLE_BRANCH``, ``CIRCLE_SHA1``,
``CIRCLE_JOB``, ``CIRCLE_NODE_INDEX``/``CIRCLE_NODE_TOTAL`` (from ``parallelism``),
``CIRCLE_WORKING_DIRECTORY``, ``CIRCLE_PROJECT_USERNAME``/``CIRCLE_PROJECT_REPONAME``,
``CIRCLE_OIDC_TOKEN_V2`` (minted by the test issuer for the job's
ref, lifetime chosen by the caller), ``CIRCLE_REPOSITORY_URL`` (``REPOSITORY_URL``, a GitHub
address: the origin here is a local folder), ``CIRCLE_BUILD_URL``, ``CIRCLE_WORKFLOW_JOB_ID`` and
``BASH_ENV``: an empty file that bash itself sources
before every step, as on CircleCI, so what one step appends there (the venv, the role) holds in
the next. Project variables: ``AWS_ROLE_ARN_PUSH``/``READ``/``RELEASE`` = the test bed's roles.
Contexts: the caller's ``contexts`` (name -> variables) reach a job only if its entry in the
workflow that runs it names them (``context:``), as CircleCI hands them out.
A ``circleci`` command on ``PATH`` answers ``circleci run oidc get --claims '{"aud": ...}'``
with a token freshly minted by the test issuer (``testbed.circleci_cli``).

Stand-ins, for what only CircleCI (or its GPU machine) can do:

- ``checkout``: ``git clone`` of the origin repository, then the job's branch at its commit
  (full depth, ``origin/main`` present); then the DVC remote pointed at the test bed with
  ``--local`` overrides (``url`` s3://<test bucket>/dvc, ``endpointurl``), as a user of an
  on-prem store does, the committed ``.dvc/config`` untouched.
- the steps named ``Choose a supported Python`` and ``Install the locked dependencies``: with
  ``real_install`` they run as written (this machine's pyenv and package-index settings passed
  through: ``PYENV_ROOT``, ``PIP_*``, CA bundles, proxies), a fresh ``.venv`` from the
  hash-checked lock; otherwise the Python running the rehearsal is the choice and ``.venv`` is a
  symlink to its virtual environment (same pins, already installed). ``restore_cache`` and
  ``save_cache`` do nothing. The step that activates ``.venv`` through ``$BASH_ENV`` is real.
- the GPU check is real; ``REHEARSAL_CPU_ONLY=1`` tells it no GPU is expected on this machine
  (``gpu_required=True`` leaves it out, and the step fails as it would on a broken GPU machine).
- ``store_artifacts`` / ``store_test_results``: copies into the run's ``artifacts`` folder; like
  CircleCI's upload steps they run even after a failed step.
- ``persist_to_workspace`` / ``attach_workspace``: copies to and from a workspace folder the
  caller shares between the jobs of one workflow.
- the environment of the test bed, not CircleCI's: ``AWS_ENDPOINT_URL_STS`` (the local STS),
  empty AWS config files, ``MNIST_MIRROR`` (the tests' loopback mirror; CircleCI uses the public
  ones), ``HOME`` and every ``/tmp/...`` value of the job's ``environment`` moved into the run's
  own folder (runs must not share files).
- ``no_output_timeout``, executors and resource classes are not emulated.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml

from testbed.repo import REPO_ROOT, git
from testbed.s3 import (
    BUCKET,
    PUSH_ROLE,
    READ_ROLE,
    RELEASE_ROLE,
    OidcIssuer,
    SeaweedFS,
    iam_config,
)

CONFIG = REPO_ROOT / ".circleci" / "config.yml"
REPOSITORY_URL = "git@github.com:example-org/mnist-pipeline.git"
MACHINE_SETTINGS = re.compile(r"PYENV_ROOT|PIP_\w+|SSL_CERT_\w+|REQUESTS_CA_BUNDLE|(?i:\w*_proxy)")
INSTALL_STEP = "Install the locked dependencies"
PYTHON_STEP = "Choose a supported Python"
VENV = Path(sys.prefix)
STAGE_RAN = re.compile(r"Running stage '([\w-]+)'")
STAGE_RESTORED = re.compile(r"Stage '([\w-]+)' is cached - skipping run, checking out outputs")


class RehearsalError(Exception):
    """The config uses something the rehearsal cannot run."""


@dataclass(frozen=True)
class Bed:
    """The test bed a job runs against."""

    issuer: OidcIssuer
    s3: SeaweedFS
    mnist_mirror: str


@dataclass
class Step:
    name: str
    returncode: int
    output: str
    started_s: float = 0.0  # seconds after the job started


@dataclass
class Run:
    """What a rehearsed job did."""

    job: str
    checkout: Path
    artifacts: Path
    env: dict[str, str]
    start_token: str
    steps: list[Step] = field(default_factory=list)

    @property
    def returncode(self) -> int:
        return next((step.returncode for step in self.steps if step.returncode), 0)

    @property
    def output(self) -> str:
        return "".join(
            f"== {step.name} (exit {step.returncode})\n{step.output}" for step in self.steps
        )

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    def stages_ran(self) -> list[str]:
        """Stages whose command DVC executed."""
        return STAGE_RAN.findall(self.output)

    def stages_restored(self) -> list[str]:
        """Stages DVC restored from the run-cache instead of running them."""
        return STAGE_RESTORED.findall(self.output)


def load_config(path: Path = CONFIG) -> dict:
    return yaml.safe_load(path.read_text())


def yaml_text(value: Any) -> str:
    """A parameter value as CircleCI writes it into a string (booleans in YAML's spelling)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def fill(node: Any, values: dict[str, Any], prefix: str) -> Any:
    """Replace ``<< prefix.name >>`` everywhere in ``node`` by ``values[name]``; a string that
    is only a placeholder takes the value itself (``parallelism: << ... >>`` is an integer)."""
    if isinstance(node, dict):
        return {key: fill(value, values, prefix) for key, value in node.items()}
    if isinstance(node, list):
        return [fill(item, values, prefix) for item in node]
    if not isinstance(node, str):
        return node
    pattern = re.compile(r"<<\s*" + re.escape(prefix) + r"\.([\w-]+)\s*>>")
    for name in pattern.findall(node):
        if name not in values:
            raise RehearsalError(f"no value for << {prefix}.{name} >>")
    whole = pattern.fullmatch(node.strip())
    if whole:
        return values[whole.group(1)]
    return pattern.sub(lambda match: yaml_text(values[match.group(1)]), node)


def parameter_values(declared: dict, given: dict[str, Any], where: str) -> dict[str, Any]:
    unknown = set(given) - set(declared)
    if unknown:
        raise RehearsalError(f"{where} has no parameters {sorted(unknown)}")
    return {name: given.get(name, spec.get("default")) for name, spec in declared.items()}


def expand(steps: list, commands: dict) -> list[tuple[str, dict]]:
    """The job's steps as (kind, arguments), reusable commands inlined."""
    expanded = []
    for step in steps:
        kind, arguments = (step, {}) if isinstance(step, str) else next(iter(step.items()))
        if kind in commands:
            command = commands[kind]
            values = parameter_values(command.get("parameters", {}), arguments or {}, kind)
            expanded += expand(fill(command["steps"], values, "parameters"), commands)
        elif kind == "run" and isinstance(arguments, str):
            expanded.append(("run", {"name": arguments, "command": arguments}))
        else:
            expanded.append((kind, arguments or {}))
    return expanded


def job_definition(config: dict, job: str, pipeline_parameters: dict[str, Any]) -> dict:
    """The job with pipeline parameters filled in and its steps expanded."""
    values = parameter_values(config.get("parameters", {}), pipeline_parameters, "the pipeline")
    definition = fill(config["jobs"][job], values, "pipeline.parameters")
    definition["steps"] = expand(definition["steps"], config.get("commands", {}))
    leftover = re.search(r"<<[^>]*>>", str(definition))
    if leftover:
        raise RehearsalError(f"the rehearsal cannot fill {leftover.group()} in job {job}")
    return definition


def executor_of(config: dict, job: str, pipeline_parameters: dict[str, Any]) -> dict:
    """The executor definition a job runs on, named through pipeline parameters or not."""
    values = parameter_values(config.get("parameters", {}), pipeline_parameters, "the pipeline")
    name = fill(config["jobs"][job]["executor"], values, "pipeline.parameters")
    if name not in config.get("executors", {}):
        raise RehearsalError(f"job {job} names the executor {name!r}, which the config lacks")
    return fill(config["executors"][name], values, "pipeline.parameters")


def truthy(value: Any) -> bool:
    """A logic-statement literal's truth, as CircleCI defines it: false, null, 0, NaN, "" and
    empty collections are false, everything else true."""
    if isinstance(value, float) and value != value:
        return False
    return bool(value)


def holds(statement: Any) -> bool:
    """A workflow ``when`` logic statement (``and``, ``or``, ``not``, ``equal``, ``matches`` or a
    literal), after pipeline values are filled in."""
    if isinstance(statement, dict) and len(statement) == 1:
        ((operator, operand),) = statement.items()
        if operator == "and":
            return all(holds(item) for item in operand)
        if operator == "or":
            return any(holds(item) for item in operand)
        if operator == "not":
            return not holds(operand)
        if operator == "equal":
            return all(item == operand[0] for item in operand[1:])
        if operator == "matches":
            return re.fullmatch(operand["pattern"], str(operand["value"])) is not None
        raise RehearsalError(f"the rehearsal does not know the logic operator {operator!r}")
    return truthy(statement)


def workflows_selected(config: dict, pipeline_parameters: dict[str, Any]) -> list[str]:
    """The workflows a pipeline with these parameters runs (``when`` true, or absent)."""
    values = parameter_values(config.get("parameters", {}), pipeline_parameters, "the pipeline")
    selected = []
    for name, workflow in config["workflows"].items():
        condition = fill(workflow.get("when", True), values, "pipeline.parameters")
        leftover = re.search(r"<<[^>]*>>", str(condition))
        if leftover:
            raise RehearsalError(f"workflow {name} depends on {leftover.group()}, not a parameter")
        if holds(condition):
            selected.append(name)
    return selected


def contexts_of(config: dict, job: str, pipeline_parameters: dict[str, Any]) -> list[str]:
    """The contexts the workflow that runs ``job`` gives it (its entry's ``context:``)."""
    names: list[str] = []
    for workflow in workflows_selected(config, pipeline_parameters):
        for entry in config["workflows"][workflow]["jobs"]:
            if isinstance(entry, dict) and job in entry:
                given = (entry[job] or {}).get("context", [])
                names += [given] if isinstance(given, str) else given
    return names


def copy_into(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
    elif source.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def circleci_wrapper(directory: Path) -> Path:
    """A ``circleci`` executable that runs ``testbed.circleci_cli``."""
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "circleci"
    wrapper.write_text(
        f"#!/bin/sh\nPYTHONPATH='{REPO_ROOT}'"
        f" exec '{sys.executable}' -m testbed.circleci_cli \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return directory


@dataclass
class Rehearsal:
    """One job of one workflow, run against ``bed`` from a commit of the ``origin`` repository."""

    bed: Bed
    origin: Path
    workspace: Path  # shared by the jobs of one workflow
    root: Path  # this run's own folder

    def environment(
        self,
        job: str,
        definition: dict,
        branch: str,
        commit: str,
        token: str,
        node_index: int,
        gpu_required: bool,
        context_variables: dict[str, str],
        real_install: bool,
    ) -> dict[str, str]:
        checkout = self.root / "project"
        home = self.root / "home"
        home.mkdir(parents=True, exist_ok=True)
        empty = self.root / "empty-aws-config"
        empty.touch()
        (self.root / "bash_env").touch()
        system_path = os.pathsep.join(
            p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV / "bin"
        )
        job_env = {
            name: str(self.root / "tmp" / value.removeprefix("/tmp/"))
            if str(value).startswith("/tmp/")
            else str(value)
            for name, value in (definition.get("environment") or {}).items()
        }
        env = {
            "PATH": f"{circleci_wrapper(self.root / 'bin')}{os.pathsep}{system_path}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "CI": "true",
            "CIRCLECI": "true",
            "CIRCLE_JOB": job,
            "CIRCLE_BRANCH": branch,
            "CIRCLE_SHA1": commit,
            "CIRCLE_NODE_INDEX": str(node_index),
            "CIRCLE_NODE_TOTAL": str(definition.get("parallelism", 1)),
            "CIRCLE_WORKING_DIRECTORY": str(checkout),
            "CIRCLE_OIDC_TOKEN_V2": token,
            "CIRCLE_REPOSITORY_URL": REPOSITORY_URL,
            "CIRCLE_PROJECT_USERNAME": "example-org",
            "CIRCLE_PROJECT_REPONAME": "mnist-pipeline",
            "CIRCLE_BUILD_URL": "https://circleci.com/gh/example-org/mnist-pipeline/1",
            "CIRCLE_WORKFLOW_JOB_ID": str(uuid.uuid4()),
            "BASH_ENV": str(self.root / "bash_env"),
            "AWS_ROLE_ARN_PUSH": PUSH_ROLE,
            "AWS_ROLE_ARN_READ": READ_ROLE,
            "AWS_ROLE_ARN_RELEASE": RELEASE_ROLE,
            **job_env,
            **context_variables,
            # the test bed's, not CircleCI's
            "AWS_ENDPOINT_URL_STS": self.bed.s3.endpoint,
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
            "MNIST_MIRROR": self.bed.mnist_mirror,
            "MNIST_PUBLIC_MIRRORS": "",
            "REHEARSAL_OIDC_MINT_URL": self.bed.issuer.mint_url(f"refs/heads/{branch}"),
        }
        if not gpu_required:
            env["REHEARSAL_CPU_ONLY"] = "1"
        if real_install:
            env.update({k: v for k, v in os.environ.items() if MACHINE_SETTINGS.fullmatch(k)})
        for value in job_env.values():
            if value.startswith(str(self.root / "tmp")):
                Path(value).parent.mkdir(parents=True, exist_ok=True)
        return env

    def checkout(self, directory: Path, branch: str, commit: str, env: dict[str, str]) -> str:
        subprocess.run(["git", "clone", "-q", str(self.origin), str(directory)], check=True)
        git(directory, "checkout", "-q", "-B", branch, commit)
        dvc = str(VENV / "bin" / "dvc")
        for option, value in (("url", f"s3://{BUCKET}/dvc"), ("endpointurl", self.bed.s3.endpoint)):
            subprocess.run(
                [dvc, "remote", "modify", "--local", "storage", option, value],
                cwd=directory,
                env=env,
                check=True,
                capture_output=True,
            )
        return f"cloned {self.origin} at {commit} as {branch}; DVC remote -> test bed\n"

    def run(
        self,
        job: str,
        branch: str,
        commit: str,
        *,
        pipeline_parameters: dict[str, Any] | None = None,
        node_index: int = 0,
        token_lifetime_s: int = 3600,
        expire_token_before: str | None = None,
        gpu_required: bool = False,
        contexts: dict[str, dict[str, str]] | None = None,
        real_install: bool = False,
    ) -> Run:
        """Run ``job`` as CircleCI would for a push of ``commit`` to ``branch``.

        ``expire_token_before``: the name of a step before which the job's start token must have
        expired (the rehearsal waits for it): a long training, compressed. ``contexts``: the
        organisation's contexts (name -> variables). ``real_install``: the set-up's Python choice
        and install steps run as written.
        """
        config = yaml.safe_load(git(self.origin, "show", f"{commit}:.circleci/config.yml"))
        definition = job_definition(config, job, pipeline_parameters or {})
        token = self.bed.issuer.mint(ref=f"refs/heads/{branch}", lifetime_s=token_lifetime_s)
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]
        given = contexts_of(config, job, pipeline_parameters or {})
        context_variables = {
            name: value
            for context in given
            for name, value in (contexts or {}).get(context, {}).items()
        }
        env = self.environment(
            job,
            definition,
            branch,
            commit,
            token,
            node_index,
            gpu_required,
            context_variables,
            real_install,
        )
        project = Path(env["CIRCLE_WORKING_DIRECTORY"])
        artifacts = self.root / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        result = Run(job, project, artifacts, env, token)
        failed = False
        started = time.monotonic()
        for kind, arguments in definition["steps"]:
            when = arguments.get("when", "on_success") if kind == "run" else "on_success"
            if kind in ("store_artifacts", "store_test_results"):
                when = "always"
            if (when == "on_success" and failed) or (when == "on_fail" and not failed):
                continue
            name = arguments.get("name", kind)
            if name == expire_token_before:
                time.sleep(max(0.0, expires + 1 - time.time()))
            at = time.monotonic() - started
            step = self.step(kind, arguments, project, artifacts, branch, commit, env, real_install)
            step.started_s = at
            result.steps.append(step)
            failed = failed or step.returncode != 0
        return result

    def step(
        self,
        kind: str,
        arguments: dict,
        project: Path,
        artifacts: Path,
        branch: str,
        commit: str,
        env: dict[str, str],
        real_install: bool,
    ) -> Step:
        name = arguments.get("name", kind)
        if kind == "checkout":
            return Step(kind, 0, self.checkout(project, branch, commit, env))
        if kind in ("restore_cache", "save_cache"):
            return Step(kind, 0, "stand-in: no cache (the rehearsal uses the installed venv)\n")
        if kind == "store_artifacts":
            target = artifacts / arguments.get("destination", arguments["path"])
            copy_into(project / arguments["path"], target)
            return Step(f"{kind} {arguments['path']}", 0, f"copied to {target}\n")
        if kind == "store_test_results":
            copy_into(project / arguments["path"], artifacts / "test-results")
            return Step(kind, 0, "copied to test-results\n")
        if kind == "persist_to_workspace":
            root = project / arguments["root"]
            for path in arguments["paths"]:
                copy_into(root / path, self.workspace / path)
            return Step(kind, 0, f"copied {arguments['paths']} to the workspace\n")
        if kind == "attach_workspace":
            copy_into(self.workspace, project / arguments["at"])
            return Step(kind, 0, "workspace copied in\n")
        if kind != "run":
            raise RehearsalError(f"the rehearsal does not know the step {kind!r}")
        command = arguments["command"]
        if name == INSTALL_STEP and not real_install:
            command = f"ln -s '{VENV}' .venv"
        elif name == PYTHON_STEP and not real_install:
            command = "echo 'stand-in: the Python running the rehearsal'"
        step_env = {**env, **{k: str(v) for k, v in (arguments.get("environment") or {}).items()}}
        shell = arguments.get("shell", "/bin/bash -eo pipefail").split()
        completed = subprocess.run(
            [*shell, "-c", command],
            cwd=project / arguments.get("working_directory", "."),
            env=step_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1800,
        )
        return Step(name, completed.returncode, completed.stdout)


def main(argv: list[str]) -> int:
    """Rehearse one job on a copy of this working tree, with its own test bed."""
    from testbed.repo import copy_of_repository

    parser = argparse.ArgumentParser(
        prog="python -m testbed.rehearsal",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("job")
    parser.add_argument("--branch", default="main")
    parser.add_argument("--param", action="append", default=[], help="pipeline parameter k=v")
    parser.add_argument("--node-index", type=int, default=0)
    parser.add_argument("--gpu-required", action="store_true")
    parser.add_argument("--mnist-mirror", default=str(REPO_ROOT.parent / "shared/datasets/mnist"))
    options = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="rehearsal-"))
    origin = copy_of_repository(root / "origin")
    git(origin, "branch", "-M", "main")
    issuer = OidcIssuer().start()
    s3 = SeaweedFS(root / "seaweedfs", iam_config(issuer.url)).start()
    try:
        rehearsal = Rehearsal(
            Bed(issuer, s3, options.mnist_mirror), origin, root / "workspace", root / "run"
        )
        parameters = dict(p.split("=", 1) for p in options.param)
        run = rehearsal.run(
            options.job,
            options.branch,
            git(origin, "rev-parse", "HEAD").strip(),
            pipeline_parameters=parameters,
            node_index=options.node_index,
            gpu_required=options.gpu_required,
        )
        print(run.output)
        print(f"rehearsal: {options.job} exited {run.returncode}; artifacts in {run.artifacts}")
        return run.returncode
    finally:
        s3.stop()
        issuer.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
