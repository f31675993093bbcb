"""A Hugging Face model named by its Hub id (`Helsinki-NLP/opus-mt-de-en`) as a local directory.

`resolve_hf_dir(name)` returns an existing directory unchanged; otherwise it treats `name` as a Hub id and
returns its snapshot in the Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub), downloading only the files
import-hf reads when they are missing. With HF_HUB_OFFLINE set it never goes online; otherwise a failed
connection falls back to the cache. Needs `huggingface_hub` (the `hf` extra) only for a Hub id.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# What load_hf_dir reads: the config, the weights in either format, and the tokenizer files of Marian and BART.
HUB_FILES = ["config.json", "generation_config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json",
             "tokenizer_config.json", "special_tokens_map.json", "source.spm", "target.spm", "vocab.json"]
_TRUE = {"1", "ON", "YES", "TRUE"}


def resolve_hf_dir(name: str | os.PathLike) -> Path:
    """`name` if it is a directory, else the cached (or downloaded) snapshot of the Hub model `name`.

    Raises FileNotFoundError naming `name` when it is neither a directory nor a Hub id that is cached or can be
    downloaded, and ValueError when the Hub has no such model (or it is private or gated)."""
    path = Path(name)
    if path.is_dir():
        return path
    repo_id = os.fspath(name)
    not_a_directory = (f"{repo_id} is not a directory; pass a directory written by save_pretrained, or a Hugging "
                       "Face Hub id such as Helsinki-NLP/opus-mt-de-en")
    if path.exists():
        raise FileNotFoundError(not_a_directory)
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"{repo_id} is not a directory, and reading it as a Hugging Face Hub id needs "
                                  "huggingface_hub: pip install -e '.[hf]'") from error
    if not _is_repo_id(repo_id):
        raise FileNotFoundError(not_a_directory)
    try:
        return _snapshot(repo_id)
    except LocalEntryNotFoundError as error:
        reason = "HF_HUB_OFFLINE is set" if _offline() else "no connection to the Hub"
        raise FileNotFoundError(
            f"{repo_id} is neither a local directory nor a model in the Hugging Face cache ({hub_cache()}; "
            f"set by $HF_HOME or $HF_HUB_CACHE), and this machine could not download it ({reason}); run "
            f"`huggingface-cli download {repo_id}` (or `hf download {repo_id}`) where the Hub can be reached, "
            "or pass a directory written by save_pretrained") from error
    except RepositoryNotFoundError as error:
        raise ValueError(f"{repo_id}: the Hugging Face Hub has no model of that id that this machine may read (a "
                         "typo, or a private or gated model: log in with `hf auth login`); check the id on "
                         "huggingface.co, or pass a directory written by save_pretrained") from error


def hub_cache() -> Path:
    """The Hugging Face cache directory as the environment names it now."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE or bool(constants.HF_HUB_OFFLINE)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Exceptions of a failed connection: OSError (requests' errors are OSErrors), and the transport errors
    of whichever httpx the installed huggingface_hub uses."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _snapshot(repo_id: str) -> Path:
    """The snapshot directory of `repo_id`: online first unless offline, the cache alone after a failed
    connection (LocalEntryNotFoundError when it is not cached)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    options = dict(cache_dir=hub_cache(), allow_patterns=HUB_FILES)
    if not _offline():
        try:
            return Path(snapshot_download(repo_id, **options))
        except RepositoryNotFoundError:  # an OSError too: the Hub answered, so the cache is no remedy
            raise
        except _connection_errors() as error:
            logger.warning("could not reach the Hugging Face Hub for %s (%s); looking in the cache", repo_id,
                           str(error).splitlines()[0] if str(error) else type(error).__name__)
    path = Path(snapshot_download(repo_id, local_files_only=True, **options))
    logger.info("%s: the snapshot in %s", repo_id, path)
    return path
