#!/usr/bin/env python3
"""Runs every example of the README (and of the docs/ pages it links) against
a real herald-logger and checks each answer, so the documentation cannot
drift from the server. It also checks that every link between these files
leads to a file and a heading that exist.

Every ```console block of README.md, then of each docs/*.md page (in name
order), is run, in order, as a terminal session (one per file, sharing the
logger; what a file started in the background is stopped at its end):
`$ command` lines are run with bash in a scratch directory (stderr shown
with stdout, as a terminal shows them), and the lines after a command up to
the next `$` are its expected output. A command ending in `&` runs in the
background; lines right after it are what it prints at once (it is given up
to 10 s to print them), and what it prints later shows up after the next
foreground commands, as it would in a terminal.

Values that differ from run to run are matched, not compared: a fresh API
key or SHA-256 digest matches any such value, a JWT any JWT, a Subscribe
cursor any cursor, a latency (`12.5 ms`) any latency. A UUID matches any
UUID (also written as 32 hex digits without hyphens, as in a webhook id)
and the trace id of a W3C traceparent any trace id, bound on first sight:
later uses of the same README value (in commands too, in either form) stand
for the value the server really returned, and two different README values
must stand for two different real ones (the README cannot show two trace
ids where the server keeps one). An RFC 3339 timestamp matches any
timestamp with as many fractional digits (or fewer where the dropped
digits were zeros: 3, 6 and 9 digits are written as needed, so `.120000`
may come as `.120`), but within one command's output the timestamps must
be in the order the README shows them: earlier, equal or later (so a list
said to be oldest first is).

A fenced block of code whose first line is a comment naming a file of the
repository (`# examples/python/webhook_receiver.py ...`) must be a verbatim
excerpt of that file, so the code the README shows is the code that runs.

Usage: scripts/check_readme.py [--print] LOGGER_BINARY BIN_DIR
  LOGGER_BINARY  the herald-logger to start (on a free port, memory backend)
  BIN_DIR        directory holding the `herald` CLI, put first on PATH
  --print        print what each command really printed, for editing the README
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z")
# Fresh API keys and their SHA-256 digests differ on every run: matched, not compared.
SECRET = re.compile(r"(?:hk_)?[0-9a-f]{64}")
# A W3C traceparent holds fresh random ids: its trace id is bound like a
# UUID, its span id (new at every step) matched.
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")
# A Subscribe cursor holds positions that depend on everything logged before.
CURSOR = re.compile(r"\d+:\d+:\d+:[0-9.,]*,[0-9.,]*")
# A JSON Web Token (a user token): signed afresh on every run.
JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# How long something took differs on every run: matched, not compared.
LATENCY = re.compile(r"\d+\.\d ms")
# A version 1-8 UUID without its hyphens (a webhook id's middle).
SIMPLE_UUID = re.compile(r"(?<![0-9a-f])[0-9a-f]{12}[1-8][0-9a-f]{3}[89ab][0-9a-f]{15}(?![0-9a-f])")
# Any of them (only whole matches are used: the groups inside do not matter).
ANY = re.compile("|".join(p.pattern for p in (TRACEPARENT, JWT, UUID, TIME, CURSOR, SECRET,
                                                SIMPLE_UUID, LATENCY)))
ADDR = re.compile(r"(127\.0\.0\.1|localhost):(5005\d|946\d|808\d)")


def blocks(readme):
    """The ```console blocks, each a list of (command, expected lines)."""
    out, current, in_block = [], None, False
    for line in readme.splitlines():
        if line.strip() == "```console":
            in_block, current = True, []
        elif in_block and line.strip() == "```":
            in_block = False
            out.append(current)
        elif in_block:
            if line.startswith("$ "):
                current.append([line[2:], []])
            elif current:
                current[-1][1].append(line)
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Session:
    def __init__(self, addr, metrics_addr, console_addr, bin_dir, workdir):
        # README ports 5005N, 946N and 808N (on 127.0.0.1 or localhost) become
        # free ports; 50051, 9464 and 8088 are the logger this script started.
        self.ports = {"50051": addr.split(":")[1], "9464": metrics_addr.split(":")[1],
                      "8088": console_addr.split(":")[1]}
        self.workdir = workdir
        self.bound = {}  # README UUID -> real UUID
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"],
                        HERALD_SERVER="http://" + addr)
        self.background = []  # (process, output file)
        self.offsets = []  # background output already consumed, in bytes, per job

    def command(self, text):
        for readme_id, real_id in self.bound.items():
            text = text.replace(readme_id, real_id).replace(simple(readme_id), simple(real_id))
        return self.addrs(text)

    def addrs(self, text):
        """text with README ports replaced by the real ones."""
        return ADDR.sub(lambda m: f"{m.group(1)}:{self.ports.setdefault(m.group(2), str(free_port()))}",
                        text)

    def run(self, text):
        text = self.command(text)
        if text.rstrip().endswith("&"):
            out = tempfile.TemporaryFile()
            # A session of its own, so stopping it stops everything it started.
            proc = subprocess.Popen(["bash", "-c", text.rstrip()[:-1]], stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.workdir, start_new_session=True)
            self.background.append((proc, out))
            self.offsets.append(0)
            time.sleep(1.0)  # let it start or connect, as a person would wait
            return None, ""
        proc = subprocess.run(["bash", "-c", text], capture_output=True, text=True,
                              env=self.env, cwd=self.workdir, timeout=60)
        return proc.returncode, proc.stdout + proc.stderr

    def background_output(self):
        text = ""
        for i, (_, out) in enumerate(self.background):
            out.seek(self.offsets[i])
            chunk = out.read().decode()
            self.offsets[i] += len(chunk.encode())
            text += chunk
        return text

    def stop(self):
        for proc, _ in self.background:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()

    def matches(self, expected, actual):
        """Whether actual lines match expected ones; binds new ids on success."""
        if len(expected) != len(actual):
            return False
        bindings = dict(self.bound)
        times = []  # (README timestamp, real one), in output order
        for want, got in zip(expected, actual):
            want = self.addrs(want)
            pattern, slots = "", []  # slots: (kind, README value), one per group
            pos = 0
            for m in ANY.finditer(want):
                pattern += re.escape(want[pos:m.start()])
                value = m.group()
                if TRACEPARENT.fullmatch(value):
                    pattern += TRACEPARENT.pattern
                    slots.append(("id", TRACEPARENT.fullmatch(value).group(1)))
                elif UUID.fullmatch(value):
                    pattern += f"({UUID.pattern})"
                    slots.append(("id", value))
                elif SIMPLE_UUID.fullmatch(value):
                    pattern += f"({SIMPLE_UUID.pattern})"
                    slots.append(("simple", hyphenated(value)))
                elif TIME.fullmatch(value):
                    pattern += f"({TIME.pattern})"
                    slots.append(("time", value))
                elif JWT.fullmatch(value):
                    pattern += JWT.pattern
                elif CURSOR.fullmatch(value):
                    pattern += CURSOR.pattern
                elif LATENCY.fullmatch(value):
                    pattern += LATENCY.pattern
                else:
                    pattern += f"(?:{SECRET.pattern})"
                pos = m.end()
            pattern += re.escape(want[pos:])
            found = re.fullmatch(pattern, got)
            if not found:
                return False
            for (kind, value), real in zip(slots, found.groups()):
                if kind == "time":
                    if not same_precision(value, real):
                        return False
                    times.append((value, real))
                elif kind == "simple":
                    if bindings.setdefault(value, hyphenated(real)) != hyphenated(real):
                        return False
                elif bindings.setdefault(value, real) != real:
                    return False
        # Two README ids never stand for one real id.
        if len(set(bindings.values())) != len(bindings):
            return False
        # Timestamps keep the README's order: earlier, equal or later.
        for i, (want_a, got_a) in enumerate(times):
            for want_b, got_b in times[i + 1:]:
                shown, real = order(want_a, want_b), order(got_a, got_b)
                if real != shown and not (real == 0 and shown != 0):
                    return False
        self.bound = bindings
        return True


