"""No credentials in the repository: not in DVC's config (any section), not in any tracked file.

CI gets short-lived role sessions from its OIDC token and a laptop uses a profile in the
git-ignored `.dvc/config.local`, so nothing that git tracks may hold AWS key material.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from configobj import ConfigObj

from testbed.repo import REPO_ROOT, git

# Options that carry credentials, or point at them, in a DVC remote (dvc-s3's config schema);
# they belong in `.dvc/config.local` (`dvc remote modify --local`), never in the committed file.
CREDENTIAL_OPTIONS = {
    "access_key_id",
    "secret_access_key",
    "session_token",
    "profile",
    "credentialpath",
    "configpath",
}
KEY_MATERIAL = [
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b")),
    (
        "AWS secret access key",
        re.compile(
            r"(?i)(?:secret_?access_?key|SecretAccessKey)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{40}"
        ),
    ),
    (
        "AWS session token",
        re.compile(r"(?i)(?:session_?token|SessionToken)[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9/+=]{80,}"),
    ),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
]
# Built by concatenation, so that this file itself holds no key material.
ACCESS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"


def key_material(text: str) -> list[str]:
    """What kinds of key material ``text`` holds."""
    return [kind for kind, pattern in KEY_MATERIAL if pattern.search(text)]


def _options(section: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    for name, value in section.items():
        if isinstance(value, dict):
            yield from _options(value, (*path, name))
        else:
            yield ".".join((*path, name)), str(value)


def config_credentials(config_text: str) -> list[str]:
    """Every option of every section, parsed as DVC parses the file, that holds a credential."""
    config = ConfigObj(config_text.splitlines())
    findings = []
    for option, value in _options(config):
        if option.rsplit(".", 1)[-1].lower() in CREDENTIAL_OPTIONS:
            findings.append(f"{option}: credential option")
        findings += [f"{option}: {kind}" for kind in key_material(f"{option} = {value}")]
    return findings


def test_committed_dvc_config_names_a_remote_and_holds_no_credentials() -> None:
    text = (REPO_ROOT / ".dvc/config").read_text()
    config = ConfigObj(text.splitlines())
    assert config["core"]["remote"] == "storage"
    assert config['remote "storage"']["url"].startswith("s3://")
    assert config_credentials(text) == []
    assert git(REPO_ROOT, "check-ignore", ".dvc/config.local").strip() == ".dvc/config.local"


def _with_options(config_text: str, section: str, **options: str) -> str:
    """The config with ``options`` added to ``section``, as `dvc remote modify` would write them."""
    config = ConfigObj(config_text.splitlines())
    config.setdefault(section, {}).update(options)
    return "\n".join(config.write()) + "\n"


def test_credentials_are_found_in_any_section() -> None:
    committed = (REPO_ROOT / ".dvc/config").read_text()
    remote = 'remote "storage"'
    keys = _with_options(committed, remote, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY)
    assert config_credentials(keys) == [
        'remote "storage".access_key_id: credential option',
        'remote "storage".access_key_id: AWS access key id',
        'remote "storage".secret_access_key: credential option',
        'remote "storage".secret_access_key: AWS secret access key',
    ]
    profile = _with_options(committed, remote, profile="my-laptop")
    assert config_credentials(profile) == ['remote "storage".profile: credential option']
    disguised = _with_options(committed, 'remote "backup"', url=f"s3://b/{ACCESS_KEY}")
    assert config_credentials(disguised) == ['remote "backup".url: AWS access key id']


def test_no_tracked_file_holds_key_material() -> None:
    tracked = git(REPO_ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "-z")
    findings = {}
    for name in filter(None, tracked.split("\0")):
        path = REPO_ROOT / name
        if path.is_file():
            found = key_material(path.read_bytes().decode("utf-8", errors="replace"))
            if found:
                findings[name] = found
    assert findings == {}


def test_key_material_is_recognised_in_the_forms_it_is_written() -> None:
    assert key_material(f"export AWS_ACCESS_KEY_ID={ACCESS_KEY}") == ["AWS access key id"]
    assert key_material(f'aws_secret_access_key = "{SECRET_KEY}"') == ["AWS secret access key"]
    assert key_material(f'{{"SecretAccessKey": "{SECRET_KEY}"}}') == ["AWS secret access key"]
    token = "IQoJb3JpZ2luX2VjE" + "A" * 100
    assert key_material(f"aws_session_token={token}") == ["AWS session token"]
    assert key_material("-----BEGIN RSA " + "PRIVATE KEY-----") == ["private key"]
    assert key_material(f"md5: {'0' * 32}\nsha1 {'a' * 40}") == []  # DVC's own hashes are not keys
