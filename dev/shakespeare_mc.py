"""A HellaSwag-format multiple-choice eval built from Shakespeare, for recipe runs where the real
HellaSwag cannot be downloaded (the GPU machine is offline).

Each item: ctx = a line of verse from the val part of the text (its first tenth, where
`llmc.prepare` puts the val split), the right ending = the line that follows it, and three
distractors = other lines of the same part. A model that learned the text beats 25%; one that
memorised the train split gains nothing from it, since no item comes from there.

  python dev/shakespeare_mc.py shakespeare.txt -o data/shakespeare_mc.jsonl [-n 1000]
"""
import argparse
import json
import random


def items(text: str, n: int, seed: int = 0):
    val = text[: len(text) // 10]
    lines = [ln.strip() for ln in val.splitlines()]
    good = [i for i in range(len(lines) - 1) if len(lines[i]) >= 25 and len(lines[i + 1]) >= 25]
    pool = [lines[i] for i in good]
    rng = random.Random(seed)
    for i in rng.sample(good, min(n, len(good))):
        right = lines[i + 1]
        wrong = [s for s in rng.sample(pool, 8) if s != right][:3]
        label = rng.randrange(4)
        endings = wrong[:label] + [right] + wrong[label:]
        yield {"ctx": lines[i], "endings": endings, "label": label}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("text")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("-n", type=int, default=1000)
    a = p.parse_args()
    with open(a.text, encoding="utf-8") as f:
        text = f.read()
    with open(a.out, "w", encoding="utf-8") as f:
        for it in items(text, a.n):
            f.write(json.dumps(it) + "\n")


if __name__ == "__main__":
    main()
