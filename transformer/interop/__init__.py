"""Interoperability with other ecosystems: Hugging Face checkpoints (huggingface.py) and ONNX export (onnx.py)."""

from transformer.interop.huggingface import import_hf, load_hf_dir, model_from_hf

__all__ = ["import_hf", "load_hf_dir", "model_from_hf"]
