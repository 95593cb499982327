"""``geoxai tiles``: list the tiles that cover an AOI."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    @app.command("tiles")
    def tiles(
        aoi: str = typer.Option(
            ...,
            "--aoi",
            help="bbox 'minlon,minlat,maxlon,maxlat', a GeoJSON file, or an ISO 3166 code.",
        ),
        halo: int = typer.Option(0, "--halo", min=0, help="Halo width in pixels (10 m)."),
        fmt: str = typer.Option("json", "--format", help="json (a list) or geojson."),
    ) -> None:
        """Print the 6x6 km UTM tiles that cover an AOI (split by UTM zone)."""
        from geoxai.errors import look_up_option
        from geoxai.geo.aoi import cover_aoi, tiles_to_geojson

        fmt = look_up_option(fmt, ["json", "geojson"], what="output format")
        found = cover_aoi(aoi, halo)
        if fmt == "geojson":
            typer.echo(json.dumps(tiles_to_geojson(found)))
        else:
            typer.echo(json.dumps([t.to_dict() for t in found], indent=1))
