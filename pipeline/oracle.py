"""The oracle: the passages that, chosen with the reference briefing in hand, raise ROUGE most
within the word limit. The summariser's scorer learns from its choices (`oracle_targets`), and
evaluation prints it beside the systems as the ceiling of any extractive briefing
(`sentence_oracle`), and the same choice among the sentences our selection rules allow
(`rules_oracle`): what a perfect scorer would reach with them, so the gap between our briefings
and the oracle splits into what the rules cost and what the scorer does."""

from __future__ import annotations

from pipeline.faithfulness import unsupported_facts
from pipeline.passages import acronyms_defined
from pipeline.summarise import body_passages, briefing_candidates, compress, join_sentences


def greedy_oracle(passages: list[str], reference: str, max_words: int,
                  metrics: tuple[str, ...] = ("rouge1", "rouge2")) -> list[int]:
    """Indices, in order, of the passages a greedy oracle picks: add the passage that most raises
    ROUGE (the sum of `metrics`) against the reference, while it rises and fits `max_words`."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(metrics), use_stemmer=True)
    lengths = [len(p.split()) for p in passages]
    chosen: list[int] = []
    best = 0.0
    while True:
        used = sum(lengths[j] for j in chosen)
        candidates = []
        for i in range(len(passages)):
            if i in chosen or used + lengths[i] > max_words:
                continue
            result = scorer.score(reference, " ".join(passages[j] for j in sorted(chosen + [i])))
            candidates.append((sum(result[m].fmeasure for m in metrics), i))
        if not candidates:
            break
        score, i = max(candidates)
        if score <= best + 1e-4:
            break
        chosen.append(i)
        best = score
    return sorted(chosen)


def oracle_targets(passages: list[str], briefing: str, max_words: int = 60) -> list[float]:
    """The scorer's training targets: 1 for the passages the greedy oracle picks against the
    reference briefing (with a little room over the limit), 0 for the rest."""
    chosen = set(greedy_oracle([compress(p) for p in passages], briefing, int(max_words * 1.3)))
    return [1.0 if i in chosen else 0.0 for i in range(len(passages))]


def sentence_oracle(row: dict, n_words: int = 60) -> str:
    """Not a system: the whole sentences (compressed as our summariser compresses them) that,
    chosen with the reference briefing in hand, raise ROUGE-L most within the word limit. It
    shows how far any extractive briefing could go on these references."""
    acronyms = acronyms_defined(row["text"])
    passages = [compress(p, acronyms) for p in body_passages(row)]
    return " ".join(passages[i] for i in greedy_oracle(passages, row["briefing"], n_words, ("rougeL",)))


def rules_oracle(row: dict, n_words: int = 60) -> str:
    """Not a system: the sentence oracle restricted to what `summarise.select` may take, the
    resolutions without their heading, no sentence that says nothing or fails the faithfulness
    check, and announcements only when nothing else is left. The best briefing our rules allow,
    chosen with the reference in hand: the scorer is what stands between it and ours."""
    candidates = briefing_candidates(body_passages(row), row.get("resolutions"), row.get("title"),
                                     acronyms_defined(row["text"]),
                                     lambda sentence: not unsupported_facts(sentence, row["text"]))
    pool = [text for _, text, is_announcing in candidates if not is_announcing]
    pool = pool or [text for _, text, _ in candidates]
    # Each ends a sentence, as in our briefings, so a name cannot run on across two of them.
    pool = [join_sentences([text]) for text in pool]
    return join_sentences([pool[i] for i in greedy_oracle(pool, row["briefing"], n_words, ("rougeL",))])
