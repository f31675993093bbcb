from transformer.models.build import build_model
from transformer.models.seq2seq import EncoderDecoder
from transformer.nn.kv_cache import DecoderCache

__all__ = ["DecoderCache", "EncoderDecoder", "build_model"]
