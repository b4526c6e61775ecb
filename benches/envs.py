"""Environment steps/s and rollout throughput, written to benches/results/envs.md.

    python benches/envs.py [--quick]

Steps: the expert plays N tasks of each built-in environment and of each bridge (trajflow side:
`cargo bench --bench envs`, every step an expert query plus a step). Reference for the bridges:
the same expert loop over the same task mapping, in-process in Python (the bridge's own classes,
no protocol), so the ratio is the cost of the process boundary. Rollouts: a model plays in
admissible-action mode (temperature 1), episodes/s and generated tokens/s, env time included.
Run it alone: a second job on the machine skews every number.
"""
import json
import os
import platform
import subprocess
import sys
import time

from bench_util import HERE, run, write_result

sys.path.insert(0, os.path.join(HERE, "..", "bridges"))
import trajflow_bridges  # noqa: E402

QUICK = "--quick" in sys.argv


def cargo_bench(*args):
    out = run(["cargo", "bench", "--quiet", "--bench", "envs", "--", *args])
    return json.loads([l for l in out.splitlines() if l.startswith("{")][-1])


def python_expert_steps(kind, variant, episodes):
    """The expert loop of benches/envs.rs, in-process on the bridge's own classes."""
    env = trajflow_bridges.KINDS[kind](*([variant] if variant else []))
    def play(task):
        env.reset(task, 0, "train")
        steps = 0
        while steps < env.max_steps and steps < len(env.gold):
            _, _, done, success, _ = env.step(env.gold[steps])
            steps += 1
            if done:
                return steps, success
        return steps, False

    play(episodes)
    start = time.perf_counter()
    total = solved = 0
    for task in range(episodes):
        n, ok = play(task)
        total += n
        solved += ok
    secs = time.perf_counter() - start
    return {"steps": total, "solved": solved, "seconds": secs, "steps_per_s": total / secs}


def main():
    n_built, n_twx, n_sw = (200, 40, 5) if QUICK else (1000, 200, 20)
    lines = [
        f"{time.strftime('%Y-%m-%dT%H:%M:%S')}, {platform.node()}, {os.cpu_count()} CPU(s), no GPU; "
        f"`python benches/envs.py{' --quick' if QUICK else ''}`.",
        "",
        "| environment | expert episodes | steps | solved | trajflow steps/s | in-process Python steps/s | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, n, ref in [
        ("household", n_built, None),
        ("household-pick", n_built, None),
        ("kitchen", n_built, None),
        ("qa", n_built, None),
        ("tools", n_built, None),
        ("twx", n_twx, ("twx", None)),
        ("scienceworld:find-animal", n_sw, ("scienceworld", "find-animal")),
    ]:
        r = cargo_bench("--mode", "steps", "--env", name, "--episodes", str(n))
        p = python_expert_steps(*ref, n) if ref else None
        ref_cell = f"{p['steps_per_s']:,.0f}" if p else "(Rust, in-process)"
        ratio = f"{r['steps_per_s'] / p['steps_per_s']:.2f}" if p else ""
        lines.append(
            f"| `{name}` | {n} | {r['steps']} | {r['solved']} | {r['steps_per_s']:,.0f} | {ref_cell} | {ratio} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "Bridged steps go through the protocol (an expert query and a step: two round trips per step);",
        "the Python column runs the bridge's classes directly with the gold path (on the train split; "
        "trajflow's task ids fall in all three), so the ratio is the process boundary's cost.",
        "",
        "| rollout | model | prefix cache | episodes | turns | generated tokens | seconds | episodes/s | tokens/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for env, model, tasks, k, turns, cache in [
        ("household-pick", "small:household-pick", 8, 4, 10, False),
        ("kitchen", "small:kitchen", 8, 4, 20, False),
        ("household-pick", "smollm2-135m", 4, 2, 6, False),
        ("household-pick", "smollm2-135m", 4, 2, 6, True),
        ("twx:coin", "smollm2-135m", 4, 2, 6, False),
        ("twx:coin", "smollm2-135m", 4, 2, 6, True),
    ]:
        if QUICK:
            tasks, k = 2, 2
        r = cargo_bench(
            "--mode", "rollout", "--env", env, "--model", model,
            "--tasks", str(tasks), "--k", str(k), "--max-turns", str(turns),
            *(["--prefix-cache"] if cache else []),
        )
        lines.append(
            f"| `{env}` | `{model}` | {'yes' if cache else 'no'} | {r['episodes']} | {r['turns']} | "
            f"{r['generated_tokens']} | {r['seconds']:.1f} | {r['episodes_per_s']:.3f} | {r['tokens_per_s']:.1f} |"
        )
        print(lines[-1], flush=True)
    lines += [
        "",
        "Rollouts: admissible-action mode, temperature 1, one generation call per turn for all live",
        "episodes (lock-step batches), CPU. With the prefix cache a turn feeds only the tokens after",
        "the cached conversation (same episodes up to floating-point rounding).",
    ]
    write_result("envs.md", lines)


if __name__ == "__main__":
    main()
