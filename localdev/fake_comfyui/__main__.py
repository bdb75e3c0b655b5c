"""``python -m localdev.fake_comfyui --host H --port P --input-dir D --output-dir D``: the fake as a
server process; prints one line when it is ready, stops on SIGINT / SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sys
from pathlib import Path

from localdev.fake_comfyui.identity import DEFAULT_MAX_UPLOAD, FAKE_VERSION
from localdev.fake_comfyui.server import FakeComfyServer, start_site


async def _serve_forever(args: argparse.Namespace) -> None:
    server = FakeComfyServer(
        args.input_dir, args.output_dir, temp_dir=args.temp_dir, max_upload_size=args.max_upload_size
    )
    runner, port = await start_site(server, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    print(
        f"fake ComfyUI {FAKE_VERSION} (stand-in, no models) ready at http://{args.host}:{port} "
        f"input={server.input_dir} output={server.output_dir}",
        flush=True,
    )
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A fake ComfyUI 0.33.0 (model-free stand-in for tests/demo)."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--input-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--temp-dir", type=Path, default=None)
    parser.add_argument(
        "--max-upload-size", type=int, default=DEFAULT_MAX_UPLOAD, help="bytes (default 100 MiB)"
    )
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        print("fake ComfyUI: ffmpeg and ffprobe must be installed", file=sys.stderr)
        return 2
    asyncio.run(_serve_forever(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
