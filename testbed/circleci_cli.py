"""The ``circleci`` command as far as the jobs use it: ``circleci run oidc get --claims JSON``.

The rehearsal (``testbed.rehearsal``) puts a ``circleci`` wrapper running this module on the jobs'
``PATH``. Like CircleCI's, it prints a fresh OIDC token for the running job; here the test bed's
issuer mints it, for the job's ref and the audience asked for (``REHEARSAL_OIDC_MINT_URL``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
import urllib.request

MINT_URL_ENV = "REHEARSAL_OIDC_MINT_URL"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``run oidc get --claims JSON``, as CircleCI's CLI takes it; anything else is refused."""
    parser = argparse.ArgumentParser(prog="circleci (rehearsal)", description=__doc__)
    run = parser.add_subparsers(dest="command", required=True).add_parser("run")
    oidc = run.add_subparsers(dest="what", required=True).add_parser("oidc")
    get = oidc.add_subparsers(dest="verb", required=True).add_parser("get")
    get.add_argument("--claims", required=True, type=json.loads, help='e.g. {"aud": "..."}')
    return parser.parse_args(argv)


def audience(claims: dict) -> str:
    """The ``aud`` asked for; only that claim can be customised here."""
    if set(claims) != {"aud"}:
        raise ValueError("only the aud claim can be customised")
    return claims["aud"]


def main(argv: list[str]) -> int:
    try:
        aud = audience(parse_args(argv).claims)
    except ValueError as error:
        print(f"circleci (rehearsal): error: {error}", file=sys.stderr)
        return 1
    url = f"{os.environ[MINT_URL_ENV]}&" + urllib.parse.urlencode({"aud": aud})
    with urllib.request.urlopen(url, timeout=30) as response:
        print(response.read().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
