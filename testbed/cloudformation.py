"""The CloudFormation template of infra/, as deployed: its intrinsics resolved for one set of
parameters (a renderer of the few CloudFormation uses), and its roles' policies carried onto the
S3 test bed, so that tests hold the bed's roles to exactly what the template grants."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = REPO_ROOT / "infra" / "ci-storage.yaml"

ORG = "11111111-2222-3333-4444-555555555555"
PROJECT = "66666666-7777-8888-9999-000000000000"
OTHER_PROJECT = "66666666-7777-8888-9999-000000000001"
ORIGIN = "github.com/example/mnist-pipeline"
BUCKET = "example-mnist-pipeline"
ACCOUNT = "123456789012"
STACK = "mnist-ci"
PARAMETERS = {
    "CircleCiOrgId": ORG,
    "CircleCiProjectId": PROJECT,
    "VcsOrigin": ORIGIN,
    "BucketName": BUCKET,
}
PSEUDO = {
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::Region": "us-east-1",
    "AWS::StackName": STACK,
}
BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
ISSUER = f"oidc.circleci.com/org/{ORG}"  # the provider URL without https://, IAM's key prefix
EXISTING_PROVIDER_ARN = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{ISSUER}"
CREATED_PROVIDER_ARN = "<CircleCiOidcProvider.Arn>"  # what GetAtt returns at deploy time
CI_ROLES = {"push": "PushRole", "read": "ReadRole", "release": "ReleaseRole"}
ROLES = {**CI_ROLES, "serving": "ServingRole"}

TEXT = TEMPLATE.read_text()


class Renderer:
    """Resolves Ref, Fn::GetAtt, Fn::Sub, Fn::If, Fn::Equals and Fn::Not as CloudFormation would."""

    def __init__(self, template: dict, parameters: dict[str, str]) -> None:
        self.template = template
        defaults = {
            name: spec["Default"]
            for name, spec in template.get("Parameters", {}).items()
            if "Default" in spec
        }
        self.values: dict[str, Any] = {**defaults, **parameters, **PSEUDO}

    def ref(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        resource = self.template["Resources"][name]
        if resource["Type"] == "AWS::S3::Bucket":
            return self.resolve(resource["Properties"]["BucketName"])
        return f"<{name}>"

    def get_att(self, name: str, attribute: str) -> str:
        resource = self.template["Resources"][name]
        if resource["Type"] == "AWS::S3::Bucket" and attribute == "Arn":
            return f"arn:aws:s3:::{self.ref(name)}"
        return f"<{name}.{attribute}>"

    def sub(self, text: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                return self.get_att(*name.split(".", 1))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]*)\}", replace, text)

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, value),) = node.items()
            if key == "Ref":
                return self.ref(value)
            if key == "Fn::GetAtt":
                parts = value.split(".", 1) if isinstance(value, str) else value
                return self.get_att(*parts)
            if key == "Fn::Sub":
                if isinstance(value, str):
                    return self.sub(value, {})
                text, variables = value
                return self.sub(text, {k: self.resolve(v) for k, v in variables.items()})
            if key == "Fn::If":
                name, if_true, if_false = value
                return self.resolve(if_true if self.condition(name) else if_false)
            if key == "Fn::Equals":
                left, right = self.resolve(value)
                return left == right
            if key == "Fn::Not":
                (inner,) = value
                return not self.resolve(inner)
            assert not key.startswith("Fn::"), f"the renderer does not know {key}"
        return {key: self.resolve(value) for key, value in node.items()}


def decode(text: str) -> dict:
    template, errors = decode_str(text)
    assert not errors, [str(error) for error in errors]
    assert template is not None
    return template


def render(text: str, **parameters: str) -> dict:
    """The template as deployed with ``parameters``: intrinsics resolved, trust policies parsed."""
    template = decode(text)
    rendered = Renderer(template, {**PARAMETERS, **parameters}).resolve(template)
    for resource in rendered["Resources"].values():
        properties = resource.get("Properties", {})
        if isinstance(properties.get("AssumeRolePolicyDocument"), str):
            properties["AssumeRolePolicyDocument"] = json.loads(
                properties["AssumeRolePolicyDocument"]
            )
    return rendered


BED_RELEASE_ROLE = "arn:aws:iam::role/Release"
# SeaweedFS has no EC2 instance profiles: on the test bed the serving role is assumed with a
# token of the local issuer instead; its permissions are the template's all the same.
BED_SERVING_ROLE = "arn:aws:iam::role/Serving"


def template_policy(role: str) -> dict:
    """A test-bed policy ``template-<role>``: the template's permissions of ``role``, exactly."""
    from testbed.s3 import BUCKET

    rendered = render(TEXT, BucketName=BUCKET)
    policy = rendered["Resources"][ROLES[role]]["Properties"]["Policies"][0]
    document = json.loads(json.dumps(policy["PolicyDocument"]))
    validate = {"Effect": "Allow", "Action": ["sts:ValidateSession"], "Resource": ["*"]}
    document["Statement"].append(validate)  # SeaweedFS needs this
    return {"name": f"template-{role}", "document": document}


def bed_role(trusted_like: dict, arn: str, role: str) -> dict:
    """A test-bed role trusting what ``trusted_like`` trusts, holding ``template_policy(role)``."""
    return {
        **json.loads(json.dumps(trusted_like)),
        "roleName": arn.rsplit("/", 1)[1],
        "roleArn": arn,
        "attachedPolicies": [f"template-{role}"],
    }
