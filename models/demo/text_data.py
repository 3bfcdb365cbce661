"""A generated review-sentiment corpus for the bundled text classifier (``review_sentiment``).

Each review is built from templates over a small vocabulary, so the data set is generated, not
downloaded, and its label follows fixed rules a reader can check:

- a clause is ``<subject> was|is [not] [intensifier] <adjective>``; its polarity is the adjective's
  (8 positive, 8 negative), flipped by ``not``;
- a review is one clause, two clauses of the same polarity joined by ``and``, or two clauses of any
  polarity joined by ``but`` (the clause after ``but`` decides);
- an optional opener (``honestly``, ``overall``, ``i think`` ...) and end mark (``.`` or ``!``)
  carry no sentiment.

Labels: 0 = negative, 1 = positive. Pure numpy and the standard library; every draw comes from
``numpy.random.default_rng(seed)``, so a seed gives the same reviews on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "LABELS",
    "NEGATIVE_WORDS",
    "POSITIVE_WORDS",
    "TEST_SEED",
    "TRAIN_SEED",
    "ReviewData",
    "generate_reviews",
    "review_data",
]

LABELS: tuple[str, ...] = ("negative", "positive")
POSITIVE_WORDS = ("good", "great", "wonderful", "brilliant", "enjoyable", "charming", "moving", "superb")
NEGATIVE_WORDS = ("bad", "boring", "awful", "dull", "terrible", "clumsy", "tedious", "weak")
_SUBJECTS = (
    "the movie",
    "this film",
    "the story",
    "the acting",
    "the soundtrack",
    "the ending",
    "the cast",
    "the script",
)
_VERBS = ("was", "is")
_INTENSIFIERS = ("very", "really", "truly", "quite")
_OPENERS = ("honestly", "overall", "i think", "in short")
_END_MARKS = (".", "!")

TRAIN_SEED = 20240613
TEST_SEED = 20240614
TRAIN_SIZE = 4000
TEST_SIZE = 1000


@dataclass(frozen=True)
class ReviewData:
    """Generated reviews and their labels: ``train_texts`` / ``test_texts`` lists of str,
    ``train_labels`` / ``test_labels`` ``(n,)`` int64 (0 negative, 1 positive)."""

    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _clause(rng: np.random.Generator, polarity: int) -> str:
    """A clause of ``polarity`` (1 positive, 0 negative), half of them negated."""
    negated = bool(rng.integers(2))
    # A negated clause of polarity p uses an adjective of the opposite polarity.
    positive_adjective = (polarity == 1) != negated
    words = [_pick(rng, _SUBJECTS), _pick(rng, _VERBS)]
    if negated:
        words.append("not")
    if rng.random() < 0.4:
        words.append(_pick(rng, _INTENSIFIERS))
    words.append(_pick(rng, POSITIVE_WORDS if positive_adjective else NEGATIVE_WORDS))
    return " ".join(words)


def _review(rng: np.random.Generator) -> tuple[str, int]:
    label = int(rng.integers(2))
    shape = int(rng.integers(3))
    if shape == 0:
        body = _clause(rng, label)
    elif shape == 1:
        body = f"{_clause(rng, label)} and {_clause(rng, label)}"
    else:
        body = f"{_clause(rng, int(rng.integers(2)))} but {_clause(rng, label)}"
    if rng.random() < 0.3:
        body = f"{_pick(rng, _OPENERS)} {body}"
    if rng.random() < 0.5:
        body += f" {_pick(rng, _END_MARKS)}"
    return body, label


def generate_reviews(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``count`` reviews and their labels ``(count,)`` int64, drawn from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for _ in range(count):
        text, label = _review(rng)
        texts.append(text)
        labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def review_data() -> ReviewData:
    """The training and held-out reviews (independent draws from two fixed seeds)."""
    train_texts, train_labels = generate_reviews(TRAIN_SIZE, TRAIN_SEED)
    test_texts, test_labels = generate_reviews(TEST_SIZE, TEST_SEED)
    return ReviewData(train_texts, train_labels, test_texts, test_labels)
