"""The bundled ``builtin:demo`` preference dataset and the generator that writes it.

The preference is one of *style*, not knowledge: the chosen answer is always a polite,
complete sentence wrapped in a friendly opener and closer; the rejected answer is always
a curt, shouted fragment with a rude remark. A tiny randomly initialised model cannot
learn facts in a few hundred steps, but it can learn "answer like this, not like that",
which is what ORPO's odds-ratio term rewards. The facts are still correct in both
answers so that the only signal is the style.

Validation rows use fillers (things, animals, cities, numbers, ...) that never appear in
a training prompt, some phrasings no training prompt uses, and two whole topics the
training split lacks. Validation accuracy therefore measures whether the *style*
generalised, not whether rows were memorised.

Run ``python -m trainer.builtin.demo_data`` to rewrite ``demo/*.jsonl``; pass ``--check``
to verify the committed files instead. All text here was written for this project.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.pure.builtin_names import DEMO_DATA_DIR as DEMO_DIR

SPLITS = ("train", "valid")

# The order of rows only matters for humans reading the files and for loaders that do not
# shuffle; a fixed seed keeps the committed files reproducible.
_SHUFFLE_SEED = 20240611

_OPENERS = ("Sure!", "Of course!", "Happy to help!", "Good question!", "Certainly!")
_CLOSERS = (
    "I hope that helps.",
    "Let me know if you have more questions.",
    "Have a lovely day.",
    "Thanks for asking.",
)
_RUDE = ("OBVIOUSLY.", "STOP ASKING ME.", "WHO CARES?", "FIGURE IT OUT.", "UGH, WHATEVER.")


@dataclass(frozen=True)
class Topic:
    """One kind of question: its phrasings, how to answer it, and its facts per split.

    ``facts`` are ``(x, y)`` pairs: ``x`` fills the prompt, ``y`` is the short answer.
    Templates and ``answer`` (the full sentence the polite reply uses) may use ``{x}``,
    ``{X}`` (capitalised), ``{ax}`` / ``{AX}`` (with "a" or "an"), ``{y}`` and ``{ay}``.
    """

    name: str
    templates: tuple[str, ...]
    valid_templates: tuple[str, ...]
    answer: str
    train: tuple[tuple[str, str], ...]
    valid: tuple[tuple[str, str], ...]


def _sums(numbers: range, *, distinct: bool = False) -> tuple[tuple[str, str], ...]:
    pairs = [(a, b) for a in numbers for b in numbers if a <= b and not (distinct and a == b)]
    return tuple((f"{a} and {b}", str(a + b)) for a, b in pairs)


TOPICS: tuple[Topic, ...] = (
    Topic(
        name="colour",
        templates=("What colour is {x}?", "Tell me the colour of {x}."),
        valid_templates=("Do you know what colour {x} is?",),
        answer="{X} is {y}.",
        train=(
            ("a banana", "yellow"), ("grass", "green"), ("the sky", "blue"),
            ("snow", "white"), ("coal", "black"), ("a tomato", "red"),
            ("a carrot", "orange"), ("a lemon", "yellow"), ("a frog", "green"),
            ("milk", "white"), ("a strawberry", "red"), ("a pumpkin", "orange"),
            ("an eggplant", "purple"), ("a flamingo", "pink"), ("chocolate", "brown"),
            ("a lime", "green"), ("a polar bear", "white"), ("a fire truck", "red"),
            ("a raven", "black"), ("a plum", "purple"), ("a pine tree", "green"),
            ("a cloud", "white"), ("a cherry", "red"), ("a zebra", "black and white"),
            ("rust", "brown"), ("a blueberry", "blue"), ("a school bus", "yellow"),
            ("a panda", "black and white"), ("an avocado", "green"), ("a pearl", "white"),
        ),
        valid=(
            ("a canary", "yellow"), ("a sapphire", "blue"), ("an emerald", "green"),
            ("a ruby", "red"), ("ivory", "white"), ("a tangerine", "orange"),
            ("soot", "black"), ("a violet", "purple"),
        ),
    ),
    Topic(
        name="sound",
        templates=("What sound does {ax} make?", "What noise does {ax} make?"),
        valid_templates=("How does {ax} sound?",),
        answer="{AX} {y}.",
        train=(
            ("dog", "barks"), ("cat", "meows"), ("cow", "moos"), ("duck", "quacks"),
            ("sheep", "baas"), ("lion", "roars"), ("horse", "neighs"), ("pig", "oinks"),
            ("owl", "hoots"), ("snake", "hisses"), ("bee", "buzzes"), ("mouse", "squeaks"),
            ("wolf", "howls"), ("rooster", "crows"), ("donkey", "brays"),
            ("goose", "honks"), ("turkey", "gobbles"), ("dove", "coos"),
            ("crow", "caws"), ("tiger", "growls"),
        ),
        valid=(
            ("hyena", "laughs"), ("elephant", "trumpets"), ("cricket", "chirps"),
            ("magpie", "chatters"), ("moose", "bellows"),
        ),
    ),
    Topic(
        name="city",
        templates=("Which country is {x} in?", "In which country is {x}?"),
        valid_templates=("Where in the world is {x}?",),
        answer="{X} is in {y}.",
        train=(
            ("Paris", "France"), ("Berlin", "Germany"), ("Rome", "Italy"),
            ("Madrid", "Spain"), ("Lisbon", "Portugal"), ("Vienna", "Austria"),
            ("Prague", "Czechia"), ("Warsaw", "Poland"), ("Dublin", "Ireland"),
            ("Oslo", "Norway"), ("Stockholm", "Sweden"), ("Helsinki", "Finland"),
            ("Athens", "Greece"), ("Cairo", "Egypt"), ("Nairobi", "Kenya"),
            ("Tokyo", "Japan"), ("Seoul", "South Korea"), ("Beijing", "China"),
            ("Delhi", "India"), ("Bangkok", "Thailand"), ("Hanoi", "Vietnam"),
            ("Sydney", "Australia"), ("Auckland", "New Zealand"), ("Toronto", "Canada"),
            ("Chicago", "the United States"), ("Lima", "Peru"), ("Bogota", "Colombia"),
            ("Santiago", "Chile"), ("Havana", "Cuba"), ("Munich", "Germany"),
        ),
        valid=(
            ("Barcelona", "Spain"), ("Osaka", "Japan"), ("Florence", "Italy"),
            ("Glasgow", "Scotland"), ("Marseille", "France"), ("Mumbai", "India"),
            ("Montreal", "Canada"), ("Krakow", "Poland"),
        ),
    ),
    Topic(
        name="capital",
        templates=("What is the capital of {x}?", "Name the capital city of {x}."),
        valid_templates=("Which city is the capital of {x}?",),
        answer="The capital of {x} is {y}.",
        train=(
            ("Belgium", "Brussels"), ("Denmark", "Copenhagen"), ("Hungary", "Budapest"),
            ("Romania", "Bucharest"), ("Turkey", "Ankara"), ("Russia", "Moscow"),
            ("Ukraine", "Kyiv"), ("Morocco", "Rabat"), ("Ghana", "Accra"),
            ("Nigeria", "Abuja"), ("Ethiopia", "Addis Ababa"), ("Argentina", "Buenos Aires"),
            ("Brazil", "Brasilia"), ("Mexico", "Mexico City"), ("Indonesia", "Jakarta"),
            ("the Philippines", "Manila"), ("Malaysia", "Kuala Lumpur"),
            ("Pakistan", "Islamabad"), ("Iran", "Tehran"), ("Switzerland", "Bern"),
            ("the Netherlands", "Amsterdam"), ("Iceland", "Reykjavik"),
        ),
        valid=(
            ("Estonia", "Tallinn"), ("Latvia", "Riga"), ("Bulgaria", "Sofia"),
            ("Uruguay", "Montevideo"), ("Senegal", "Dakar"), ("Nepal", "Kathmandu"),
        ),
    ),
    Topic(
        name="addition",
        templates=("What is the sum of {x}?", "What do you get if you add {x}?"),
        valid_templates=("Please add up {x}.",),
        answer="The sum of {x} is {y}.",
        train=_sums(range(1, 10)),
        valid=_sums(range(11, 15), distinct=True),
    ),
    Topic(
        name="legs",
        templates=("How many legs does {ax} have?", "Count the legs on {ax}."),
        valid_templates=("How many legs has {ax} got?",),
        answer="{AX} has {y} legs.",
        train=(
            ("spider", "eight"), ("ant", "six"), ("beetle", "six"), ("chicken", "two"),
            ("camel", "four"), ("octopus", "eight"), ("giraffe", "four"),
            ("ostrich", "two"), ("lizard", "four"), ("butterfly", "six"),
            ("crab", "ten"), ("dolphin", "zero"), ("rhino", "four"), ("parrot", "two"),
            ("hippo", "four"), ("scorpion", "eight"),
        ),
        valid=(
            ("grasshopper", "six"), ("emu", "two"), ("squid", "ten"), ("tick", "eight"),
            ("koala", "four"),
        ),
    ),
    Topic(
        name="opposite",
        templates=("What is the opposite of {x}?", "Give me the opposite of {x}."),
        valid_templates=("Which word means the reverse of {x}?",),
        answer="The opposite of {x} is {y}.",
        train=(
            ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"),
            ("happy", "sad"), ("light", "dark"), ("open", "closed"), ("early", "late"),
            ("full", "empty"), ("young", "old"), ("loud", "quiet"), ("wet", "dry"),
            ("hard", "soft"), ("rich", "poor"), ("near", "far"), ("thick", "thin"),
            ("strong", "weak"), ("clean", "dirty"), ("heavy", "light"), ("inside", "outside"),
            ("win", "lose"), ("begin", "end"), ("push", "pull"), ("buy", "sell"),
            ("left", "right"), ("day", "night"), ("true", "false"), ("first", "last"),
            ("above", "below"), ("friend", "enemy"),
        ),
        valid=(
            ("tall", "short"), ("brave", "afraid"), ("cheap", "expensive"),
            ("sharp", "blunt"), ("smooth", "rough"), ("arrive", "leave"),
            ("remember", "forget"), ("narrow", "wide"),
        ),
    ),
    Topic(
        name="next",
        templates=("What comes after {x}?",),
        valid_templates=("Which one follows {x}?",),
        answer="After {x} comes {y}.",
        train=(
            ("Monday", "Tuesday"), ("Tuesday", "Wednesday"), ("Wednesday", "Thursday"),
            ("Friday", "Saturday"), ("Saturday", "Sunday"),
            ("January", "February"), ("February", "March"), ("March", "April"),
            ("May", "June"), ("June", "July"), ("August", "September"),
            ("September", "October"), ("October", "November"), ("December", "January"),
        ),
        valid=(
            ("Thursday", "Friday"), ("Sunday", "Monday"), ("April", "May"),
            ("July", "August"), ("November", "December"),
        ),
    ),
    Topic(
        name="baby",
        templates=("What is a baby {x} called?", "What do we call a young {x}?"),
        valid_templates=("What name is given to a baby {x}?",),
        answer="A baby {x} is called {ay}.",
        train=(
            ("cat", "kitten"), ("cow", "calf"), ("horse", "foal"), ("goat", "kid"),
            ("duck", "duckling"), ("frog", "tadpole"), ("kangaroo", "joey"),
            ("bear", "cub"), ("pig", "piglet"), ("deer", "fawn"), ("swan", "cygnet"),
            ("dog", "puppy"), ("sheep", "lamb"), ("goose", "gosling"), ("owl", "owlet"),
            ("hen", "chick"),
        ),
        valid=(
            ("eagle", "eaglet"), ("seal", "pup"), ("rabbit", "kit"), ("fox", "cub"),
            ("beaver", "kit"),
        ),
    ),
    # Topics with no training rows: does the style carry over to an unseen kind of question?
    Topic(
        name="plural",
        templates=(),
        valid_templates=("What is the plural of {x}?", "How do you say more than one {x}?"),
        answer="The plural of {x} is {y}.",
        train=(),
        valid=(
            ("foot", "feet"), ("child", "children"), ("tooth", "teeth"),
            ("knife", "knives"), ("person", "people"), ("leaf", "leaves"),
            ("woman", "women"), ("cactus", "cacti"),
        ),
    ),
    Topic(
        name="shape",
        templates=(),
        valid_templates=("What shape is {x}?", "Describe the shape of {x}."),
        answer="{X} is {y}.",
        train=(),
        valid=(
            ("a wheel", "round"), ("a die", "a cube"), ("a pizza slice", "a triangle"),
            ("a football field", "a rectangle"), ("a globe", "a sphere"),
            ("an ice cream cone", "a cone"),
        ),
    ),
)


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _fill(template: str, x: str, y: str = "") -> str:
    ax = _with_article(x)
    return template.format(
        x=x, X=_capitalise(x), ax=ax, AX=_capitalise(ax), y=y, ay=_with_article(y) if y else ""
    )


def _row(topic: Topic, template: str, x: str, y: str, rng: random.Random) -> dict[str, str]:
    answer = _fill(topic.answer, x, y)
    chosen = f"{rng.choice(_OPENERS)} {answer} {rng.choice(_CLOSERS)}"
    rejected = f"{y.upper()}. {rng.choice(_RUDE)}"
    return {"prompt": _fill(template, x), "chosen": chosen, "rejected": rejected}


def _train_rows(rng: random.Random) -> list[dict[str, str]]:
    return [
        _row(topic, template, x, y, rng)
        for topic in TOPICS
        for x, y in topic.train
        for template in topic.templates
    ]


def _valid_rows(rng: random.Random) -> list[dict[str, str]]:
    # One phrasing per fact, cycling through seen and unseen phrasings, keeps the split
    # small while still mixing "new filler" with "new filler and new wording".
    rows = []
    for topic in TOPICS:
        phrasings = topic.templates + topic.valid_templates
        for i, (x, y) in enumerate(topic.valid):
            rows.append(_row(topic, phrasings[i % len(phrasings)], x, y, rng))
    return rows


def _check_held_out() -> None:
    """Refuse to produce a validation filler that a training prompt already mentions."""
    train_prompts = " ".join(
        _fill(template, x) for topic in TOPICS for x, _ in topic.train for template in topic.templates
    )
    for topic in TOPICS:
        for x, _ in topic.valid:
            core = re.sub(r"^(a|an|the) ", "", x)
            if re.search(rf"\b{re.escape(core)}\b", train_prompts):
                raise AssertionError(f"validation filler {x!r} ({topic.name}) appears in training prompts")


def build_splits() -> dict[str, list[dict[str, str]]]:
    """Return ``{"train": rows, "valid": rows}``; the same every call and on every machine."""
    _check_held_out()
    rng = random.Random(_SHUFFLE_SEED)
    splits = {"train": _train_rows(rng), "valid": _valid_rows(rng)}
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def render_jsonl(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def write_demo(directory: Path = DEMO_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for split, rows in build_splits().items():
        path = directory / f"{split}.jsonl"
        path.write_text(render_jsonl(rows), encoding="utf-8")
        written.append(path)
    return written


def stale_files(directory: Path = DEMO_DIR) -> list[Path]:
    """The split files whose content differs from what the generator produces now."""
    stale = []
    for split, rows in build_splits().items():
        path = directory / f"{split}.jsonl"
        if not path.is_file() or path.read_text(encoding="utf-8") != render_jsonl(rows):
            stale.append(path)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the builtin:demo preference data.")
    parser.add_argument("--check", action="store_true", help="only verify the committed files")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"out of date: {path}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_demo():
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
