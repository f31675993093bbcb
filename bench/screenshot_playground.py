"""The README's picture of the playground: `transformer serve`'s page in Chromium, a sentence translated and an
output token hovered, saved as docs/img/playground.png.

usage: python bench/screenshot_playground.py [--model runs/c-en-han] [--text TEXT] [--hover TOKEN]
                                             [--layer N] [--head N] [--out docs/img/playground.png]

It runs the documented command, `transformer serve --model MODEL --port PORT` (on a free loopback port), as a
subprocess; opens the page in Debian's Chromium (/usr/bin/chromium, headless, driven by Playwright), types
--text, presses Enter, waits for the translation, picks --layer and --head (default: the last layer, the
average of heads), hovers the output token --hover (default: the one whose attention is most peaked), and
saves the whole page as a 256-colour PNG. Chinese text needs a CJK font on the system (Debian: apt-get
install fonts-wqy-microhei). The last line is one JSON object: the translation, the hovered token, the file.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from io import BytesIO
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TEXT = "耶和华是我的牧者，我必不致缺乏。"  # Psalm 23:1 in the New Chinese Version (the `c` of the corpus)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(model: Path, port: int, timeout: float = 120.0) -> subprocess.Popen:
    """`transformer serve --model MODEL --port PORT`, once its /api/info answers."""
    command = [sys.executable, "-m", "transformer", "serve", "--model", str(model), "--port", str(port)]
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise SystemExit(f"{' '.join(command)} exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=2):
                return server
        except OSError:
            if time.monotonic() > deadline:
                server.terminate()
                raise SystemExit(f"{' '.join(command)} did not answer within {timeout:g} s") from None
            time.sleep(0.25)


def peakedness(attention: dict, layer: int, head: str, t: int) -> float:
    """The largest weight output token t gives one source token (in `layer`, `head` or the mean of heads)."""
    heads = attention["cross"][layer]
    rows = heads if head == "mean" else [heads[int(head)]]
    return max(sum(row[t][s] for row in rows) / len(rows) for s in range(len(attention["source_tokens"])))


def screenshot(url: str, args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page(viewport={"width": 960, "height": 760}, device_scale_factor=1)
        page.goto(url)
        page.get_by_label("Text to translate", exact=True).fill(args.text)
        with page.expect_response("**/api/translate") as response:
            page.get_by_label("Text to translate", exact=True).press("Enter")
        answer = response.value.json()
        if not response.value.ok or not answer.get("attention"):
            raise SystemExit(f"the server answered {response.value.status}: {json.dumps(answer)[:500]}")
        page.locator("#target-tokens .token").first.wait_for()
        page.get_by_label("Text to translate", exact=True).blur()  # no focus ring in the picture
        attention = answer["attention"]
        layer = args.layer - 1 if args.layer else len(attention["cross"]) - 1
        head = "mean" if args.head is None else str(args.head - 1)
        page.get_by_label("Layer", exact=True).select_option(str(layer))
        page.get_by_label("Head", exact=True).select_option(head)
        tokens = attention["target_tokens"]
        if args.hover is not None:
            if args.hover not in tokens:
                raise SystemExit(f"--hover {args.hover!r} is not an output token: {tokens}")
            t = tokens.index(args.hover)
        else:
            t = max(range(len(tokens) - 1), key=lambda i: peakedness(attention, layer, head, i))  # not </s>
        page.locator("#target-tokens .token").nth(t).hover()
        png = page.screenshot(full_page=True)
        browser.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.open(BytesIO(png)).convert("RGB").quantize(colors=256).save(args.out, optimize=True)
    return {"translation": answer["translation"], "hovered": tokens[t], "layer": layer + 1,
            "head": head if head == "mean" else int(head) + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("runs/c-en-han"), help="model directory to serve")
    parser.add_argument("--text", default=TEXT, help="the sentence to translate")
    parser.add_argument("--hover", help="the output token to hover over (default: the most peaked attention)")
    parser.add_argument("--layer", type=int, help="decoder layer, from 1 (default: the last)")
    parser.add_argument("--head", type=int, help="attention head, from 1 (default: the average of heads)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/playground.png", help="the PNG to write")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no {CHROMIUM}: apt-get install chromium")
    port = unused_port()
    server = serve(args.model, port)
    try:
        figures = screenshot(f"http://127.0.0.1:{port}/", args)
    finally:
        server.terminate()
        server.wait(timeout=30)
    emit_json({"model": str(args.model), **figures, "png": str(args.out), "bytes": args.out.stat().st_size})


if __name__ == "__main__":
    main()
