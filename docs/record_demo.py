#!/usr/bin/env python3
"""Records the README's demo (assets/demo-tiny-llada.cast, asciicast v2) from the real binary.

It runs `dcoder` in a pseudo-terminal of 100x24 on the tiny random LLaDA fixture in
tests/fixtures/llada-tiny (random weights: the "code" it writes is gibberish; what the demo
shows is the view: masks resolving block by block, fresh tokens highlighted, the status line).
Every byte the program writes is stored with its time, so `asciinema play` replays the run
as it happened.

  cargo build --release && python3 docs/record_demo.py

assets/demo-tiny-llada.svg, the animated picture the README shows, is made from the cast with
svg-term-cli (npm): svg-term --in assets/demo-tiny-llada.cast --out assets/demo-tiny-llada.svg --window
"""
import json, os, pty, select, struct, subprocess, sys, time, fcntl, termios

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, HEIGHT = 100, 24
OUT = os.path.join(ROOT, "assets", "demo-tiny-llada.cast")
PROMPT = "Write a quicksort in Rust."
CMD = [os.path.join("target", "release", "dcoder"),
       "--model", os.path.join("tests", "fixtures", "llada-tiny"),
       "--gen-length", "384", "--steps", "384", "--block-length", "32",
       "--suppress-eos", "--lang", "rust", PROMPT]


def main():
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", HEIGHT, WIDTH, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", HF_HUB_OFFLINE="1")
    env.pop("NO_COLOR", None)
    start = time.time()
    events = [[0.0, "o", f"$ dcoder --model tests/fixtures/llada-tiny --lang rust \"{PROMPT}\"\r\n"]]
    proc = subprocess.Popen(CMD, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True, cwd=ROOT)
    os.close(slave)
    pending = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            pending += data
            try:
                text = pending.decode("utf-8")
                pending = b""
            except UnicodeDecodeError as e:  # a character split across reads
                text, pending = pending[:e.start].decode("utf-8"), pending[e.start:]
            # crossterm asks for the cursor position; answer as a terminal would.
            if "\x1b[6n" in text:
                os.write(master, b"\x1b[2;1R")
                text = text.replace("\x1b[6n", "")
            events.append([round(time.time() - start, 4), "o", text])
        elif proc.poll() is not None:
            break
    proc.wait()
    header = {"version": 2, "width": WIDTH, "height": HEIGHT, "timestamp": int(start),
              "title": "dcoder on the tiny random LLaDA test fixture (random weights: gibberish text)",
              "env": {"TERM": "xterm-256color"}}
    with open(OUT, "w") as f:
        f.write(json.dumps(header) + "\n")
        for e in events:
            f.write(json.dumps(e) + "\n")
    print(f"wrote {OUT}: {len(events)} events, {events[-1][0]:.1f} s, exit {proc.returncode}")


if __name__ == "__main__":
    sys.exit(main())