def simple(uuid):
    """A UUID without its hyphens."""
    return uuid.replace("-", "")


def hyphenated(digits):
    """32 hex digits as a UUID, 8-4-4-4-12."""
    return "-".join((digits[:8], digits[8:12], digits[12:16], digits[16:20], digits[20:]))


def fraction(t):
    """The fractional-second digits of RFC 3339 time t."""
    return t.rstrip("Z").partition(".")[2]


def same_precision(shown, real):
    """Whether real time `real` is written to the precision the README shows:
    as many fractional digits, or fewer where only zeros were dropped (times
    are written with 0, 3, 6 or 9 digits, as their value needs)."""
    want, got = len(fraction(shown)), len(fraction(real))
    return got == want or (got < want and got in (0, 3, 6))


def quoted_files(root, name, text):
    """Fenced code blocks of page `name` whose first line names a file of
    the repository (`# path ...` or `// path ...`) but are not an excerpt of
    it, as messages."""
    wrong = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        first = re.match(r"(?:#|//) ([\w./-]+)", block)
        if not first or not os.path.isfile(os.path.join(root, first.group(1))):
            continue
        if block not in open(os.path.join(root, first.group(1))).read():
            wrong.append(f"{name}: the block quoting {first.group(1)} is not an excerpt of it")
    return wrong


