"""The CI storage stack (infra/ci-storage.yaml) lints clean and is as tight as infra/README says.

cfn-lint checks the template against CloudFormation's schemas, but not the trust policies: they
are JSON strings inside Fn::Sub (their condition keys contain the org id, and a map key cannot be
an intrinsic function). So the template is also rendered with sample parameters: intrinsics
resolved, trust policies parsed. The rendered trust policies are linted too, and the security
checks below run on those real values, evaluating each trust policy against CircleCI-shaped
tokens the way IAM would. Every check is shown to fire when its property is removed.
The serving role (TensorFlow Serving hosts) is held to the same checks: no CircleCI token may
assume it, only EC2 may, and it reads releases/ and nothing else.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import lint
from cfnlint.config import ManualArgs

from testbed.cloudformation import (
    ACCOUNT,
    BED_RELEASE_ROLE,
    BED_SERVING_ROLE,
    BUCKET,
    BUCKET_ARN,
    CI_ROLES,
    CREATED_PROVIDER_ARN,
    EXISTING_PROVIDER_ARN,
    ISSUER,
    ORG,
    ORIGIN,
    OTHER_PROJECT,
    PROJECT,
    ROLES,
    TEXT,
    Renderer,
    bed_role,
    decode,
    render,
    template_policy,
)
from testbed.s3 import role_session

REPO_ROOT = Path(__file__).resolve().parent.parent
INFRA_README = REPO_ROOT / "infra" / "README.md"


# --- rendering: the template's intrinsics resolved for one set of parameters ------------------


# --- IAM semantics needed to evaluate a trust policy ------------------------------------------


def string_like(pattern: str, value: str) -> bool:
    """IAM's StringLike: case-sensitive, whole string, '*' any run (including '/'), '?' one."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def listed(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# For a CircleCI provider AWS evaluates only the standard claims (aud, sub, ...); custom claims
# such as oidc.circleci.com/vcs-ref are not condition keys, so a condition on one would never
# match. The branch is pinned through `sub`, as CircleCI's own AWS example does.
# A Kubernetes cluster's service-account tokens (EKS IRSA: audience sts.amazonaws.com, subject
# system:serviceaccount:<namespace>:<name>), for the optional TrainingClusterOidcIssuer.
CLUSTER = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
CLUSTER_PROVIDER_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{CLUSTER}"
CLUSTER_PARAMETERS = {"TrainingClusterOidcIssuer": CLUSTER, "TrainingNamespace": "mnist"}
TRUST_KEYS = {
    f"{ISSUER}:aud": "aud",
    f"{ISSUER}:sub": "sub",
    f"{CLUSTER}:aud": "aud",
    f"{CLUSTER}:sub": "sub",
}
OPERATORS = {
    "StringEquals": lambda wanted, value: value in wanted,
    "StringLike": lambda wanted, value: any(string_like(p, value) for p in wanted),
    "StringNotEquals": lambda wanted, value: value not in wanted,
    "StringNotLike": lambda wanted, value: not any(string_like(p, value) for p in wanted),
}


def trust_allows(document: dict, provider_arn: str, claims: dict[str, str]) -> bool:
    """Whether IAM would let a token with ``claims`` from ``provider_arn`` assume the role."""
    allowed = False
    for statement in listed(document["Statement"]):
        federated = listed(statement.get("Principal", {}).get("Federated", []))
        actions = listed(statement.get("Action", []))
        if provider_arn not in federated or "sts:AssumeRoleWithWebIdentity" not in actions:
            continue
        matched = True
        for operator, tests in statement.get("Condition", {}).items():
            assert operator in OPERATORS, f"unexpected operator {operator} in a trust policy"
            for key, wanted in tests.items():
                assert key in TRUST_KEYS, f"{key} is not a condition key of the token's issuer"
                matched &= OPERATORS[operator](listed(wanted), claims[TRUST_KEYS[key]])
        if statement["Effect"] == "Deny" and matched:
            return False
        allowed |= statement["Effect"] == "Allow" and matched
    return allowed


def token(ref: str, project: str = PROJECT, origin: str = ORIGIN, aud: str = ORG) -> dict:
    """The claims of a CircleCI V2 token (CIRCLE_OIDC_TOKEN_V2) that AWS can test."""
    user = "99999999-aaaa-bbbb-cccc-dddddddddddd"
    sub = f"org/{ORG}/project/{project}/user/{user}/vcs-origin/{origin}/vcs-ref/{ref}"
    return {"aud": aud, "sub": sub}


MAIN = "refs/heads/main"
TOKENS = {
    "main": token(MAIN),
    "branch": token("refs/heads/feature/new-model"),
    "tag": token("refs/tags/v1.0.0"),
    # Branches named so that `sub` ends like main's: IAM's '*' matches across '/'.
    "branch smuggling main": token(f"refs/heads/x/vcs-origin/{ORIGIN}/vcs-ref/{MAIN}"),
    "branch smuggling a ref": token(f"refs/heads/x/vcs-ref/{MAIN}"),
    "fork smuggling the origin": token(
        f"refs/heads/x/vcs-origin/{ORIGIN}/vcs-ref/{MAIN}", origin="github.com/evil/fork"
    ),
    "fork's main": token(MAIN, origin="github.com/evil/fork"),
    "another project's main": token(MAIN, project=OTHER_PROJECT),
    "another audience": token(MAIN, aud="00000000-0000-0000-0000-000000000000"),
    "V1 token": {"aud": ORG, "sub": f"org/{ORG}/project/{PROJECT}/user/anyone"},
}


