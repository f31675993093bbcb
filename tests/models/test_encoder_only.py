"""The encoder-only model (BERT): parity with Hugging Face's BertForMaskedLM built from a config with random
weights, BERT's masking statistics, pooling and sentence embeddings."""

import pytest
import torch

from transformer.config import ModelConfig
from transformer.models import EncoderOnly, build_model, mask_for_mlm

transformers = pytest.importorskip("transformers")


def _bert_pair() -> tuple[EncoderOnly, "transformers.BertForMaskedLM"]:
    """A random BERT and our encoder-only model of the same architecture holding its weights."""
    torch.manual_seed(0)
    hf_config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, hidden_act="gelu", max_position_embeddings=40,
                                        type_vocab_size=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                        pad_token_id=0)
    hf = transformers.BertForMaskedLM(hf_config).eval()
    with torch.no_grad():  # move LayerNorms and biases off their initial (1, 0)
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    config = ModelConfig(type="encoder_only", src_vocab_size=60, tgt_vocab_size=60, d_model=32, n_heads=4, d_ff=64,
                         n_layers=2, dropout=0.0, activation="gelu", positional="learned", max_positions=40,
                         layernorm_embedding=True, scale_embedding=False, output_bias=True, type_vocab_size=2,
                         layer_norm_eps=hf_config.layer_norm_eps)
    ours = build_model(config).eval()
    ours.load_state_dict(_from_bert(hf.state_dict(), 2), strict=True)
    return ours, hf


def _from_bert(hf: dict, n_layers: int) -> dict:
    """BERT's names -> ours (the mapping #12's import will own)."""
    e, c = "bert.embeddings.", "cls.predictions."
    out = {"embed.tokens.weight": hf[e + "word_embeddings.weight"],
           "embed.positions.weight": hf[e + "position_embeddings.weight"],
           "token_types.weight": hf[e + "token_type_embeddings.weight"],
           "embed.norm.weight": hf[e + "LayerNorm.weight"], "embed.norm.bias": hf[e + "LayerNorm.bias"],
           "mlm_dense.weight": hf[c + "transform.dense.weight"], "mlm_dense.bias": hf[c + "transform.dense.bias"],
           "mlm_norm.weight": hf[c + "transform.LayerNorm.weight"], "mlm_norm.bias": hf[c + "transform.LayerNorm.bias"],
           "output_proj.weight": hf[c + "decoder.weight"], "output_proj.bias": hf[c + "bias"],
           "pooler.weight": torch.zeros(32, 32), "pooler.bias": torch.zeros(32)}  # BertForMaskedLM has no pooler
    names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
             "self_attn_block.norm": "attention.output.LayerNorm", "ff.fc1": "intermediate.dense",
             "ff.fc2": "output.dense", "ff_block.norm": "output.LayerNorm"}
    for i in range(n_layers):
        for ours, theirs in names.items():
            for kind in ("weight", "bias"):
                out[f"stack.layers.{i}.{ours}.{kind}"] = hf[f"bert.encoder.layer.{i}.{theirs}.{kind}"]
    return out


def test_masked_token_logits_equal_hugging_face_bert():
    ours, hf = _bert_pair()
    tokens = torch.randint(3, 60, (3, 12))
    tokens[1, 8:] = 0  # padding
    types = torch.zeros_like(tokens)
    types[:, 6:] = 1
    with torch.no_grad():
        expected = hf(input_ids=tokens, token_type_ids=types, attention_mask=(tokens != 0).long()).logits
        got = ours(tokens, types)
    keep = tokens != 0  # pad positions' outputs are not compared (neither model defines them usefully)
    torch.testing.assert_close(got[keep], expected[keep], rtol=1e-4, atol=1e-4)


def test_mask_for_mlm_chooses_15_percent_and_splits_them_80_10_10():
    tokens = torch.randint(4, 1000, (400, 250))
    tokens[:, 0] = 1  # a special token at the start of every row: never chosen
    inputs, targets = mask_for_mlm(tokens, mask_id=3, vocab_size=1000, special_ids=[0, 1, 2, 3],
                                   generator=torch.Generator().manual_seed(0))
    chosen = targets != -100
    assert not chosen[:, 0].any()
    eligible = tokens.numel() - tokens.size(0)
    assert chosen.sum() / eligible == pytest.approx(0.15, abs=0.003)
    masked = (inputs == 3) & chosen
    kept = (inputs == tokens) & chosen
    assert masked.sum() / chosen.sum() == pytest.approx(0.8, abs=0.01)
    assert kept.sum() / chosen.sum() == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)  # a random token may be itself
    assert torch.equal(targets[chosen], tokens[chosen]) and torch.equal(inputs[~chosen], tokens[~chosen])


def test_sentence_embeddings_are_the_mean_of_the_non_pad_states():
    torch.manual_seed(0)
    model = build_model(ModelConfig(type="encoder_only", tgt_vocab_size=50, d_model=16, n_heads=2, d_ff=32,
                                    n_layers=1, dropout=0.0)).eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    with torch.no_grad():
        states = model.hidden_states(tokens)
        mean = model.embed_mean(tokens)
        unit = model.embed_mean(tokens, normalize=True)
        alone = model.embed_mean(tokens[:1, :3])  # the same sentence without padding
    torch.testing.assert_close(mean[0], states[0, :3].mean(dim=0))
    torch.testing.assert_close(mean[0], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(2))
    assert model.pooled(tokens).shape == (2, 16)
    with pytest.raises(ValueError, match="no classification head; set model.n_classes"):
        model.classify(tokens)


def test_overfits_a_tiny_batch_of_masked_tokens_and_of_labels():
    import torch.nn.functional as F

    from transformer.training.loss import masked_token_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(type="encoder_only", tgt_vocab_size=50, d_model=32, n_heads=4, d_ff=64,
                                    n_layers=2, dropout=0.0, n_classes=3, positional="learned", max_positions=16))
    tokens = torch.randint(5, 50, (4, 10))
    inputs, targets = tokens.clone(), torch.zeros_like(tokens)  # targets: pad (0) where nothing is predicted
    inputs[:, 3], targets[:, 3] = 4, tokens[:, 3]  # the fourth token of each row masked
    labels = torch.tensor([0, 2, 1, 2])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        mlm_loss, _ = masked_token_loss(model, inputs, targets, pad_id=0)
        class_loss = F.cross_entropy(model.classify(tokens), labels)
        optimizer.zero_grad()
        (mlm_loss + class_loss).backward()
        optimizer.step()
    assert float(mlm_loss.detach()) < 0.05 and float(class_loss.detach()) < 0.05


def test_mean_pooling_feeds_the_head_the_sentence_embedding():
    torch.manual_seed(0)
    config = ModelConfig(type="encoder_only", tgt_vocab_size=50, d_model=16, n_heads=2, d_ff=32, n_layers=1,
                         dropout=0.0, n_classes=3, pooling="mean")
    model = build_model(config).eval()
    tokens = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    with torch.no_grad():
        expected = model.classifier(torch.tanh(model.pooler(model.embed_mean(tokens))))
        torch.testing.assert_close(model.classify(tokens), expected)
        torch.testing.assert_close(model.classify(tokens)[:1], model.classify(tokens[:1, :3]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="model.pooling='max': use 'cls' or 'mean'"):
        config.replace(pooling="max")
