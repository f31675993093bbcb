"""Parity with Hugging Face's ViTForImageClassification and ViTImageProcessor (PIL backend): random-weight
models from small configs, saved with save_pretrained, imported into our VisionTransformer; and back."""

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
PIL = pytest.importorskip("PIL")

from PIL import Image  # noqa: E402

from transformer.cli import main  # noqa: E402
from transformer.inference import load_model_dir  # noqa: E402
from transformer.interop import import_hf, load_hf_dir  # noqa: E402
from transformer.interop.export_hf import export_hf  # noqa: E402
from transformer.interop.hf_vit import vit_model_config  # noqa: E402

LABELS = {0: "cat", 1: "dog", 2: "café", 3: "owl", 4: "fox"}
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
             patch_size=8, num_channels=3, num_labels=5, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
# Without torchvision, ViTImageProcessor is this PIL backend; name it so that the test does not depend on that.
PROCESSOR = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)


def _vit(**changes):
    """A ViTForImageClassification in eval mode with every tensor moved off its initial value."""
    torch.manual_seed(0)
    hf = transformers.ViTForImageClassification(transformers.ViTConfig(**{**SMALL, **changes})).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return hf


def _save(hf, path, **processor):
    hf.save_pretrained(path)
    PROCESSOR(**{"size": {"height": 32, "width": 32}, **processor}).save_pretrained(path)
    return path


VARIANTS = {
    "default": {},
    "no-qkv-bias-relu-eps": dict(qkv_bias=False, hidden_act="relu", layer_norm_eps=1e-6),
    "gelu-tanh-patch-4": dict(hidden_act="gelu_pytorch_tanh", patch_size=4),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_equal_hf(variant, tmp_path):
    hf = _vit(**VARIANTS[variant])
    ours, tokenizer, run = load_hf_dir(_save(hf, tmp_path / "hf"))
    assert tokenizer is None and run.task == "image" and not ours.training
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs, mine = hf(pixel_values=pixels).logits, ours(pixels)
    assert mine.shape == theirs.shape == (4, 5)
    assert (mine - theirs).abs().max() < 1e-4


def test_options_and_preprocessing_become_model_config_fields():
    processor = {"size": {"height": 32, "width": 32}, "resample": 3, "rescale_factor": 1 / 127.5,
                 "image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.25, 2.0]}
    m = vit_model_config(transformers.ViTConfig(**SMALL, layer_norm_eps=1e-6).to_dict(), processor)
    assert (m.type, m.norm_first, m.activation, m.layer_norm_eps, m.channels) == ("vision", True, "gelu", 1e-6, 3)
    assert (m.image_size, m.patch_size, m.n_classes, m.labels) == (32, 8, 5, tuple(LABELS.values()))
    # (x / 127.5 - mean) / std == (x / 255 - mean / 2) / (std / 2)
    assert m.image_resample == "bicubic"
    assert m.image_mean == pytest.approx((0.05, 0.1, 0.15)) and m.image_std == pytest.approx((0.25, 0.125, 1.0))


def test_predict_gives_the_label_and_probability_of_hf_processor_and_model(tmp_path, capsys):
    hf = _vit()
    hf_dir = _save(hf, tmp_path / "hf", resample=2, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25])
    assert main(["import-hf", str(hf_dir), "--out", str(tmp_path / "model")]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (summary["task"], summary["image_size"], summary["classes"], summary["layers"]) == ("image", 32, 5, [2])
    rng = np.random.default_rng(0)
    files = []
    for i, (width, height) in enumerate([(45, 37), (32, 32), (20, 70)]):  # resized up, kept, squeezed
        files.append(tmp_path / f"image{i}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB").save(files[-1])
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "model"), *map(str, files)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    processor = PROCESSOR.from_pretrained(hf_dir)
    images = [Image.open(path).convert("RGB") for path in files]
    with torch.no_grad():
        probs = torch.softmax(hf(**processor(images=images, return_tensors="pt")).logits, dim=-1)
    top = probs.argmax(dim=-1)
    assert [line["label"] for line in lines] == [LABELS[int(i)] for i in top]
    assert [line["class"] for line in lines] == top.tolist()
    for line, row, i in zip(lines, probs, top.tolist(), strict=True):
        assert abs(line["probability"] - float(row[i])) < 1e-4  # printed with 4 decimals


def test_evaluate_on_labelled_folders_gives_hf_accuracy_and_cross_entropy(tmp_path, capsys):
    hf = _vit()
    hf_dir = _save(hf, tmp_path / "hf")
    import_hf(hf_dir, tmp_path / "model")
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8), "RGB") for _ in range(8)]
    processor = PROCESSOR.from_pretrained(hf_dir)
    with torch.no_grad():
        logits = hf(**processor(images=images, return_tensors="pt")).logits
    truth = logits.argmax(dim=-1)
    truth[::3] = (truth[::3] + 1) % 5  # some wrong: an accuracy strictly between 0 and 1
    for i, (image, label) in enumerate(zip(images, truth.tolist(), strict=True)):
        (tmp_path / "images" / LABELS[label]).mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "images" / LABELS[label] / f"{i}.png")
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "model"), "--images", str(tmp_path / "images")]) == 0
    out = capsys.readouterr().out.splitlines()
    result = json.loads(out[-1])
    assert result["n"] == 8 and 0 < result["accuracy"] < 1
    assert result["accuracy"] == round(float((logits.argmax(dim=-1) == truth).float().mean()), 4)
    loss = float(torch.nn.functional.cross_entropy(logits, truth))
    assert abs(float(out[0].rpartition("cross-entropy ")[2]) - loss) < 1e-4
    assert main(["evaluate", "--model", str(tmp_path / "model")]) == 2  # no digits for a 32 x 32 RGB model
    assert "evaluate it on labelled files: --images DIR" in capsys.readouterr().err


