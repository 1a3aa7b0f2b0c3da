#!/usr/bin/env python3
"""RFC 6455 conformance: the Autobahn|Testsuite's fuzzingclient against wsgwd and a control.

Four agents in one run, each a server on loopback started here:
  wsgwd           wsgwd made an echo server by conformance-echo-backend (events out of the
                  event log, POST /send?id= back), endpoint /echo, compression off
  wsgwd-deflate   the same wsgwd, endpoint /echo-deflate, compression on
  lws             conformance-lws-echo: libwebsockets itself with wsgwd's settings
  lws-deflate     the same with permessage-deflate
A case that is not OK through wsgwd but OK on the control is ours; one that is not OK on
both is libwebsockets' (expectations.txt names the cause of each).

  run.py --suite quick   sections 1-10 (compression off) and a slice of 12-13 (compression
                         on); fails on any wsgwd case worse than expectations.txt (make
                         test; the libwebsockets control's are reported only)
  run.py --suite all     all 517 cases with compression off and on, HTML report in --outdir
                         (make conformance); fails likewise
  --update               rewrite expectations.txt from this run (for the agents and cases run)

Exit codes: 0 as expected or better, 1 a wsgwd case worse than expected (or a server failed),
77 when Python 2.7 or the suite's sources are missing (1 under CI=true).
"""

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "autobahn")
EXPECTATIONS = os.path.join(HERE, "expectations.txt")

AGENTS = ["wsgwd", "wsgwd-deflate", "lws", "lws-deflate"]

# The quick run: sections 1-10, and a slice of 12-13 (permessage-deflate): the smallest messages
# of each 12.x group and of each client offer of 13.1-13.7. Three to four minutes on a quiet
# 2-core machine, twelve under heavy load (section 9 through wsgwd is most of it).
QUICK_CASES_OFF = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
QUICK_CASES_ON = ["12.1.1", "12.1.2", "12.1.3", "12.1.4", "12.1.5", "12.2.1", "12.2.2", "12.3.1",
                  "12.4.1", "12.5.1", "13.1.1", "13.1.2", "13.2.1", "13.3.1", "13.3.2", "13.4.1",
                  "13.5.1", "13.5.2", "13.6.1", "13.6.2", "13.7.1", "13.7.2"]

# Worse is higher.
BEHAVIOR_RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "UNIMPLEMENTED": 2, "FAILED": 3}
CLOSE_RANK = {"OK": 0, "INFORMATIONAL": 0, "NON-STRICT": 1, "UNIMPLEMENTED": 2}


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def tied():
    """preexec_fn: the child gets SIGKILL when this script dies, even by SIGKILL."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def exit_on_signals():
    """SIGTERM, SIGINT, SIGHUP raise SystemExit, so every `finally` stops the servers by PID."""
    def handler(signum, _frame):
        sys.exit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, handler)


def in_ci():
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def missing(why):
    if in_ci():
        print("FAIL: " + why + " (CI=true: a missing prerequisite is a failure)")
        sys.exit(1)
    print("SKIP: " + why)
    sys.exit(77)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, limit, what):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def healthy(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def case_key(case_id):
    return tuple(int(x) for x in case_id.split("."))


def read_expectations(path):
    """{agent: {case: (behavior, behaviorClose, cause)}}; a case not listed is expected OK."""
    out = {a: {} for a in AGENTS}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split(None, 4)
            if len(parts) < 4 or parts[0] not in out:
                raise SystemExit("%s:%d: expected 'AGENT CASE BEHAVIOR CLOSE [cause]'" % (path, n))
            agent, case, behavior, close = parts[:4]
            cause = parts[4] if len(parts) > 4 else ""
            out[agent][case] = (behavior, close.replace("_", " "), cause)
    return out


def write_expectations(path, old, results, ran):
    """Keeps the entries of agents/cases not run; replaces those run with what was seen."""
    merged = {a: dict(old.get(a, {})) for a in AGENTS}
    for agent, cases in ran.items():
        for case in cases:
            merged[agent].pop(case, None)
            r = results.get(agent, {}).get(case)
            if r and (r["behavior"] != "OK" or r["behaviorClose"] != "OK"):
                cause = old.get(agent, {}).get(case, ("", "", ""))[2]
                merged[agent][case] = (r["behavior"], r["behaviorClose"], cause)
    header = []
    with open(path) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                header.append(line)
            else:
                break
    with open(path, "w") as f:
        f.writelines(header)
        for agent in AGENTS:
            for case in sorted(merged[agent], key=case_key):
                b, c, cause = merged[agent][case]
                f.write("%-14s %-8s %-13s %-13s %s\n" % (agent, case, b, c.replace(" ", "_"), cause))


class Servers:
    """wsgwd with its echo backend, and the two controls; stopped by PID, whatever happens."""

    def __init__(self, args, workdir):
        self.procs = []
        self.workdir = workdir
        self.ws_port, self.control_port = free_port(), free_port()
        self.lws_port, self.lws_deflate_port = free_port(), free_port()
        config = os.path.join(workdir, "config.yml")
        # Limits past the suite's largest message (16 MiB in section 9), idle cut and rate
        # limits off: the suite is the only client.
        with open(config, "w") as f:
            f.write("""listen_addr: 127.0.0.1:%d
