"""The image classifier's library: what the stages (``stages/``), tests and benchmarks share.

``dataset`` (the prepared data's contract and shards), ``sources``, ``mnist`` and ``folder``
(where images come from), ``streams`` (the shards as ``tf.data``), ``model`` (the network and its
``.keras`` files), ``savedmodel`` (the package as TensorFlow Serving runs it), ``runtime``
(TensorFlow: determinism, precision, devices), ``params``, ``paths``, ``files`` (atomic writes)
and ``errors`` (the one-line failure).

Importing this package first sets, before TensorFlow loads, the CPU recipe that makes training
give the same bytes on every x86-64 CPU and core count (docs/reproducibility.md). TensorFlow's op
determinism alone holds only "on the same hardware and software configuration", and two parts of
that configuration differ from machine to machine by default:

- the thread pools are as large as the machine has cores, and the intra-op pool's size decides
  how a matrix product or a reduction is split, so how its partial sums are added: fixed at 2;
- oneDNN (which TensorFlow's matrix products and convolutions go through, even with its custom
  ops off) picks its kernels by the CPU's instruction set, and its AVX2 and AVX-512 kernels block
  the work differently on different CPUs. So oneDNN is capped at AVX, which every CPU that
  TensorFlow's x86-64 wheels run on has, and TensorFlow's oneDNN custom ops, on by default on
  CPUs with AVX-512 VNNI/BF16 or AMX, are off (docs/reproducibility.md: what was measured on
  which CPUs, and what the recipe costs).

A variable already set in the environment is left as it is (to trade the committed bytes for
speed on a big server, say): ``reports/train.json`` records what was in effect.
"""

import os
import sys

CPU_RECIPE = {
    "TF_NUM_INTRAOP_THREADS": "2",
    "TF_NUM_INTEROP_THREADS": "2",
    "TF_ENABLE_ONEDNN_OPTS": "0",  # read when TensorFlow is imported
    "ONEDNN_MAX_CPU_ISA": "AVX",
}

if "tensorflow" in sys.modules and any(name not in os.environ for name in CPU_RECIPE):
    raise ImportError(
        "TensorFlow was imported before the classifier package, too late for its CPU recipe"
        f" ({', '.join(f'{n}={v}' for n, v in CPU_RECIPE.items())}); import classifier first"
    )
for _name, _value in CPU_RECIPE.items():
    os.environ.setdefault(_name, _value)

# Before any stage imports TensorFlow: its start-up chatter hidden, then its C++ info and
# warnings (classifier/quiet_start.py; a user's own TF_CPP_MIN_LOG_LEVEL shows everything).
from classifier import quiet_start  # noqa: E402 (after the recipe, before TensorFlow)

quiet_start.install()
