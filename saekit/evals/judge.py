"""The LLM judge of steered text: AxBench's concept and fluency scores (0–2 each, and
their harmonic mean), asked of any OpenAI-compatible server through
:class:`saekit.interp.llm.LLMClient`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from saekit.interp.answers import CallLog, log_to, parse_rating, rating_outcome

# AxBench (Wu et al. 2025, stanfordnlp/axbench, Apache-2.0): the concept prompt of the
# paper's appendix and the fluency prompt of axbench/evaluators/prompt_templates.py.
CONCEPT_PROMPT = """[System]
Please act as an impartial judge and evaluate whether the specified concept is presented in the \
sentence fragment provided below. Focus solely on whether the concept is clearly incorporated, \
without regard for grammar or logical coherence.

Begin your evaluation by providing a short explanation of whether the concept is clearly \
incorporated. Point out references to the concept in the fragment, noting any minimal or awkward \
incorporations. After providing your explanation, rate the concept's relevance on a scale from 0 \
to 2, where 0 indicates the concept is not present at all, 1 indicates the concept is somewhat \
present but minimally or awkwardly incorporated, and 2 indicates the concept is more fully and \
effectively incorporated, with stronger and more natural integration. Provide your rating using \
this exact format: "Rating: [[score]]".

[Concept Start]
{concept}
[Concept End]

[Sentence Fragment Start]
{sentence}
[Sentence Fragment End]
"""

FLUENCY_PROMPT = """[System]
Please act as an impartial judge and evaluate the fluency of the sentence fragment provided below. \
Focus solely on fluency, disregarding its completeness, relevance, coherence with any broader \
context, or informativeness.

Begin your evaluation by briefly describing the fluency of the sentence, noting any unnatural \
phrasing, awkward transitions, grammatical errors, or repetitive structures that may hinder \
readability. After providing your explanation, rate the sentence's fluency on a scale from 0 to 2, \
where 0 indicates the sentence is not fluent and highly unnatural (e.g., incomprehensible or \
repetitive), 1 indicates it is somewhat fluent but contains noticeable errors or awkward phrasing, \
and 2 indicates the sentence is fluent and almost perfect. Provide your rating using this exact \
format: "Rating: [[score]]".

[Sentence Fragment Start]
{sentence}
[Sentence Fragment End]
"""


class JudgeScore(NamedTuple):
    """The judge's ratings of one text."""

    concept: float | None
    """Concept rating 0–2 (None: no readable rating)."""
    fluency: float | None
    """Fluency rating 0–2 (None: no readable rating)."""

    @property
    def score(self) -> float | None:
        """Harmonic mean of the two, 0 if either is 0; None if either is unreadable."""
        if self.concept is None or self.fluency is None:
            return None
        if self.concept == 0 or self.fluency == 0:
            return 0.0
        return 2 * self.concept * self.fluency / (self.concept + self.fluency)


def judge(client: Any, items: list[tuple[str, str]], max_tokens: int = 512,
          progress: bool = False, *, on_error: str = "raise", log: CallLog | None = None) -> list[JudgeScore]:
    """AxBench concept and fluency ratings of ``(concept description, text)`` pairs.

    Parameters
    ----------
    client
        An :class:`~saekit.interp.llm.LLMClient`; requests at temperature 0, and a fluency
        prompt shared by several pairs is sent once.
    items
        ``(concept description, text)`` pairs.
    max_tokens, progress
        Of the requests (``progress``: a bar over them).
    on_error
        ``"skip"``: a call that still fails after its retries gives no rating (None)
        instead of raising; see ``LLMClient.chat_many``.
    log
        Counts each answer's outcome (:func:`~saekit.interp.answers.rating_outcome`)
        under ``"judge"``.

    Returns
    -------
    list[JudgeScore]
        One per pair; a rating that cannot be read is None, never 0 or a pass.
    """
    prompts = [CONCEPT_PROMPT.format(concept=c, sentence=t) for c, t in items]
    prompts += [FLUENCY_PROMPT.format(sentence=t) for _, t in items]
    answers = client.chat_many(prompts, temperature=0.0, max_tokens=max_tokens, progress=progress,
                               on_error=on_error)
    log_to(log, "judge", map(rating_outcome, answers))
    m = len(items)
    return [JudgeScore(parse_rating(a), parse_rating(b)) for a, b in zip(answers[:m], answers[m:], strict=True)]
