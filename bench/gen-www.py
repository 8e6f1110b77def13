#!/usr/bin/env python3
"""Writes a deterministic web-site-like tree for bench/apply.sh.

    gen-www.py FILES SIZE DIR

FILES text-like files (html, css, js, txt, json) averaging SIZE bytes (each between SIZE/2 and
3*SIZE/2), spread over about FILES/100 directories two levels deep (section-NN/part-N). The
same arguments always give the same bytes. DIR must not exist yet or be empty.
"""
import os
import random
import sys

WORDS = (
    "outpost fleet host deploy signed bundle commit manifest offline sync drift repair "
    "the a of to and in is for on with as by at from that this be are it or an was "
    "server cache request response header content page index style script module "
    "config value table row column link image button form input label section article "
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim minim veniam quis nostrud"
).split()
KINDS = (
    ("html", "<!doctype html>\n<html><head><title>{t}</title></head><body>\n<p>", "</p>\n</body></html>\n"),
    ("css", "/* {t} */\n.block-{n} {{\n  /* ", " */\n}}\n"),
    ("js", "// {t}\nexport const text{n} = `", "`;\n"),
    ("txt", "{t}\n\n", "\n"),
    ("json", '{{"title": "{t}", "body": "', '"}}\n'),
)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    files, size, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if files < 1 or size < 64:
        sys.exit("gen-www.py: FILES must be >= 1 and SIZE >= 64")
    rng = random.Random(20240611)
    ndirs = max(1, round(files / 100))
    dirs = [os.path.join("section-%02d" % (d // 10), "part-%d" % (d % 10)) for d in range(ndirs)]
    for d in dirs:
        os.makedirs(os.path.join(out, d), exist_ok=True)
    for i in range(files):
        ext, head, tail = KINDS[i % len(KINDS)]
        title = "page %d of the benchmark site" % i
        head = head.format(t=title, n=i)
        tail = tail.format(t=title, n=i)
        want = rng.randint(size // 2, size + size // 2)
        body = []
        n = len(head) + len(tail)
        while n < want:
            line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) + "\n"
            body.append(line)
            n += len(line)
        text = (head + "".join(body))[: max(len(head), want - len(tail))] + tail
        path = os.path.join(out, dirs[i % ndirs], "page-%05d.%s" % (i, ext))
        with open(path, "w", encoding="ascii") as f:
            f.write(text)


if __name__ == "__main__":
    main()
