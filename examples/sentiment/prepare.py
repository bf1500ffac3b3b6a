"""Derives movie_sentences.csv from the VADER movie-review ground truth.

Input: movieReviewSnippets_GroundTruth.txt (TSV: id, mean human sentiment -4..+4, text; CRLF),
from the VADER sentiment data set (MIT licence; Hutto & Gilbert, ICWSM 2014).

Label rule: score >= +0.5 is "positive", score <= -0.5 is "negative". Sentences whose mean score
lies strictly between -0.5 and +0.5 are ones the human raters did not agree on a direction for:
they keep an empty label, so Keel's ingest quarantines them with the reason "missing label"
instead of training on a coin flip. The text is kept byte for byte. The upstream file is sorted
by sentiment; the rows are shuffled with a fixed seed so that `--limit N` takes a fair sample.

Usage: python3 prepare.py PATH/TO/movieReviewSnippets_GroundTruth.txt
"""

import csv
import random
import sys

THRESHOLD = 0.5
SEED = 20140601  # rows are shuffled with a fixed seed: any prefix is a fair sample


def main(src: str) -> None:
    rows = []
    with open(src, encoding="utf-8", newline="") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if not line:
                continue
            i, score, text = line.split("\t", 2)
            s = float(score)
            label = "positive" if s >= THRESHOLD else "negative" if s <= -THRESHOLD else ""
            rows.append((i, score, label, text))
    random.Random(SEED).shuffle(rows)
    with open("movie_sentences.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "score", "label", "text"])
        w.writerows(rows)


if __name__ == "__main__":
    main(sys.argv[1])
