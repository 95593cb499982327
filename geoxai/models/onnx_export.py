"""``geoxai models export-onnx``: a torch bundle's network written as a checked ONNX graph.

:func:`export_onnx` loads the bundle, exports its network with
:func:`geoxai.models.onnx.onnx_graph_bytes` (the bundle's ONNX ``model.json`` embedded as
metadata), runs ``onnx.checker`` (full check) on the graph and compares onnxruntime's outputs
with torch's on a batch of windows before it writes the file. Separate from
:mod:`geoxai.models.onnx` because it loads bundles (:mod:`geoxai.models.bundle` imports that
module).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from geoxai.errors import ModelBundleError
from geoxai.models.bundle import load_bundle
from geoxai.models.onnx import (
    DEFAULT_OPSET,
    EXPORTABLE,
    example_windows,
    max_abs_diff,
    onnx_bundle_spec,
    onnx_graph_bytes,
    onnx_module,
    onnx_network,
)

__all__ = ["export_onnx"]


def export_onnx(
    bundle: str | Path,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    check_batch: int = 3,
) -> dict[str, Any]:
    """Write a torch bundle's network as ONNX, checked and compared with torch.

    Args:
        bundle: a torch bundle (directory or zip) of an :data:`EXPORTABLE` architecture.
        out: the ``.onnx`` file to write (parent directories are created).
        opset: ai.onnx opset of the graph.
        atol: largest allowed ``|onnxruntime - torch|`` on the check batch, output units.
        check_batch: windows in the check batch (>= 1; a size other than the export's 2, so
            the dynamic batch axis is exercised).

    Returns:
        ``{"out", "bytes", "sha256", "opset", "inputs", "outputs", "max_abs_diff"}``;
        ``max_abs_diff`` maps each output to its largest difference from torch.

    Raises:
        ModelBundleError: the bundle cannot be loaded or is not exportable, the checker
            rejects the graph, or onnxruntime differs from torch by more than ``atol``.
    """
    b = load_bundle(bundle, "cpu", runtime="torch")
    spec = b.spec
    if spec.architecture not in EXPORTABLE:
        raise ModelBundleError(
            f"Bundle {bundle} is a {spec.architecture!r} model; export-onnx writes "
            f"{', '.join(EXPORTABLE)} bundles (window models run by geoxai's inference)."
        )
    data = onnx_graph_bytes(b.net, spec, opset=opset)
    onnx = onnx_module()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except onnx.checker.ValidationError as exc:  # pragma: no cover - our exporter's output
        raise ModelBundleError(f"The ONNX export of {bundle} fails onnx.checker: {exc}") from exc
    where = f"ONNX export of {bundle}"
    net = onnx_network(data, onnx_bundle_spec(spec), where, torch.device("cpu"))
    x = example_windows(spec, max(1, int(check_batch)), seed=1)
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for method in net.config["onnx_outputs"]:
            ref = b.net(x) if method == "forward" else getattr(b.net, method)(x)
            got = net(x) if method == "forward" else getattr(net, method)(x)
            diffs[method] = max_abs_diff(got, ref)
    worst = max(diffs.values())
    if not worst <= atol:
        raise ModelBundleError(
            f"{where}: onnxruntime differs from torch by {worst:.3g} (> atol {atol:g}) on "
            f"{x.shape[0]} windows ({diffs}); report the architecture, or pass a larger atol."
        )
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return {
        "out": str(dest),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": opset,
        "inputs": {"input": list(x.shape[1:])},
        "outputs": dict(net.config["onnx_outputs"]),
        "max_abs_diff": diffs,
    }