def test_pixels_read_as_the_hf_processor_makes_them(tmp_path):
    from transformer.data.images import read_image_normalized

    hf_dir = _save(_vit(), tmp_path / "hf", resample=1, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25])
    _, _, run = load_hf_dir(hf_dir)
    m = run.model
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 41, 3), dtype=np.uint8), "RGB").save(path)
    theirs = PROCESSOR.from_pretrained(hf_dir)(images=Image.open(path), return_tensors="pt")["pixel_values"]
    mine = read_image_normalized(path, m.image_size, m.image_mean, m.image_std, m.image_resample)
    assert m.image_resample == "lanczos" and mine.shape == theirs.shape == (1, 3, 32, 32)
    assert (mine - theirs).abs().max() < 1e-5


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"hidden_act": "quick_gelu"}, r"hidden_act='quick_gelu' \(supported: \['gelu', "),
        ({"architectures": ["ViTForMaskedImageModeling"]}, r"architectures=\['ViTForMaskedImageModeling'\] "
                                                          r"\(supported: \['ViTForImageClassification'\]"),
        ({"problem_type": "multi_label_classification"}, r"problem_type='multi_label_classification' "
                                                         r"\(supported: single_label_classification\)"),
        ({"image_size": [32, 48]}, r"image_size=\[32, 48\]: only square sizes"),
    ],
)
def test_unsupported_option_is_named_with_what_is_supported(changes, message):
    config = {**transformers.ViTConfig(**SMALL).to_dict(), "architectures": ["ViTForImageClassification"], **changes}
    with pytest.raises(ValueError, match=message):
        vit_model_config(config)


def test_unsupported_processor_is_refused_by_the_cli(tmp_path, capsys):
    hf_dir = _save(_vit(), tmp_path / "hf", size={"height": 48, "width": 48})
    assert main(["import-hf", str(hf_dir), "--out", str(tmp_path / "model")]) == 2
    assert "size={'height': 48, 'width': 48}: only {'height': 32, 'width': 32}" in capsys.readouterr().err
    assert not (tmp_path / "model").exists()


# ------------------------------------------------------------------------------------------------ export


def test_imported_vit_exported_back_gives_hf_the_same_logits(tmp_path, capsys):
    hf = _vit(qkv_bias=False)
    hf_dir = _save(hf, tmp_path / "hf", resample=3, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.25])
    import_hf(hf_dir, tmp_path / "model")
    assert main(["export-hf", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "back")]) == 0
    assert "config.json, model.safetensors, preprocessor_config.json" in capsys.readouterr().out
    back = transformers.ViTForImageClassification.from_pretrained(tmp_path / "back").eval()
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (back(pixel_values=pixels).logits - hf(pixel_values=pixels).logits).abs().max() < 1e-4
    assert back.config.id2label == hf.config.id2label
    processor = PROCESSOR.from_pretrained(tmp_path / "back").to_dict()
    original = PROCESSOR.from_pretrained(hf_dir).to_dict()
    for key in ("size", "resample", "do_resize", "do_normalize"):
        assert processor[key] == original[key]
    assert np.allclose(processor["image_mean"], original["image_mean"])
    assert np.allclose(processor["image_std"], original["image_std"])


def test_our_trained_vit_exports_with_the_same_logits(vit_dir, tmp_path):
    ours, _, run = load_model_dir(vit_dir)
    export_hf(vit_dir, tmp_path / "hf")
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert (hf.config.num_channels, hf.config.image_size, hf.config.patch_size) == (1, 8, 2)
    pixels = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (hf(pixel_values=pixels).logits - ours(pixels)).abs().max() < 1e-4


def test_our_exported_grey_vit_imports_back_and_predicts_as_hf(vit_dir, tmp_path, capsys):
    export_hf(vit_dir, tmp_path / "hf")
    hf = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    import_hf(tmp_path / "hf", tmp_path / "again")
    path = tmp_path / "digit.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 17), dtype=np.uint8), "L").save(path)
    capsys.readouterr()
    assert main(["predict", "--model", str(tmp_path / "again"), str(path)]) == 0
    line = json.loads(capsys.readouterr().out)
    processor = PROCESSOR.from_pretrained(tmp_path / "hf")
    with torch.no_grad():  # a grey file: one channel, as the model reads
        probs = torch.softmax(hf(**processor(images=Image.open(path), return_tensors="pt")).logits[0], dim=-1)
    assert line["class"] == int(probs.argmax()) and line["label"] == f"LABEL_{line['class']}"
    assert abs(line["probability"] - float(probs.max())) < 1e-4


def test_post_ln_vit_is_refused_with_the_option_named(tmp_path):
    from tests.corpus import image_config
    from transformer.config import RunConfig
    from transformer.model_dir import save_weights
    from transformer.models import build_model

    tree = image_config()
    tree["model"]["norm_first"] = False
    config = RunConfig.from_dict(tree)
    (tmp_path / "model").mkdir()
    save_weights(build_model(config.model), tmp_path / "model" / "model.safetensors")
    (tmp_path / "model" / "config.yaml").write_text(config.to_yaml())
    with pytest.raises(ValueError, match=r"model.norm_first=False \(post-LN; ViTForImageClassification is pre-LN"):
        export_hf(tmp_path / "model", tmp_path / "out")
    assert not (tmp_path / "out").exists()
