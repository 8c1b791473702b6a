"""remote.py turns DVC's botocore tracebacks into one line with the cause and the fix."""

from __future__ import annotations

import pytest

from ci_jobs import remote

ROLE = {"AWS_ROLE_ARN": "arn:aws:iam::role/Push"}

# Tails of what DVC 3.67 printed against SeaweedFS (tests/test_remote.py provokes each for real).
OUTPUTS = {
    "trust": "ERROR: unexpected error - trust policy validation failed: An error occurred"
    " (AccessDenied) when calling the AssumeRoleWithWebIdentity operation: trust policy denies",
    "expired": "ERROR: unexpected error - [Errno 5] An error occurred (ExpiredTokenException)"
    " when calling the AssumeRoleWithWebIdentity operation: token has expired",
    "signature": "ERROR: unexpected error - An error occurred (InvalidParameterValue) when"
    " calling the AssumeRoleWithWebIdentity operation: token signature is invalid",
    "write": "ERROR: failed to transfer 'abc' - Access Denied.: An error occurred (AccessDenied)"
    " when calling the PutObject operation: Access Denied.",
    "down": 'ERROR: unexpected error - Could not connect to the endpoint URL: "http://x:1/"',
    "bucket": "ERROR: unexpected error - NoSuchBucket: The specified bucket does not exist",
    "other": "ERROR: something nobody anticipated",
}


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("trust", "role arn:aws:iam::role/Push does not trust this token"),
        ("expired", "the OIDC token has expired; re-run the job"),
        ("signature", "the OIDC token was rejected as invalid (bad signature or format)"),
        ("write", "role arn:aws:iam::role/Push may not write to the remote"),
        ("down", "cannot reach the S3 endpoint"),
        ("bucket", "the bucket does not exist"),
        ("other", "something nobody anticipated"),
    ],
)
def test_explain(kind: str, expected: str) -> None:
    assert remote.explain(OUTPUTS[kind], ROLE).startswith(expected)


def test_push_data_then_run_cache_pull_both() -> None:
    assert remote.dvc_command("push", ["-j", "2"])[1:] == ["push", "-j", "2"]
    assert remote.dvc_command("pull", [])[1:] == ["pull", "--run-cache"]


def test_outputs_a_pull_could_not_check_out_are_named() -> None:
    """With ``verify = true`` an object that does not hash to its name is dropped; DVC then lists
    the outputs it could not check out on lines of their own."""
    output = (
        "ERROR: failed to pull data from the cloud - Checkout failed for following targets:\n"
        "models/model.keras\ndist/mnist\nIs your cache up to date?\n"
        "<https://error.dvc.org/missing-files>\n"
    )
    explained = remote.explain(output, {})
    assert explained.startswith("models/model.keras, dist/mnist: not checked out:")
