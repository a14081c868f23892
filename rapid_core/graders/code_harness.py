"""The program that runs INSIDE the sandbox for code-running graders. Never imported by the host:
``code_tests`` and ``python`` ship this file's text as the sandboxed ``main.py``.

Two processes, so that nothing the untrusted code can reach lets it write the verdict. The harness
forks first; the child, whose memory never holds the nonce, gets the job without it on a pipe, runs
the untrusted code and reports its result on a second pipe. The parent made itself non-dumpable
before the job arrived, so the child (same uid, no capabilities) cannot read its memory or file
descriptors; it reads the nonce from stdin, checks the child's report and exit, and writes
``<nonce> <json verdict>`` as its last act. A child that exits early (``sys.exit(0)``,
``os._exit``), dies, or reports something malformed is a crash, never a pass; printing a verdict
line is useless without the nonce. What the child reports stays the program's own claim: code that
runs in the child can write to the report pipe itself (for ``code_tests`` the candidate runs in the
same process as its tests, as in EvalPlus), so the parent checks the report's shape and counts.
"""

import base64
import copy
import json
import math
import os
import pickle
import sys
import traceback
import zlib


def _short(err):
    return f"{type(err).__name__}: {err}"[:300]


def run_asserts(job, ns):
    """MBPP / HumanEval: each test is a statement (asserts, or check(candidate)) run in order."""
    passed, failure = 0, ""
    for test in job["tests"]:
        try:
            exec(compile(test, "<test>", "exec"), ns)
            passed += 1
        except Exception as err:
            failure = failure or f"{test.strip()[:200]} -> {_short(err)}"
    return {"passed": passed, "total": len(job["tests"]), "failure": failure}


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def mbpp_plus_inputs(task_id, inputs):
    """EvalPlus stores MBPP+ arguments as JSON; these tasks take tuples, sets or complex numbers."""
    n = int(str(task_id).split("/")[-1]) if str(task_id).split("/")[-1].isdigit() else -1
    tuple_args = {
        2,
        116,
        132,
        143,
        222,
        261,
        273,
        394,
        399,
        421,
        424,
        429,
        470,
        560,
        579,
        596,
        616,
        630,
        726,
        740,
        744,
        809,
    }
    nested = {63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780}
    if n in tuple_args:
        return [[tuple(a) for a in inp] for inp in inputs]
    if n in nested:
        return [[[tuple(x) for x in a] for a in inp] for inp in inputs]
    if n in (75, 413, 444, 753):
        return [[[tuple(x) for x in inp[0]], inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0], tuple(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(x) if isinstance(x, list) and x else {} for x in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in (250, 405, 446, 617, 720, 763, 808):
        return [[tuple(inp[0]), inp[1]] for inp in inputs]
    if n in (259, 401, 445):
        return [tuple(tuple(tuple(x) for x in a) for a in inp) for inp in inputs]
    if n == 278:
        return [(tuple(tuple(x) if isinstance(x, list) else x for x in inp[0]),) for inp in inputs]
    if n == 307:
        return [[tuple(inp[0]), inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{k: tuple(v) for k, v in inp[0].items()}, *inp[1:]] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in (580, 615, 791):
        return [_tuples(inp) for inp in inputs]
    return inputs


def call_all(fn, inputs):
    outputs = []
    for args in inputs:
        try:
            out = fn(*copy.deepcopy(args))
        except Exception as err:
            outputs.append(("raised", type(err).__name__))
            continue
        try:
            pickle.dumps(out)
            outputs.append(("ok", out))
        except Exception:  # e.g. re.Match: compared by its repr, the only stable view of it
            outputs.append(("repr", repr(out)))
    return outputs


def same(out, exp, atol):
    """EvalPlus's rule: equal, or for floats within atol (+ a 1e-7 relative slack), nan == nan."""
    if isinstance(exp, float | int) and isinstance(out, float | int) and not isinstance(exp, bool):
        if isinstance(exp, float) and math.isnan(exp):
            return isinstance(out, float) and math.isnan(out)
        return out == exp or (atol > 0 and abs(out - exp) <= atol + 1e-7 * abs(exp))
    if isinstance(exp, list | tuple) and type(out) is type(exp) and len(out) == len(exp):
        return all(same(o, e, atol) for o, e in zip(out, exp, strict=True))
    return out == exp


def run_outputs(job, ns):
    """EvalPlus reference pass: the reference solution's outputs, pickled for the candidate pass."""
    inputs = mbpp_plus_inputs(job["task_id"], job["inputs"])
    outputs = call_all(ns[job["entry_point"]], inputs)
    return {"outputs": base64.b64encode(zlib.compress(pickle.dumps(outputs))).decode()}


def run_compare(job, ns):
    """EvalPlus candidate pass: same outputs as the reference on every input (atol for floats)."""
    fn = ns.get(job["entry_point"])
    if not callable(fn):
        return {"passed": 0, "total": len(job["inputs"]), "failure": f"no function {job['entry_point']!r}"}
    inputs = mbpp_plus_inputs(job["task_id"], job["inputs"])
    got = call_all(fn, inputs)
    # Loaded only after the candidate's code ran, so its top-level code never sees the answers.
    expected = pickle.loads(zlib.decompress(base64.b64decode(job["expected"])))
    passed, failure = 0, ""
    for args, (gk, g), (ek, e) in zip(inputs, got, expected, strict=True):
        if gk == ek and (same(g, e, job["atol"]) if gk == "ok" else gk == "raised" or g == e):
            passed += 1
        elif not failure:
            failure = f"input {repr(args)[:150]}: got {repr(g)[:100]}, expected {repr(e)[:100]}"
    return {"passed": passed, "total": len(inputs), "failure": failure}


def run_grade(job, ns):
    """The ``python`` grader: the user's ``grade(sample, item)`` must return a finite number."""
    score = ns["grade"](job["sample"], job["item"])
    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"grade() returned {score}")
    return {"score": score}


def run_load(job, ns):
    """Validation of a ``python`` grader: its top-level code ran; does it define grade()?"""
    return {"loaded": callable(ns.get("grade"))}


MODES = {
    "asserts": run_asserts,
    "outputs": run_outputs,
    "compare": run_compare,
    "grade": run_grade,
    "load": run_load,
}


def child(job_fd, result_fd):
    """Run the untrusted code; report the mode's result (or the crash) on ``result_fd``."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # the parent's stdin carries the nonce
    with os.fdopen(job_fd) as f:
        job = json.loads(f.read())
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(job.get("setup", ""), "<setup>", "exec"), ns)
        exec(compile(job["code"], "solution.py", "exec"), ns)
        exec(compile(job.get("after", ""), "<test setup>", "exec"), ns)  # MBPP may use the code's classes
        result = MODES[job["mode"]](job, ns)
    except SystemExit as err:  # exiting before the tests ran is a failure, whatever the code
        result = {"crash": f"exited with {err.code!r} before the tests finished"}
    except BaseException as err:
        tb = traceback.format_exception_only(type(err), err)
        result = {"crash": "".join(tb).strip()[-400:]}
    sys.stdout.flush()
    sys.stderr.flush()
    with os.fdopen(result_fd, "w") as f:
        f.write(json.dumps(result))
    os._exit(0)


def _non_dumpable():
    """prctl(PR_SET_DUMPABLE, 0): processes of our uid can no longer ptrace us or open /proc/<pid>/*."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def checked(job, raw, status):
    """The verdict from the child's report: its own result if it exited normally and the report has
    the shape of the mode's result, else a crash."""
    if os.WIFSIGNALED(status):
        return {"crash": f"killed by signal {os.WTERMSIG(status)}"}
    if not raw:
        return {"crash": f"the program exited (status {os.WEXITSTATUS(status)}) before reporting a result"}
    try:
        result = json.loads(raw)
    except ValueError:
        return {"crash": "the program's report was not valid JSON"}
    if not isinstance(result, dict) or os.WEXITSTATUS(status) != 0:
        return {"crash": "the program's report was malformed"}
    if "crash" in result:
        return {"crash": str(result["crash"])[-400:]}
    mode = job["mode"]
    if mode == "grade":
        score = result.get("score")
        ok = isinstance(score, float | int) and not isinstance(score, bool) and math.isfinite(score)
        return (
            {"score": float(score)} if ok else {"crash": f"grade() result {score!r} is not a finite number"}
        )
    if mode in ("asserts", "compare"):
        total = len(job["tests"]) if mode == "asserts" else len(job["inputs"])
        passed = result.get("passed")
        if result.get("total") != total or not isinstance(passed, int) or not 0 <= passed <= total:
            return {"crash": "the program's report does not match its tests"}
        return {"passed": passed, "total": total, "failure": str(result.get("failure", ""))[:1000]}
    if mode == "outputs":
        return (
            {"outputs": result["outputs"]}
            if isinstance(result.get("outputs"), str)
            else {"crash": "no outputs"}
        )
    return {"loaded": result.get("loaded") is True}


def main():
    # Fork before the nonce is read, so the child's copy of this process never holds it.
    job_r, job_w = os.pipe()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(job_w)
        os.close(result_r)
        child(job_r, result_w)
    os.close(job_r)
    os.close(result_w)
    try:
        _non_dumpable()
        job = json.loads(sys.stdin.read())
        nonce = job.pop("nonce")
    except BaseException:
        os.kill(pid, 9)
        raise  # no verdict: the host counts the run as a failure
    with os.fdopen(job_w, "w") as f:
        f.write(json.dumps(job))
    with os.fdopen(result_r) as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    verdict = checked(job, raw, status)
    os.write(1, f"\n{nonce} {json.dumps(verdict)}\n".encode())


if __name__ == "__main__":
    main()
