"""A real S3 + STS + OIDC test bed on 127.0.0.1: SeaweedFS (``weed mini``) trusting a local issuer.

The issuer mints RS256 tokens shaped like CircleCI's and serves its discovery document and JWKS
at CircleCI's paths; SeaweedFS's STS exchanges them for role sessions according to trust policies.
Facts about this set-up are in ../shared/notes/seaweedfs-oidc.md.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from testbed.loopback import Loopback, Quiet, free_ports
from testbed.repo import DvcRepo

ORG_ID = "6f0e5cc4-0000-4000-8000-00000000c1c1"
PROJECT_ID = "9a1b2c3d-0000-4000-8000-0000000000aa"
OTHER_PROJECT_ID = "9a1b2c3d-0000-4000-8000-0000000000bb"
BUCKET = "mnist-dvc"
PROVIDER = "circleci"
PUSH_ROLE = "arn:aws:iam::role/MnistPipelinePush"
READ_ROLE = "arn:aws:iam::role/MnistPipelineRead"
RELEASE_ROLE = "arn:aws:iam::role/MnistPipelineRelease"
MAIN_REF = "refs/heads/main"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class OidcIssuer:
    """An OIDC issuer at ``http://127.0.0.1:<port>/org/<org-id>``, as CircleCI lays it out."""

    key: rsa.RSAPrivateKey = field(default_factory=new_key)
    kid: str = "test-key-1"

    def start(self) -> OidcIssuer:
        issuer = self

        class Handler(Quiet, BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith(issuer.mint_path):
                    self.send_token()
                    return
                documents = {
                    f"/org/{ORG_ID}/.well-known/openid-configuration": issuer.discovery(),
                    f"/org/{ORG_ID}/.well-known/jwks-pub.json": issuer.jwks(),
                }
                body = documents.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def send_token(self) -> None:
                """``circleci run oidc get`` of the rehearsal (testbed.circleci_cli) asks here."""
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                data = issuer.mint(ref=query["ref"][0], audience=query["aud"][0]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/jwt")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.loopback = Loopback(Handler)
        return self

    def stop(self) -> None:
        self.loopback.stop()

    @property
    def url(self) -> str:
        return f"{self.loopback.url}/org/{ORG_ID}"

    mint_path = f"/org/{ORG_ID}/rehearsal-mint"

    def mint_url(self, ref: str) -> str:
        """Where a job of ``ref`` gets fresh tokens (for any audience it asks) on loopback."""
        return f"{self.loopback.url}{self.mint_path}?" + urllib.parse.urlencode({"ref": ref})

    def discovery(self) -> dict:
        return {
            "issuer": self.url,
            "jwks_uri": f"{self.url}/.well-known/jwks-pub.json",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def jwks(self) -> dict:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def mint(
        self,
        ref: str = MAIN_REF,
        project: str = PROJECT_ID,
        audience: str = ORG_ID,
        lifetime_s: int = 3600,
        signing_key: rsa.RSAPrivateKey | None = None,
    ) -> str:
        """A token shaped like CircleCI's ``CIRCLE_OIDC_TOKEN_V2``."""
        now = int(time.time())
        origin = "github.com/example/mnist-pipeline"
        claims = {
            "iss": self.url,
            "aud": audience,
            "sub": f"org/{ORG_ID}/project/{project}/user/user-1/vcs-origin/{origin}/vcs-ref/{ref}",
            "iat": now - 5,
            "nbf": now - 5,
            "exp": now + lifetime_s,
            "oidc.circleci.com/project-id": project,
            "oidc.circleci.com/vcs-origin": origin,
            "oidc.circleci.com/vcs-ref": ref,
            "oidc.circleci.com/context-ids": [],
        }
        return jwt.encode(
            claims, signing_key or self.key, algorithm="RS256", headers={"kid": self.kid}
        )


def iam_config(issuer_url: str) -> dict:
    """Three roles: push, trusted only for main of one project; read-only, for all its branches;
    release, main only, may read and add objects (write-once is enforced by If-None-Match)."""
    bucket_arns = [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]
    session = {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]}
    read_actions = ["s3:GetObject", "s3:ListBucket", "s3:HeadObject", "s3:GetBucketLocation"]
    project_sub = f"org/{ORG_ID}/project/{PROJECT_ID}/user/*"

    def policy(name: str, actions: list[str]) -> dict:
        statement = {"Effect": "Allow", "Action": actions, "Resource": bucket_arns}
        return {
            "name": name,
            "document": {"Version": "2012-10-17", "Statement": [statement, session]},
        }

    def role(arn: str, policy_name: str, equals: dict) -> dict:
        trust = {
            "Effect": "Allow",
            "Principal": {"Federated": PROVIDER},
            "Action": ["sts:AssumeRoleWithWebIdentity"],
            "Condition": {
                "StringEquals": {"oidc:aud": ORG_ID, **equals},
                "StringLike": {"oidc:sub": project_sub},
            },
        }
        return {
            "roleName": arn.rsplit("/", 1)[1],
            "roleArn": arn,
            "attachedPolicies": [policy_name],
            "trustPolicy": {"Version": "2012-10-17", "Statement": [trust]},
        }

    return {
        "sts": {
            "tokenDuration": "1h",
            "maxSessionLength": "12h",
            "issuer": "seaweedfs-sts",
            "signingKey": base64.b64encode(secrets.token_bytes(32)).decode(),
        },
        "providers": [
            {
                "name": PROVIDER,
                "type": "oidc",
                "enabled": True,
                "config": {"issuer": issuer_url, "clientId": ORG_ID},
            }
        ],
        "policies": [
            policy("MnistPush", ["s3:*"]),
            policy("MnistRead", read_actions),
            policy("MnistRelease", [*read_actions, "s3:PutObject"]),
        ],
        "roles": [
            role(PUSH_ROLE, "MnistPush", {"oidc:oidc.circleci.com/vcs-ref": MAIN_REF}),
            role(READ_ROLE, "MnistRead", {}),
            role(RELEASE_ROLE, "MnistRelease", {"oidc:oidc.circleci.com/vcs-ref": MAIN_REF}),
        ],
    }


class SeaweedFS:
    """``weed mini`` on loopback ports with a temporary data dir; restartable on the same ports."""

    def __init__(self, workdir: Path, iam: dict):
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.iam_file = workdir / "iam.json"
        self.iam_file.write_text(json.dumps(iam))
        names = ("master", "volume", "filer", "s3")
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def bucket_folder(self) -> str:
        return f"http://127.0.0.1:{self.ports['filer']}/buckets/{BUCKET}/"

    def command(self) -> list[str]:
        weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or "weed"
        return [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            f"-s3.port={self.ports['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.ui=false",
            "-webdav=false",
            "-master.telemetry=false",
            f"-bucket={BUCKET}",
            f"-s3.iam.config={self.iam_file}",
        ]

    def start(self, timeout_s: float = 60) -> SeaweedFS:
        log = (self.workdir / "weed.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited: {(self.workdir / 'weed.log').read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=1)
                # -bucket creates the bucket a moment after S3 answers; the filer shows it
                urllib.request.urlopen(self.bucket_folder, timeout=1)
                return self
            time.sleep(0.2)
        raise RuntimeError("weed did not become ready")

    def stop(self, abruptly: bool = False) -> None:
        """SIGTERM (then SIGKILL after 15 s), or straight SIGKILL: a crash mid-request."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL if abruptly else signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def _client(service: str, endpoint: str, **credentials):
    import botocore.config
    import botocore.session

    config = (
        botocore.config.Config(signature_version=botocore.UNSIGNED) if not credentials else None
    )
    return botocore.session.get_session().create_client(
        service, endpoint_url=endpoint, region_name="us-east-1", config=config, **credentials
    )


def role_client(endpoint: str, token: str, role: str, session_name: str):
    """An S3 client holding a session of ``role``, assumed with ``token``."""
    session = _client("sts", endpoint).assume_role_with_web_identity(
        RoleArn=role, RoleSessionName=session_name, WebIdentityToken=token
    )["Credentials"]
    return _client(
        "s3",
        endpoint,
        aws_access_key_id=session["AccessKeyId"],
        aws_secret_access_key=session["SecretAccessKey"],
        aws_session_token=session["SessionToken"],
    )


def dvc_object_key(md5: str, prefix: str) -> str:
    """Where a DVC remote at ``s3://<bucket>/<prefix>`` keeps the object with this md5."""
    return f"{prefix}/files/md5/{md5[:2]}/{md5[2:]}"


def bucket_listing(endpoint: str, token: str) -> dict[str, str]:
    """Every object in the bucket (key -> ETag), read through a read-only role session."""
    s3 = role_client(endpoint, token, READ_ROLE, "pytest-inspect")
    listing = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        listing.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return listing


def with_credentials(repo: DvcRepo, bed: SeaweedFS, token: str, role: str) -> dict[str, str]:
    """Environment of a CI job holding ``token``, handed to the AWS chain as CI does it."""
    token_file = repo.repo.parent / f"{repo.repo.name}-web-identity-token"
    empty = repo.repo.parent / "empty-aws-config"
    empty.touch()
    env = {
        "CIRCLE_OIDC_TOKEN_V2": token,
        "AWS_ROLE_ARN": role,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token_file),
        "AWS_ROLE_SESSION_NAME": "pytest-ci-job",
        "AWS_ENDPOINT_URL_STS": bed.endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    token_file.unlink(missing_ok=True)
    handed = repo.run(sys.executable, "-m", "ci_jobs.web_identity", env=env)
    if handed.returncode == 0:
        assert token_file.stat().st_mode & 0o777 == 0o600
    return env


def remote(repo: DvcRepo, action: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return repo.run(sys.executable, "-m", "ci_jobs.remote", action, *args, env=env)


def use_test_bucket(repo: DvcRepo, bed: SeaweedFS) -> None:
    """What a user does for an on-prem store: local overrides, nothing committed."""
    for option, value in (("url", f"s3://{BUCKET}/pipeline"), ("endpointurl", bed.endpoint)):
        result = repo.dvc("remote", "modify", "--local", "storage", option, value)
        assert result.returncode == 0, result.stderr


def role_session(bed: SeaweedFS, issuer: OidcIssuer, role: str, ref: str = "refs/heads/main"):
    """An S3 client holding a session of ``role``, assumed with a token for ``ref``."""
    credentials = _client("sts", bed.endpoint).assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="pytest-role", WebIdentityToken=issuer.mint(ref=ref)
    )["Credentials"]
    return _client(
        "s3",
        bed.endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
