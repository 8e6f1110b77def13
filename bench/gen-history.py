#!/usr/bin/env python3
"""Write a `git fast-import` stream of a synthetic but realistic repository history.

Usage: gen-history.py COMMITS FILES > stream      (pipe it into `git fast-import --done`)

The history is deterministic for given (COMMITS, FILES): every run produces the same stream,
so the commit ids are the same as well.

What "realistic" means here:
  * text-like content (source code, config files, YAML, prose) built from a Zipf-distributed
    vocabulary, so it compresses with zlib roughly like real files do (about 3-4x);
  * files are created throughout the history (an initial import, then a steady trickle) and
    edited by small hunks (replace / insert / delete a few lines), so versions of a file delta
    well against each other, like source files under review;
  * some files are hot (edited often: long delta chains), most are edited rarely;
  * a lognormal size distribution with a few large generated files;
  * a directory hierarchy of about 25 files per leaf directory, so every commit rewrites a few
    tree objects on the way up to the root.

With the defaults (5,000 commits, 20,000 files) the packed repository is about 100 MB.
"""

import math
import random
import sys

VERSION = 1  # bump when the output changes, so cached repositories are rebuilt


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: gen-history.py COMMITS FILES")
    commits, files = int(sys.argv[1]), int(sys.argv[2])
    if commits < 1 or files < 1:
        sys.exit("COMMITS and FILES must be at least 1")
    out = sys.stdout.buffer
    Generator(commits, files, out).run()
    out.write(b"done\n")
    out.flush()


SYLLABLES = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge gi go ha he hi ho "
    "ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po ra re ri ro ru "
    "sa se si so su ta te ti to tu va ve vi vo za ze zi zo an en in on ar er ir or al el il "
    "ol st tr pr ch sh th qu x"
).split()

COMMON = (
    "the of and to in is for on that with as by this be are from at or an it not if can "
    "when will should must all any each new set get use value name path file host user "
    "config server client service port timeout retry error status state data list map key "
    "id type mode size count index buffer queue cache lock request response message event "
    "start stop run load save read write open close update create delete check parse build "
    "true false none null default enabled disabled local remote primary backup log level "
    "info debug warn limit max min interval version release option options"
).split()

AUTHORS = [
    ("Ada Lindqvist", "ada@fleet.example"),
    ("Bruno Okafor", "bruno@fleet.example"),
    ("Chen Wei", "chen.wei@fleet.example"),
    ("Dana Kowalski", "dana@fleet.example"),
    ("Emil Haddad", "emil@fleet.example"),
    ("Fatima Rossi", "fatima@fleet.example"),
    ("Goran Petrov", "goran@fleet.example"),
    ("Hana Sato", "hana@fleet.example"),
    ("Ivo Brandt", "ivo@fleet.example"),
    ("Jude Mensah", "jude@fleet.example"),
    ("Kira Novak", "kira@fleet.example"),
    ("Lars Eriksen", "lars@fleet.example"),
    ("fleet-bot", "bot@fleet.example"),
]

TOP_DIRS = ["src", "lib", "config", "deploy", "docs", "tools", "sites", "roles", "tests", "vendor"]

# extension -> kind of content
KINDS = {
    "c": "code", "h": "code", "rs": "code", "py": "code", "go": "code", "js": "code",
    "conf": "conf", "ini": "conf", "toml": "conf",
    "yaml": "yaml", "yml": "yaml", "json": "yaml",
    "md": "prose", "txt": "prose", "rst": "prose",
}
EXT_WEIGHTS = {
    "c": 8, "h": 4, "rs": 10, "py": 10, "go": 6, "js": 6,
    "conf": 10, "ini": 3, "toml": 6,
    "yaml": 12, "yml": 4, "json": 5,
    "md": 8, "txt": 4, "rst": 2,
}