def pod_token(
    namespace: str = "mnist", account: str = "mnist-train", aud: str = "sts.amazonaws.com"
) -> dict:
    """The claims of a pod's projected service-account token that AWS can test."""
    return {"aud": aud, "sub": f"system:serviceaccount:{namespace}:{account}"}


POD_TOKENS = {
    "training pods": pod_token(),
    "another service account": pod_token(account="default"),
    "another namespace": pod_token(namespace="default"),
    "another audience": pod_token(aud=ORG),
}
# The training pods pull with the read role and the chief pushes with the push role.
EXPECTED_POD_TRUST = {"push": {"training pods"}, "read": {"training pods"}}
MAIN_ONLY = {"main"}
EVERY_BRANCH = {"main", "branch", "tag"}
EXPECTED_TRUST = {"push": MAIN_ONLY, "read": EVERY_BRANCH, "release": MAIN_ONLY, "serving": set()}
# What each role may list (s3:prefix) and read (s3:GetObject), exactly.
LISTS = {
    "push": ["dvc/*", "releases/*", "labels/*", "monitoring/*"],  # the champion; the monitor
    "read": ["dvc/*", "releases/*", "labels/*"],
    "release": ["dvc/*", "releases/*"],
    "serving": ["releases/*"],
}
READS = {
    role: [f"{BUCKET_ARN}/{prefix}" for prefix in prefixes] for role, prefixes in LISTS.items()
}
LABELS = f"{BUCKET_ARN}/labels/*"  # which release the hosts label stable: the champion
MONITORING = f"{BUCKET_ARN}/monitoring/*"  # captured requests, write-once
CLAIM = f"{BUCKET_ARN}/monitoring/*/retrain-requested.json"  # the monitor's claim on a day
SERVING_TRUST = [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
]


# --- the security properties, as a list of what is wrong ---------------------------------------


def role_statements(rendered: dict, role: str) -> list[dict]:
    policies = rendered["Resources"][ROLES[role]]["Properties"].get("Policies", [])
    return [
        statement
        for policy in policies
        for statement in listed(policy["PolicyDocument"]["Statement"])
    ]


def allowed_resources(statements: list[dict], action: str) -> list[str]:
    """Resources on which an Allow statement grants ``action``."""
    return [
        resource
        for statement in statements
        if statement["Effect"] == "Allow" and action in listed(statement["Action"])
        for resource in listed(statement["Resource"])
    ]


def bucket_problems(rendered: dict) -> list[str]:
    problems = []
    properties = rendered["Resources"]["Bucket"]["Properties"]
    if properties.get("VersioningConfiguration", {}).get("Status") != "Enabled":
        problems.append("bucket versioning is not Enabled")
    block = properties.get("PublicAccessBlockConfiguration", {})
    flags = ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets")
    if any(block.get(flag) is not True for flag in flags):
        problems.append("public access is not blocked in all four ways")
    rules = properties.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [])
    algorithms = {
        rule.get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for rule in rules
    }
    if not algorithms & {"AES256", "aws:kms", "aws:kms:dsse"}:
        problems.append("default encryption is not set")
    return problems


def bucket_policy_problems(rendered: dict) -> list[str]:
    problems = []
    statements = [
        statement
        for resource in rendered["Resources"].values()
        if resource["Type"] == "AWS::S3::BucketPolicy"
        for statement in listed(resource["Properties"]["PolicyDocument"]["Statement"])
    ]

    def denies(action: str, resource: str, condition: dict | None = None) -> bool:
        return any(
            statement["Effect"] == "Deny"
            and statement.get("Principal") == "*"
            and action in listed(statement["Action"])
            and resource in listed(statement["Resource"])
            and (condition is None or statement.get("Condition") == condition)
            for statement in statements
        )

    plain_http = {"Bool": {"aws:SecureTransport": "false"}}
    if not (
        denies("s3:*", BUCKET_ARN, plain_http) and denies("s3:*", f"{BUCKET_ARN}/*", plain_http)
    ):
        problems.append("the bucket policy does not deny requests without TLS")
    releases = f"{BUCKET_ARN}/releases/*"
    unconditional_put = {
        "Null": {"s3:if-none-match": "true"},
        "Bool": {"s3:ObjectCreationOperation": "true"},
    }
    if not denies("s3:PutObject", releases, unconditional_put):
        problems.append("a release can be overwritten (no If-None-Match deny on releases/)")
    if not (denies("s3:DeleteObject", releases) and denies("s3:DeleteObjectVersion", releases)):
        problems.append("a release can be deleted")
    if not denies("s3:PutObject", MONITORING, unconditional_put):
        problems.append("a capture can be overwritten (no If-None-Match deny on monitoring/)")
    return problems


