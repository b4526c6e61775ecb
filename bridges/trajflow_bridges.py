"""trajflow's bridges to environments from PyPI, speaking the JSON-lines protocol of
bridges/PROTOCOL.md on stdin/stdout.

    python trajflow_bridges.py scienceworld [TASK]   # scienceworld==1.2.3 (needs Java 17)
    python trajflow_bridges.py twx [GAME]            # textworld-express==1.1.0

trajflow embeds this file and runs it with `python -u -c`. Task ids map to (task or game,
variation): id % n picks the task (or game) among the n available (one if named), and id // n
picks the variation within the split trajflow sends ("train", "dev", "test"), cycling. Rewards
are score increments scaled to [0, 1], so an episode's return is its final score; success is the
environment's own (ScienceWorld: score 100). The expert follows the environment's gold action
sequence while the actions so far are its prefix; once the agent has left it, there is no expert
(`{"action": null}`): neither package can replan from an arbitrary state.
"""

import json
import os
import sys

PROTOCOL = 1


def canonical(observation):
    """ScienceWorld lists the objects of a room in an order that varies from one load of the same
    variation to the next (two wood cups swap places): consecutive lines indented by one tab are
    sorted, so that the same (task_id, seed) and actions give the same text."""
    lines, out, run = observation.split("\n"), [], []
    for line in lines + [None]:
        if line is not None and line.startswith("\t") and not line.startswith("\t\t"):
            run.append(line)
            continue
        out.extend(sorted(run))
        run = []
        if line is not None:
            out.append(line)
    return "\n".join(out)


class ScienceWorld:
    """ScienceWorld's 30 tasks; the variation lists are the package's train/dev/test splits."""

    max_steps = 100
    # Its valid action-object combinations name objects otherwise than its gold paths do ("pick up
    # metal pot" is valid, yet not listed): about a quarter of the expert's actions are not listed.
    admissible = "partial"

    def __init__(self, task=None):
        from scienceworld import ScienceWorldEnv

        # Gold paths of some tasks are longer than an agent's budget: the env's own limit is
        # wider so that experts can finish them.
        self.env = ScienceWorldEnv("", envStepLimit=1000)
        names = self.env.get_task_names()
        if task is not None and task not in names:
            raise ValueError(f"unknown ScienceWorld task {task!r} (known: {', '.join(names)})")
        self.tasks = [task] if task else names
        self.variations = {}

    def reset(self, task_id, seed, split):
        name = self.tasks[task_id % len(self.tasks)]
        if (name, split) not in self.variations:
            self.env.load(name, 0, "")
            self.variations[(name, split)] = {
                "train": self.env.get_variations_train,
                "dev": self.env.get_variations_dev,
                "test": self.env.get_variations_test,
            }[split]()
        variations = self.variations[(name, split)]
        variation = variations[(task_id // len(self.tasks)) % len(variations)]
        self.env.load(name, variation, "", generateGoldPath=True)
        observation, info = self.env.reset()
        self.gold = self.env.get_gold_action_sequence()
        self.score = 0.0
        return canonical(observation), info["taskDesc"], info["valid"]

    def step(self, action):
        observation, _, done, info = self.env.step(action)
        score = float(info["score"])
        reward = (score - self.score) / 100.0
        self.score = score
        return canonical(observation), reward, bool(done), score >= 100.0, info["valid"]


class TextWorldExpress:
    """TextWorldExpress's games with their default parameters; the seed within a game's fold is
    the variation."""

    # Cookingworld's gold paths take up to 98 steps with the default parameters.
    max_steps = 100
    admissible = "complete"

    def __init__(self, game=None):
        from textworld_express import TextWorldExpressEnv

        self.env = TextWorldExpressEnv(envStepLimit=1000)
        names = self.env.getGameNames()
        if game is not None and game not in names:
            raise ValueError(f"unknown TextWorldExpress game {game!r} (known: {', '.join(names)})")
        self.games = [game] if game else names
        self.loaded = None

    def reset(self, task_id, seed, split):
        game = self.games[task_id % len(self.games)]
        if game != self.loaded:
            self.env.load(gameName=game, gameParams="")
            self.loaded = game
        observation, info = self.env.reset(
            seed=task_id // len(self.games), gameFold=split, generateGoldPath=True
        )
        self.gold = self.env.getGoldActionSequence()
        self.score = 0.0
        return observation, info["taskDescription"], info["validActions"]

    def step(self, action):
        observation, _, done, info = self.env.step(action)
        score = float(info["score"])
        reward = score - self.score
        self.score = score
        return observation, reward, bool(done), bool(info["tasksuccess"]), info["validActions"]


KINDS = {"scienceworld": ScienceWorld, "twx": TextWorldExpress}


def serve(env, out):
    """Answers requests from stdin until `close` or end of input."""
    taken, admissible = None, []
    for line in sys.stdin:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "reset":
                observation, task, admissible = env.reset(
                    int(request["task_id"]), int(request["seed"]), request["split"]
                )
                taken = []
                answer = {"observation": observation, "task": task}
            elif op == "step":
                action = request["action"]
                observation, reward, done, success, admissible = env.step(action)
                if taken is not None:
                    taken.append(action)
                answer = {"observation": observation, "reward": reward, "done": done, "success": success}
            elif op == "admissible":
                answer = {"actions": sorted(admissible)}
            elif op == "expert":
                on_path = taken is not None and env.gold[: len(taken)] == taken
                nxt = env.gold[len(taken)] if on_path and len(taken) < len(env.gold) else None
                answer = {"action": nxt}
            elif op == "close":
                out.write("{}\n")
                out.flush()
                return
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as e:  # the environment's own error: reported, the process stays
            answer = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main(argv):
    # Only protocol lines may reach stdout: keep a private copy of it and point fd 1 (which
    # libraries and the JVM print to) at stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if len(argv) not in (1, 2) or argv[0] not in KINDS:
        sys.exit(f"usage: trajflow_bridges.py {{{'|'.join(KINDS)}}} [TASK]")
    env = KINDS[argv[0]](*argv[1:])
    hello = {"protocol": PROTOCOL, "name": argv[0], "max_steps": env.max_steps, "admissible": env.admissible}
    out.write(json.dumps(hello) + "\n")
    out.flush()
    serve(env, out)


if __name__ == "__main__":
    main(sys.argv[1:])
