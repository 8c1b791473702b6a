"""What the CircleCI jobs run besides DVC (``.circleci/config.yml``).

- ``preflight``: a GPU job's first step: no OIDC token (a fork's pull request), or a fresh token
  the push role would refuse, stops it before anything is installed.
- ``web_identity``: the job's OIDC token (or a fresh one) to AWS's web-identity chain.
- ``remote``: push/pull of outputs and run-cache, failures explained in one line.
- ``gpu_check``: fail a GPU job whose TensorFlow sees no GPU.
- ``sweep``: param sets over parallel nodes, and their comparison table.
- ``audit``: a forced re-run must reproduce every output's hash (nightly).
- ``release``: publish the packaged model, write-once, under the bucket's ``releases/``.
- ``pr_report``: metrics and params against main, one comment per pull request, updated.
- ``main_lock``: the ``dvc.lock`` of main's CI run, kept in the bucket, to diff against.
- ``bucket``: the DVC remote's bucket, as DVC resolves it (release and main_lock use it).

Each module is a command (``python -m ci_jobs.<name>``) with its logic in importable functions,
so ``.circleci/config.yml``, the tests and the benchmarks all use the same code.
"""
