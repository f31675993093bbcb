from transformer.models.build import build_model
from transformer.models.seq2seq import DecoderCache, EncoderDecoder

__all__ = ["DecoderCache", "EncoderDecoder", "build_model"]
