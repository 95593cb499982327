"""``geoxai ui``: the guided web page for training a U-Net from rasters + a mask."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("ui")
    def ui(
        host: str = typer.Option(
            "127.0.0.1",
            "--host",
            help="Address to listen on. Loopback by default: only this machine can open the "
            "page (use an SSH tunnel from your laptop to a remote data machine).",
        ),
        port: int = typer.Option(8765, "--port", min=0, max=65535, help="TCP port (0: any free)."),
        workdir: str = typer.Option(
            ".",
            "--workdir",
            help="Folder whose files the page may pick and write (data, outputs).",
        ),
    ) -> None:
        """Serve the page: pick rasters and a mask, set parameters, train, predict.

        Every control is explained on the page; settings are checked by the same code as
        `geoxai train segment`, and the config the page ran is saved as ui_config.yaml in the
        output folder (re-run it with `geoxai train segment <out_dir>/ui_config.yaml`).
        """
        import ipaddress
        import signal

        from rich.console import Console

        from pipelines.ui import make_server

        console = Console(stderr=True)
        server = make_server(host, port, workdir)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            console.print(
                f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this "
                "machine can read files under the workdir and start training."
            )
        console.print(
            f"geoxai ui on [bold]{server.url}[/] (workdir {server.paths.root}); Ctrl-C stops"
        )

        def _stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # SIGTERM also stops a running training child

        signal.signal(signal.SIGTERM, _stop)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
