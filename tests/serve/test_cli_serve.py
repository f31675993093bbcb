"""`transformer serve` from the command line: it serves over real HTTP on loopback, and bad flags are a one-line
error (exit 2) before any model is loaded."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

import transformer
from transformer.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_over_http_on_loopback(translation_dir):
    port = _free_port()
    command = [sys.executable, "-m", "transformer", "serve", "--model", str(translation_dir), "--port", str(port),
               "--max-batch", "4"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, info = time.monotonic() + 60, None
        while info is None and time.monotonic() < deadline and server.poll() is None:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1).json()
            except httpx.TransportError:
                time.sleep(0.2)
        assert info is not None, server.stdout.read() if server.poll() is not None else "no answer in 60 s"
        assert info["task"] == "translation" and info["limits"]["max_batch"] == 4
        answer = httpx.post(f"http://127.0.0.1:{port}/api/translate", json={"text": "haus baum"}, timeout=30).json()
        assert answer["translation"] == transformer.load(translation_dir).translate(["haus baum"])[0]
    finally:
        server.terminate()
        server.wait(30)


def test_bad_flags_are_an_error_naming_the_flag(translation_dir, capsys):
    assert main(["serve", "--model", str(translation_dir), "--max-batch", "0"]) == 2
    assert "--max-batch 0 must be at least 1" in capsys.readouterr().err
    assert main(["serve", "--model", str(translation_dir), "--port", "70000"]) == 2
    assert "--port 70000" in capsys.readouterr().err
