"""The fingerprint's word list (static/js/words.js): 2048 words that survive being read aloud.

Nine of these words are all two people compare over a phone line, so no two may be mistaken
for each other. Spelling rules are easy to check; sound is approximated by a small phonetic
key (a simplified Metaphone) under which words that differ only in their vowels, or in
letters that sound alike, collide. Every check runs on a small bad list too, to show that it
can fail.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import pytest

WORDS_JS = Path(__file__).resolve().parents[1] / "static" / "js" / "words.js"
WORD_COUNT = 2048

# Spelling to sound, applied in this order to a lowercase word. Vowels go last and all become
# one symbol: accents and bad lines blur vowels first, so words must differ in consonants.
SOUND_RULES: list[tuple[str, str]] = [
    (r"^kn|^gn|^pn", "n"),  # silent first letters
    (r"^wr", "r"),
    (r"^ps", "s"),
    (r"^wh", "w"),
    (r"^x", "s"),
    (r"tch", "ch"),
    (r"dge", "j"),
    (r"ph", "f"),
    (r"gh(?![aeiouy])", ""),  # night, though
    (r"sch", "sk"),
    (r"ck", "k"),
    (r"c(?=[eiy])", "s"),  # soft c and g, before the final e goes
    (r"g(?=[eiy])", "j"),
    (r"(?<=[aeiouy][^aeiouy])e$|(?<=[aeiouy][^aeiouy]{2})e$", ""),  # silent final e
    (r"mb$", "m"),
    (r"q", "k"),
    (r"x", "ks"),
    (r"z", "s"),
    (r"c(?!h)", "k"),
    (r"sh|ch", "X"),
    (r"th", "0"),
    (r"w(?![aeiouy])", ""),  # town, law
    (r"^y(?=[aeiou])", "Y"),  # a consonant only before a vowel
    (r"(.)\1+", r"\1"),  # doubled letters
    (r"[aeiouy]+", "*"),
]


def phonetic_key(word: str) -> str:
    """What a word sounds like, roughly: equal keys mean the words may be misheard."""
    for pattern, sound in SOUND_RULES:
        word = re.sub(pattern, sound, word)
    return word


def read_words(path: Path = WORDS_JS) -> list[str]:
    """The list as the terminal client reads it: the JSON array between the first "[" and
    the last "]" of the file."""
    text = path.read_text(encoding="utf-8")
    words = json.loads(text[text.index("[") : text.rindex("]") + 1])
    assert isinstance(words, list)
    return words


def problems(words: list[str], count: int = WORD_COUNT) -> list[str]:
    """Every rule the list breaks, one line each; empty when it is fit for fingerprints."""
    found = []
    if len(words) != count:
        found.append(f"{len(words)} words, not {count}")
    found += [f"{w!r} is not 3 to 8 letters a-z" for w in words if not re.fullmatch(r"[a-z]{3,8}", str(w))]
    groups: dict[str, defaultdict[str, list[str]]] = {
        "spelled the same": defaultdict(list),
        "starting with the same four letters": defaultdict(list),
        "sounding alike": defaultdict(list),
    }
    for word in map(str, words):
        groups["spelled the same"][word].append(word)
        groups["starting with the same four letters"][word[:4]].append(word)
        groups["sounding alike"][phonetic_key(word)].append(word)
    for rule, by_key in groups.items():
        found += [f"{' and '.join(group)}: {rule}" for group in by_key.values() if len(group) > 1]
    return found


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("pair", "pear"),
        ("right", "write"),
        ("know", "now"),
        ("sun", "son"),
        ("male", "mail"),
        ("sea", "see"),
        ("race", "rice"),
        ("phone", "fun"),
        ("knock", "nock"),
        ("lamb", "lam"),
        ("night", "nite"),
        ("giraffe", "jiraf"),
        ("buzz", "bus"),
        ("quiz", "kiss"),
        ("flour", "flair"),
        ("town", "tone"),
        ("kit", "kite"),
    ],
)
def test_words_that_sound_alike_share_a_key(one: str, other: str) -> None:
    assert phonetic_key(one) == phonetic_key(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("race", "rack"),
        ("cage", "cake"),
        ("ship", "sip"),
        ("think", "tink"),
        ("year", "ear"),
        ("fan", "van"),
        ("anchor", "anchovy"),
    ],
)
def test_words_that_sound_different_keep_apart(one: str, other: str) -> None:
    assert phonetic_key(one) != phonetic_key(other)


def test_the_fingerprint_word_list_is_fit_to_read_aloud() -> None:
    assert problems(read_words()) == []


def test_the_checks_fail_on_a_bad_list() -> None:
    # A duplicate breaks three rules; anchor and anchovy only the prefix rule (they sound
    # different); pair and pier only the sound rule.
    bad = ["apple", "apple", "Pear", "ox", "lengthier", "cafe", "cab1", "anchor", "anchovy", "pair", "pier"]
    assert problems(bad, count=4) == [
        "11 words, not 4",
        "'Pear' is not 3 to 8 letters a-z",
        "'ox' is not 3 to 8 letters a-z",
        "'lengthier' is not 3 to 8 letters a-z",
        "'cab1' is not 3 to 8 letters a-z",
        "apple and apple: spelled the same",
        "apple and apple: starting with the same four letters",
        "anchor and anchovy: starting with the same four letters",
        "apple and apple: sounding alike",
        "pair and pier: sounding alike",
    ]


def test_the_list_parses_as_the_terminal_client_reads_it(tmp_path: Path) -> None:
    # A trailing comma or a comment inside the brackets would break the JSON array.
    broken = tmp_path / "words.js"
    broken.write_text('export const WORDS = Object.freeze([\n  "one", "two",\n]);\n')
    with pytest.raises(json.JSONDecodeError):
        read_words(broken)
