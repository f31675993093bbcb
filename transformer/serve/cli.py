"""The `transformer serve` command (cli.py registers and dispatches it): its flags, and the server's start."""

from __future__ import annotations

import argparse
from pathlib import Path

from transformer.devices import DEVICE_HELP
from transformer.serve.settings import ServeSettings

_DEFAULTS = ServeSettings()


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """Register the `serve` subcommand."""
    serve = commands.add_parser("serve", help="serve a model over HTTP (FastAPI): /api/translate, /api/generate, "
                                              "/api/embed, /api/info, OpenAPI at /docs and a web page at /")
    serve.add_argument("--model", required=True, type=Path,
                       help="model directory written by `transformer train` or `transformer import-hf`")
    serve.add_argument("--device", default="auto", help=DEVICE_HELP)
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every "
                            "interface: the server has no authentication)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--max-batch", type=int, default=_DEFAULTS.max_batch,
                       help=f"translation requests decoded together at most (default: {_DEFAULTS.max_batch}; "
                            "1: no dynamic batching)")
    serve.add_argument("--batch-wait-ms", type=float, default=_DEFAULTS.batch_wait_ms,
                       help="how long the first request of a batch waits for more, in milliseconds "
                            f"(default: {_DEFAULTS.batch_wait_ms:g})")
    serve.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue,
                       help=f"requests waiting at most; more are answered 503 (default: {_DEFAULTS.max_queue})")
    serve.add_argument("--timeout", type=float, default=_DEFAULTS.timeout_s, metavar="SECONDS",
                       help=f"answer 504 to a request not done within this, queueing included (default: "
                            f"{_DEFAULTS.timeout_s:g})")
    serve.add_argument("--max-body-bytes", type=int, default=_DEFAULTS.max_body_bytes,
                       help=f"answer 413 to a larger request body (default: {_DEFAULTS.max_body_bytes})")
    serve.add_argument("--max-input-chars", type=int, default=_DEFAULTS.max_input_chars,
                       help=f"most characters of a text or prompt (default: {_DEFAULTS.max_input_chars})")
    serve.add_argument("--max-input-tokens", type=int,
                       help="most tokens of a text or prompt (default and most: the model's data.max_len, where "
                            "translation cuts sources)")
    serve.add_argument("--max-nbest", type=int, default=_DEFAULTS.max_nbest,
                       help=f"largest nbest a request may ask for (default: {_DEFAULTS.max_nbest})")
    serve.add_argument("--max-beam", type=int, default=_DEFAULTS.max_beam,
                       help=f"largest beam a request may ask for (default: {_DEFAULTS.max_beam})")
    serve.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens,
                       help=f"largest max_new_tokens of /api/generate (default: {_DEFAULTS.max_new_tokens})")
    serve.add_argument("--max-texts", type=int, default=_DEFAULTS.max_texts,
                       help=f"most texts in one /api/embed request (default: {_DEFAULTS.max_texts})")
    serve.add_argument("--static", type=Path, default=_DEFAULTS.static_dir, metavar="DIR",
                       help="directory of the web page served at / (default: the one installed with the package)")


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    return ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue,
                         timeout_s=args.timeout, max_body_bytes=args.max_body_bytes,
                         max_input_chars=args.max_input_chars, max_input_tokens=args.max_input_tokens,
                         max_nbest=args.max_nbest, max_beam=args.max_beam, max_new_tokens=args.max_new_tokens,
                         max_texts=args.max_texts, static_dir=args.static)


def cmd_serve(args: argparse.Namespace) -> None:
    """Load the model and serve it until interrupted."""
    settings = settings_from_args(args)  # bad flags fail before the model is loaded
    if not 0 < args.port < 65536:
        raise ValueError(f"--port {args.port} must be between 1 and 65535 (0 is not allowed: say which port)")
    try:
        import uvicorn

        from transformer.serve.app import create_app
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"transformer serve needs {error.name}: pip install 'transformer[serve]' "
                                  "(fastapi and uvicorn)") from None
    app = create_app(args.model, settings, device=args.device)
    print(f"serving {args.model} ({app.state.served.task}) at http://{args.host}:{args.port}/ "
          f"(API docs: /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