def trust_problems(rendered: dict, provider_arn: str = CREATED_PROVIDER_ARN) -> list[str]:
    problems = []
    resources = rendered["Resources"]
    for role, expected in EXPECTED_TRUST.items():
        document = resources[ROLES[role]]["Properties"]["AssumeRolePolicyDocument"]
        accepted = {
            name for name, claims in TOKENS.items() if trust_allows(document, provider_arn, claims)
        }
        for name in sorted(expected - accepted):
            problems.append(f"{role} role refuses the {name} token")
        for name in sorted(accepted - expected):
            problems.append(f"{role} role accepts the {name} token")
    return problems


def cluster_trust_problems(text: str) -> list[str]:
    """With a training cluster named, its training pods (and no other service account) may
    assume the push and read roles, and CircleCI's trust is as without it; with none, no role
    trusts the cluster."""
    problems = []
    for parameters in (CLUSTER_PARAMETERS, {}):
        rendered = render(text, **parameters)
        for role, resource in ROLES.items():
            document = rendered["Resources"][resource]["Properties"]["AssumeRolePolicyDocument"]
            accepted = {
                name
                for name, claims in POD_TOKENS.items()
                if trust_allows(document, CLUSTER_PROVIDER_ARN, claims)
            }
            expected = EXPECTED_POD_TRUST.get(role, set()) if parameters else set()
            for name in sorted(expected - accepted):
                problems.append(f"{role} role refuses the cluster's {name} token")
            for name in sorted(accepted - expected):
                problems.append(f"{role} role accepts the cluster's {name} token")
    with_cluster = render(text, **CLUSTER_PARAMETERS)
    problems += [f"with a training cluster, {problem}" for problem in trust_problems(with_cluster)]
    without = render(text)
    for role, resource in CI_ROLES.items():  # no statement of any kind for an absent cluster
        document = without["Resources"][resource]["Properties"]["AssumeRolePolicyDocument"]
        trusted = {str(statement["Principal"]) for statement in document["Statement"]}
        if trusted != {str({"Federated": CREATED_PROVIDER_ARN})}:
            problems.append(f"without a training cluster, {role} role trusts {sorted(trusted)}")
    return problems


def serving_trust_problems(rendered: dict) -> list[str]:
    """The serving role is for EC2 instances (its instance profile), never for CI."""
    role = rendered["Resources"]["ServingRole"]["Properties"]
    problems = []
    if role["AssumeRolePolicyDocument"]["Statement"] != SERVING_TRUST:
        problems.append("serving role trusts more than EC2 instances")
    profiles = [
        resource["Properties"]["Roles"]
        for resource in rendered["Resources"].values()
        if resource["Type"] == "AWS::IAM::InstanceProfile"
    ]
    if profiles != [["<ServingRole>"]]:
        problems.append(f"the serving role's instance profile is not the only one: {profiles}")
    return problems


def permission_problems(rendered: dict) -> list[str]:
    problems = []
    for role in ROLES:
        statements = role_statements(rendered, role)
        for statement in statements:
            actions = listed(statement["Action"])
            resources = listed(statement["Resource"])
            if statement["Effect"] != "Allow":
                continue
            if any("*" in action for action in actions):
                problems.append(f"{role} role has a wildcard action {actions}")
            if any(action.startswith("s3:") for action in actions) and any(
                resource == "*" or not resource.startswith(BUCKET_ARN) for resource in resources
            ):
                problems.append(f"{role} role has S3 actions on {resources}")
            if "s3:ListBucket" in actions:
                prefixes = listed(
                    statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", [])
                )
                if not prefixes or any(prefix not in LISTS[role] for prefix in prefixes):
                    problems.append(f"{role} role may list outside its prefixes: {prefixes}")
        if allowed_resources(statements, "s3:DeleteObjectVersion"):
            problems.append(f"{role} role may s3:DeleteObjectVersion")
        deletes = allowed_resources(statements, "s3:DeleteObject")
        if deletes != ([CLAIM] if role == "push" else []):
            problems.append(f"{role} role may s3:DeleteObject on {deletes}")
        puts = allowed_resources(statements, "s3:PutObject")
        wanted_puts = {
            "push": [f"{BUCKET_ARN}/dvc/*", CLAIM],
            "read": [],
            "release": [f"{BUCKET_ARN}/releases/*"],
            "serving": [LABELS, MONITORING],  # the host's labels; the gateway's captures
        }[role]
        if sorted(puts) != wanted_puts:
            problems.append(f"{role} role may s3:PutObject on {puts}, not only {wanted_puts}")
        reads = allowed_resources(statements, "s3:GetObject")
        for resource in READS[role]:
            if resource not in reads:
                problems.append(f"{role} role cannot read {resource}")
        beyond = [resource for resource in reads if resource not in READS[role]]
        if beyond:
            problems.append(f"{role} role may read outside its prefixes: {beyond}")
    return problems


