"""The ``circleci`` command as far as the jobs use it: ``circleci run oidc get --claims JSON``.

The rehearsal (``testbed.rehearsal``) puts a ``circleci`` wrapper running this module on the jobs'
``PATH``. Like CircleCI's, it prints a fresh OIDC token for the running job; here the test bed's
issuer mints it, for the job's ref and the audience asked for (``REHEARSAL_OIDC_MINT_URL``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request

MINT_URL_ENV = "REHEARSAL_OIDC_MINT_URL"


def audience(argv: list[str]) -> str:
    """The ``aud`` of ``run oidc get --claims '{"aud": ...}'``; anything else is refused."""
    if argv[:3] != ["run", "oidc", "get"] or len(argv) != 5 or argv[3] != "--claims":
        raise ValueError("only `circleci run oidc get --claims JSON` is rehearsed")
    claims = json.loads(argv[4])
    if set(claims) != {"aud"}:
        raise ValueError("only the aud claim can be customised")
    return claims["aud"]


def main(argv: list[str]) -> int:
    try:
        aud = audience(argv)
    except ValueError as error:
        print(f"circleci (rehearsal): error: {error}", file=sys.stderr)
        return 1
    url = f"{os.environ[MINT_URL_ENV]}&" + urllib.parse.urlencode({"aud": aud})
    with urllib.request.urlopen(url, timeout=30) as response:
        print(response.read().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
