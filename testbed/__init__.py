"""What tests and benchmarks both run against; they share it without importing each other.

- ``testbed.repo``: git + DVC working copies of this repository, driven as a user drives them.
- ``testbed.s3``: an S3 + STS server (SeaweedFS) trusting a local OIDC issuer like CircleCI's.
- ``testbed.rehearsal``: a job of ``.circleci/config.yml`` run here against that test bed, with
  ``testbed.circleci_cli`` as its ``circleci`` command; ``testbed.github_api``, GitHub's REST API.
- ``testbed.cloudformation``: infra/'s template as deployed, and its roles carried onto the bed.
- ``testbed.registry``: a data registry (git + DVC) that projects ``dvc import`` from.
- ``testbed.tf_serving``: TensorFlow Serving's REST API on 127.0.0.1, with real SavedModels;
  ``testbed.tf_serving_config``: its model config file, parsed as it parses it;
  ``testbed.gateway``: the serving gateway run as a process; ``testbed.instant_serving``, the
  same API answering at once with a fixed answer (the gateway's own ceiling).
"""
