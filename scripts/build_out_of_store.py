#!/usr/bin/env python3
"""Builds the out-of-store query sets of `premoe eval`: prompts of domains that no stored task
covers, which retrieval must send to the fallback instead of forcing them onto a task.

  data/tasks/python_code/test.jsonl   {"text": …} one top-level function or class of the local
                                      Python standard library (PSF License), 300–1500 characters
  data/tasks/german_manpages/test.jsonl {"text": …} one paragraph of a Debian manpages-de page
                                      (GPL-3.0-or-later), 200–1200 characters

Both are drawn with a fixed seed; WikiText-2 (already in data/tasks) is the third set.
Usage: apt-get install -y manpages-de man-db groff-base; python3 scripts/build_out_of_store.py [--count 120]
"""
import argparse
import ast
import glob
import json
import os
import random
import subprocess
import sysconfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    stdlib = sysconfig.get_paths()["stdlib"]
    for path in sorted(glob.glob(os.path.join(stdlib, "*.py"))):
        try:
            source = open(path, encoding="utf-8").read()
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError):
            continue
        lines = source.split("\n")
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                text = "\n".join(lines[node.lineno - 1:node.end_lineno]).strip()
                if 300 <= len(text) <= 1500:
                    yield text


def manpage_paragraphs(man_dir="/usr/share/man/de"):
    env = dict(os.environ, MANWIDTH="100", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    for path in sorted(glob.glob(os.path.join(man_dir, "man1", "*.gz")))[:250]:
        out = subprocess.run(["man", "--nj", "--nh", "-E", "UTF-8", "-l", path], env=env, capture_output=True).stdout
        out = subprocess.run(["col", "-bx"], input=out, capture_output=True, env=env).stdout
        for para in out.decode("utf-8", errors="replace").split("\n\n"):
            text = " ".join(line.strip() for line in para.split("\n") if line.strip())
            if 200 <= len(text) <= 1200 and text.count(" ") > 25:
                yield text


def write(name, texts, count, seed):
    texts = sorted(set(texts))
    random.Random(seed).shuffle(texts)
    folder = os.path.join(ROOT, "data", "tasks", name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "test.jsonl"), "w", encoding="utf-8") as f:
        for text in texts[:count]:
            f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    print(f"{name}: {min(count, len(texts))} of {len(texts)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    write("python_code", python_blocks(), args.count, args.seed)
    write("german_manpages", manpage_paragraphs(), args.count, args.seed)


if __name__ == "__main__":
    main()
