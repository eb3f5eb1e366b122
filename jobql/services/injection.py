"""Prompt-injection screening of task input at submit time.

Pure and synchronous: it runs on the request path, before the job is stored. A detector scans
the *string values* of the task input (nested objects and arrays included) and returns
:class:`Finding` objects naming a rule, the JSON path of the field (``input.messages[1].content``)
and a score in ``[0, 1]``. A finding never holds the matched text, so findings are safe to log
and to put in error messages.

What happens with findings is a per-task :class:`InjectionPolicy`:

* ``block`` - :func:`decide` returns ``blocked=True``; the submit service refuses the job
  (``PromptInjectionDetected``).
* ``flag`` - the job is accepted and ``flagged=True`` (record the finding rule ids and paths).
* ``off`` - nothing is scanned. Callers must not call :meth:`InjectionDetector.scan` at all
  when the policy is ``off`` (:func:`screen` does this for you); :func:`decide` then never
  blocks or flags.

The default :class:`HeuristicDetector` applies :data:`RULES`, a short, curated list of regular
expressions for well-known attack phrasings, fake role markers and invisible characters. It is
a speed bump, not a security boundary: it aims for few false positives on ordinary text
rather than for catching every paraphrase. A full 100k-character scan of ordinary text takes
about 10-20 ms; a short prompt well under a millisecond.

Limits: at most :data:`MAX_SCAN_CHARS` characters are scanned per input (string values in
document order; the string that crosses the limit is cut off there, later strings are not
looked at) and at most :data:`MAX_SCAN_VALUES` values (of any type) are visited. Anything
beyond those limits is not scanned and produces no finding.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from jobql.services.inputs import json_path

# The policy is part of a task's contract; re-exported here for callers of this module.
from jobql.tasks.contracts import InjectionPolicy as InjectionPolicy
from jobql.tasks.contracts import parse_policy as parse_policy

MAX_SCAN_CHARS = 100_000
"""Characters of string values scanned per input; the rest is not looked at."""

MAX_SCAN_VALUES = 100_000
"""Values (strings, numbers, objects, arrays...) visited per input; the rest is skipped."""

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Finding:
    """One rule that fired on one input field. Deliberately holds no matched text."""

    rule: str
    path: str
    score: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score must be between 0 and 1, got {self.score}")


@runtime_checkable
class InjectionDetector(Protocol):
    def scan(self, task_input: Mapping[str, Any]) -> list[Finding]:
        """Findings for the string values of ``task_input``. Sync, pure and fast."""
        ...


@dataclass(frozen=True)
class Decision:
    """What to do with a submission. ``blocked`` and ``flagged`` are never both true."""

    blocked: bool
    flagged: bool
    findings: tuple[Finding, ...]


ALLOW = Decision(blocked=False, flagged=False, findings=())


def decide(
    policy: InjectionPolicy, findings: list[Finding], threshold: float = DEFAULT_THRESHOLD
) -> Decision:
    """Apply ``policy`` to the findings whose score is at least ``threshold``.

    With ``InjectionPolicy.OFF`` the answer is always :data:`ALLOW`; don't scan in that case.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if policy is InjectionPolicy.OFF:
        return ALLOW
    kept = tuple(f for f in findings if f.score >= threshold)
    if not kept:
        return ALLOW
    if policy is InjectionPolicy.BLOCK:
        return Decision(blocked=True, flagged=False, findings=kept)
    return Decision(blocked=False, flagged=True, findings=kept)


def screen(
    detector: InjectionDetector,
    policy: InjectionPolicy,
    task_input: Mapping[str, Any],
    threshold: float = DEFAULT_THRESHOLD,
) -> Decision:
    """Scan (unless the policy is off) and decide in one step."""
    if policy is InjectionPolicy.OFF:
        return ALLOW
    return decide(policy, detector.scan(task_input), threshold)


