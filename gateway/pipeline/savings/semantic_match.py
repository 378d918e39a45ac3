"""May the answer cached for prompt `a` serve prompt `b`? Safe by construction, not by a score.

Embeddings find candidates; this module decides. Two prompts match only when they differ in ways
known to keep their meaning, compared over the whole text (never a truncated prefix):

- Pasted context (a long prompt's paragraphs before its final question) must be identical; the
  questions are then compared as below.
- Each text is normalised: case, white space and punctuation folded, contractions expanded
  ("what's" -> "what is", "doesn't" -> "does not"), articles dropped, `are`/`were` read as
  `is`/`was`, common question frames made one ("how can I", "how should I", "how to" -> "how do
  I"), and greetings, "please", "could you tell me", "thanks in advance" and the like stripped from
  the start and the end.
- The remaining words are aligned one to one. Two words align when equal, when one is the other's
  plural, when a fixed table vouches that they are synonyms, or when one is a typing slip of the
  other (one edit, two for long words) and is not itself a dictionary word: "pyhton" aligns with
  "python", but "weight" never with "height", nor "form" with "from". Digits, negations and
  identifiers align only when equal.
- Word order must be the same, except that one phrase opening with a preposition may move between
  the end and the start ("... a list in Python?" / "In Python, ... a list?"). A swap of roles
  ("move X into Y" / "move Y into X") is never one such move.

Anything else (another number, unit, date, name, language, format or length word, a negation, a
scope word like "all"/"some", a comparative, a swapped relation) refuses, with a reason for the
`x-gateway-semantic-reason` header. A refused paraphrase is a cache miss, never a wrong answer.
Pure: no I/O but reading the tokenizer's vocabulary (the dictionary) once, from the package.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import orjson

VOCAB_PATH = Path(__file__).resolve().parents[2] / "data" / "minilm_tokenizer.json"

CONTEXT_MIN_CHARS = 600  # a prompt this long with paragraphs is read as pasted context + a question

CONTRACTIONS = {
    "what's": "what is", "how's": "how is", "where's": "where is", "who's": "who is", "when's": "when is",
    "why's": "why is", "it's": "it is", "that's": "that is", "there's": "there is", "here's": "here is",
    "i'm": "i am", "you're": "you are", "we're": "we are", "they're": "they are", "i've": "i have",
    "you've": "you have", "we've": "we have", "i'd": "i would", "i'll": "i will", "let's": "let us",
    "can't": "can not", "cannot": "can not", "won't": "will not", "don't": "do not", "doesn't": "does not",
    "didn't": "did not", "isn't": "is not", "aren't": "are not", "wasn't": "was not", "weren't": "were not",
    "shouldn't": "should not", "couldn't": "could not", "wouldn't": "would not", "haven't": "have not",
    "hasn't": "has not", "hadn't": "had not", "mustn't": "must not",
}
FOLD = {"are": "is", "were": "was", "an": "", "a": "", "the": ""}
FRAMES = [  # (pattern, replacement) over the folded, lower-case text
    (re.compile(r"\bhow (?:do|can|could|should|would|might) (?:i|you|one|we)\b"), "how do i"),
    (re.compile(r"\bhow does one\b"), "how do i"),
    (re.compile(r"\bhow to\b"), "how do i"),
    (re.compile(r"\bwhat is (?:way|method) to\b"), "how do i"),
    (re.compile(r"\bis it possible to\b"), "can i"),
    (re.compile(r"\bam i able to\b"), "can i"),
]
_LEAD = re.compile(
    r"^(?:(?:hi|hello|hey|greetings|good (?:morning|afternoon|evening))(?: there| all| team)?"
    r"|please|kindly|quick question|one question|question|sorry|excuse me"
    r"|i (?:was|am) wondering(?: if| whether)?|i wonder(?: if| whether)?"
    r"|i would like to know|i want to know|do you know"
    r"|(?:could|can|would) you (?:please )?(?:tell me|help me(?: with this)?|let me know)"
    r"|please (?:tell me|help me|let me know)|tell me|help me)\b[\s,:;!?.\-]*")
_TAIL = re.compile(
    r"[\s,;:!.\-]*\b(?:thanks|thank you|thx|ty|cheers|please)(?: (?:so much|very much|a lot|in advance))?"
    r"[\s!.?]*$")
_WORD = re.compile(r"[a-z0-9][a-z0-9_'’.+#-]*[a-z0-9+#]|[a-z0-9%$€£]")

FRONTABLE = frozenset("in on with for at using without during via inside within when after before".split())
# Synonyms vouched for: the same answer whichever is used (both directions).
_SYNONYM_PAIRS = """fix repair; leaking leaky; big large; bigger larger; biggest largest; fast quick;
faster quicker; fastest quickest; buy purchase; buying purchasing; kids children; kid child;
movie film; movies films; calculate compute; calculating computing; begin start; beginning starting;
doctor physician; cheap inexpensive; use utilize; using utilizing; method way; explain describe;
car automobile; photo picture; photos pictures; couch sofa; need require; help assist;
forgot forget; anyone anybody; someone somebody; everyone everybody; maybe perhaps"""
SYNONYMS = {frozenset(p.split()) for p in _SYNONYM_PAIRS.replace("\n", " ").split(";")}
# Words whose counterpart may never be a "typo": they change answers by one letter.
_GUARDED = frozenset("""not no nor never none all any some most many few each every only both either
neither more less least most first last next up down in out on off to from into onto than over
under above below before after left right max min yes""".split())


@functools.cache
def dictionary() -> frozenset[str]:
    """Whole words of the embedder's WordPiece vocabulary: about 20k common English words."""
    vocab = orjson.loads(VOCAB_PATH.read_bytes())["model"]["vocab"]
    return frozenset(w for w in vocab if w.isalpha() and w.islower() and len(w) > 1)


