"""The command line of the Transformer's descendants (cli.py parses and dispatches): `evaluate` of a language
model, a text classifier or an image model, and `embed`, `predict` and `generate`."""

from __future__ import annotations

import argparse
import json
import sys
import time

from transformer.cli_io import input_lines


def evaluate_lm(args: argparse.Namespace) -> None:
    from transformer.api import load
    from transformer.data.datasets import load_texts

    bundle = load(args.model, args.weights, device=getattr(args, "device", None))
    texts = load_texts(bundle.config.data, args.split)
    if not texts:
        raise ValueError(f"the model's data config names no {args.split} text; set data.{args.split}_text")
    texts = texts[: args.limit]
    started = time.perf_counter()
    value = bundle.perplexity(texts)
    seconds = time.perf_counter() - started
    print(f"perplexity {value:.3f} on {len(texts)} segments of the {args.split} split ({seconds:.1f} s)")
    print(json.dumps({"perplexity": round(value, 3), "n": len(texts), "split": args.split}))


def evaluate_image(args: argparse.Namespace) -> None:
    import torch

    from transformer.api import load
    from transformer.data.images import DIGITS_SIZE, load_digits_split
    from transformer.training.tasks.image import evaluate_images

    bundle = load(args.model, args.weights, device=getattr(args, "device", None))
    m = bundle.config.model
    if getattr(args, "images", None) is not None:
        images, labels = _labelled_files(args.images, m, args.limit)
        where = {"images": str(args.images)}
    elif (m.image_size, m.channels) != (DIGITS_SIZE, 1):
        raise ValueError(f"{args.model} reads {m.image_size} x {m.image_size} images of {m.channels} channel(s), not "
                         "the 8 x 8 grey digits; evaluate it on labelled files: --images DIR (a folder per class)")
    else:
        images, labels = load_digits_split(args.split)
        images, labels = images[: args.limit], labels[: args.limit]
        where = {"split": args.split}
    with torch.inference_mode():
        loss, accuracy = evaluate_images(bundle.model, images, labels, bundle.config.train.batch_size)
    print(f"accuracy {accuracy:.4f} ({round(accuracy * len(labels))} of {len(labels)} "
          f"{where.get('split', 'labelled')} images), cross-entropy {loss:.4f}")
    print(json.dumps({"accuracy": round(accuracy, 4), "n": len(labels), **where}))


def _labelled_files(root, model, limit: int | None):
    """Pixels (N, C, H, W) and class indices (N,) of the image files in root/<class>/ (the first `limit`)."""
    import torch

    from transformer.data.images import labelled_image_files, read_for_model

    files = labelled_image_files(root, model.labels, model.n_classes)[:limit]
    images = torch.cat([read_for_model(path, model) for path, _ in files])
    return images, torch.tensor([label for _, label in files])


def evaluate_classify(args: argparse.Namespace) -> None:
    from transformer.api import load
    from transformer.data.datasets import load_labelled

    bundle = load(args.model, args.weights, device=getattr(args, "device", None))
    c = bundle.config
    data = load_labelled(c.data, args.split)
    if not data:
        raise ValueError(f"the model's data config names no {args.split} split; set data.{args.split}_tsv")
    texts, labels = data[0][: args.limit], data[1][: args.limit]
    scores = bundle.score_labelled(texts, labels, f"the {args.split} split")
    print(f"accuracy {scores['accuracy']:.4f} ({round(scores['accuracy'] * len(texts))} of {len(texts)} "
          f"{args.split} texts), balanced accuracy {scores['balanced_accuracy']:.4f}, "
          f"cross-entropy {scores['loss']:.4f}")
    print(json.dumps({"accuracy": round(scores["accuracy"], 4),
                      "balanced_accuracy": round(scores["balanced_accuracy"], 4), "n": len(texts),
                      "split": args.split}))


def cmd_embed(args: argparse.Namespace) -> None:
    from transformer.api import load

    bundle = load(args.model)
    from transformer.model_config import BAG_TYPES

    if bundle.config.model.type not in ("encoder_only", *BAG_TYPES):
        raise ValueError(f"{args.model} holds a model for task {bundle.task!r}; embed needs an encoder-only model "
                         "(task 'mlm' or 'classify') or a bag classifier (model.type bag_of_words or ngram)")
    vectors = bundle.embed(input_lines(args.input), normalize=args.normalize)
    for vector in vectors.tolist():
        print(json.dumps([round(x, 6) for x in vector]))


def cmd_predict(args: argparse.Namespace) -> None:
    from transformer.api import load

    bundle = load(args.model)
    if bundle.task == "classify":
        return _predict_texts(args, bundle)
    if bundle.task != "image":
        raise ValueError(f"{args.model} holds a model for task {bundle.task!r}; predict classifies texts with a "
                         "model for task 'classify' and images with one for task 'image'")
    if not args.inputs:
        raise ValueError("predict with an image model needs image files: transformer predict --model DIR IMAGE...")
    labels = bundle.config.model.labels
    for path in args.inputs:
        probs = bundle.classify_file(path)
        top = int(probs.argmax())
        named = {"label": labels[top]} if labels else {}
        print(json.dumps({"image": str(path), "class": top, **named, "probability": round(float(probs[top]), 4)},
                         ensure_ascii=False))


def _predict_texts(args: argparse.Namespace, bundle) -> None:
    """A JSON line for each text (the arguments, else the lines of --input or stdin): its label and probability."""
    if args.inputs:
        texts = list(args.inputs)
    else:
        texts = input_lines(args.input)
    labels = bundle.config.model.labels
    for text, probs in zip(texts, bundle.classify_texts(texts), strict=True):
        top = int(probs.argmax())
        print(json.dumps({"text": text, "label": labels[top] if labels else top,
                          "probability": round(float(probs[top]), 4)}, ensure_ascii=False))


def cmd_generate(args: argparse.Namespace) -> None:
    from transformer.api import load
    from transformer.decoding.sampling import check_sampling

    check_sampling(args.temperature, args.top_k, args.top_p, args.max_new_tokens, args.num_samples)
    bundle = load(args.model, device=args.device)
    settings = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, num_samples=args.num_samples, seed=args.seed)
    if args.num_samples > 1:
        for i, text in enumerate(bundle.generate(args.prompt, **settings)):
            print(f"--- sample {i + 1}\n{args.prompt}{text}")
        return
    ids: list[int] = []
    shown = ""
    sys.stdout.write(args.prompt)
    for step in bundle.generate_tokens(args.prompt, **settings):  # streamed as the tokens come
        ids.append(int(step[0]))
        text = bundle.tokenizer.decode(ids)
        if text.startswith(shown):  # a byte-level token may complete a character only with the next one
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text
    sys.stdout.write("\n")
