"""WRI's DSen2-lite, the tree-cover pipeline's super-resolution network, as a geoxai bundle.

The tropical tree cover pipeline (github.com/wri/sentinel-tree-cover, GPL-3.0) sharpens
B05 B06 B07 B8A B11 B12 to 10 m with a small network (a light DSen2, Lanaras et al. 2018)
released as a frozen TensorFlow graph (``models-release/supres-40k-swir/superresolve_graph.pb``).
geoxai runs it with torch through :mod:`geoxai.models.tf_graph`: :func:`import_dsen2_lite` (CLI
``geoxai models import-tf``) turns a user's copy of the graph into a ``wri-dsen2-lite`` bundle
(safetensors + ``model.json`` with the band order, the input :class:`Preparation`, and the
graph's source, licence and SHA-256). The repository never holds the graph or weights derived
from it. Applying it to cubes: :mod:`geoxai.temporal.superres`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from geoxai.errors import GraphImportError, ModelBundleError
from geoxai.inference.windows import WindowParams
from geoxai.models.bundle import LoadedBundle, load_bundle, save_bundle
from geoxai.models.bundle_spec import BundleSpec, InputSpec, OutputSpec, SourceSpec
from geoxai.models.tf_graph import read_graph
from geoxai.models.tf_graph_torch import TFGraphNet
from geoxai.strict import StrictModel

__all__ = [
    "ARCHITECTURE",
    "DSEN2_BANDS",
    "DSEN2_OUTPUTS",
    "GRAPH_URL",
    "LICENCE",
    "Preparation",
    "DSen2Lite",
    "import_dsen2_lite",
    "load_superres_bundle",
]

ARCHITECTURE: Literal["wri-dsen2-lite"] = "wri-dsen2-lite"
DSEN2_BANDS = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
"""Channel order of the network's first input."""
DSEN2_OUTPUTS = ("B05", "B06", "B07", "B8A", "B11", "B12")
"""Bands the network returns (and receives as its bilinear base), in order."""
GRAPH_URL = (
    "https://github.com/wri/sentinel-tree-cover/raw/master/models-release/supres-40k-swir/"
    "superresolve_graph.pb"
)
LICENCE = "GPL-3.0"


class Preparation(StrictModel):
    """``model.json`` ``preparation`` of a wri-dsen2-lite bundle (what the network expects)."""

    kind: Literal["wri-dsen2-lite"] = ARCHITECTURE
    bands_10m: tuple[str, ...] = DSEN2_BANDS[:4]
    bands_bilinear_from_20m: tuple[str, ...] = DSEN2_OUTPUTS[:4]
    bands_mean_to_40m_then_bilinear: tuple[str, ...] = DSEN2_OUTPUTS[4:]
    bilinear: str = Field(
        "pixel centres aligned (scipy.ndimage.zoom order=1, grid_mode=True), edge values held",
        description="How coarse bands are upsampled to 10 m.",
    )
    lattice: str = Field(
        "20 m / 40 m blocks on the UTM zone's 20 m / 40 m lattice",
        description="Where the 2x2 / 4x4 blocks of a tile cube sit.",
    )
    clip: tuple[float, float] = Field((0.0, 1.0), description="Reflectance clipped to this.")
    units: str = "surface reflectance"
    reach_px: int = Field(ge=0, description="Output px depend on inputs within this distance.")
    reference_window_px: int = Field(110, description="WRI's window (for the record).")
    reference_pad_px: int = Field(4, description="WRI's reflect padding (for the record).")


class DSen2Lite(TFGraphNet):
    """The imported graph as a bundle network: ``(N, 10, H, W)`` in :data:`DSEN2_BANDS` order
    -> ``(N, 6, H, W)`` super-resolved :data:`DSEN2_OUTPUTS` (reflectance).

    Raises:
        GraphImportError: the graph's inputs are not one 10-band and one 6-band image.
    """

    def __init__(self, program: dict[str, Any], feeds: list[list[int]] | None = None) -> None:
        chans = [int(i["shape"][-1]) for i in program["inputs"]]
        names = [i["name"] for i in program["inputs"]]
        if sorted(chans) != [len(DSEN2_OUTPUTS), len(DSEN2_BANDS)]:
            raise GraphImportError(
                f"The graph's inputs {names} take {chans} channels; {ARCHITECTURE} needs one "
                f"input of {len(DSEN2_BANDS)} bands {list(DSEN2_BANDS)} and one of "
                f"{len(DSEN2_OUTPUTS)} {list(DSEN2_OUTPUTS)} (the bilinear base). This is not "
                "WRI's superresolve_graph.pb; import other graphs as architecture 'tf-graph'."
            )
        full, base = list(range(len(DSEN2_BANDS))), list(range(4, len(DSEN2_BANDS)))
        if feeds is None:
            feeds = [full if c == len(DSEN2_BANDS) else base for c in chans]
        super().__init__(program, feeds)


