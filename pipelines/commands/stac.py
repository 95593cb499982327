"""``geoxai stac-search``: search a STAC API or local item files, print normalized items."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("stac-search")
    def stac_search(
        source: list[str] = typer.Argument(
            ..., help="STAC API root URL, or local item JSON / ndjson / FeatureCollection files."
        ),
        collections: list[str] = typer.Option(
            ..., "--collection", "-c", help="Collection id (repeat for several)."
        ),
        bbox: str | None = typer.Option(
            None, "--bbox", help="'minlon,minlat,maxlon,maxlat' in degrees."
        ),
        datetime: str | None = typer.Option(
            None, "--datetime", help="RFC 3339 instant or interval, e.g. 2023-01-01/2023-12-31."
        ),
        max_cloud: float | None = typer.Option(
            None, "--max-cloud", min=0, max=100, help="Keep items with eo:cloud_cover <= this."
        ),
        bands: list[str] = typer.Option(
            [], "--band", help="Require this band in every item (repeat), e.g. B04 or SCL."
        ),
        max_items: int | None = typer.Option(None, "--max-items", min=1, help="Stop after N."),
        fmt: str = typer.Option(
            "table", "--format", help="table (id, time, cloud, EPSG), ids, or geojson."
        ),
    ) -> None:
        """Search STAC (POST, paged, retried) and print the normalized items, sorted by time."""
        from rich.console import Console

        from geoxai.errors import InvalidInputError, look_up_option
        from geoxai.io.stac import search

        fmt = look_up_option(fmt, ["table", "ids", "geojson"], what="output format")
        box = None
        if bbox:
            try:
                box = [float(v) for v in bbox.split(",")]
            except ValueError as exc:
                raise InvalidInputError(
                    f"--bbox {bbox!r} must be 'minlon,minlat,maxlon,maxlat' numbers."
                ) from exc
        url = source[0] if len(source) == 1 and "://" in source[0] else source
        with Console(stderr=True).status("searching STAC ..."):
            items = search(
                url,
                collections=collections,
                bbox=box,
                datetime=datetime,
                max_cloud=max_cloud,
                bands=bands or None,
                max_items=max_items,
            )
        if fmt == "ids":
            typer.echo("\n".join(it.id for it in items))
        elif fmt == "geojson":
            features = [it.to_dict(transform_hrefs=False) for it in items]
            typer.echo(json.dumps({"type": "FeatureCollection", "features": features}))
        else:
            from rich.table import Table

            table = Table("id", "datetime", "collection", "cloud %", "EPSG", "scaling B04")
            for it in items:
                cloud = it.properties.get("eo:cloud_cover")
                table.add_row(
                    it.id,
                    str(it.datetime),
                    str(it.collection_id),
                    "" if cloud is None else f"{cloud:.1f}",
                    str(it.properties.get("proj:epsg", "")),
                    str(it.properties.get("geoxai:scaling", {}).get("B04", "")),
                )
            Console().print(table)
            Console(stderr=True).print(f"{len(items)} item(s)")
