#!/usr/bin/env python3
"""Runs every example of the README against a real herald-logger and checks
each answer, so the README cannot drift from the server.

Every ```console block of README.md is run, in order, as a terminal session:
`$ command` lines are run with bash in a scratch directory (stderr shown with stdout, as a terminal
shows them), and the lines after a command up to the next `$` are its expected
output. A command ending in `&` runs in the background; what it prints shows
up after the next foreground commands, as it would in a terminal.

Values that differ from run to run are matched, not compared: an RFC 3339
timestamp matches any timestamp, a fresh API key or SHA-256 digest any such
value, a W3C traceparent any traceparent, a latency (`12.5 ms`) any latency, and a
UUID matches any UUID, bound on first
sight, so later uses of the same README UUID (in commands too) stand for the
value the server really returned.

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
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
# Fresh API keys and their SHA-256 digests differ on every run: matched, not compared.
SECRET = re.compile(r"(hk_)?[0-9a-f]{64}")
# A W3C traceparent holds fresh random ids: matched, not compared.
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
# How long something took differs on every run: matched, not compared.
LATENCY = re.compile(r"\d+\.\d ms")
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
            text = text.replace(readme_id, real_id)
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
        """Whether actual lines match expected ones; binds new UUIDs on success."""
        if len(expected) != len(actual):
            return False
        bindings = dict(self.bound)
        for want, got in zip(expected, actual):
            want = self.addrs(want)
            pattern, ids = "", []
            pos = 0
            for m in re.finditer(f"{TRACEPARENT.pattern}|{UUID.pattern}|{TIME.pattern}|{SECRET.pattern}|{LATENCY.pattern}", want):
                pattern += re.escape(want[pos:m.start()])
                if TRACEPARENT.fullmatch(m.group()):
                    pattern += TRACEPARENT.pattern
                elif UUID.fullmatch(m.group()):
                    pattern += f"({UUID.pattern})"
                    ids.append(m.group())
                elif TIME.fullmatch(m.group()):
                    pattern += TIME.pattern
                elif LATENCY.fullmatch(m.group()):
                    pattern += LATENCY.pattern
                else:
                    pattern += f"(?:{SECRET.pattern})"
                pos = m.end()
            pattern += re.escape(want[pos:])
            found = re.fullmatch(pattern, got)
            if not found:
                return False
            for readme_id, real_id in zip(ids, [g for g in found.groups() if g and UUID.fullmatch(g)]):
                if bindings.setdefault(readme_id, real_id) != real_id:
                    return False
        self.bound = bindings
        return True


def main():
    args = sys.argv[1:]
    show = "--print" in args
    args = [a for a in args if a != "--print"]
    if len(args) != 2:
        sys.exit(__doc__)
    logger_bin, bin_dir = os.path.abspath(args[0]), os.path.abspath(args[1])
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    readme = open(os.path.join(root, "README.md")).read()
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
    session = Session(addr, metrics_addr, console_addr, bin_dir, workdir.name)
    passed = failed = 0
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", int(addr.split(":")[1]))) == 0:
                    break
            time.sleep(0.1)
        for block in blocks(readme):
            for text, expected in block:
                code, output = session.run(text)
                if code is None:
                    continue
                actual = output.splitlines()
                deadline = time.time() + 10
                while True:
                    actual += session.background_output().splitlines()
                    if session.matches(expected, actual) or time.time() > deadline \
                            or len(actual) > len(expected):
                        break
                    time.sleep(0.1)
                ok = session.matches(expected, actual)
                wants_error = bool(expected) and expected[0].startswith(("ERROR:", "error:"))
                ok = ok and (code != 0) == wants_error
                if show:
                    print(f"$ {text}\n" + "\n".join(actual))
                if ok:
                    passed += 1
                else:
                    failed += 1
                    print(f"README example failed: $ {text}\n  exit code {code}\n  expected:\n    "
                          + "\n    ".join(expected) + "\n  got:\n    " + "\n    ".join(actual),
                          file=sys.stderr)
    finally:
        session.stop()
        logger.terminate()
        logger.wait(timeout=10)
        workdir.cleanup()
    print(f"readme: {passed} passed, {failed} failed")
    sys.exit(1 if failed or not passed else 0)


if __name__ == "__main__":
    main()
