"""The LLM citation check on constructed claims, no LLM needed (seconds):

    python bench/citation_values.py [--n 150]

Per set (CAIL2019 dev, CMRC 2018 trial, DRCD dev; seed 0): a ~300-character window around the gold
answer is the cited passage. Correct claims: the clause holding the answer, and the question with its
question word replaced by the gold answer. Wrong claims: the answer's clause with one digit of a numeric
gold answer changed. Reports how many come out supported (services.answers.citations.repair_citations,
the question passed as `asked`), and the check's time per claim.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import time

from common import SHARED, table

from services.answers.citations import repair_citations, split_answer
from services.answers.extractive import clause_spans
from services.documents.chunking import Chunk
from services.search.retrieval import Hit

SETS = ("cail2019_dev", "cmrc2018_trial", "drcd_dev")
WH = re.compile(r"多少钱|多少元|多少|什么时候|什么|哪里|哪个|哪些|哪一?年|哪|谁|何时|何地|几|为何|因何|为什么|怎么样|怎样|如何")


def hit(text: str, start: int) -> Hit:
    c = Chunk(0, start, start + len(text), text, 1, 1, id=1, doc_id="d")
    return Hit(c, "d.txt", start, start + len(text), text, 1, 1, chunk_ids=[1])


def supported(claim: str, source: Hit, asked: str, inside: str | None = None) -> bool:
    """Whether a citation of the sentence holding `inside` (any sentence when None) is supported."""
    text = claim + "[1]"
    sentences = [i for i, s in enumerate(split_answer(text)) if inside is None or inside in s.text]
    return any(c.supported and c.sentence in sentences for c in repair_citations(text, [source], asked=asked)[1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=150, help="questions per set")
    args = p.parse_args()
    rows, spent, claims = [], 0.0, 0
    for name in SETS:
        folder = SHARED / "data" / name
        questions = [json.loads(line) for line in open(folder / "questions.jsonl", encoding="utf-8")]
        questions = [q for q in questions if q.get("answers") and q.get("answer_spans")]
        random.Random(0).shuffle(questions)
        right = [0, 0]
        wrong = [0, 0]
        for q in questions[:args.n]:
            text = (folder / q["doc_file"]).read_text(encoding="utf-8")
            at, gold = q["answer_spans"][0]["start_in_doc"], q["answers"][0]
            a = max(0, at - 150)
            source = hit(text[a:a + 300], a)
            around = [(x, y) for x, y in clause_spans(text, max(0, at - 60), min(len(text), at + 60)) if x <= at < y]
            clause = text[around[0][0]:around[0][1]].strip("，,。 ") if around else gold
            correct = [clause] + ([WH.sub(gold, q["question"], count=1).rstrip("？?") + "。"] if WH.search(q["question"]) else [])
            for claim in correct:
                t = time.perf_counter()
                right[0] += supported(claim, source, q["question"])
                spent, claims = spent + time.perf_counter() - t, claims + 1
                right[1] += 1
            digit = re.search(r"[0-9]", gold)
            if digit and gold in clause:
                changed = gold[:digit.start()] + str((int(digit.group()) + 1) % 10) + gold[digit.end():]
                wrong[0] += supported(clause.replace(gold, changed), source, q["question"], changed)
                wrong[1] += 1
        rows.append({"set": name, "correct claims supported": f"{right[0]}/{right[1]}",
                     "wrong-number claims supported": f"{wrong[0]}/{wrong[1]}"})
    print(table(rows))
    print(f"check: {spent / max(1, claims) * 1000:.1f} ms per claim (one 300-character passage)")


if __name__ == "__main__":
    main()
