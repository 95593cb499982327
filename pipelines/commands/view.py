"""``geoxai view RUN_ROOT``: the run as a web map on this machine (loopback only)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view(
        run_root: str = typer.Argument(
            ..., help="The run root, <store.root>/<name>/<year> (a path or s3://bucket/prefix)."
        ),
        port: int = typer.Option(8766, "--port", min=0, max=65535, help="TCP port (0: any)."),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Loopback address to bind (127.x.x.x or ::1 only)."
        ),
        write_cogs: bool = typer.Option(
            False,
            "--write-cogs",
            help="First write the COGs and mosaics of every done tile from the zone stores "
            "(runs made with processing.write_cogs: false, or damaged COGs).",
        ),
    ) -> None:
        """Serve the run's layers as a pannable map with a pixel inspector.

        Open the printed address in a browser on this machine: every output layer (prediction,
        ASOS sensitivity, SpacEX attribution, quality, change) with opacity and legend, the tile
        grid coloured by status, and a click on a pixel shows its values, quality, clear
        observations, smoothed series and its tile's record. S3 runs use the same AWS_*
        variables as the run. Ctrl-C stops it.
        """
        import signal

        from rich.console import Console

        from pipelines.viewer import make_server

        console = Console(stderr=True)
        if write_cogs:
            from geoxai.mapping.view import write_missing_cogs

            mosaics = write_missing_cogs(run_root)
            n = sum(len(v) for v in mosaics.values())
            console.print(f"wrote the COGs and {n} mosaics of {run_root}")
        server = make_server(run_root, host, port)
        if server.view is None:
            console.print(f"[bold red]error:[/] {server.error}", highlight=False)
        else:
            for p in server.view.problems:
                console.print(f"[bold yellow]warning:[/] {p}", highlight=False)
        console.print(f"geoxai view on [bold]{server.url}[/] ({run_root}); Ctrl-C stops")

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
