from transformer.models.build import build_model
from transformer.models.decoder_only import DecoderOnly
from transformer.models.seq2seq import EncoderDecoder
from transformer.models.vision import VisionTransformer, patchify, unpatchify
from transformer.nn.kv_cache import DecoderCache, StackCache

__all__ = ["DecoderCache", "DecoderOnly", "EncoderDecoder", "StackCache", "VisionTransformer", "build_model",
           "patchify", "unpatchify"]