def problems(text: str) -> list[str]:
    rendered = render(text)
    return (
        bucket_problems(rendered)
        + bucket_policy_problems(rendered)
        + trust_problems(rendered)
        + cluster_trust_problems(text)
        + serving_trust_problems(rendered)
        + permission_problems(rendered)
    )


# --- tests -------------------------------------------------------------------------------------

LINT_CONFIG = ManualArgs(regions=["us-east-1", "eu-west-1"], include_checks=["I"])


def describe(matches: list) -> list[str]:
    return [f"{match.rule.id} line {match.linenumber}: {match.message}" for match in matches]


def test_cfn_lint_finds_nothing() -> None:
    assert describe(lint(TEXT, config=LINT_CONFIG)) == []


def lint_rendered_trust(text: str, **parameters: str) -> list:
    """Lint with each trust policy as the object IAM receives, which cfn-lint can check."""
    template = decode(text)
    rendered = render(text, **parameters)
    for name in ROLES.values():
        properties = template["Resources"][name]["Properties"]
        document = rendered["Resources"][name]["Properties"]["AssumeRolePolicyDocument"]
        properties["AssumeRolePolicyDocument"] = document
    # Rendering inlines CircleCiProjectId, VcsOrigin and the TrainingCluster condition, which
    # leaves them unused (W2001, W8001).
    config = ManualArgs(**LINT_CONFIG, ignore_checks=["W2001", "W8001"])
    return lint(json.dumps(template), config=config)


@pytest.mark.parametrize("parameters", [{}, CLUSTER_PARAMETERS], ids=["", "training cluster"])
def test_cfn_lint_finds_nothing_in_the_rendered_trust_policies(parameters: dict) -> None:
    assert describe(lint_rendered_trust(TEXT, **parameters)) == []


def test_cfn_lint_would_report_a_broken_trust_policy() -> None:
    broken = TEXT.replace('"Effect": "Allow"', '"Effect": "Alow"', 1)
    assert describe(lint(broken, config=LINT_CONFIG)) == []  # invisible inside Fn::Sub ...
    assert any(match.rule.id == "E3530" for match in lint_rendered_trust(broken))  # ... not here


def test_cfn_lint_would_report_a_broken_template() -> None:
    broken = TEXT.replace("MaxSessionDuration: 3600", "MaxSessionDuration: 60", 1)
    assert any(match.rule.id == "E3034" for match in lint(broken, config=LINT_CONFIG))


def test_the_template_is_secure() -> None:
    assert problems(TEXT) == []


def test_reusing_an_existing_provider() -> None:
    """With CreateOidcProvider=false no provider is created and the roles trust the existing one."""
    template = decode(TEXT)
    provider = template["Resources"]["CircleCiOidcProvider"]
    assert provider["Condition"] == "CreateProvider"
    for create, arn in (("true", CREATED_PROVIDER_ARN), ("false", EXISTING_PROVIDER_ARN)):
        rendered = render(TEXT, CreateOidcProvider=create)
        assert Renderer(template, {"CreateOidcProvider": create}).condition("CreateProvider") is (
            create == "true"
        )
        for name in CI_ROLES.values():
            document = rendered["Resources"][name]["Properties"]["AssumeRolePolicyDocument"]
            assert all(
                statement["Principal"] == {"Federated": arn} for statement in document["Statement"]
            )
        assert trust_allows(
            rendered["Resources"]["PushRole"]["Properties"]["AssumeRolePolicyDocument"],
            arn,
            TOKENS["main"],
        )
    created = render(TEXT)["Resources"]["CircleCiOidcProvider"]["Properties"]
    assert created["Url"] == f"https://{ISSUER}"
    assert created["ClientIdList"] == [ORG]


def test_parameters_outputs_and_session_length() -> None:
    rendered = render(TEXT)
    assert {"CircleCiOrgId", "CircleCiProjectId", "BucketName"} <= set(rendered["Parameters"])
    outputs = {name: output["Value"] for name, output in rendered["Outputs"].items()}
    assert outputs["BucketName"] == BUCKET
    assert outputs["DvcRemoteUrl"] == f"s3://{BUCKET}/dvc"
    assert outputs["ServingInstanceProfileName"] == "<ServingInstanceProfile>"
    for role, resource in ROLES.items():
        assert outputs[f"{role.capitalize()}RoleArn"] == f"<{resource}.Arn>"
        # The AWS SDKs ask for one-hour sessions and re-assume from the token file when it ends.
        assert rendered["Resources"][resource]["Properties"]["MaxSessionDuration"] >= 3600


def test_the_dvc_remote_prefix_matches_dvc_config() -> None:
    config = (REPO_ROOT / ".dvc" / "config").read_text()
    assert re.search(r"url = s3://[a-z0-9.-]+/dvc\s*$", config, flags=re.MULTILINE)


