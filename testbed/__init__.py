"""What tests and benchmarks both run against; they share it without importing each other.

- ``testbed.repo``: git + DVC working copies of this repository, driven as a user drives them.
- ``testbed.s3``: an S3 + STS server (SeaweedFS) trusting a local OIDC issuer like CircleCI's.
- ``testbed.rehearsal``: a job of ``.circleci/config.yml`` run here against that test bed, with
  ``testbed.circleci_cli`` as its ``circleci`` command.
"""
