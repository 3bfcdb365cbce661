"""Text in, per-token attributions out, with the tokenizer a model's ``GetModel`` carries.

A text model's folder holds the Hugging Face ``tokenizers`` JSON it was trained with
(``tokenizer.json``); the server sends it in ``ModelInfo.tokenizer``, so a client needs nothing
local. :class:`TextTokenizer` turns texts into the request: token ids ``(B, T)`` int64 in
``inputs`` and the model's other inputs by name (``attention_mask``, ``token_type_ids``) from the
tokenizer's encodings; :func:`text_explanations` cuts each result down to the text's real tokens.

``tokenizers`` is imported only when a tokenizer is built, so the rest of the client stays slim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.vocabulary import InstanceExplanation, ModelInfo

__all__ = ["EncodedText", "TextError", "TextExplanation", "TextTokenizer", "text_explanations"]


class TextError(ValueError):
    """The model cannot take text (no tokenizer, an input the tokenizer does not produce), or a
    text is unusable; the message names the model or the text and what to do."""


@dataclass(frozen=True)
class EncodedText:
    """One text as the model sees it.

    Attributes:
        text: the text as given.
        tokens: the tokens the model reads (attention mask 1), in order, e.g. ``["the", "movie"]``.
        ids: ``(T,)`` int64 token ids, padded to the model's sequence length.
        attention_mask: ``(T,)`` int64, 1 on ``tokens``, 0 on padding.
        type_ids: ``(T,)`` int64 segment ids.
        truncated: whether the text had more tokens than the model reads (the rest was dropped).
    """

    text: str
    tokens: list[str]
    ids: np.ndarray
    attention_mask: np.ndarray
    type_ids: np.ndarray
    truncated: bool

    @property
    def positions(self) -> np.ndarray:
        """Indices of ``tokens`` in the padded sequence, ``(len(tokens),)``."""
        return np.flatnonzero(self.attention_mask)


@dataclass(frozen=True)
class TextExplanation:
    """A per-token explanation of one text.

    Attributes:
        text: the text.
        tokens: its tokens, as :attr:`EncodedText.tokens`.
        attribution: ``(len(tokens),)`` float32, one value per token (padding left out).
        standard_error: ``(len(tokens),)`` float32, the Monte Carlo standard error of each value.
        explanation: the full result (attribution over the padded sequence, outputs, seed, ...).
    """

    text: str
    tokens: list[str]
    attribution: np.ndarray
    standard_error: np.ndarray
    explanation: InstanceExplanation


# Which Encoding field feeds an extra input, by what its name says.
_ENCODING_FIELDS = (("mask", "attention_mask"), ("type", "type_ids"), ("segment", "type_ids"))


class TextTokenizer:
    """The tokenizer of a text model, padding to the model's sequence length.

    Raises:
        TextError: the model has no tokenizer, or takes an extra input the tokenizer cannot fill.
    """

    def __init__(self, info: ModelInfo) -> None:
        if not info.tokenizer:
            raise TextError(
                f"model {info.name!r} has no tokenizer, so it cannot take text: a text model's folder holds "
                f"the tokenizers JSON it was trained with as tokenizer.json beside model.onnx (send token "
                f"ids as an array instead)"
            )
        from tokenizers import Tokenizer

        try:
            self._tokenizer = Tokenizer.from_str(info.tokenizer)
        except Exception as err:  # noqa: BLE001 - the library raises bare Exceptions for bad files
            raise TextError(f"the tokenizer of model {info.name!r} cannot be read: {err}") from None
        sent = info.request_inputs[0] if info.request_inputs else None
        self.input_name = sent.name if sent is not None else info.input_name
        shape = sent.shape if sent is not None else info.input_shape
        length = int(shape[-1]) if shape and int(shape[-1]) > 0 else None
        self.length = length
        self.extra_fields: dict[str, str] = {}
        for extra in info.request_inputs[1:]:
            field = next((f for key, f in _ENCODING_FIELDS if key in extra.name.lower()), None)
            if field is None:
                raise TextError(
                    f"model {info.name!r} takes the input {extra.name!r}, which a tokenizer does not produce "
                    f"(it fills attention masks and token type ids): send it with the ids through "
                    f"ExplainerClient.explain(..., extra_inputs=...)"
                )
            self.extra_fields[extra.name] = field
        self.model = info.name
        if length is not None:
            padding = self._tokenizer.padding or {}
            self._tokenizer.enable_padding(
                pad_id=int(padding.get("pad_id", _pad_id(self._tokenizer))),
                pad_token=str(padding.get("pad_token", "[PAD]")),
                length=length,
            )
            self._tokenizer.enable_truncation(length)

    def encode(self, texts: Sequence[str]) -> list[EncodedText]:
        """Each text's tokens, ids, attention mask and type ids (padded to the sequence length)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise TextError("texts: expected at least one text, got none")
        encoded = []
        for index, (text, encoding) in enumerate(
            zip(texts, self._tokenizer.encode_batch(list(texts)), strict=True)
        ):
            mask = np.asarray(encoding.attention_mask, dtype=np.int64)
            if not mask.any():
                raise TextError(f"text {index + 1} ({text!r}) has no tokens: expected some words")
            tokens = [token for token, keep in zip(encoding.tokens, mask, strict=True) if keep]
            encoded.append(
                EncodedText(
                    text=text,
                    tokens=tokens,
                    ids=np.asarray(encoding.ids, dtype=np.int64),
                    attention_mask=mask,
                    type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
                    truncated=bool(encoding.overflowing),
                )
            )
        return encoded

    def request(self, encoded: Sequence[EncodedText]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(ids (B, T) int64, {extra input name: (B, T) int64})`` for ``ExplainerClient.explain``."""
        ids = np.stack([item.ids for item in encoded])
        extra = {
            name: np.stack([getattr(item, field) for item in encoded])
            for name, field in self.extra_fields.items()
        }
        return ids, extra


def _pad_id(tokenizer: Any) -> int:
    for token in ("[PAD]", "<pad>", "<PAD>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0


def text_explanations(
    encoded: Sequence[EncodedText], results: Sequence[InstanceExplanation]
) -> list[TextExplanation]:
    """Each result cut down to its text's real tokens (results in order; several per text with top-k).

    Raises:
        TextError: an attribution is not one value per position of the sequence (the model's
            config reduces no embedding axis: set ``channel_axis``).
    """
    explained = []
    for result in results:
        item = encoded[result.instance_index]
        attribution = np.asarray(result.attribution, dtype=np.float32)
        if attribution.shape != item.ids.shape:
            raise TextError(
                f"the attributions of {item.text!r} have shape {attribution.shape}, not one value per token "
                f"{item.ids.shape}: the model's config keeps the embedding axis (set channel_axis and "
                f"channel_reduction, or a request's channel_axis)"
            )
        positions = item.positions
        explained.append(
            TextExplanation(
                text=item.text,
                tokens=list(item.tokens),
                attribution=attribution[positions],
                standard_error=np.asarray(result.standard_error, dtype=np.float32)[positions],
                explanation=result,
            )
        )
    return explained