# Each mutation removes or weakens one property; the checks must name what went wrong.
MUTATIONS = [
    (
        "Resource: !Sub ${Bucket.Arn}/monitoring/*\n            Condition:",
        "Resource: !Sub ${Bucket.Arn}/elsewhere/*\n            Condition:",
        "a capture can be overwritten",
    ),
    (
        "Resource: !Sub ${Bucket.Arn}/monitoring/*\n              - Sid: ListReleasesPrefix",
        "Resource: !Sub ${Bucket.Arn}/*\n              - Sid: ListReleasesPrefix",
        "serving role may s3:PutObject",
    ),
    (
        "Status: Enabled\n      BucketEncryption",
        "Status: Suspended\n      BucketEncryption",
        "versioning",
    ),
    ("RestrictPublicBuckets: true", "RestrictPublicBuckets: false", "public access"),
    (
        "      BucketEncryption:\n        ServerSideEncryptionConfiguration:\n"
        "          - ServerSideEncryptionByDefault:\n              SSEAlgorithm: AES256\n",
        "",
        "encryption",
    ),
    ('aws:SecureTransport: "false"', 'aws:SecureTransport: "true"', "TLS"),
    ('s3:if-none-match: "true"', 's3:if-none-match: "false"', "overwritten"),
    ("              - s3:DeleteObjectVersion\n", "", "deleted"),
    ('/vcs-ref/refs/heads/main"},', '/vcs-ref/*"},', "push role accepts the branch token"),
    (
        '"StringNotLike": {"oidc.circleci.com/org/${CircleCiOrgId}:sub": "*/vcs-ref/*/vcs-ref/*"}',
        '"StringNotEquals": {"oidc.circleci.com/org/${CircleCiOrgId}:sub": "none"}',
        "push role accepts the branch smuggling main token",
    ),
    (
        "vcs-origin/${VcsOrigin}/vcs-ref/refs",
        "vcs-origin/*/vcs-ref/refs",
        "push role accepts the fork's main token",
    ),
    (
        "project/${CircleCiProjectId}/user",
        "project/*/user",
        "push role accepts the another project's main token",
    ),
    (
        '"StringEquals": {"oidc.circleci.com/org/${CircleCiOrgId}:aud": "${CircleCiOrgId}"},\n'
        '                  "StringLike"',
        '"StringLike"',
        "push role accepts the another audience token",
    ),
    ('vcs-ref/*"},', 'vcs-ref/refs/heads/main"},', "read role refuses the branch token"),
    (
        '/vcs-ref/refs/heads/main"},',
        '/vcs-ref/refs/heads/*"},',
        "push role accepts the branch token",
    ),
    (
        '/vcs-ref/refs/heads/main"},',
        '/vcs-ref/*"},',
        "release role accepts the branch token",
        "  ReleaseRole:",
    ),
    (
        "s3:prefix: [dvc/*, releases/*, labels/*, monitoring/*]",
        "s3:prefix: ['*']",
        "push role may list outside its prefixes",
    ),
    (
        "Resource: !Sub ${Bucket.Arn}/monitoring/*/retrain-requested.json",
        "Resource: !Sub ${Bucket.Arn}/monitoring/*",
        "push role may s3:DeleteObject on",
    ),
    (
        "Action: s3:GetObject\n                Resource:\n",
        "Action: [s3:GetObject, s3:PutObject]\n                Resource:\n",
        "read role may s3:PutObject",
        "  ReadRole:",
    ),
    (
        "                  - s3:PutObject\n                  - s3:AbortMultipartUpload\n"
        "                Resource: !Sub ${Bucket.Arn}/releases/*",
        "                  - s3:PutObject\n                  - s3:DeleteObject\n"
        "                Resource: !Sub ${Bucket.Arn}/releases/*",
        "release role may s3:DeleteObject",
    ),
    (
        "Resource: !Sub ${Bucket.Arn}/releases/*",
        "Resource: !Sub ${Bucket.Arn}/*",
        "release role may s3:PutObject",
        "- Sid: AddReleases",
    ),
    (
        "                  - s3:GetObject\n                  - s3:PutObject\n"
        "                  - s3:AbortMultipartUpload\n",
        "                  - s3:*\n",
        "push role has a wildcard action",
    ),
    (
        "Resource: !Sub ${Bucket.Arn}/dvc/*\n              - Sid: ReadReleases",
        'Resource: "*"\n              - Sid: ReadReleases',
        "push role has S3 actions on ['*']",
    ),
    (
        "                Condition:\n                  StringLike:\n"
        "                    s3:prefix: [dvc/*, releases/*, labels/*]\n"
        "              - Sid: ReadDvcObjectsAndReleases\n",
        "              - Sid: ReadDvcObjectsAndReleases\n",
        "read role may list outside its prefixes",
        "  ReadRole:",
    ),
    (
        "Action: s3:GetObject\n                Resource: !Sub ${Bucket.Arn}/releases/*",
        "Action: [s3:GetObject, s3:PutObject]\n"
        "                Resource: !Sub ${Bucket.Arn}/releases/*",
        "serving role may s3:PutObject",
        "  ServingRole:",
    ),
    (
        "Resource: !Sub ${Bucket.Arn}/releases/*\n\n  ServingInstanceProfile",
        "Resource: !Sub ${Bucket.Arn}/*\n\n  ServingInstanceProfile",
        "serving role may read outside its prefixes",
    ),
    (
        "Resource: !Sub ${Bucket.Arn}/releases/*\n\n  ServingInstanceProfile",
        "Resource: !Sub ${Bucket.Arn}/releases/*\n"
        "              - Effect: Allow\n"
        "                Action: s3:GetObject\n"
        "                Resource: !Sub ${Bucket.Arn}/dvc/*\n\n  ServingInstanceProfile",
        "serving role may read outside its prefixes",
    ),
    (
        "s3:prefix: [releases/*]",
        "s3:prefix: [dvc/*, releases/*]",
        "serving role may list outside its prefixes",
        "  ServingRole:",
    ),
    (
        "Principal:\n              Service: ec2.amazonaws.com\n"
        "            Action: sts:AssumeRole\n",
        "Principal:\n              Federated: !GetAtt CircleCiOidcProvider.Arn\n"
        "            Action: sts:AssumeRoleWithWebIdentity\n",
        "serving role accepts the branch token",
    ),
    (
        "Service: ec2.amazonaws.com",
        "Service: [ec2.amazonaws.com, lambda.amazonaws.com]",
        "serving role trusts more than EC2 instances",
    ),
    (
        '"sts.amazonaws.com",\n                    "${TrainingClusterOidcIssuer}:sub": '
        '"system:serviceaccount:${TrainingNamespace}:mnist-train"',
        '"sts.amazonaws.com"',
        "push role accepts the cluster's another service account token",
    ),
    (
        '"${TrainingClusterOidcIssuer}:aud": "sts.amazonaws.com",\n                    ',
        "",
        "read role accepts the cluster's another audience token",
        "  ReadRole:",
    ),
    (
        "system:serviceaccount:${TrainingNamespace}:mnist-train",
        "system:serviceaccount:default:mnist-train",
        "read role refuses the cluster's training pods token",
        "  ReadRole:",
    ),
    (
        'TrainingCluster: !Not [!Equals [!Ref TrainingClusterOidcIssuer, ""]]',
        'TrainingCluster: !Equals ["a", "a"]',
        "without a training cluster, push role trusts",
    ),
    (
        "      Roles: [!Ref ServingRole]",
        "      Roles: [!Ref PushRole]",
        "the serving role's instance profile is not the only one",
    ),
]