class Generator:
    def __init__(self, commits: int, files: int, out) -> None:
        self.commits = commits
        self.files = files
        self.out = out
        self.rng = random.Random(f"outpost-bench/{VERSION}/{commits}/{files}")
        rng = self.rng

        # Vocabulary with Zipf weights: a few words are very frequent, most are rare.
        words = list(COMMON)
        seen = set(words)
        while len(words) < 4000:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2, 3, 3, 4))))
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        self.word_cum = list(_cumulative(1.0 / (i + 1) ** 1.07 for i in range(len(words))))
        # Identifiers: no function words ("the", "of", ...), a flatter distribution.
        self.id_words = words[40:]
        self.id_cum = list(_cumulative(1.0 / (i + 1) ** 0.8 for i in range(len(self.id_words))))

        # Per-kind pools of lines. Files draw most lines from the pool of their kind and some
        # fresh ones, so different files share little and versions of a file share a lot.
        self.pools = {
            "code": [self.code_line() for _ in range(30000)],
            "conf": [self.conf_line() for _ in range(20000)],
            "yaml": [self.yaml_line() for _ in range(20000)],
            "prose": [self.prose_line() for _ in range(20000)],
        }
        self.fresh = {
            "code": self.code_line, "conf": self.conf_line,
            "yaml": self.yaml_line, "prose": self.prose_line,
        }

        # Directory hierarchy: TOP/sub/leaf, about 25 files per leaf directory.
        n_leaf = max(1, math.ceil(files / 25))
        self.leaf_dirs = []
        used = set()
        while len(self.leaf_dirs) < n_leaf:
            d = "/".join((rng.choice(TOP_DIRS), self.ident(), self.ident()))
            if d not in used:
                used.add(d)
                self.leaf_dirs.append(d)
        self.exts = list(EXT_WEIGHTS)
        self.ext_cum = list(_cumulative(EXT_WEIGHTS[e] for e in self.exts))

        self.paths: list[str] = []       # index -> path
        self.kinds: list[str] = []       # index -> content kind
        self.content: list[list[str]] = []  # index -> lines (each ending in "\n")
        self.used_paths: set[str] = set()
        self.heat_cum: list[float] = []  # cumulative edit weights, by file index

    # ---- text -----------------------------------------------------------------------------

    def w(self, k: int = 1) -> list[str]:
        return self.rng.choices(self.words, cum_weights=self.word_cum, k=k)

    def ident(self) -> str:
        k = self.rng.choice((1, 1, 2, 2, 3))
        return "_".join(self.rng.choices(self.id_words, cum_weights=self.id_cum, k=k))

    def code_line(self) -> str:
        rng = self.rng
        ind = "    " * rng.choice((0, 1, 1, 1, 2, 2, 2, 3, 3, 4))
        r = rng.random()
        if r < 0.25:
            args = ", ".join(self.ident() for _ in range(rng.randrange(0, 4)))
            return f"{ind}let {self.ident()} = {self.ident()}({args});\n"
        if r < 0.40:
            return f"{ind}if {self.ident()} {rng.choice(('==', '!=', '<', '>=', '&&'))} {self.ident()} {{\n"
        if r < 0.52:
            return f"{ind}}}\n"
        if r < 0.62:
            return f"{ind}// {' '.join(self.w(rng.randrange(3, 12)))}\n"
        if r < 0.72:
            return f"{ind}return {self.ident()}.{self.ident()}({rng.randrange(0, 4096)});\n"
        if r < 0.80:
            return f'{ind}log::{rng.choice(("info", "debug", "warn"))}!("{" ".join(self.w(rng.randrange(2, 8)))}: {{}}", {self.ident()});\n'
        if r < 0.88:
            return f"{ind}fn {self.ident()}(&self, {self.ident()}: {self.ident().title()}) -> Result<()> {{\n"
        if r < 0.94:
            return "\n"
        return f"{ind}{self.ident()}.{self.ident()} = {rng.randrange(0, 100000)};\n"

    def conf_line(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.10:
            return f"[{self.ident()}]\n"
        if r < 0.22:
            return f"# {' '.join(self.w(rng.randrange(3, 14)))}\n"
        if r < 0.28:
            return "\n"
        v = rng.random()
        if v < 0.3:
            val = str(rng.randrange(0, 65536))
        elif v < 0.5:
            val = rng.choice(("true", "false", "on", "off", "yes", "no"))
        elif v < 0.7:
            val = "/" + "/".join(self.w(rng.randrange(1, 5)))
        else:
            val = '"' + " ".join(self.w(rng.randrange(1, 5))) + '"'
        return f"{self.ident()} = {val}\n"

    def yaml_line(self) -> str:
        rng = self.rng
        ind = "  " * rng.choice((0, 1, 1, 2, 2, 2, 3, 3, 4))
        r = rng.random()
        if r < 0.25:
            return f"{ind}{self.ident()}:\n"
        if r < 0.40:
            return f"{ind}- {self.ident()}\n"
        if r < 0.48:
            return f"{ind}# {' '.join(self.w(rng.randrange(2, 10)))}\n"
        if r < 0.65:
            return f"{ind}{self.ident()}: {rng.randrange(0, 10000)}\n"
        return f"{ind}{self.ident()}: \"{' '.join(self.w(rng.randrange(1, 6)))}\"\n"

    def prose_line(self) -> str:
        rng = self.rng
        r = rng.random()
        if r < 0.08:
            return f"{'#' * rng.randrange(1, 4)} {' '.join(self.w(rng.randrange(2, 6))).capitalize()}\n"
        if r < 0.20:
            return "\n"
        if r < 0.28:
            return f"- {' '.join(self.w(rng.randrange(3, 12)))}\n"
        return " ".join(self.w(rng.randrange(6, 16))).capitalize() + ".\n"

    def draw_lines(self, kind: str, n: int) -> list[str]:
        rng = self.rng
        lines = rng.choices(self.pools[kind], k=n)
        fresh = self.fresh[kind]
        for _ in range(n // 8):  # some lines unique to this file
            lines[rng.randrange(n)] = fresh()
        return lines

    # ---- files ----------------------------------------------------------------------------

    def new_file(self) -> int:
        rng = self.rng
        ext = rng.choices(self.exts, cum_weights=self.ext_cum)[0]
        while True:
            p = f"{rng.choice(self.leaf_dirs)}/{self.ident()}.{ext}"
            if p not in self.used_paths:
                break
        self.used_paths.add(p)
        kind = KINDS[ext]
        # Lognormal line counts (median ~ 200 lines, ~ 7 KB); about 1 % large generated files.
        n = int(rng.lognormvariate(math.log(200), 0.75))
        if rng.random() < 0.01:
            n *= rng.randrange(6, 20)
        n = max(3, min(n, 20000))
        idx = len(self.paths)
        self.paths.append(p)
        self.kinds.append(kind)
        self.content.append(self.draw_lines(kind, n))
        # Hot files get edited often; weight ~ Pareto.
        heat = rng.paretovariate(1.2)
        self.heat_cum.append((self.heat_cum[-1] if self.heat_cum else 0.0) + heat)
        return idx

    def edit_file(self, idx: int) -> None:
        rng = self.rng
        lines = self.content[idx]
        kind = self.kinds[idx]
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
            pos = rng.randrange(len(lines) + 1)
            op = rng.random()
            if op < 0.5 and lines:      # replace a few lines
                k = min(rng.randrange(1, 6), len(lines) - min(pos, len(lines) - 1))
                pos = min(pos, len(lines) - 1)
                lines[pos:pos + k] = self.draw_lines(kind, k)
            elif op < 0.8:              # insert a few lines
                lines[pos:pos] = self.draw_lines(kind, rng.randrange(1, 10))
            elif len(lines) > 10:       # delete a few lines
                del lines[pos:pos + rng.randrange(1, 6)]

    # ---- stream ---------------------------------------------------------------------------

    def emit_commit(self, n: int, when: int, changed: list[int], extra: dict[str, bytes]) -> None:
        rng = self.rng
        name, email = AUTHORS[rng.randrange(len(AUTHORS))]
        if changed:
            area = self.paths[changed[0]].split("/")[1]
            subject = f"{area}: {rng.choice(('fix', 'add', 'update', 'tune', 'refactor', 'document', 'remove'))} {' '.join(self.w(rng.randrange(2, 7)))}"
        else:
            subject = "initial import"
        body = " ".join(self.w(rng.randrange(0, 40)))
        msg = (subject + ("\n\n" + body if body else "") + "\n").encode()
        parts = [
            b"commit refs/heads/main\n",
            f"author {name} <{email}> {when} +0000\n".encode(),
            f"committer {name} <{email}> {when} +0000\n".encode(),
            b"data %d\n" % len(msg), msg,
        ]
        for path, data in extra.items():
            parts += [f"M 100644 inline {path}\n".encode(), b"data %d\n" % len(data), data, b"\n"]
        for idx in sorted(set(changed)):
            data = "".join(self.content[idx]).encode()
            parts += [f"M 100644 inline {self.paths[idx]}\n".encode(), b"data %d\n" % len(data), data, b"\n"]
        parts.append(b"\n")
        self.out.write(b"".join(parts))

    def run(self) -> None:
        rng = self.rng
        commits, files = self.commits, self.files
        when = 1704067200  # 2024-01-01T00:00:00Z
        # An initial import of 10 % of the files, the rest created evenly over the history.
        initial = max(1, files // 10) if commits > 1 else files
        rest = files - initial
        manifest = (
            b"# outpost benchmark repository: a large history, nothing to deploy.\n"
            b"# (The manifest is empty on purpose; the benchmark measures import only.)\n"
        )
        readme = b"Synthetic repository for `bench/import.sh` of outpost.\n"
        created = [self.new_file() for _ in range(initial)]
        self.emit_commit(0, when, created, {"outpost.toml": manifest, "README.md": readme})
        made = initial
        for c in range(1, commits):
            when += rng.randrange(60, 30000)
            target = initial + (rest * c) // (commits - 1)
            changed = []
            while made < target:
                changed.append(self.new_file())
                made += 1
            # Edits: on average ~ 4 files a commit, biased to hot files.
            n_edit = min(len(self.paths), 1 + int(rng.expovariate(1 / 3.0)))
            for idx in rng.choices(range(len(self.paths)), cum_weights=self.heat_cum, k=n_edit):
                self.edit_file(idx)
                changed.append(idx)
            self.emit_commit(c, when, changed, {})


def _cumulative(weights):
    total = 0.0
    for x in weights:
        total += x
        yield total


if __name__ == "__main__":
    main()
