from transformer.models.build import build_model
from transformer.models.decoder_only import DecoderOnly
from transformer.models.encoder_only import EncoderOnly, mask_for_mlm
from transformer.models.seq2seq import EncoderDecoder
from transformer.models.vision import VisionTransformer, patchify, unpatchify
from transformer.nn.kv_cache import DecoderCache, StackCache

__all__ = ["DecoderCache", "DecoderOnly", "EncoderDecoder", "EncoderOnly", "StackCache", "VisionTransformer",
           "build_model", "mask_for_mlm", "patchify", "unpatchify"]
