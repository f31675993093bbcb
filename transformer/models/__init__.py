from transformer.models.bag_of_words import BagOfWords, NGramClassifier
from transformer.models.build import build_model
from transformer.models.decoder_only import DecoderOnly
from transformer.models.encoder_only import EncoderOnly, mask_for_mlm
from transformer.models.recurrent import RecurrentEncoderDecoder
from transformer.models.seq2seq import EncoderDecoder
from transformer.models.vision import VisionTransformer, patchify, unpatchify
from transformer.nn.kv_cache import DecoderCache, StackCache

__all__ = ["BagOfWords", "DecoderCache", "DecoderOnly", "EncoderDecoder", "EncoderOnly", "NGramClassifier",
           "RecurrentEncoderDecoder", "StackCache", "VisionTransformer", "build_model", "mask_for_mlm", "patchify",
           "unpatchify"]