def mutate(old: str, new: str, after: str = "") -> str:
    """The template with the first ``old`` after ``after`` replaced by ``new``."""
    head, anchor, tail = TEXT.partition(after) if after else ("", "", TEXT)
    assert old in tail, "the mutation no longer applies; update it with the template"
    return head + anchor + tail.replace(old, new, 1)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=[mutation[2] for mutation in MUTATIONS])
def test_each_check_fires_when_its_property_is_removed(mutation: tuple[str, ...]) -> None:
    old, new, reported, *after = mutation
    found = problems(mutate(old, new, *after))
    assert any(reported in problem for problem in found), found


def test_setup_guide_matches_the_template_and_ci() -> None:
    """infra/README's "Set up CI" names the real file, parameters, outputs and CI variables."""
    guide = INFRA_README.read_text()
    assert "## Set up CI" in guide
    section = guide.split("## Set up CI", 1)[1].split("\n## ", 1)[0]
    assert "aws cloudformation deploy" in section
    assert "--template-file infra/ci-storage.yaml" in section
    assert "CAPABILITY_NAMED_IAM" in section
    template = decode(TEXT)
    required = [name for name, spec in template["Parameters"].items() if "Default" not in spec]
    for name in required:
        assert f"{name}=" in section, name
    for output in template["Outputs"]:
        assert output in section, output
    circleci = (REPO_ROOT / ".circleci" / "config.yml").read_text()
    for variable in ("AWS_ROLE_ARN_PUSH", "AWS_ROLE_ARN_READ"):
        assert variable in circleci and variable in section
    assert "AWS_ROLE_ARN_RELEASE" in section
    assert "dvc remote modify storage url s3://" in section


# --- the roles' permissions are enough for DVC, and no more: a real S3 server enforces them ----
# SeaweedFS (testbed/s3.py) evaluates the rendered permission policies, s3:prefix conditions
# included. Its trust policies speak its own dialect (oidc:<claim>), so trust is checked above.
# The test-bed modules are imported inside these tests so that the checks above stay light.


@pytest.fixture(scope="module")
def template_bed(tmp_path_factory: pytest.TempPathFactory, oidc_issuer) -> Iterator:
    """SeaweedFS whose push, read, release and serving roles carry the template's policies."""
    from testbed import s3 as s3bed

    iam = s3bed.iam_config(oidc_issuer.url)
    iam["policies"] = [template_policy(role) for role in ROLES]
    push, read = iam["roles"][:2]  # push trusts main only, read every branch
    iam["roles"] = [  # the test bed's own release role is not used here
        bed_role(push, s3bed.PUSH_ROLE, "push"),
        bed_role(read, s3bed.READ_ROLE, "read"),
        bed_role(push, BED_RELEASE_ROLE, "release"),
        bed_role(read, BED_SERVING_ROLE, "serving"),
    ]
    bed = s3bed.SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), iam).start()
    yield bed
    bed.stop()


