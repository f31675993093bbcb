"""The JSON bodies of `transformer serve` (pydantic models; FastAPI answers 422 for one that fails them).

Request models are made per server by `request_models(settings)`, so that their caps are the server's flags
and each error message names the limit and the flag that sets it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from transformer.serve.settings import ServeSettings


class Hypothesis(BaseModel):
    text: str
    score: float | None = Field(description="the score the search ranked by (beam: log-probability / length "
                                            "penalty; greedy: the sum of token log-probabilities); null where "
                                            "the search found no hypothesis (-inf)")


class Attention(BaseModel):
    source_tokens: list[str]
    target_tokens: list[str]
    cross: list[list[list[list[float]]]] = Field(description="cross-attention weights (layers, heads, T, S)")


class TranslateResponse(BaseModel):
    translation: str = Field(description="the best translation (nbest[0].text)")
    nbest: list[Hypothesis]
    attention: Attention | None = None


class GenerateResponse(BaseModel):
    text: str = Field(description="the continuation of the prompt (the prompt not repeated)")


class EmbedResponse(BaseModel):
    vectors: list[list[float]]
    dim: int


def _check_text(value: str, what: str, settings: ServeSettings) -> str:
    if len(value) > settings.max_input_chars:
        raise ValueError(f"{what} has {len(value)} characters; this server takes at most {settings.max_input_chars} "
                         "(--max-input-chars): shorten it")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{what} is not valid Unicode: {error.reason} at character {error.start}") from None
    return value


def _check_cap(value: int | None, name: str, cap: int, flag: str) -> int | None:
    if value is not None and value > cap:
        raise ValueError(f"{name}={value} is over this server's limit of {cap} ({flag}): ask for at most {cap}")
    return value


@dataclass(frozen=True)
class RequestModels:
    translate: type[BaseModel]
    generate: type[BaseModel]
    embed: type[BaseModel]


STRICT = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


def request_models(s: ServeSettings) -> RequestModels:
    """The request bodies, their caps taken from `s`."""
    return RequestModels(_translate_request(s), _generate_request(s), _embed_request(s))


def _translate_request(s: ServeSettings) -> type[BaseModel]:
    class TranslateRequest(BaseModel):
        model_config = STRICT
        text: str = Field(description=f"the text to translate, at most {s.max_input_chars} characters")
        nbest: int = Field(1, ge=1, description=f"hypotheses to return, best first (at most {s.max_nbest}; <= beam)")
        beam: int | None = Field(None, ge=1, description=f"beam size, 1 = greedy (at most {s.max_beam}); null: the "
                                                         "model's decode.beam, raised to nbest if that is larger")
        attention: bool = Field(False, description="also return the cross-attention of the best translation")

        @field_validator("text")
        @classmethod
        def _text(cls, value: str) -> str:
            return _check_text(value, "text", s)

        @field_validator("nbest")
        @classmethod
        def _nbest(cls, value: int) -> int:
            return _check_cap(value, "nbest", s.max_nbest, "--max-nbest")

        @field_validator("beam")
        @classmethod
        def _beam(cls, value: int | None) -> int | None:
            return _check_cap(value, "beam", s.max_beam, "--max-beam")

        @model_validator(mode="after")
        def _nbest_within_beam(self) -> TranslateRequest:
            if self.beam is not None and self.nbest > self.beam:
                raise ValueError(f"nbest={self.nbest} exceeds beam={self.beam}: the n-best list comes from the "
                                 f"beam, so send beam >= {self.nbest} (or null) or a smaller nbest")
            return self

    return TranslateRequest


def _generate_request(s: ServeSettings) -> type[BaseModel]:
    class GenerateRequest(BaseModel):
        model_config = STRICT
        prompt: str = Field("", description=f"text to continue (at most {s.max_input_chars} characters)")
        max_new_tokens: int = Field(100, ge=1, description=f"most tokens to add (at most {s.max_new_tokens})")
        temperature: float = Field(1.0, gt=0, allow_inf_nan=False, description="divide the logits by this")
        top_k: int | None = Field(None, ge=1, description="draw among the k most probable tokens only")
        top_p: float | None = Field(None, gt=0, le=1, description="draw from the nucleus of probability mass p")
        seed: int | None = Field(None, ge=0, lt=2**63, description="the same seed gives the same text")

        @field_validator("prompt")
        @classmethod
        def _prompt(cls, value: str) -> str:
            return _check_text(value, "prompt", s)

        @field_validator("max_new_tokens")
        @classmethod
        def _max_new_tokens(cls, value: int) -> int:
            return _check_cap(value, "max_new_tokens", s.max_new_tokens, "--max-new-tokens")

    return GenerateRequest


def _embed_request(s: ServeSettings) -> type[BaseModel]:
    class EmbedRequest(BaseModel):
        model_config = STRICT
        texts: list[str] = Field(min_length=1, description=f"texts to embed (at most {s.max_texts})")
        normalize: bool = Field(False, description="L2-normalize each vector")

        @field_validator("texts")
        @classmethod
        def _texts(cls, value: list[str]) -> list[str]:
            if len(value) > s.max_texts:
                raise ValueError(f"{len(value)} texts are over this server's limit of {s.max_texts} per request "
                                 f"(--max-texts): send at most {s.max_texts}")
            return [_check_text(text, f"texts[{i}]", s) for i, text in enumerate(value)]

    return EmbedRequest
