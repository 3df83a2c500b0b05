"""Scoring an answer against its reference (torch-free: the demo engine scores too)."""

from __future__ import annotations

from xgblora_engine.payloads import SampleAnswer


def token_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1 over whitespace words: overlap of the answer with the reference."""
    a, r = answer.split(), reference.split()
    common = sum(min(a.count(w), r.count(w)) for w in set(r))
    if not a or not r or common == 0:
        return float(a == r)
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def scored(prompt: str, reference: str, answer: str) -> SampleAnswer:
    return SampleAnswer(prompt=prompt, reference=reference, answer=answer,
                        token_f1=token_f1(answer, reference), exact=answer == reference)


def mean_scores(answers: list[SampleAnswer]) -> dict[str, float]:
    """The fields of a SampleAnswers event that summarise its answers."""
    n = max(1, len(answers))
    return {"token_f1": sum(a.token_f1 for a in answers) / n, "exact_match": sum(a.exact for a in answers) / n}
