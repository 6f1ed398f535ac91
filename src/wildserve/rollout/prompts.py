"""Procedural arithmetic word problems with checkable answers: the RL task whose rollouts we time."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

NAMES = ("Tom", "Ana", "Lena", "Omar", "Mia", "Ravi", "Sofia", "Ken", "Zoe", "Ivan")
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "coins", "cookies", "shells")


@dataclass(frozen=True, slots=True)
class WordProblem:
    """One prompt; ``answer`` is the integer a correct response ends with."""

    prompt_id: int
    text: str
    answer: int


Template = Callable[[np.random.Generator, str, str], tuple[str, int]]


def _buy_give(rng: np.random.Generator, name: str, item: str) -> tuple[str, int]:
    a, b = int(rng.integers(5, 60)), int(rng.integers(2, 40))
    c = int(rng.integers(1, a + b))
    return (
        f"{name} has {a} {item}. {name} buys {b} more and then gives {c} to a friend. "
        f"How many {item} does {name} have now?",
        a + b - c,
    )


def _boxes(rng: np.random.Generator, name: str, item: str) -> tuple[str, int]:
    boxes, each, extra = (
        int(rng.integers(2, 10)),
        int(rng.integers(3, 13)),
        int(rng.integers(0, 20)),
    )
    return (
        f"{name} packs {boxes} boxes with {each} {item} in each box and has {extra} {item} left "
        f"over. How many {item} does {name} have in total?",
        boxes * each + extra,
    )


def _share(rng: np.random.Generator, name: str, item: str) -> tuple[str, int]:
    friends, each = int(rng.integers(2, 9)), int(rng.integers(2, 12))
    return (
        f"{name} shares {friends * each} {item} equally among {friends} friends. "
        f"How many {item} does each friend get?",
        each,
    )


def _price(rng: np.random.Generator, name: str, item: str) -> tuple[str, int]:
    n, price, paid_extra = (
        int(rng.integers(2, 12)),
        int(rng.integers(2, 15)),
        int(rng.integers(1, 30)),
    )
    paid = n * price + paid_extra
    return (
        f"{name} buys {n} {item} that cost {price} dollars each and pays with {paid} dollars. "
        f"How much change does {name} get, in dollars?",
        paid_extra,
    )


TEMPLATES: tuple[Template, ...] = (_buy_give, _boxes, _share, _price)
INSTRUCTION = " Think step by step, then give the final answer as a number."


def make_problems(num: int, rng: np.random.Generator) -> list[WordProblem]:
    """``num`` problems; the same seed gives the same problems."""
    out = []
    for i in range(num):
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        name, item = NAMES[int(rng.integers(len(NAMES)))], ITEMS[int(rng.integers(len(ITEMS)))]
        text, answer = template(rng, name, item)
        out.append(WordProblem(prompt_id=i, text=text + INSTRUCTION, answer=answer))
    return out


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def reward(response: str, answer: int) -> float:
    """1.0 when the last number in the response equals the answer, else 0.0 (a verifiable reward)."""
    numbers = _NUMBER.findall(response)
    if not numbers:
        return 0.0
    try:
        return 1.0 if float(numbers[-1].replace(",", "")) == answer else 0.0
    except ValueError:
        return 0.0
