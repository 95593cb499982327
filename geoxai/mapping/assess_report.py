"""``geoxai assess``: a labelled reference sample against a run -> JSON + a report section.

:func:`assess_run` reads the map at each reference point (:mod:`geoxai.mapping.assess`), builds the
stratified design (the sample's own strata and stratum sizes when the points come from
``geoxai assess sample``; otherwise the map classes as post-strata of a simple random sample)
and runs the estimators of :mod:`geoxai.assess.estimators` on the whole map and per quality class.
:func:`accuracy_section` renders the result as the ``accuracy`` section of ``report.html``
(tables and a figure of estimated vs mapped area with 95 % intervals);
:func:`write_assessment` writes ``<run_root>/assessment.json`` and ``assessment.html`` (the
section, which the report embeds whenever it is rewritten) and puts the section in the run's
current ``report.html``.
"""

from __future__ import annotations

import html
import math
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoxai.assess.estimators import (
    SampleDesignError,
    StratifiedDesign,
    assess_categorical,
    assess_continuous,
)
from geoxai.errors import InvalidInputError, look_up_option
from geoxai.io.layout import ACCURACY_SECTION_FILE, ASSESSMENT_FILE
from geoxai.io.points import LABEL_COLUMN, PointTable
from geoxai.io.store import upload_file, write_json
from geoxai.mapping.assess import (
    SIMPLE_STRATUM,
    Census,
    RunMap,
    StrataSpec,
    census,
    map_at_points,
)
from geoxai.mapping.quicklook import figure_png, new_figure
from geoxai.mapping.report import CSS

__all__ = ["assess_run", "accuracy_section", "write_assessment", "ASSESSMENT_FILE"]

_QUALITY = {1: "good", 2: "sparse"}