def tiny_dvc_project(path: Path, bed) -> Path:
    """A git + DVC project with one tracked file and one stage (so a run-cache entry), using
    this repository's CI helpers and the template's remote layout, s3://<bucket>/dvc."""
    from testbed.repo import BIN, commit_all, git
    from testbed.s3 import BUCKET

    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for package in ("ci_jobs", "classifier"):  # the CI helpers and the one-line errors they use
        shutil.copytree(
            REPO_ROOT / package, path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    dvc = str(BIN / "dvc")
    for command in (
        ["init", "-q"],
        ["config", "core.analytics", "false"],
        ["remote", "add", "-d", "storage", f"s3://{BUCKET}/dvc"],
        ["remote", "modify", "--local", "storage", "endpointurl", bed.endpoint],
    ):
        subprocess.run([dvc, *command], cwd=path, check=True, capture_output=True)
    (path / "data.txt").write_text("digits\n")
    subprocess.run([dvc, "add", "-q", "data.txt"], cwd=path, check=True, capture_output=True)
    subprocess.run(
        [dvc, "stage", "add", "-q", "-n", "copy", "-d", "data.txt", "-o", "out.txt",
         "cp data.txt out.txt"],
        cwd=path, check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run([dvc, "repro", "-q"], cwd=path, check=True, capture_output=True)
    commit_all(path, "a tiny pipeline")
    return path


def test_dvc_works_with_exactly_these_permissions(
    tmp_path: Path, template_bed, oidc_issuer
) -> None:
    from testbed.repo import DvcRepo
    from testbed.s3 import BUCKET, PUSH_ROLE, READ_ROLE, remote, with_credentials

    main = DvcRepo(tiny_dvc_project(tmp_path / "main", template_bed))
    branch_token = oidc_issuer.mint(ref="refs/heads/feature")
    read_env = with_credentials(main, template_bed, branch_token, READ_ROLE)
    refused = remote(main, "push", read_env)
    assert refused.returncode == 1 and "may not write" in refused.stderr, refused.stderr

    push_env = with_credentials(main, template_bed, oidc_issuer.mint(), PUSH_ROLE)
    pushed = remote(main, "push", push_env)
    assert pushed.returncode == 0, pushed.stderr
    assert "1 run-cache entries pushed" in pushed.stdout
    reader = role_session(template_bed, oidc_issuer, READ_ROLE, ref="refs/heads/feature")
    keys = [o["Key"] for o in reader.list_objects_v2(Bucket=BUCKET, Prefix="dvc/")["Contents"]]
    assert any(key.startswith("dvc/files/md5/") for key in keys)
    assert any(key.startswith("dvc/runs/") for key in keys)

    clone_path = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(main.repo), str(clone_path)], check=True)
    clone = DvcRepo(clone_path)
    clone.dvc("remote", "modify", "--local", "storage", "endpointurl", template_bed.endpoint)
    read_env = with_credentials(clone, template_bed, branch_token, READ_ROLE)
    pulled = remote(clone, "pull", read_env)
    assert pulled.returncode == 0, pulled.stderr
    assert (clone_path / "out.txt").read_text() == "digits\n"
    ran, result = clone.repro()
    assert ran == [] and result.returncode == 0, result.stdout + result.stderr


def refused(call, **kwargs) -> bool:
    """Whether the test bed's S3 denies ``call`` on its bucket (not: fails for another reason)."""
    from botocore.exceptions import ClientError

    from testbed.s3 import BUCKET

    try:
        call(Bucket=BUCKET, **kwargs)
    except ClientError as error:
        return error.response["Error"]["Code"] == "AccessDenied"
    return False


def test_each_role_is_held_to_its_prefixes(template_bed, oidc_issuer) -> None:
    from botocore.exceptions import ClientError

    from testbed.s3 import BUCKET, PUSH_ROLE, READ_ROLE

    push = role_session(template_bed, oidc_issuer, PUSH_ROLE)
    read = role_session(template_bed, oidc_issuer, READ_ROLE, ref="refs/heads/feature")
    release = role_session(template_bed, oidc_issuer, BED_RELEASE_ROLE)
    release.put_object(Bucket=BUCKET, Key="releases/mnist/1/saved_model.pb", Body=b"model")
    assert release.get_object(Bucket=BUCKET, Key="releases/mnist/1/saved_model.pb")
    assert refused(release.put_object, Key="dvc/files/md5/00/0", Body=b"x")
    assert refused(release.delete_object, Key="releases/mnist/1/saved_model.pb")
    assert refused(push.put_object, Key="releases/mnist/1/saved_model.pb", Body=b"x")
    assert refused(push.put_object, Key="elsewhere", Body=b"x")
    assert refused(push.list_objects_v2)  # no prefix: the whole bucket
    assert push.list_objects_v2(Bucket=BUCKET, Prefix="releases/")["KeyCount"] == 1  # champion
    assert refused(read.put_object, Key="dvc/files/md5/00/0", Body=b"x")
    assert read.get_object(Bucket=BUCKET, Key="releases/mnist/1/saved_model.pb")  # champion
    assert refused(read.put_object, Key="releases/mnist/2/saved_model.pb", Body=b"x")
    assert refused(read.list_objects_v2, Prefix="")
    with pytest.raises(ClientError, match="404"):  # a missing object is a 404, not a 403
        read.head_object(Bucket=BUCKET, Key="dvc/files/md5/00/missing")


