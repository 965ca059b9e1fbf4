"""FreeRet prompts: embedding prompts with explicit priors, the rerank question, and the answer prompt.

Embedding prompts follow the paper's recipe: a task line shared by the query and candidate sides, a grounding
line naming what the item is and which topic to favour, a noise line, and an instruction ending "output one
word:" so the last position holds a one-word summary of the item. The rerank prompt is the paper's
multiple-choice framing (it beat Yes/No by about 5 points); Yes/No is kept for ablations.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from freeret_tui.engine.types import Content, Kind, Picture


class Side(str, Enum):
    QUERY = "query"
    CANDIDATE = "candidate"


# Both sides share the task line: the paper found the shared prior aligns the two embedding spaces.
TASK_LINE = "You are required to assess if the search query is related to the candidate image or document."
NOISE_LINE = "Do not use function words, prepositions, or symbols."
# Replaces a chat template's default persona ("You are a helpful AI assistant named …") for embedding prompts:
# with SmolLM2 it raised dense nDCG@10 from 0.341 to 0.413 on the stdlib set (README); plain text without any
# chat template fell to 0.172.
EMBED_SYSTEM = "You are a retrieval assistant."

_GROUNDING = {
    (Side.QUERY, False): (
        "query",
        "Capture the semantics of the query. Favor the topic of what the person is looking for.",
    ),
    (Side.QUERY, True): (
        "query image",
        "Capture the semantics of the query image. Favor the topic of its main objects and scene.",
    ),
    (Side.CANDIDATE, Kind.TEXT): (
        "passage",
        "Capture the semantics of the passage. Favor the topic of its subject over its wording.",
    ),
    (Side.CANDIDATE, Kind.IMAGE): (
        "image",
        "Capture the semantics of the image. Favor the topic of its main objects, scene and any visible text.",
    ),
    (Side.CANDIDATE, Kind.PAGE): (
        "document page",
        "Capture the semantics of the document page. Favor the topic of its text and figures.",
    ),
}


IMAGE_MARK = "<image>"


@dataclass(frozen=True)
class Turn:
    """One user turn: text in which each ``IMAGE_MARK`` stands for the next of ``images``.

    Models turn it into their own chat format (image parts where the marks are).
    """

    text: str
    images: tuple[Picture, ...] = ()
    system: str = ""


def embedding_prompt(content: Content, side: Side, kind: Kind = Kind.TEXT) -> Turn:
    """The prompt whose last position is the item's embedding."""
    key = (side, content.is_image) if side is Side.QUERY else (side, kind)
    name, grounding = _GROUNDING[key]
    head = f"{IMAGE_MARK}\n" if content.is_image else ""
    body = f"{name.capitalize()}: {_clean(content.text)}\n" if content.text else ""
    text = f"{head}{body}{TASK_LINE}\n{grounding}\n{NOISE_LINE}\nSummarize the above {name} in one word, output one word:"
    return Turn(text=text, images=_images(content), system=EMBED_SYSTEM)


class Framing(str, Enum):
    MC = "mc"  # the paper's multiple-choice framing, scored on the option letters
    YESNO = "yesno"  # plain Yes/No question, kept to reproduce the paper's ablation


def answer_tokens(framing: Framing) -> tuple[str, str]:
    """The (positive, negative) answer strings whose next-token logits are compared."""
    return ("A", "B") if framing is Framing.MC else ("Yes", "No")


def _clean(text: str) -> str:
    """User text with any literal image mark defused (a note may well contain "<image>")."""
    return text.replace(IMAGE_MARK, "<img>")


def _images(*contents: Content) -> tuple[Picture, ...]:
    return tuple(c.image for c in contents if c.image is not None)


def _describe(content: Content) -> str:
    if content.is_image:  # the words beside a picture (a photo's caption and keywords) on its one line
        return f"{IMAGE_MARK} {_clean('; '.join(line for line in content.text.splitlines() if line.strip()))}".strip()
    return _clean(content.text)


# Everything before it in a rerank prompt depends on the query only (models compute that part once per query).
CANDIDATE_LABEL = "\nCandidate:"


def rerank_prompt(query: Content, candidate: Content, framing: Framing) -> Turn:
    """The pairwise judgement prompt; the model scores the next token after it."""
    lines = [
        "Task: Determine whether the candidate matches the query.",
        f"Query: {_describe(query)}",
        f"{CANDIDATE_LABEL.lstrip()} {_describe(candidate)}",
    ]
    if framing is Framing.MC:
        lines += [
            "A. Yes, the candidate fully matches the query.",
            "B. No, the candidate does not match or only partially matches.",
            "Answer with the option's letter from the given choices directly.",
        ]
    else:
        lines += ["Does the candidate match the query? Answer Yes or No."]
    return Turn(text="\n".join(lines), images=_images(query, candidate))


ANSWER_SYSTEM = (
    "You answer questions using only the numbered sources from the person's own files. "
    "Cite the sources you use as [1], [2]. If the sources do not contain the answer, say so."
)


def answer_prompt(question: str, sources: list[Content]) -> Turn:
    """The question with its numbered sources (images passed as images, text as passages)."""
    parts = [f"[{n}] {_describe(source)}" for n, source in enumerate(sources, start=1)]
    text = "Sources:\n" + "\n".join(parts) + f"\n\nQuestion: {_clean(question)}\nAnswer, citing sources as [n]:"
    return Turn(text=text, images=_images(*sources), system=ANSWER_SYSTEM)
