"""The limits and batching settings of `transformer serve` (each one a CLI flag of `transformer serve`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"  # the web page (index.html, app.js, style.css), served at /


@dataclass(frozen=True)
class ServeSettings:
    """What the server accepts and how it batches. Every field is the CLI flag of the same name
    (`max_batch` is --max-batch); `max_input_tokens=None` means the model's data.max_len."""

    max_batch: int = 32  # requests decoded together at most (1: no batching)
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for others
    max_queue: int = 1024  # requests waiting at most; more are answered 503
    timeout_s: float = 30.0  # per request, queueing included: 504 past it
    max_body_bytes: int = 64 * 1024  # 413 for a larger request body
    max_input_chars: int = 2000  # a text or prompt's characters
    max_input_tokens: int | None = None  # a text or prompt's tokens (None: the model's data.max_len)
    max_nbest: int = 8
    max_beam: int = 16
    max_new_tokens: int = 256  # /api/generate's cap on max_new_tokens
    max_texts: int = 64  # /api/embed's cap on the texts of one request
    static_dir: Path = STATIC_DIR

    def __post_init__(self) -> None:
        positive = {"max_batch": self.max_batch, "max_queue": self.max_queue, "max_body_bytes": self.max_body_bytes,
                    "max_input_chars": self.max_input_chars, "max_nbest": self.max_nbest, "max_beam": self.max_beam,
                    "max_new_tokens": self.max_new_tokens, "max_texts": self.max_texts}
        if self.max_input_tokens is not None:
            positive["max_input_tokens"] = self.max_input_tokens
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} {value} must be at least 1")
        if not 0 <= self.batch_wait_ms < float("inf"):
            raise ValueError(f"--batch-wait-ms {self.batch_wait_ms} must be a finite number >= 0 (e.g. 5)")
        if not 0 < self.timeout_s < float("inf"):
            raise ValueError(f"--timeout {self.timeout_s} must be a finite number of seconds > 0 (e.g. 30)")
        if self.max_nbest > self.max_beam:
            raise ValueError(f"--max-nbest {self.max_nbest} exceeds --max-beam {self.max_beam}: n-best lists come "
                             "from the beam, so lower --max-nbest or raise --max-beam")

    def limits(self) -> dict:
        """The limits as /api/info reports them (JSON-ready)."""
        fields = asdict(self)
        fields.pop("static_dir")
        return fields