def test_the_serving_role_reads_releases_and_nothing_else(template_bed, oidc_issuer) -> None:
    """What a TensorFlow Serving host may do with the serving role (python -m serving.sync):
    read releases/, and publish its labels under labels/ (which CI reads, to find the champion)."""
    from testbed.s3 import BUCKET, PUSH_ROLE, READ_ROLE

    release = role_session(template_bed, oidc_issuer, BED_RELEASE_ROLE)
    release.put_object(Bucket=BUCKET, Key="releases/mnist/7/saved_model.pb", Body=b"release")
    push = role_session(template_bed, oidc_issuer, PUSH_ROLE)
    push.put_object(Bucket=BUCKET, Key="dvc/files/md5/ab/cdef", Body=b"dvc data")
    serving = role_session(template_bed, oidc_issuer, BED_SERVING_ROLE, ref="refs/heads/any")

    listed = serving.list_objects_v2(Bucket=BUCKET, Prefix="releases/mnist/")["Contents"]
    assert "releases/mnist/7/saved_model.pb" in [item["Key"] for item in listed]
    body = serving.get_object(Bucket=BUCKET, Key="releases/mnist/7/saved_model.pb")["Body"]
    assert body.read() == b"release"
    assert refused(serving.put_object, Key="releases/mnist/8/saved_model.pb", Body=b"x")
    assert refused(serving.put_object, Key="releases/mnist/7/saved_model.pb", Body=b"x")
    assert refused(serving.delete_object, Key="releases/mnist/7/saved_model.pb")
    assert refused(serving.get_object, Key="dvc/files/md5/ab/cdef")
    assert refused(serving.put_object, Key="dvc/files/md5/ab/cdef", Body=b"x")
    assert refused(serving.list_objects_v2, Prefix="dvc/")
    assert refused(serving.list_objects_v2)  # no prefix: the whole bucket
    assert refused(serving.put_object, Key="elsewhere", Body=b"x")
    capture = "monitoring/mnist/2026-12-07/capture-20261207T080000-1-000001.jsonl.gz"
    serving.put_object(Bucket=BUCKET, Key=capture, Body=b"gzip", IfNoneMatch="*")
    assert refused(serving.get_object, Key=capture)  # adds captures, never reads them back
    serving.put_object(Bucket=BUCKET, Key="labels/mnist.json", Body=b'{"stable": 7}')
    serving.put_object(Bucket=BUCKET, Key="labels/mnist.json", Body=b'{"stable": 6}')  # rollback
    assert refused(serving.delete_object, Key="labels/mnist.json")
    read = role_session(template_bed, oidc_issuer, READ_ROLE, ref="refs/heads/feature")
    labels = read.get_object(Bucket=BUCKET, Key="labels/mnist.json")["Body"].read()
    assert labels == b'{"stable": 6}'
    assert refused(read.put_object, Key="labels/mnist.json", Body=b"{}")


def test_the_monitor_reads_captures_and_claims_a_day_once(template_bed, oidc_issuer) -> None:
    """The monitor job (push role, main): reads a day's captures, claims the day with
    If-None-Match (a second claim is refused), withdraws its claim; nothing else there."""
    from botocore.exceptions import ClientError

    from testbed.s3 import BUCKET, PUSH_ROLE

    serving = role_session(template_bed, oidc_issuer, BED_SERVING_ROLE, ref="refs/heads/any")
    day = "monitoring/mnist/2026-12-06/"
    capture = day + "capture-20261206T080000-1-000001.jsonl.gz"
    serving.put_object(Bucket=BUCKET, Key=capture, Body=b"gzip", IfNoneMatch="*")
    push = role_session(template_bed, oidc_issuer, PUSH_ROLE)
    listed = push.list_objects_v2(Bucket=BUCKET, Prefix=day)["Contents"]
    assert [item["Key"] for item in listed] == [capture]
    assert push.get_object(Bucket=BUCKET, Key=capture)["Body"].read() == b"gzip"
    claim = day + "retrain-requested.json"
    push.put_object(Bucket=BUCKET, Key=claim, Body=b"{}", IfNoneMatch="*")
    with pytest.raises(ClientError, match=r"PreconditionFailed|412"):
        push.put_object(Bucket=BUCKET, Key=claim, Body=b"{}", IfNoneMatch="*")
    push.delete_object(Bucket=BUCKET, Key=claim)
    push.put_object(Bucket=BUCKET, Key=claim, Body=b"{}", IfNoneMatch="*")  # claimable again
    assert refused(push.put_object, Key=day + "capture-x.jsonl.gz", Body=b"x", IfNoneMatch="*")
    assert refused(push.delete_object, Key=capture)
