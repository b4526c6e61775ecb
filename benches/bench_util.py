"""Helpers shared by the benchmark scripts: run a command or stop with its output, and write a
results table under benches/results/."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    """Runs `cmd`; returns stdout + stderr, or exits naming the command and its output."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return r.stdout + r.stderr


def write_result(name, lines):
    """Writes `lines` to benches/results/NAME and prints them."""
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", name), "w") as f:
        f.write(text)
    print(text)