control_addr: 127.0.0.1:%d
max_message_size_kb: 20480
event_log: stdout
log_level: warn
idle_timeout_s: 0
threads: 2
slow_consumer:
  max_outbound_kb: 65536
max_body_kb: 20480
endpoints:
  - path: /echo
    compression: false
  - path: /echo-deflate
    compression: true
""" % (self.ws_port, self.control_port))
        self.wsgwd_err = open(os.path.join(workdir, "wsgwd.stderr"), "w")
        wsgwd = subprocess.Popen([args.wsgwd, "--config", config], stdout=subprocess.PIPE,
                                 stderr=self.wsgwd_err, preexec_fn=tied)
        self.procs.append(wsgwd)
        backend_cmd = [args.echo_backend, "--control-port", str(self.control_port)]
        if args.timeline:
            backend_cmd += ["--timeline", args.timeline]
        backend = subprocess.Popen(backend_cmd, stdin=wsgwd.stdout, preexec_fn=tied)
        wsgwd.stdout.close()
        self.procs.append(backend)
        for port, deflate in ((self.lws_port, False), (self.lws_deflate_port, True)):
            cmd = [args.lws_echo, "--port", str(port)] + (["--deflate"] if deflate else [])
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, preexec_fn=tied))
        wait_for(lambda: healthy(self.control_port) or wsgwd.poll() is not None, 20, "wsgwd")
        if wsgwd.poll() is not None:
            raise RuntimeError("wsgwd exited with %s; its stderr: %s" % (wsgwd.returncode, self.stderr()))
        for port in (self.lws_port, self.lws_deflate_port):
            wait_for(lambda: listening(port), 10, "conformance-lws-echo on %d" % port)

    def stderr(self):
        with open(os.path.join(self.workdir, "wsgwd.stderr")) as f:
            return f.read()[-4000:]

    def urls(self):
        return {
            "wsgwd": "ws://127.0.0.1:%d/echo" % self.ws_port,
            "wsgwd-deflate": "ws://127.0.0.1:%d/echo-deflate" % self.ws_port,
            "lws": "ws://127.0.0.1:%d/" % self.lws_port,
            "lws-deflate": "ws://127.0.0.1:%d/" % self.lws_deflate_port,
        }

    def alive(self):
        return [p.args[0] for p in self.procs if p.poll() is not None]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.wsgwd_err.close()


def build_suite():
    """(python2, site) from the suite's setup script, or a skip."""
    setup = os.path.join(SUITE, "setup-py2.sh")
    if not os.path.exists(setup):
        missing("the Autobahn|Testsuite sources are missing (" + SUITE + ")")
    r = subprocess.run([setup], capture_output=True, text=True)
    if r.returncode != 0:
        why = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "setup-py2.sh failed"
        if "no Python 2.7" in r.stderr:
            missing("Python 2.7 is needed for the Autobahn|Testsuite (" + why + ")")
        print(r.stderr)
        print("FAIL: cannot build the Autobahn|Testsuite: " + why)
        sys.exit(1)
    sys.stderr.write(r.stderr)
    lines = r.stdout.strip().splitlines()
    return lines[0], lines[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=["quick", "all"], default="quick")
    ap.add_argument("--wsgwd", required=True)
    ap.add_argument("--lws-echo", required=True)
    ap.add_argument("--echo-backend", required=True)
    ap.add_argument("--outdir", help="where the report goes (default: a temporary directory, removed)")
    ap.add_argument("--agents", default=",".join(AGENTS), help="comma-separated subset of " + ",".join(AGENTS))
    ap.add_argument("--cases", help="comma-separated case patterns instead of the suite's (e.g. 9.*,12.1.*)")
    ap.add_argument("--timeline", help="the echo backend's timeline file (see echo_backend.cpp)")
    ap.add_argument("--expectations", default=EXPECTATIONS)
    ap.add_argument("--update", action="store_true", help="rewrite the expectations from this run")
    args = ap.parse_args()
    exit_on_signals()

    py2, site = build_suite()
    agents = [a for a in args.agents.split(",") if a]
    for a in agents:
        if a not in AGENTS:
            ap.error("unknown agent " + a)
    if args.cases:
        plan = {a: args.cases.split(",") for a in agents}
    elif args.suite == "all":
        plan = {a: ["*"] for a in agents}
    else:
        plan = {a: (QUICK_CASES_ON if a.endswith("-deflate") else QUICK_CASES_OFF) for a in agents}
        if os.environ.get("WSGW_SANITIZE", "none") not in ("", "none"):
            # A sanitized wsgwd: section 9 (messages up to 16 MiB, 1,000s of them) is left to
            # the plain build, which runs the same code; the protocol cases all run.
            print("conformance: sanitized build (%s): section 9 left out" % os.environ["WSGW_SANITIZE"])
            plan = {a: [p for p in cases if not p.startswith("9.")] for a, cases in plan.items()}

    workdir = tempfile.mkdtemp(prefix="wsgw-conformance-")
    outdir = os.path.abspath(args.outdir) if args.outdir else os.path.join(workdir, "report")
    os.makedirs(outdir, exist_ok=True)
    servers = None
    started = time.monotonic()
    try:
        servers = Servers(args, workdir)
        urls = servers.urls()
        all_patterns = sorted({p for a in agents for p in plan[a]})
        exclude_agent = {}
        for a in agents:
            # What the agent does not run: the other agents' patterns.
            other = [p for p in all_patterns if p not in plan[a]]
            if other:
                exclude_agent[a] = other
        spec = {
            "outdir": outdir,
            "servers": [{"agent": a, "url": urls[a]} for a in agents],
            "cases": all_patterns,
            "exclude-cases": [],
            "exclude-agent-cases": exclude_agent,
        }
        spec_path = os.path.join(workdir, "spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f, indent=1)
        env = dict(os.environ, PYTHONPATH=site)
        print("conformance: %s against %s" % (", ".join(all_patterns), ", ".join(agents)), flush=True)
        log_path = os.path.join(workdir, "wstest.log")
        with open(log_path, "w") as log:
            wstest = subprocess.Popen([py2, os.path.join(SUITE, "wstest-py2.py"), "-m", "fuzzingclient",
                                       "-s", spec_path], cwd=workdir, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, preexec_fn=tied)
            servers.procs.insert(0, wstest)  # stopped first if we are interrupted
            wstest.wait()
            servers.procs.remove(wstest)
        gone = servers.alive()
        if wstest.returncode != 0 or gone:
            with open(log_path) as f:
                print(f.read()[-3000:])
            print("FAIL: wstest exited with %d; servers that died: %s" % (wstest.returncode, gone))
            print(servers.stderr())
            return 1
    finally:
        if servers:
            servers.stop()
    elapsed = time.monotonic() - started

    with open(os.path.join(outdir, "index.json")) as f:
        results = json.load(f)
    expected = read_expectations(args.expectations)
    ran = {a: sorted(results.get(a, {}), key=case_key) for a in agents}
    rc = report(results, expected, ran, elapsed)
    if args.update:
        write_expectations(args.expectations, expected, results, ran)
        print("expectations rewritten: " + args.expectations)
    if args.outdir:
        print("report: " + os.path.join(outdir, "index.html"))
    shutil.rmtree(workdir, ignore_errors=True)
    return rc


def case_ms(r):
    """A case's duration; the suite reports a garbage one for a case that never connected."""
    d = r.get("duration", 0)
    return d if 0 <= d < 3600 * 1000 else 0


def report(results, expected, ran, elapsed):
    # The libwebsockets control is there to attribute wsgwd's verdicts: a control case that comes
    # out worse than the file (its timing-dependent 4.x/5.x NON-STRICTs on a loaded machine) is
    # reported, but only wsgwd's own cases can fail the run.
    worse, better, control_worse = [], [], []
    print("\n%-14s %5s %5s %10s %13s %13s %6s %7s %9s" % ("agent", "cases", "OK", "NON-STRICT", "INFORMATIONAL",
                                                       "UNIMPLEMENTED", "FAILED", "unclean", "time (s)"))
    for agent, cases in ran.items():
        counts = {k: 0 for k in ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")}
        unclean, duration = 0, 0
        for case in cases:
            r = results[agent][case]
            counts[r["behavior"]] = counts.get(r["behavior"], 0) + 1
            unclean += r["behaviorClose"] not in ("OK", "INFORMATIONAL")
            duration += case_ms(r)
            exp = expected.get(agent, {}).get(case, ("OK", "OK", ""))
            got_b, got_c = BEHAVIOR_RANK.get(r["behavior"], 4), CLOSE_RANK.get(r["behaviorClose"], 3)
            exp_b, exp_c = BEHAVIOR_RANK.get(exp[0], 4), CLOSE_RANK.get(exp[1], 3)
            line = "%s %s: %s/%s, expected %s/%s %s" % (agent, case, r["behavior"], r["behaviorClose"], exp[0], exp[1],
                                                       exp[2])
            if got_b > exp_b or got_c > exp_c:
                (control_worse if agent.startswith("lws") else worse).append(line)
            elif got_b < exp_b or got_c < exp_c:
                better.append(line)
        print("%-14s %5d %5d %10d %13d %13d %6d %7d %9.1f" % (agent, len(cases), counts["OK"], counts["NON-STRICT"],
                                                          counts["INFORMATIONAL"], counts["UNIMPLEMENTED"],
                                                          counts["FAILED"], unclean, duration / 1000.0))
    sections = {}
    for agent, cases in ran.items():
        for case in cases:
            sec = case.split(".")[0]
            sections.setdefault(sec, {}).setdefault(agent, 0)
            sections[sec][agent] += case_ms(results[agent][case])
    print("\nseconds per section: " + "; ".join(
        "%s: %s" % (sec, ", ".join("%s %.1f" % (a, ms / 1000.0) for a, ms in sorted(per.items())))
        for sec, per in sorted(sections.items(), key=lambda kv: int(kv[0]))))
    print("wall time %.0f s" % elapsed)
    if better:
        print("\nbetter than expectations.txt (update it with --update):")
        for line in better:
            print("  " + line)
    if control_worse:
        print("\nthe libwebsockets control worse than expectations.txt (reported only; it does not fail the run):")
        for line in control_worse:
            print("  " + line)
    if worse:
        print("\nWORSE than expectations.txt:")
        for line in worse:
            print("  " + line)
        return 1
    print("\nno case worse than expectations.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