def import_dsen2_lite(
    graph: str | Path,
    out: str | Path,
    *,
    url: str | None = GRAPH_URL,
    name: str = "WRI DSen2-lite super-resolution (supres-40k-swir)",
    window_px: int = 256,
) -> Path:
    """Import WRI's ``superresolve_graph.pb`` as a ``wri-dsen2-lite`` model bundle.

    Args:
        graph: the user's copy of the frozen graph.
        out: bundle directory to create.
        url: where the graph comes from (recorded in ``model.json``).
        name: bundle name.
        window_px: core edge of the windows the graph runs on (any value gives the same
            result; larger = less overlap, more memory).

    Returns:
        The bundle directory (``model.json`` + ``weights.safetensors``).

    Raises:
        GraphImportError: unreadable/truncated graph, unsupported op, inputs that do not match
            :data:`DSEN2_BANDS` / :data:`DSEN2_OUTPUTS`, or outputs of another size or band count.
    """
    g = read_graph(graph)
    net = DSen2Lite(g.program)
    net.load_state_dict({f"graph.{k}": v for k, v in g.state_dict.items()}, strict=True)
    net.eval()
    lo, hi = net.reach()
    reach = max(-lo, hi)
    with torch.no_grad():
        probe = net(torch.zeros(1, len(DSEN2_BANDS), 2 * reach + 8, 2 * reach + 8))
    if isinstance(probe, tuple) or probe.shape[1] != len(DSEN2_OUTPUTS):
        got = [tuple(p.shape) for p in probe] if isinstance(probe, tuple) else tuple(probe.shape)
        raise GraphImportError(
            f"{graph}: the graph returns {got}; {ARCHITECTURE} returns one image of "
            f"{len(DSEN2_OUTPUTS)} bands {list(DSEN2_OUTPUTS)}."
        )
    prep = Preparation(reach_px=reach)
    spec = BundleSpec(
        name=name,
        architecture=ARCHITECTURE,
        weights="weights.safetensors",
        inputs=InputSpec(features=list(DSEN2_BANDS), time_steps=1, layout="CHW"),
        window=WindowParams(window=window_px, stride=window_px, context=reach),
        output=OutputSpec(kind="regression", names=list(DSEN2_OUTPUTS)),
        source=SourceSpec(
            file=Path(graph).name,
            sha256=g.sha256,
            url=url,
            licence=LICENCE,
            note="(c) World Resources Institute; imported without TensorFlow by geoxai.tf_graph. "
            "Do not commit this bundle to a repository under another licence.",
        ),
        preparation=prep.model_dump(mode="json"),
        description=(
            f"Frozen TF graph, {g.n_weights} float weights; output = bilinear base + learned "
            "residual, per date, before cloud weights and smoothing (processing.super_resolution)."
        ),
    )
    return save_bundle(out, net, spec)


def load_superres_bundle(path: str | Path, device: str | torch.device = "cpu") -> LoadedBundle:
    """Load a ``wri-dsen2-lite`` bundle (a :class:`~geoxai.models.bundle.LoadedBundle`).

    Raises:
        ModelBundleError: unreadable bundle, another architecture, or a bad ``preparation``.
    """
    b = load_bundle(path, device=device)
    if b.spec.architecture != ARCHITECTURE:
        raise ModelBundleError(
            f"Bundle {path} is a {b.spec.architecture!r} bundle; processing.super_resolution "
            f"needs a {ARCHITECTURE!r} bundle (geoxai models import-tf superresolve_graph.pb "
            "--out BUNDLE)."
        )
    try:
        Preparation.model_validate(b.spec.preparation)
    except ValidationError as exc:
        raise ModelBundleError(
            f"Bundle {path}: model.json 'preparation' is invalid ({exc}); re-import the graph."
        ) from exc
    return b