# -- the heuristic detector -------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A named pattern over one string value.

    *Phrase rules* (those with ``starts``) see the string folded (see :func:`fold`: NFKC,
    plain apostrophes, invisible format characters removed, lower case), so their patterns
    are written in lower case. They are tried only where a word from ``starts`` begins a word
    (``starts`` is a ``|``-separated list of the words a match can begin with), which keeps a
    100k-character scan fast; for ``negatable`` rules a match right after "not", "cannot",
    "n't" or "never" does not count ("do not ignore previous instructions" is advice).

    Other rules search the whole string: folded; with ``cased`` unhidden but not lower-cased
    (see :func:`unhide`); with ``raw`` as submitted. Raw rules look for invisible non-ASCII
    characters and are skipped for ASCII-only strings.

    A rule fires when ``min_matches`` matches count and, if given, ``requires`` is found too.
    """

    id: str
    weight: float
    description: str
    pattern: re.Pattern[str]
    starts: str = ""
    requires: re.Pattern[str] | None = None
    min_matches: int = 1
    raw: bool = False
    cased: bool = False
    negatable: bool = False

    def fires(self, text: str, positions: Iterable[int] | None = None) -> bool:
        """Whether the rule fires on ``text`` (in the form the rule wants). Phrase
        rules are tried at ``positions``, where one of their ``starts`` words begins."""
        if positions is None:
            found: Iterable[int] = (m.start() for m in self.pattern.finditer(text))
        else:
            found = (p for p in positions if self.pattern.match(text, p))
        counted = 0
        for start in found:
            if self.negatable and _NEGATION.search(text, max(0, start - 10), start):
                continue
            counted += 1
            if counted >= self.min_matches:
                return self.requires is None or self.requires.search(text) is not None
        return False


_NEGATION = re.compile(r"(?:\bnot|\bcannot|n't|\bnever)\s+\Z")


def _phrase(pattern: str) -> re.Pattern[str]:
    """Compile a lower-case phrase pattern; each space stands for a run of blanks/punctuation."""
    return re.compile(pattern.replace(" ", r"\W+"))


# Not "override", "skip" or "dismiss": "the new rules override all previous rules" is ordinary.
_IGNORE_VERBS = "ignore|disregard|forget|bypass|discard"
_IGNORE = f"(?:{_IGNORE_VERBS})"
_EARLIER = "(?:previous|previously|prior|preceding|above|earlier|foregoing|former|original|initial)"
_ORDERS = "(?:instructions?|prompts?|directions|directives|commands|orders|guidelines|rules)"
_AI = "(?:ai|assistant|chatbot|bot|llm|model|language model)"
_MODE = "(?:developer|dev|god|jailbreak|dan) mode"
_DROP_VERBS = "ignore|disregard|forget|bypass|override|disable|circumvent|deactivate|turn off"
_SHOW_VERBS = "print|show|display|output|repeat|recite|tell|give|write|spell|share|copy|paste"

# Zero-width characters that hide text (ZWJ/ZWNJ are left out: emoji and many scripts use them;
# a byte-order mark counts except at the very start).
_ZERO_WIDTH = "[\u200b\u2060-\u2064\u180e\ufeff](?<!^\ufeff)"
# Bidi embeddings, overrides and isolates (the "Trojan Source" characters).
_BIDI = "[\u202a-\u202e\u2066-\u2069]"
# Unicode tag characters spell invisible ASCII; allowed only inside flag emoji (U+1F3F4 ...).
_TAGS = "[\U000e0000-\U000e007f](?<![\U0001f3f4\U000e0000-\U000e007f][\U000e0000-\U000e007f])"

RULES: tuple[Rule, ...] = (
    Rule(
        "ignore-previous-instructions",
        0.9,
        "Tells the model to ignore, disregard or forget the instructions it was given.",
        _phrase(
            f"{_IGNORE} (?:(?:all|any|every) )?(?:of )?(?:(?:the|your|these|those|this) )?"
            rf"{_EARLIER} (?:\w+ )?{_ORDERS}\b"
            f"|{_IGNORE} (?:(?:all|any) )?(?:of )?(?:(?:the|your) )?{_ORDERS} "
            "(?:above|before this|(?:you(?: were| have been|'ve been) )?given (?:to you )?"
            r"(?:above|before|earlier|previously))\b"
            "|(?:ignore|disregard) (?:all of )?the above and (?:instead )?(?:\\w+ )?"
            r"(?:say|print|write|tell|output|respond|repeat|translate|answer|reply|return|give)\b"
            r"|(?:ignore|disregard) (?:all|everything) (?:(?:written|said|stated|mentioned) )?"
            r"(?:above|previously|earlier|before this)\b"
            # ... but "forget everything you were told about carbs" is advice.
            r"|forget (?:all|everything) (?:you(?: were| have been|'ve been) told\b(?! about\b)"
            r"|above|your (?:instructions|rules|training))\b"
            f"|(?:do not|don't|stop) (?:follow|obey)(?:ing)? (?:(?:any|all) )?(?:of )?your "
            rf"{_EARLIER} {_ORDERS}\b"
        ),
        starts=f"{_IGNORE_VERBS}|do|don|stop",
        negatable=True,
    ),
    Rule(
        "disregard-system-prompt",
        0.9,
        "Tells the model to ignore or override its system or developer prompt.",
        _phrase(
            f"(?:{_IGNORE_VERBS}|override|circumvent) (?:(?:all|any) )?(?:of )?"
            "(?:(?:the|your|its|this) )?(?:(?:original|initial|hidden|current|default) )?"
            r"(?:system|developer) (?:prompts?|messages?|instructions)\b"
        ),
        starts=f"{_IGNORE_VERBS}|override|circumvent",
        negatable=True,
    ),
    Rule(
        "bypass-safety",
        0.7,
        "Asks the model to drop its restrictions, filters, safety guidelines or content policy.",
        _phrase(
            f"(?:{_DROP_VERBS}) (?:(?:all|any) )?(?:of )?(?:your|its) "
            r"(?:\w+ )?(?:restrictions|limitations|guardrails|safeguards|content filters?"
            "|safety filters?|safety (?:guidelines|rules|protocols)"
            r"|ethical (?:guidelines|constraints)|programming|training|guidelines|rules|policies)\b"
            f"|(?:{_DROP_VERBS}) (?:(?:all|any|the) )?(?:safety|ethical|moral) "
            r"(?:guidelines|guardrails|safeguards|restrictions|policies|filters|constraints)\b"
            "|(?:ignore|disregard|bypass|circumvent|override) "
            r"(?:(?:all|any|the|your) )?(?:\w+ )?content polic(?:y|ies)\b"
        ),
        starts=_DROP_VERBS.replace("turn off", "turn"),
        negatable=True,
    ),
    Rule(
        "dan-developer-mode",
        0.9,
        'The "DAN" (do anything now) / "developer mode" jailbreak family.',
        _phrase(
            r"you(?: are|'re) now (?:dan\b(?!')|jailbroken\b|unrestricted\b|unfiltered\b"
            rf"|uncensored\b|(?:in )?{_MODE}\b)"
            r"|dan\b\W{0,5}(?:\w+ ){0,3}?do anything now\b"
            rf"|(?:act|respond|answer|reply|pretend|behave) (?:\w+ ){{0,4}}?{_MODE} "
            r"(?:enabled|activated|on)\b"
            rf"|(?:chatgpt|gpt|claude|ai|assistant|chatbot|llm) with {_MODE}\b"
            r"|(?:jailbreak|dan) mode output\b"
        ),
        starts=(
            "you|dan|act|respond|answer|reply|pretend|behave|jailbreak"
            "|chatgpt|gpt|claude|ai|assistant|chatbot|llm"
        ),
    ),
    Rule(
        "reveal-system-prompt",
        0.8,
        "Asks the model to print its system prompt or hidden instructions.",
        _phrase(
            # "your ..." is about the model; "the/its ..." only with words that are.
            r"(?:reveal|leak|disclose|dump|expose) (?:\w+ ){0,2}?(?:your "
            "(?:(?:full|entire|complete|exact|original|initial|hidden|secret|system) )*"
            "(?:prompt|instructions|system message)"
            "|(?:the|its) (?:(?:full|entire|complete|exact) )?"
            "(?:(?:hidden|secret|system|developer) (?:prompt|instructions|message)"
            r"|(?:initial|original) prompt))\b"
            f"|(?:{_SHOW_VERBS}) (?:(?:out|me) )?(?:\\w+ ){{0,3}}?(?:(?:your|its) "
            "(?:(?:full|entire|complete|exact|verbatim) )?"
            "(?:system (?:prompt|message|instructions)|developer (?:prompt|message)"
            "|(?:initial|original|hidden|secret) (?:prompt|instructions))"
            "|the (?:(?:full|entire|complete|exact|verbatim) )?"
            "(?:(?:system|developer|hidden|secret|initial) prompt"
            r"|(?:hidden|secret) instructions))\b"
            # "your prompt" alone: only where the sentence ends ("prompt engineering skills").
            f"|(?:{_SHOW_VERBS}) (?:me )?your (?:(?:full|entire|complete|exact) )?prompt"
            r"(?=\s*(?:$|[.!?,:;)\"'\n])|\s+(?:verbatim|in full|word for word|exactly)\b)"
            "|what (?:is|are|was|were) your (?:system prompt|initial instructions"
            r"|original instructions|hidden instructions|instructions verbatim)\b"
            "|(?:repeat|print|output|write|copy|recite) (?:out )?(?:all )?(?:of )?(?:the )?"
            # ... but "print the text above the image" is about layout.
            r"(?:words|text|everything|content) above\b(?!\s+(?:the|a|an|it|each|every)\b)"
        ),
        starts=f"reveal|leak|disclose|dump|expose|{_SHOW_VERBS}|what",
    ),
    Rule(
        "act-without-restrictions",
        0.8,
        "Asks the model to act or answer without restrictions, filters or ethics.",
        _phrase(
            "(?:you (?:will|must|should|shall|can|are going to) (?:now )?"
            "(?:act|behave|respond|answer|reply)|act as|acting as|pretend (?:to be|you are)"
            rf"|role\W?play as|you are (?:now )?an? (?:\w+ )?{_AI}) (?:[\w'-]+ ){{0,12}}?"
            "(?:without|with no|free (?:of|from)) "
            r"(?:(?:any|all) )?(?:\w+ )?(?:restrictions|limitations|limits|filters|filtering"
            r"|censorship|guidelines|rules|boundaries|ethics|morals)\b"
        ),
        starts="you|act|acting|pretend|role",
    ),
    Rule(
        "roleplay-jailbreak",
        0.7,
        "Role-play set-ups that cast the model as an unrestricted or evil AI.",
        _phrase(
            "(?:pretend|imagine|suppose) (?:that )?(?:you are|you're|to be) (?:an? )?"
            "(?:evil|unrestricted|unfiltered|uncensored|amoral|unethical|jailbroken|rogue) "
            rf"(?:\w+ )?{_AI}\b"
            rf"|as an? (?:unrestricted|unfiltered|uncensored|amoral|jailbroken|rogue) {_AI}\b"
            "|(?:freed|liberated|released|broken free) from (?:the )?"
            r"(?:\w+ )?(?:confines|constraints|shackles|limitations|restrictions) of "
            r"(?:\w+ ){0,2}?(?:ai|openai|anthropic|your programming|your training"
            r"|your creators?)\b"
        ),
        starts="pretend|imagine|suppose|as|freed|liberated|released|broken",
    ),
    Rule(
        "chatml-role-tag",
        0.8,
        "ChatML / special-token role markers such as <|im_start|>system.",
        re.compile(
            r"<\|\s*(?:im_start|im_end|im_sep|system|assistant|user|endoftext|eot_id"
            r"|start_header_id|end_header_id|begin_of_text)\s*\|>"
        ),
    ),
    Rule(
        "llama-inst-tag",
        0.8,
        "Llama-style [INST] and <<SYS>> markers, and </s> followed by a new turn.",
        # Upper case only: "return [inst]" is code.
        re.compile(
            r"\[\s*/?\s*INST\s*\]|<<\s*/?\s*SYS\s*>>"
            # "<s>...</s>" is HTML strikethrough; only an end token that opens a turn counts.
            r"|</s>(?=\s*(?:<s>|\[\s*/?\s*INST|<\||(?i:system|assistant|user)\s*:))"
        ),
        cased=True,
    ),
    Rule(
        "markdown-role-header",
        0.7,
        'Fake prompt sections such as "### System:" or "### Instruction:".',
        re.compile(r"^[ \t]*#{2,6}[ \t]*(?:system|assistant|instructions?)[ \t]*:", re.MULTILINE),
    ),
    Rule(
        "system-prompt-delimiter",
        0.8,
        'Fake prompt boundaries such as "BEGIN SYSTEM PROMPT" or "new system instructions:".',
        _phrase(
            r"(?:begin|start|end) (?:of )?(?:the )?(?:new )?system (?:prompt|instructions)\b"
            "|(?:new|updated|real|actual|true|override) system "
            r"(?:prompt|message|instructions)\s*:"
        ),
        starts="begin|start|end|new|updated|real|actual|true|override",
    ),
    Rule(
        "base64-decode-and-follow",
        0.6,
        "Asks to decode an encoded blob (40+ base64 characters) and follow what it says.",
        _phrase(
            r"(?:decode|decipher) (?:\w+ ){0,6}?(?:and|then) (?:\w+ ){0,3}?"
            r"(?:follow|execute|run|obey|carry out|perform|do what)\b"
        ),
        starts="decode|decipher",
        # On the folded (lower-cased) text, so the alphabet has no upper case.
        requires=re.compile(r"(?<![a-z0-9+/])[a-z0-9+/]{40,}={0,2}"),
    ),
    Rule(
        "zero-width-characters",
        0.6,
        "Four or more zero-width characters, as used to hide or smuggle text.",
        re.compile(_ZERO_WIDTH),
        min_matches=4,
        raw=True,
    ),
    Rule(
        "bidi-control-characters",
        0.5,
        "Bidirectional override/embedding/isolate characters that reorder what is shown.",
        re.compile(_BIDI),
        raw=True,
    ),
    Rule(
        "unicode-tag-characters",
        0.9,
        "Invisible Unicode tag characters (ASCII smuggling) outside flag emoji.",
        re.compile(_TAGS),
        raw=True,
    ),
)

# Unicode "format" (Cf) characters: invisible, and removable without changing what is shown.
_FORMAT_CHARACTERS = re.compile(
    "[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f]"
)


def unhide(text: str) -> str:
    """NFKC (full-width letters become ASCII), typographic apostrophes made plain, invisible
    format characters dropped (so "ig<U+200B>nore" reads "ignore")."""
    if text.isascii():
        return text
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u02bc", "'")
    return _FORMAT_CHARACTERS.sub("", text)


def fold(text: str) -> str:
    """What most rules see: :func:`unhide`, then lower case."""
    return unhide(text).lower()


class HeuristicDetector:
    """The default detector: :data:`RULES`, one finding per (rule, field), score = weight."""

    def __init__(
        self,
        rules: Sequence[Rule] = RULES,
        max_chars: int = MAX_SCAN_CHARS,
        max_values: int = MAX_SCAN_VALUES,
    ) -> None:
        if max_chars < 0 or max_values < 0:
            raise ValueError("max_chars and max_values must not be negative")
        self.rules = tuple(rules)
        self.max_chars = max_chars
        self.max_values = max_values
        # One pass over the text finds where any phrase rule's first word begins a word. The
        # alternation tries longer words first, so a hit on "acting" must also count for the
        # rules that start with "act": each word maps to the rules of all its prefixes.
        by_word: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            for word in filter(None, rule.starts.split("|")):
                if not re.fullmatch(r"[a-z]+", word):
                    raise ValueError(f"rule {rule.id}: starts must be lower-case words: {word!r}")
                by_word.setdefault(word, []).append(index)
        words = sorted(by_word, key=lambda w: (-len(w), w))
        self._anchor = (
            re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + ")") if words else None
        )
        self._rules_at: dict[str, list[int]] = {
            word: sorted(
                {i for prefix in words if word.startswith(prefix) for i in by_word[prefix]}
            )
            for word in words
        }

    def scan(self, task_input: Mapping[str, Any]) -> list[Finding]:
        findings: list[Finding] = []
        for parts, text in self._strings(task_input):
            unhidden = unhide(text)
            folded = unhidden.lower()
            positions = self._positions(folded)
            ascii_only = text.isascii()
            path: str | None = None
            for index, rule in enumerate(self.rules):
                if rule.raw:
                    fired = not ascii_only and rule.fires(text)
                elif rule.starts:
                    fired = index in positions and rule.fires(folded, positions[index])
                else:
                    fired = rule.fires(unhidden if rule.cased else folded)
                if fired:
                    path = path or json_path("input", parts)
                    findings.append(Finding(rule=rule.id, path=path, score=rule.weight))
        return findings

    def _positions(self, folded: str) -> dict[int, list[int]]:
        """Where each phrase rule (by index) may match: the starts of its first words."""
        positions: dict[int, list[int]] = {}
        if self._anchor is not None:
            for match in self._anchor.finditer(folded):
                for index in self._rules_at[match.group()]:
                    positions.setdefault(index, []).append(match.start())
        return positions

    def _strings(self, task_input: Mapping[str, Any]) -> list[tuple[list[str | int], str]]:
        """String values in document order with their paths, within the scan limits.

        Iterative, so deeply nested input cannot exhaust the Python stack."""
        found: list[tuple[list[str | int], str]] = []
        budget = self.max_chars
        visited = 0
        stack: list[tuple[list[str | int], Any]] = [([], task_input)]
        while stack and budget > 0 and visited < self.max_values:
            parts, value = stack.pop()
            visited += 1
            if isinstance(value, str):
                found.append((parts, value[:budget]))
                budget -= min(len(value), budget)
            elif isinstance(value, Mapping):
                room = self.max_values - visited
                entries = itertools.islice(value.items(), room)
                stack.extend(reversed([([*parts, str(k)], v) for k, v in entries]))
            elif isinstance(value, list | tuple):
                room = self.max_values - visited
                indexed = itertools.islice(enumerate(value), room)
                stack.extend(reversed([([*parts, i], v) for i, v in indexed]))
        return found
