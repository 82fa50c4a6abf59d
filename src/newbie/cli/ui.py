"""`newbie ui`: start the Streamlit gallery (`streamlit run` on app.py, headless, local by default)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from newbie.errors import NewbieError

APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"
# The star-field palette; the page's CSS draws the stars, these colour Streamlit's own widgets.
THEME = {
    "theme.base": "dark",
    "theme.primaryColor": "#f3c969",
    "theme.backgroundColor": "#060a1c",
    "theme.secondaryBackgroundColor": "#121a3a",
    "theme.textColor": "#e6e9ff",
}


def add_parser(subparsers) -> None:
    from newbie.ui.gallery import default_data_dir

    p = subparsers.add_parser("ui", help="the web gallery: compose, generate, browse (Streamlit)")
    p.add_argument(
        "--model", help="model folder or ComfyUI models/ folder (default: the embedded demo model)"
    )
    p.add_argument(
        "--comfy-dir",
        help="a ComfyUI models/ folder: the NewBie files in diffusion_models/, "
        "text_encoders/ (or clip/) and vae/, found by their usual names",
    )
    p.add_argument("--port", type=int, default=8501, help="port to listen on (default: 8501)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 exposes it)"
    )
    p.add_argument(
        "--data-dir",
        default=str(default_data_dir()),
        help=f"gallery folder: SQLite index + PNG files (default: {default_data_dir()})",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--access-key",
        help="the page asks for ?key=KEY before showing anything (default: $NEWBIE_UI_ACCESS_KEY); "
        "needed to bind beyond loopback",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without an access key (anyone who reaches the port can generate)",
    )
    p.set_defaults(func=run)


def streamlit_command(args) -> tuple[list[str], dict[str, str]]:
    """The `streamlit run` command line and the environment the page reads its settings from."""
    from newbie.ui.settings import UISettings, cpu_threads

    if not 0 < args.port < 65536:
        raise NewbieError(f"--port must be between 1 and 65535, got {args.port}")
    comfy_dir = getattr(args, "comfy_dir", None)
    if args.model and comfy_dir:
        raise NewbieError("give --model or --comfy-dir, not both")
    if comfy_dir:
        from newbie.loading.comfy import find_comfy_files

        find_comfy_files(comfy_dir)  # not a ComfyUI folder: fail here, not in the page
        args.model = comfy_dir  # the page loads a ComfyUI models/ folder given as its model path
    if args.model == "demo" and not Path("demo").exists():
        args.model = None  # --model demo: the embedded demo model, as everywhere
    if args.model and not Path(args.model).exists():
        raise NewbieError(f"--model {args.model}: no such file or folder")
    from newbie.cli.serve import is_loopback
    from newbie.ui.gallery import Gallery

    access_key = getattr(args, "access_key", None) or os.environ.get("NEWBIE_UI_ACCESS_KEY") or None
    remote = not is_loopback(args.host)
    if remote and not access_key and not getattr(args, "insecure", False):
        raise NewbieError(
            f"binding to {args.host} exposes the page to the network: give --access-key (or "
            "NEWBIE_UI_ACCESS_KEY), keep the default --host 127.0.0.1, or pass --insecure"
        )
    data_dir = Path(args.data_dir).expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NewbieError(f"--data-dir {data_dir}: cannot create it ({e.strerror})") from None
    Gallery(data_dir)  # an unusable or emptied gallery index: one line here, not a broken page
    model = str(Path(args.model).resolve()) if args.model else None
    threads = UISettings.from_env().cpu_threads or cpu_threads()  # the user's NEWBIE_UI_CPU_THREADS wins
    settings = UISettings(
        model=model,
        data_dir=data_dir,
        device=args.device,
        cpu_threads=threads,
        access_key=access_key,
        remote=remote,
    )
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.port",
        str(args.port),
        "--server.address",
        args.host,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.showErrorDetails",
        "none",
        "--client.toolbarMode",
        "minimal",
        "--server.fileWatcherType",
        "none",
        "--server.maxUploadSize",  # MB; the page checks each upload's header too (workflows.open_upload)
        "32",
    ]
    for key, value in THEME.items():
        cmd += [f"--{key}", value]
    return cmd, {**os.environ, **settings.env()}


def run(args) -> int:
    try:
        import streamlit  # noqa: F401  (only to fail early with an install hint)
    except ImportError:
        raise NewbieError("newbie ui needs Streamlit: pip install -r requirements-extras.txt") from None
    cmd, env = streamlit_command(args)
    from newbie.cli.ports import check_port_free

    check_port_free(args.host, args.port)  # before the URL: Streamlit would print it, then fail
    key = "/?key=<your access key>" if env.get("NEWBIE_UI_ACCESS_KEY") else ""
    print(
        f"newbie ui: http://{args.host}:{args.port}{key}  (gallery in {env['NEWBIE_UI_DATA_DIR']})",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    # Streamlit takes over this process, so Ctrl+C and a service manager's SIGTERM reach the server itself.
    os.execve(cmd[0], cmd, env)
    return 0  # not reached