def split_context(text: str) -> tuple[str, str]:
    """(pasted context, question): a long prompt with paragraphs ends with its question."""
    stripped = text.strip()
    if len(stripped) < CONTEXT_MIN_CHARS or "\n\n" not in stripped:
        return "", stripped
    context, _, question = stripped.rpartition("\n\n")
    return context, question


def words(text: str) -> list[str]:
    """The normalised content words of a question (see the module docstring)."""
    low = text.lower().replace("’", "'")
    for _ in range(3):  # "Hi there, could you tell me ..." peels in more than one step
        low = _LEAD.sub("", low.strip(" \t\n,.!?:;-"))
        low = _TAIL.sub("", low)
    out: list[str] = []
    for token in _WORD.findall(low):
        token = token.strip(".'-")
        for part in CONTRACTIONS.get(token, token).split():
            part = FOLD.get(part, part)
            if part:
                out.append(part)
    text = " ".join(out)
    for pattern, frame in FRAMES:
        text = pattern.sub(frame, text)
    return text.split()


def _edits(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (adjacent transpositions count once), capped at 3."""
    if abs(len(a) - len(b)) > 2:
        return 3
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def plural(a: str, b: str) -> bool:
    short, long = sorted((a, b), key=len)
    return len(short) >= 3 and short.isalpha() and long in (short + "s", short + "es", short[:-1] + "ies")


def typo(a: str, b: str) -> bool:
    if not (a.isalpha() and b.isalpha()) or min(len(a), len(b)) < 4 or a in _GUARDED or b in _GUARDED:
        return False
    known = dictionary()
    if a in known and b in known:  # two real words: another word, not a slip
        return False
    return _edits(a, b) <= (2 if min(len(a), len(b)) >= 8 else 1)


def aligned(a: str, b: str) -> bool:
    return a == b or plural(a, b) or frozenset((a, b)) in SYNONYMS or typo(a, b)


def _order(xs: list[str], ys: list[str]) -> list[int] | None:
    """For each word of xs, the index of the word of ys it aligns with (one to one), or None.
    Equal words pair first, in order, so repeated words never cross."""
    taken = [False] * len(ys)
    pos: list[int | None] = [None] * len(xs)
    for i, x in enumerate(xs):
        j = next((j for j, y in enumerate(ys) if not taken[j] and y == x), None)
        if j is not None:
            taken[j], pos[i] = True, j
    for i, x in enumerate(xs):
        if pos[i] is None:
            j = next((j for j, y in enumerate(ys) if not taken[j] and aligned(x, y)), None)
            if j is None:
                return None
            taken[j], pos[i] = True, j
    return [p for p in pos if p is not None]


def _moved_phrase(xs: list[str], order: list[int]) -> bool:
    """`order` is xs rotated: a phrase opening with a preposition moved from the end to the start
    (or from the start to the end)."""
    n = len(order)
    for k in range(1, n):
        rotated = list(range(n - k, n)) + list(range(n - k))  # xs[k:] then xs[:k] in ys
        if order == rotated and (xs[k] in FRONTABLE or xs[0] in FRONTABLE):
            return True
    return False


def refusal(a: str, b: str) -> str | None:
    """None when `a`'s answer may serve `b`; otherwise why not (a short reason, no prompt text)."""
    context_a, question_a = split_context(a)
    context_b, question_b = split_context(b)
    if context_a != context_b:
        return "pasted context differs"
    xs, ys = words(question_a), words(question_b)
    if xs == ys:
        return None
    if len(xs) != len(ys):
        return "a word was added or removed"
    order = _order(xs, ys)
    if order is None:
        return "a word differs"
    if order != sorted(order) and not _moved_phrase(xs, order):
        return "word order differs"
    return None
