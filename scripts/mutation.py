"""Mutation testing of ticketx's scientific core with mutmut (not part of the default test suite).

    pip install -e ".[dev]"
    python scripts/mutation.py                      # every target below (about an hour on 2 cores)
    python scripts/mutation.py pruning masks        # some targets
    python scripts/mutation.py --list               # targets, functions and tests
    python scripts/mutation.py find-rewind --show   # print each surviving mutant's diff
    python scripts/mutation.py --json r.json; python scripts/mutation.py --recheck r.json   # survivors only, after new tests

A mutant is the code with one token changed (`<` for `<=`, `0` for `1`, a dropped call): a test
suite that lets it pass does not state the behaviour that token is for. Each target names the
functions where a one-token change alters results and the fast tests that state their
behaviour; mutmut runs only the tests that reach the mutated function, in a copy of the
repository (so the working tree is never touched), under `nice`, one thread per process.

Why mutmut: maintained (3.x), mutates through trampolines so a mutant costs one forked test
run and no re-import of torch, selects per function the tests that reach it, and can be pointed
at single functions (`ticketx.search.x_find__mutmut_*`), which keeps long functions such as
`train` and `find` affordable. cosmic-ray would re-import the package (and torch) per mutant.

Add a target (the transfer baselines, the statistics) by adding a line to TARGETS.
Exit status 0 always: the score is a measurement; read the report.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name: (source file, mutmut mutant-name globs: the functions to mutate, test files, and for long
# functions a regex: only lines that match it are mutated, e.g. the rewinding lines of `find`)
TARGETS: dict[str, tuple[str, list[str], list[str], str | None]] = {
    "pruning": ("ticketx/pruning.py", ["ticketx.pruning.*"], ["tests/test_pruning.py", "tests/test_properties.py", "tests/test_core_contracts.py"], None),
    "masks": ("ticketx/masks.py", ["ticketx.masks.*"], ["tests/test_masks.py", "tests/test_properties.py", "tests/test_ticket.py", "tests/test_core_contracts.py"], None),
    "ticket": ("ticketx/ticket.py", ["ticketx.ticket.*"], ["tests/test_ticket.py", "tests/test_properties.py", "tests/test_core_contracts.py"], None),
    # the masking parts of training: the enforcer, the step that applies it, the rewind snapshot
    "train-masking": ("ticketx/train.py",
                      ["ticketx.train.xǁMaskEnforcerǁ*", "ticketx.train.xǁStepperǁ*", "ticketx.train.x_state_copy__*",
                       "ticketx.train.x_train__*"],
                      ["tests/test_masks.py", "tests/test_rewind.py"],
                      r"mask|Mask|enforce|snapshot|state_copy|self\.params|self\.masks|foreach|start_step"),
    # the ticket search: rewinding, pruning between rounds, the masks and weights it records
    "find-rewind": ("ticketx/search.py", ["ticketx.search.x_find__*"], ["tests/test_rewind.py", "tests/test_search.py"],
                    r"rewind|init_state|load_state_dict|mask|pruning\.|snapshot|start_step|final|weights_of|masks\.append|T\.make"),
    # the data side of the science: the validation split and the training augmentation
    "data-split": ("ticketx/data/split.py", ["ticketx.data.split.x_stratified_split__*",
                                             "ticketx.data.split.x_split_validation__*"],
                   ["tests/test_data_split.py"], None),
    # the statistics every verdict reads: the two-stage interval, BH, the verdict words
    "stats": ("ticketx/stats.py", ["ticketx.stats.*"], ["tests/test_stats.py"], None),
}
PYTEST_ARGS = ["-m", "not slow", "-p", "no:cacheprovider", "-x", "-q"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        return subprocess.call(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def run_target(name: str, workroot: Path, show: bool, repo: Path = REPO) -> dict:
    source, globs, tests, lines = TARGETS[name]
    tests = [t for t in tests if (repo / t).exists()]  # --repo at an older commit: the tests it had
    work = workroot / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copytree(repo / "ticketx", work / "ticketx", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(repo / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    toml = (repo / "pyproject.toml").read_text()
    toml = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", toml)
    toml += "\n[tool.mutmut]\n" + "\n".join([
        'source_paths = ["ticketx"]',
        f'only_mutate = ["{source}"]',
        f"pytest_add_cli_args = {json.dumps(PYTEST_ARGS)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'process_isolation = "forkserver"',  # torch is not fork-safe once its threads ran
        "use_git_change_detection = false",
        # lines that do NOT match the target's regex are left alone
        *([f"do_not_mutate_patterns = {json.dumps(['^(?!.*(' + lines + '))'])}"] if lines else []),
    ]) + "\n"
    (work / "pyproject.toml").write_text(toml)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TICKETX_THREADS": "1", "TICKETX_HYPOTHESIS_EXAMPLES": "25",
           "PYTHONPATH": str(work / "mutants"), "PYTHONDONTWRITEBYTECODE": "1"}
    # on sys.path before mutmut fills it: a folder missing when Python first looks is skipped for
    # the whole run, and the tests would import an installed ticketx instead of the mutants
    (work / "mutants").mkdir()
    log = work / "mutmut.log"
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    _run([*nice, sys.executable, "-m", "mutmut", "run", "--max-children", "2", *globs], work, env, log)
    meta = json.loads((work / "mutants" / (source + ".meta")).read_text())
    codes = {k: v for k, v in meta["exit_code_by_key"].items() if any(fnmatch.fnmatchcase(k, g) for g in globs)}
    killed = sorted(k for k, v in codes.items() if v in (1, 3, 36, 37, -24, 24, 152, 255))  # failed or timed out
    survived = sorted(k for k, v in codes.items() if v == 0)
    other = sorted(k for k, v in codes.items() if k not in killed and k not in survived)
    result = {"target": name, "source": source, "workdir": str(work), "total": len(codes), "killed": len(killed), "survived": survived,
              "not_killed_other": {k: codes[k] for k in other}}
    if show:
        for k in survived:
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", k], cwd=work, env=env, capture_output=True, text=True)
            print(diff.stdout)
    return result


def _apply(path: Path, diff: str) -> bool:
    """Apply a `mutmut show` diff (one function, hunks numbered from the function's first line) by
    replacing its old text with its new text; False when the old text is not found exactly once."""
    text = path.read_text()
    for hunk in re.split(r"(?m)^@@[^\n]*\n", diff.split("+++", 1)[1].split("\n", 1)[1])[1:]:
        lines = [ln for ln in hunk.splitlines() if ln[:1] in (" ", "-", "+")]
        old = "\n".join(ln[1:] for ln in lines if ln[0] in " -") + "\n"
        new = "\n".join(ln[1:] for ln in lines if ln[0] in " +") + "\n"
        if text.count(old) != 1:
            return False
        text = text.replace(old, new)
    path.write_text(text)
    return True


def recheck(previous: dict, workroot: Path, show: bool) -> dict:
    """Rerun the current tests against the survivors of an earlier run only (minutes, not an hour):
    each survivor's diff (`mutmut show` in that run's folder) is applied to a copy of this tree."""
    name = previous["target"]
    source, _, tests, _ = TARGETS[name]
    tests = [t for t in tests if (REPO / t).exists()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TICKETX_THREADS": "1",
           "TICKETX_HYPOTHESIS_EXAMPLES": "25", "PYTHONDONTWRITEBYTECODE": "1"}
    old_env = {**env, "PYTHONPATH": str(Path(previous["workdir"]) / "mutants")}
    still, killed_now = [], []
    for mutant in previous["survived"]:
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=previous["workdir"], env=old_env,
                              capture_output=True, text=True).stdout
        work = workroot / "recheck" / mutant
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(REPO / "ticketx", work / "ticketx", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "pyproject.toml", work / "pyproject.toml")
        if not _apply(work / source, diff):
            print(f"    cannot apply {mutant} to this tree (the code changed)")
            still.append(mutant)
            shutil.rmtree(work, ignore_errors=True)
            continue
        rc = subprocess.call([*(["nice", "-n", "10"] if shutil.which("nice") else []), sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests],
                             cwd=work, env={**env, "PYTHONPATH": str(work)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        (killed_now if rc != 0 else still).append(mutant)
        if show and rc == 0:
            print(diff)
        shutil.rmtree(work, ignore_errors=True)
    return {**previous, "killed": previous["killed"] + len(killed_now), "survived": still, "killed_on_recheck": killed_now}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)} (default: all)")
    ap.add_argument("--list", action="store_true", help="list the targets and exit")
    ap.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    ap.add_argument("--workdir", type=Path, help="where the copies go (kept for `mutmut browse`) [default: a temporary folder]")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    ap.add_argument("--recheck", type=Path, action="append",
                    help="a --json file of an earlier run: rerun only its survivors against the current tests")
    ap.add_argument("--repo", type=Path, default=REPO,
                    help="the tree to test, e.g. a `git worktree` of an older commit for a before/after score [default: this one]")
    args = ap.parse_args(argv)
    if args.list:
        for name, (source, globs, tests, lines) in TARGETS.items():
            print(f"{name:14} {source:20} {' '.join(globs)}\n{'':14} tests: {' '.join(tests)}"
                  + (f"\n{'':14} only lines matching: {lines}" if lines else ""))
        return
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; choose from {list(TARGETS)}")
    workroot = args.workdir or Path(tempfile.mkdtemp(prefix="ticketx-mutation-"))
    results = []
    earlier = {r["target"]: r for f in args.recheck or [] for r in json.loads(Path(f).read_text())}
    for name in args.targets or (list(earlier) if earlier else list(TARGETS)):
        if earlier:
            res = recheck(earlier[name], workroot, args.show)
        else:
            res = run_target(name, workroot, args.show, args.repo.resolve())
        results.append(res)
        score = res["killed"] / res["total"] if res["total"] else float("nan")
        print(f"{name:14} killed {res['killed']:4d} / {res['total']:4d}  ({100 * score:.1f}%)  "
              f"survived {len(res['survived'])}  other {len(res['not_killed_other'])}"
              + (f"  (killed on recheck: {len(res['killed_on_recheck'])})" if "killed_on_recheck" in res else ""), flush=True)
        for k in res["survived"]:
            print(f"    survived: {k}")
        for k, code in res["not_killed_other"].items():
            print(f"    not killed (exit {code}): {k}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"work folders (mutmut browse / mutmut show NAME inside them): {workroot}")


if __name__ == "__main__":
    main()
