"""`transformer import-hf ORG/NAME`: a Hub id is read from the Hugging Face cache, without network.

The cache is built here: $HF_HOME/hub/models--ORG--NAME/refs/main naming a commit, and snapshots/<commit>/
holding a small random-weight Marian directory written by save_pretrained (tests/test_cli.py's helper)."""

import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

pytest.importorskip("transformers")
huggingface_hub = pytest.importorskip("huggingface_hub")

from tests.test_cli import _tiny_marian_dir  # noqa: E402
from transformer.cli import main  # noqa: E402
from transformer.interop.hub import resolve_hf_dir  # noqa: E402

REPO_ID, COMMIT = "test-org/tiny-marian", "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    torch.manual_seed(0)
    return _tiny_marian_dir(tmp_path_factory.mktemp("marian") / "hf")


@pytest.fixture
def hf_home(marian_dir, tmp_path, monkeypatch):
    """An offline Hugging Face cache in tmp_path/hf-home holding REPO_ID, as snapshot_download leaves it."""
    home = tmp_path / "hf-home"
    repo = home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    shutil.copytree(marian_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(home))
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _same_model_dirs(a: Path, b: Path) -> None:
    assert (a / "config.yaml").read_text() == (b / "config.yaml").read_text()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    ours, theirs = (safetensors.torch.load_file(str(d / "model.safetensors")) for d in (a, b))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _import(hf_dir: Path, out: Path) -> Path:
    assert main(["import-hf", str(hf_dir), "--out", str(out)]) == 0
    return out


def test_import_by_hub_id_gives_the_model_of_importing_its_directory(hf_home, marian_dir, tmp_path, capsys):
    snapshot = hf_home / "hub" / f"models--{REPO_ID.replace('/', '--')}" / "snapshots" / COMMIT
    assert resolve_hf_dir(REPO_ID).resolve() == snapshot.resolve()
    assert main(["import-hf", REPO_ID, "--out", str(tmp_path / "by-id")]) == 0
    _same_model_dirs(tmp_path / "by-id", _import(marian_dir, tmp_path / "by-dir"))


def test_a_local_directory_named_like_an_id_is_read_as_a_directory(hf_home, marian_dir, tmp_path, monkeypatch):
    shutil.copytree(marian_dir, tmp_path / "other-org" / "tiny")  # not in the cache
    monkeypatch.chdir(tmp_path)
    assert resolve_hf_dir("other-org/tiny") == Path("other-org/tiny")
    assert main(["import-hf", "other-org/tiny", "--out", str(tmp_path / "model")]) == 0
    _same_model_dirs(tmp_path / "model", _import(marian_dir, tmp_path / "reference"))


def test_an_id_not_in_the_cache_is_a_one_line_error_offline(hf_home, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["import-hf", "test-org/no-such-model", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: test-org/no-such-model is neither a local directory nor a "
                                                   "model in the Hugging Face cache")
    assert str(hf_home / "hub") in err and "$HF_HOME" in err and "HF_HUB_OFFLINE is set" in err
    assert "`huggingface-cli download test-org/no-such-model`" in err and "save_pretrained" in err
    assert not out.exists()


def test_a_path_that_is_neither_a_directory_nor_an_id_is_named(hf_home, tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir"
    assert main(["import-hf", str(missing), "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {missing} is not a directory; pass a directory written by save_pretrained, or a Hugging "
                   "Face Hub id such as Helsinki-NLP/opus-mt-de-en\n")


def test_online_a_failed_connection_falls_back_to_the_cache(hf_home, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    real, calls = huggingface_hub.snapshot_download, []

    def no_network(repo_id, *, local_files_only=False, **options):
        calls.append(local_files_only)
        if not local_files_only:
            raise ConnectionError("Failed to resolve 'huggingface.co'")
        return real(repo_id, local_files_only=True, **options)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    assert resolve_hf_dir(REPO_ID).name == COMMIT
    assert calls == [False, True]
    assert main(["import-hf", "test-org/no-such-model", "--out", str(tmp_path / "model")]) == 2
    assert calls[2:] == [False, True]


def test_an_id_the_hub_does_not_know_is_a_one_line_error(hf_home, tmp_path, monkeypatch, capsys):
    from huggingface_hub.errors import RepositoryNotFoundError

    httpx2 = pytest.importorskip("httpx2")  # the HTTP client of the installed huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def not_found(repo_id, **options):
        response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}"))
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    assert main(["import-hf", "test-org/typo", "--out", str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "test-org/typo: the Hugging Face Hub has no model of that id" in err
