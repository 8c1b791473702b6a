"""Bring the champion, a release of the bucket, into ``champion/``, where ``test`` compares it.

    python -m ci_jobs.champion                    # the release test.champion names, if missing
    python -m ci_jobs.champion --release stable   # the release in production becomes champion
    python -m ci_jobs.champion --release latest   # the newest release becomes the champion
    python -m ci_jobs.champion --release 3        # release 3 becomes the champion

The release ``N`` of ``package.model_name`` is downloaded from
``s3://<bucket>/releases/<model_name>/N/`` (the DVC remote's bucket) into
``champion/<model_name>/N/``, every file checked against its MANIFEST.json as it streams
(``serving.fetch``, as a serving host does), then renamed into place; other releases of the model
in ``champion/`` are removed, since the whole folder is ``test``'s dependency. With
``--release``, ``test.champion`` in params.yaml is set to ``N`` (comments kept), so the choice is
committed and reaches ``dvc.lock`` by hash. ``stable`` is the release the serving hosts label
stable (``labels/<model_name>.json``, which ``serving.sync`` publishes; before any host did, the
newest release). Nothing released yet changes nothing: the gate stays absolute, as TFX skips its
comparison on a first run. Credentials: the standard AWS
chain (CI: the push or read role, which may read releases/).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from ruamel.yaml import YAML

from ci_jobs.bucket import BucketError, dvc_bucket, s3_client
from classifier.champion import release_dir, verify_release
from classifier.errors import StageError, run_stage
from classifier.params import PARAMS_FILE, load_params
from classifier.paths import Paths
from serving import Refused, published_labels
from serving.fetch import download, listing
from serving.layout import parse_version
from serving.manifest import NAME as MANIFEST


def wanted_release(
    requested: str | None, setting: int | str, published: list[int], stable: int | None
) -> int | None:
    """The release to bring: the one asked for (``stable``: what the serving hosts label stable,
    before any host published labels the newest release), else the one ``test.champion`` names."""
    if requested is None:
        return setting if isinstance(setting, int) else None
    if requested == "latest" or (requested == "stable" and stable is None):
        return max(published, default=None)
    if requested == "stable":
        return stable
    version = parse_version(requested)
    if version is None:
        raise StageError(f"--release {requested!r} is not stable, latest or a version number")
    return version


def bring(s3, bucket: str, model: str, version: int, objects: dict[str, int], paths: Paths) -> bool:
    """Put release ``version`` in place (False: it was already there, intact)."""
    target = release_dir(paths, model, version)
    try:
        verify_release(target, model, version)
        return False
    except StageError:
        pass  # missing or damaged: download it
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".incoming-{version}-", dir=target.parent))
    try:
        download(s3, bucket, model, version, objects, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def remove_others(paths: Paths, model: str, keep: int) -> list[Path]:
    """Other releases of the model in ``champion/``: not compared, so not a dependency."""
    folder = paths.champion_dir / model
    others = [
        path
        for path in folder.iterdir()
        if path.is_dir() and parse_version(path.name) not in (None, keep)
    ]
    for path in others:
        shutil.rmtree(path)
    return others


def set_champion(params_file: Path, version: int) -> None:
    """``test.champion: N`` in params.yaml, its comments and layout kept (ruamel round-trip)."""
    yaml = YAML()
    yaml.preserve_quotes = True
    document = yaml.load(params_file.read_text())
    document["test"]["champion"] = version
    with params_file.open("w") as stream:
        yaml.dump(document, stream)
    load_params(params_file)  # still valid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ci_jobs.champion", description=__doc__)
    parser.add_argument("--release", help="stable, latest or a version number; sets test.champion")
    args = parser.parse_args(argv)
    paths = Paths()
    try:
        params = load_params()
        model = params.package.model_name
        if args.release is None and not isinstance(params.test.champion, int):
            print(f"champion: test.champion is {params.test.champion!r}: no release to bring")
            return 0
        bucket = dvc_bucket()
        s3 = s3_client(bucket)
        versions = listing(s3, bucket.name, model)
        published = sorted(v for v, objects in versions.items() if MANIFEST in objects)
        stable = None
        if args.release == "stable":
            stable = published_labels.stable_version(s3, bucket.name, model)
            if stable is None:
                print(
                    f"champion: no serving host published {model}'s labels yet"
                    f" ({published_labels.key(model)}): the newest release stands for stable"
                )
        version = wanted_release(args.release, params.test.champion, published, stable)
        if version is None:
            print(
                f"champion: s3://{bucket.name}/releases/{model}/ holds no release yet: no champion,"
                " the gate stays absolute"
            )
            return 0
        if version not in published:
            raise StageError(
                f"release {version} of {model} is not published in s3://{bucket.name}/releases/"
                f"{model}/ (published: {', '.join(map(str, published)) or 'none'})"
            )
        brought = bring(s3, bucket.name, model, version, versions[version], paths)
        removed = remove_others(paths, model, version)
        if args.release is not None:
            set_champion(PARAMS_FILE, version)
    except (StageError, BucketError, Refused, published_labels.LabelsError) as error:
        print(f"champion: error: {error}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as error:
        print(
            f"champion: error: the bucket refused or failed ({error}); check the role (it must"
            " read releases/) and the endpoint",
            file=sys.stderr,
        )
        return 1
    where = release_dir(Paths, model, version)
    older = f", {len(removed)} older removed" if removed else ""
    print(
        f"champion: release {version} {'downloaded and checked' if brought else 'already'} in"
        f" {where}{older}; test.champion is {version}"
    )
    return 0


if __name__ == "__main__":
    run_stage("champion", main)