def order(a, b):
    """-1, 0 or 1 as RFC 3339 time a is before, at or after b."""
    def key(t):
        seconds, _, fraction = t.rstrip("Z").partition(".")
        return seconds, fraction.ljust(9, "0")
    return (key(a) > key(b)) - (key(a) < key(b))


def pages(root):
    """The files whose examples run: README.md, then docs/*.md by name."""
    docs = os.path.join(root, "docs")
    return ["README.md"] + sorted(os.path.join("docs", name) for name in os.listdir(docs)
                                  if name.endswith(".md"))


def slug(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(root, names):
    """Links between these files (`#anchor`, `file.md`, `file.md#anchor`) that
    lead nowhere: a missing file or heading."""
    anchors, texts = {}, {}
    for name in names:
        text = open(os.path.join(root, name)).read()
        texts[name] = text
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        anchors[name] = {slug(h) for h in re.findall(r"^#+ (.*)$", prose, flags=re.M)}
    broken = []
    for name, text in texts.items():
        for target in re.findall(r"\]\(([^)\s]*)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            page = os.path.normpath(os.path.join(os.path.dirname(name), path)) if path else name
            if path and not os.path.exists(os.path.join(root, page)):
                broken.append(f"{name}: {target}: no such file")
            elif anchor and page in anchors and anchor not in anchors[page]:
                broken.append(f"{name}: {target}: no such heading")
    return broken


def run_page(session, name, text, show):
    """Runs one file's examples; returns (passed, failed)."""
    passed = failed = 0
    for block in blocks(text):
        for command, expected in block:
            code, output = session.run(command)
            if code is None and not expected:
                continue
            # A background command's lines are what it prints at once.
            actual = output.splitlines()
            deadline = time.time() + 10
            while True:
                actual += session.background_output().splitlines()
                ok = session.matches(expected, actual)
                if ok or time.time() > deadline or len(actual) > len(expected):
                    break
                time.sleep(0.1)
            wants_error = bool(expected) and expected[0].startswith(("ERROR:", "error:"))
            ok = ok and (code is None or (code != 0) == wants_error)
            if show:
                print(f"$ {command}\n" + "\n".join(actual))
            if ok:
                passed += 1
            else:
                failed += 1
                print(f"{name}: example failed: $ {command}\n  exit code {code}\n  expected:\n    "
                      + "\n    ".join(expected) + "\n  got:\n    " + "\n    ".join(actual),
                      file=sys.stderr)
    return passed, failed


def main():
    args = sys.argv[1:]
    show = "--print" in args
    args = [a for a in args if a != "--print"]
    if len(args) != 2:
        sys.exit(__doc__)
    logger_bin, bin_dir = os.path.abspath(args[0]), os.path.abspath(args[1])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    # Commands run in a scratch directory (files they write stay out of the
    # repository) that sees the repository's config/, examples/ and proto/
    # as the README does.
    workdir = tempfile.TemporaryDirectory()
    for shared in ("config", "examples", "proto"):
        os.symlink(os.path.join(root, shared), os.path.join(workdir.name, shared))
    addr, metrics_addr, console_addr = (f"127.0.0.1:{free_port()}" for _ in range(3))
    logger = subprocess.Popen([logger_bin, "--listen", addr, "--metrics-listen", metrics_addr,
                               "--console-listen", console_addr],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, RUST_LOG="warn"))
    passed = failed = 0
    for broken in broken_links(root, pages(root)):
        print(f"broken link: {broken}", file=sys.stderr)
        failed += 1
    for name in pages(root):
        for wrong in quoted_files(root, name, open(os.path.join(root, name)).read()):
            print(wrong, file=sys.stderr)
            failed += 1
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(addr.split(":")[1]))) == 0:
                    break
            time.sleep(0.1)
        for name in pages(root):
            if show:
                print(f"### {name}")
            session = Session(addr, metrics_addr, console_addr, bin_dir, workdir.name)
            try:
                ok, bad = run_page(session, name, open(os.path.join(root, name)).read(), show)
            finally:
                session.stop()
            print(f"{name}: {ok} passed, {bad} failed")
            passed, failed = passed + ok, failed + bad
    finally:
        logger.terminate()
        logger.wait(timeout=10)
        workdir.cleanup()
    print(f"readme: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
