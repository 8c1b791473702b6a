"""What the CircleCI jobs run besides DVC: OIDC token hand-over and the S3 push/pull wrapper.

Each module is a command (``python -m ci_jobs.<name>``) with its logic in importable functions,
so ``.circleci/config.yml``, the tests and the benchmarks all use the same code.
"""