def _is_empty(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return str(v).strip().lower() in ("", "nan", "none", "null")


def _specs_from_points(points: PointTable) -> list[StrataSpec] | None:
    col = points.fields.get("strata_spec")
    if col is None:
        return None
    vals = {str(v) for v in col if not _is_empty(v)}
    if len(vals) != 1:
        raise InvalidInputError(
            f"{points.source}: column 'strata_spec' holds {sorted(vals)}; one sample has one "
            "stratification (do not merge samples drawn with different --strata)."
        )
    return [StrataSpec.parse(s) for s in vals.pop().split(";")]


def _class_codes(labels: Sequence[Any], cen: Census, source: str, column: str) -> np.ndarray:
    by_name = {name.lower(): code for code, name in cen.class_names.items()}
    out = np.empty(len(labels), dtype=np.int64)
    bad: list[str] = []
    for k, v in enumerate(labels):
        s = str(v).strip()
        try:
            f = float(s)
            code = int(f) if f == int(f) and int(f) in cen.class_names else None
        except ValueError:
            code = by_name.get(s.lower())
        if code is None:
            bad.append(s)
            out[k] = -1
        else:
            out[k] = code
    if bad:
        raise SampleDesignError(
            f"{source}: labels {sorted(set(bad))[:10]} in column {column!r} are not among the "
            f"map's classes {[f'{c} = {n}' for c, n in cen.class_names.items()]}; label with a "
            "class code or name (or pass --reference-kind value for fractions)."
        )
    return out


def assess_run(
    run: RunMap,
    points: PointTable,
    *,
    strata: Sequence[StrataSpec] | None = None,
    label_column: str = LABEL_COLUMN,
    reference_kind: str = "class",
) -> dict[str, Any]:
    """Accuracy and area estimates of a run from labelled reference points.

    Args:
        run: the run.
        points: the reference points (any CRS).
        strata: how the map becomes classes (first spec) and strata; default the sample's own
            ``strata_spec`` column.
        label_column: the column holding the reference label.
        reference_kind: ``class`` (labels are class codes or names) or ``value`` (numbers in
            the units of the first strata layer, e.g. tree-cover fractions: gives MAE/RMSE/
            bias, and classes by the same thresholds).

    Returns:
        The assessment document (see ``assessment.json``): ``design``, ``points`` (counts
        and every excluded point with its reason), ``overall`` (categorical), ``by_quality``,
        ``continuous`` (value kind) and ``warnings``.

    Raises:
        InvalidInputError: no strata, an unknown column or kind, duplicated points, or no
            point inside the run.
        SampleDesignError: labels that are not classes, a stratum without points.
    """
    if reference_kind not in ("class", "value"):
        raise InvalidInputError(
            f"reference_kind must be 'class' or 'value', got {reference_kind!r}."
        )
    file_specs = _specs_from_points(points)
    specs = list(strata) if strata else file_specs
    if not specs:
        raise InvalidInputError(
            f"{points.source} does not say how the map becomes classes (no 'strata_spec' "
            "column); pass --strata LAYER[:THRESHOLDS], e.g. --strata prediction:0.5."
        )
    if label_column not in points.fields:
        look_up_option(label_column, list(points.fields), what=f"column of {points.source}",
                       error=InvalidInputError)  # fmt: skip
    warnings: list[str] = []
    cen = census(run, specs)
    at = map_at_points(run, specs, points)
    labels = points.fields[label_column]
    pid = points.fields.get("point_id", np.arange(points.n))
    unlabelled = np.array([_is_empty(v) for v in labels])
    status = at["status"].copy()
    status[(status == "ok") & unlabelled] = "unlabelled"
    inside = at["status"] != "outside"
    if not inside.any():
        raise InvalidInputError(
            f"None of the {points.n} points of {points.source} falls in a done tile of the run "
            f"{run.layout.root} (zones {list(run.tiles)}): are the points in the CRS they "
            "declare? Check the CRS, or the run."
        )
    ok = status == "ok"
    cells = [(at["epsg"][k], at["tile"][k], at["row"][k], at["col"][k]) for k in np.flatnonzero(ok)]
    seen: dict[Any, int] = {}
    dups = []
    for k, c in zip(np.flatnonzero(ok), cells, strict=True):
        if c in seen:
            dups.append((int(seen[c]), int(k)))
        seen.setdefault(c, int(k))
    if dups:
        raise InvalidInputError(
            f"{points.source}: {len(dups)} point(s) repeat a sample pixel already in the sample "
            f"(rows {dups[:10]} as (first, repeat)); each pixel counts once: delete the repeated "
            "rows."
        )
    idx = np.flatnonzero(ok)
    excluded = [
        {"row": int(k), "point_id": str(pid[k]), "status": str(status[k]),
         "tile": str(at["tile"][k])}
        for k in np.flatnonzero(~ok)
    ]  # fmt: skip
    for what, reason in (
        ("outside", "outside the run's done tiles"),
        ("nodata", "on nodata (no valid value or quality 0)"),
        ("unlabelled", f"without a label in {label_column!r}"),
    ):
        count = int((status == what).sum())
        if count:
            warnings.append(f"{count} of {points.n} points are {reason}; they are not used.")
    if idx.size == 0:
        raise SampleDesignError(
            f"No labelled point of {points.source} lies on valid map pixels; label the points "
            f"in column {label_column!r}."
        )
    map_class = at["map_class"][idx]
    # the reference
    ref_value = None
    if reference_kind == "value":
        try:
            ref_value = np.array([float(str(v)) for v in labels[idx]])
        except ValueError as exc:
            raise SampleDesignError(
                f"{points.source}: --reference-kind value needs numbers in {label_column!r}."
            ) from exc
        spec0 = specs[0]
        if not spec0.thresholds:
            raise InvalidInputError(
                "--reference-kind value needs thresholds on the first strata layer (classes "
                "for the error matrix), e.g. --strata prediction:0.5."
            )
        ref_class = np.searchsorted(np.asarray(spec0.thresholds), ref_value, side="right")
    else:
        ref_class = _class_codes(list(labels[idx]), cen, points.source, label_column)
    # the design: the sample's strata, or the map classes as post-strata
    if file_specs is not None and "stratum" in points.fields:
        dcen = (
            cen
            if [str(s) for s in file_specs] == [str(s) for s in specs]
            else census(run, file_specs)
        )
        names = {dcen.stratum_name(k): v for k, v in dcen.strata.items()}
        st = np.array([str(v) for v in points.fields["stratum"][idx]], dtype=object)
        simple = bool((st == SIMPLE_STRATUM).all())
        if simple:  # a simple random sample: one stratum, all valid pixels
            names = {SIMPLE_STRATUM: sum(dcen.strata.values())}
        if file_specs is not specs and not simple:
            now = map_at_points(run, file_specs, points)["key"][idx]
            moved = sum(
                k < 0 or dcen.stratum_name(int(k)) != s for k, s in zip(now, st, strict=True)
            )
            if moved:
                warnings.append(
                    f"{moved} points are now in another stratum than when drawn (the map "
                    "changed?): the design uses the strata they were drawn in."
                )
        if "stratum_px" in points.fields:
            for s in set(st.tolist()):
                drawn = {int(float(v)) for v, t in zip(points.fields["stratum_px"][idx], st,
                                                      strict=True) if t == s}  # fmt: skip
                if s in names and drawn != {names[s]}:
                    warnings.append(
                        f"stratum {s!r}: {names[s]} px in the run now, {sorted(drawn)} when "
                        "the sample was drawn; the run's count is used."
                    )
        design_kind = "simple random (as drawn)" if simple else "stratified (as drawn)"
        design = StratifiedDesign(st, names)
        strata_specs = file_specs
    else:
        design_kind = "simple random, post-stratified by map class"
        design = StratifiedDesign(
            np.array([cen.class_names[int(c)] for c in map_class], dtype=object),
            {cen.class_names[c]: v for c, v in cen.classes.items()},
        )
        strata_specs = specs[:1]
        warnings.append(
            "the points carry no stratum: treated as a simple random (or systematic) sample "
            "of the run, post-stratified by map class."
        )
    overall = assess_categorical(
        design, map_class, ref_class, cen.class_names, pixel_area_m2=cen.pixel_area_m2,
        mapped_px=cen.classes,
    )  # fmt: skip
    doc: dict[str, Any] = {
        "run": run.layout.root,
        "reference": points.source,
        "label_column": label_column,
        "reference_kind": reference_kind,
        "design": {
            "kind": design_kind,
            "strata": [str(s) for s in strata_specs],
            "map_classes": str(specs[0]),
            "stratum_px": {str(k): int(v) for k, v in design.sizes.items()},
            "stratum_n": {
                str(k): int((design.strata.astype(str) == str(k)).sum()) for k in design.sizes
            },
            "pixel_area_m2": cen.pixel_area_m2,
        },
        "points": {
            "total": points.n,
            "used": int(idx.size),
            "excluded": excluded,
            "by_status": {s: int((status == s).sum()) for s in sorted(set(status.tolist()))},
        },
        "overall": overall.to_dict(),
        "by_quality": [],
        "continuous": None,
        "warnings": [],
    }
    quality = at["quality"][idx]
    if (quality >= 0).any():
        for q, name in _QUALITY.items():
            dom = quality == q
            part = assess_categorical(
                design, map_class, ref_class, cen.class_names, pixel_area_m2=cen.pixel_area_m2,
                mapped_px={}, domain=dom, domain_name=f"quality={name}",
            )  # fmt: skip
            doc["by_quality"].append(part.to_dict())
    if ref_value is not None:
        mv = at["map_value"][idx]
        cont = {"all": assess_continuous(design, mv, ref_value).to_dict()}
        if (quality >= 0).any():
            for q, name in _QUALITY.items():
                if (quality == q).any():
                    cont[f"quality={name}"] = assess_continuous(
                        design, mv, ref_value, domain=quality == q, domain_name=f"quality={name}"
                    ).to_dict()
        doc["continuous"] = cont
    doc["warnings"] = warnings + list(overall.warnings)
    return doc


# ---- report -------------------------------------------------------------------------------------


def _e(v: Any) -> str:
    return html.escape(str(v))


def _pct(d: Mapping[str, Any] | None) -> str:
    if not d or d.get("value") is None:
        return "n/a"
    se = d.get("se")
    return (
        f"{100 * d['value']:.1f} ± {100 * 1.96 * se:.1f}"
        if se is not None
        else (f"{100 * d['value']:.1f} (SE undefined)")
    )


def _area_figure(doc: Mapping[str, Any]) -> str:
    per = doc["overall"]["per_class"]
    names = [c["name"] for c in per]
    y = np.arange(len(per))
    est = np.array([c["area_ha"]["value"] for c in per], dtype=float)
    lo = np.array([c["area_ha"]["ci95"][0] if c["area_ha"]["ci95"][0] is not None else np.nan
                   for c in per], dtype=float)  # fmt: skip
    hi = np.array([c["area_ha"]["ci95"][1] if c["area_ha"]["ci95"][1] is not None else np.nan
                   for c in per], dtype=float)  # fmt: skip
    mapped = np.array([c["mapped_ha"] for c in per], dtype=float)
    fig, ax = new_figure(7.5, 0.6 * len(per) + 1.4)
    ax.errorbar(est, y + 0.12, xerr=[np.nan_to_num(est - lo), np.nan_to_num(hi - est)], fmt="o",
                color="#12343b", capsize=4, label="estimated (95 % CI)")  # fmt: skip
    ax.scatter(mapped, y - 0.12, marker="s", color="#e07a1f", label="mapped (pixel count)")
    ax.set_yticks(y, names)
    ax.set_xlabel("area, ha")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", frameon=False, fontsize=9)
    ax.set_title("Estimated vs mapped area per class")
    return figure_png(fig)


def accuracy_section(doc: Mapping[str, Any]) -> str:
    """The ``<section id='accuracy'>`` of ``report.html`` for an assessment document."""
    ov = doc["overall"]
    parts = [
        "<section id='accuracy'><h2>Accuracy and area (reference sample)</h2>",
        f"<p>Design: {_e(doc['design']['kind'])}; strata {_e(', '.join(doc['design']['strata']))}"
        f"; map classes from <code>{_e(doc['design']['map_classes'])}</code>; "
        f"{doc['points']['used']} of {doc['points']['total']} points used (reference "
        f"<code>{_e(doc['reference'])}</code>, column <code>{_e(doc['label_column'])}</code>). "
        "Estimators of Olofsson et al. (2014); ± = 95 % confidence interval.</p>",
        f"<div class='kpis'><div class='kpi'><b>{_pct(ov['overall_accuracy'])} %</b>"
        "<span>overall accuracy</span></div></div>",
        "<table><tr><th>class</th><th>user's acc. %</th><th>producer's acc. %</th>"
        "<th>estimated area, ha</th><th>95 % CI, ha</th><th>mapped area, ha</th>"
        "<th>points mapped / labelled</th></tr>",
    ]
    for c in ov["per_class"]:
        a = c["area_ha"]
        ci = a["ci95"]
        ci_s = f"{ci[0]:,.1f} – {ci[1]:,.1f}" if ci[0] is not None else "undefined"
        parts.append(
            f"<tr><td>{_e(c['name'])}</td><td class='num'>{_pct(c['users_accuracy'])}</td>"
            f"<td class='num'>{_pct(c['producers_accuracy'])}</td>"
            f"<td class='num'>{a['value']:,.1f}</td><td class='num'>{ci_s}</td>"
            f"<td class='num'>{c['mapped_ha']:,.1f}</td>"
            f"<td class='num'>{c['n_mapped']} / {c['n_reference']}</td></tr>"
        )
    parts.append("</table>")
    classes = ov["classes"]
    parts.append(
        "<h3>Error matrix (estimated area proportions; rows map, columns reference)</h3><table>"
        "<tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in classes) + "</tr>"
    )
    for name, row in zip(classes, ov["error_matrix"], strict=True):
        parts.append(
            f"<tr><th>{_e(name)}</th>"
            + "".join(f"<td class='num'>{v:.4f}</td>" for v in row)
            + "</tr>"
        )
    parts.append("</table>")
    parts.append(
        f"<figure><img alt='estimated vs mapped area' src='data:image/png;base64,"
        f"{_area_figure(doc)}'><figcaption>Area of each class estimated from the reference "
        "sample (95 % CI) and counted from the map; the pixel count is biased by the map's "
        "commission and omission errors.</figcaption></figure>"
    )
    if doc.get("by_quality"):
        parts.append("<h3>By quality class</h3><table><tr><th>quality</th><th>points</th>"
                     "<th>overall acc. %</th></tr>")  # fmt: skip
        for part in doc["by_quality"]:
            parts.append(
                f"<tr><td>{_e(part['domain'])}</td><td class='num'>{part['n']}</td>"
                f"<td class='num'>{_pct(part['overall_accuracy'])}</td></tr>"
            )
        parts.append("</table>")
    if doc.get("continuous"):
        parts.append("<h3>Continuous errors (map − reference)</h3><table><tr><th>domain</th>"
                     "<th>points</th><th>bias</th><th>MAE</th><th>RMSE</th></tr>")  # fmt: skip
        for name, c in doc["continuous"].items():
            cells = "".join(
                f"<td class='num'>{c[m]['value']:.4f} ± {1.96 * c[m]['se']:.4f}</td>"
                if c[m]["se"] is not None else f"<td class='num'>{c[m]['value']:.4f}</td>"
                for m in ("bias", "mae", "rmse")
            )  # fmt: skip
            parts.append(f"<tr><td>{_e(name)}</td><td class='num'>{c['n']}</td>{cells}</tr>")
        parts.append("</table>")
    if doc.get("warnings"):
        parts.append("<h3>Warnings</h3><ul>")
        parts.extend(f"<li class='bad'>{_e(w)}</li>" for w in doc["warnings"])
        parts.append("</ul>")
    parts.append("</section>")
    return "\n".join(parts)


_SECTION_RE = re.compile(r"<section id='accuracy'>.*?</section>\s*(?=<section|</main>)", re.S)


def _upload_text(text: str, loc: Any, name: str) -> None:
    with tempfile.TemporaryDirectory(prefix="geoxai-assess-") as tmp:
        p = Path(tmp) / name
        p.write_text(text, encoding="utf-8")
        upload_file(p, loc)


def write_assessment(run: RunMap, doc: Mapping[str, Any]) -> tuple[str, str]:
    """Write ``<root>/assessment.json``, the section fragment ``<root>/assessment.html`` (that
    :func:`geoxai.mapping.report.render_report` embeds whenever it rewrites the report), and
    put the section into the current ``report.html`` (replacing an older one; a run without a
    report gets a page with this section only). Returns ``(json_url, report_url)``.
    """
    layout = run.layout
    write_json(dict(doc), layout.at(layout.assessment_url()))
    section = accuracy_section(doc)
    _upload_text(section, layout.at(layout.accuracy_section_url()), ACCURACY_SECTION_FILE)
    loc = layout.at(layout.report_url())
    try:
        page = bytes(loc.filesystem().cat_file(loc.path)).decode("utf-8")
    except FileNotFoundError:
        page = ""
    if "</main>" in page:
        page = _SECTION_RE.sub("", page)
        anchor = "<section id='provenance'>" if "<section id='provenance'>" in page else "</main>"
        page = page.replace(anchor, section + "\n" + anchor, 1)
    else:
        page = (
            f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>geoxai "
            f"assessment</title><style>{CSS}</style></head><body><main>{section}</main>"
            "</body></html>"
        )
    _upload_text(page, loc, "report.html")
    return layout.assessment_url(), layout.report_url()
