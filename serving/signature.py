"""A serving signature reduced to what a client depends on: input and output names, dtypes and
shapes (``-1`` for any size).

It reads the JSON of a ``SignatureDef`` with proto field names, as TensorFlow Serving's REST
metadata API returns it (``GET /v1/models/<name>/metadata``: ``metadata.signature_def
.signature_def.<signature>``, sizes as strings) and as ``package`` writes it from the exported
``saved_model.pb`` into the model card: the same signature gives the same description either way.
"""

from __future__ import annotations


def describe_tensors(tensors: dict) -> dict[str, dict]:
    return {
        name: {
            "dtype": info.get("dtype"),
            "shape": [
                int(dim.get("size", 0)) for dim in info.get("tensor_shape", {}).get("dim", [])
            ],
        }
        for name, info in sorted(tensors.items())
    }


def describe_signature(signature_def: dict) -> dict:
    """``{"inputs": {name: {"dtype", "shape"}}, "outputs": {...}}`` of a SignatureDef's JSON."""
    return {
        "inputs": describe_tensors(signature_def.get("inputs", {})),
        "outputs": describe_tensors(signature_def.get("outputs", {})),
    }
