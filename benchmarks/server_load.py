"""Server load: 16 concurrent clients against `mmagent serve`, with and without micro-batching.

Two real servers are started as subprocesses on 127.0.0.1 (port 0, the bound port read from
uvicorn's log), both with `--max-concurrency` = the number of clients: one with `--max-batch-size 1`
(no batching) and one with `--max-batch-size B` (default 8, `--batch-wait-ms` as the CLI's
default). Both are warmed up (the first request loads the model; then a burst of concurrent
requests), then, in each of `--repeats` rounds, the same N requests (same order) are sent:

  (a) sequential          one client, one request after another, to the no-batching server
  (a') sequential         the same to the batching server (a lone call goes through its batcher)
  (b) concurrent, B=1     `--clients` threads (16) pulling from the N requests, no batching
  (c) concurrent, B=8     the same against the batching server

and for each: requests/s (N / wall time), p50/p95/mean latency per request (client side), the
count of 5xx (must be 0), 429s (retried after Retry-After, counted) and other errors, the server's
CPU seconds per request, the CPU every other process on the machine used meanwhile (from
/proc/stat, in cores: this machine is shared), and on the batching server the batch sizes and batch
times it ran. Medians over the rounds (and over only the phases the other processes left quiet,
`--quiet-below`) and the ratios (c)/(a), (c)/(b), (b)/(a) are printed (target on CPU: (c)/(a) >= 1.5),
and whether any answer differs from (a)'s.

`--variant-env KEY=VALUE` adds a third server (batching, with those environment variables) and its
phases (d) 16 clients and (d') sequential: `--variant-env OMP_NUM_THREADS=1` is torch on one thread.
`--hog` keeps one core busy with a Python busy loop during the rounds (a machine shared with another
job); `--server-env KEY=VALUE` sets variables for every server.

Workloads (`--workload`): `direct` (default) chat completions answered by the local LLM itself
(model `smollm2-135m-instruct`: the server calls the backend without a graph) with short arithmetic
and word questions that differ per request and `max_tokens` = `--max-tokens`; `tools` the same
questions through the `tools` pipeline (intent embedding + LLM; the pipeline's own answer length);
`asr` /v1/audio/transcriptions of examples/media/question.wav (model whisper-1).

`--soak N` then sends N requests (16 clients, same mix) to the batching server and samples the
server process's RSS (psutil) every 100 completed requests: growth from the sample after the first
100 to the end, in MiB and % (flat: under ~5 %). `--requests 0 --soak 1000` runs only the soak.

Batch sizes: by default the server subprocess is this script in `--child` mode, which runs the
`mmagent serve` command itself (same click command, same `create_app`, same uvicorn) after wrapping
`create_app` to time each batcher's batched call and to add one read-only route, GET /_bench/stats,
that returns them. `--plain` runs `.venv/bin/mmagent serve` unchanged instead (no batch figures).
Every server is terminated at the end, on errors and on Ctrl-C too. Loopback only.

    .venv/bin/python benchmarks/server_load.py [--requests 64] [--clients 16] [--max-tokens 32]
        [--repeats 2] [--batch-size 8] [--batch-wait-ms 20] [--workload direct|tools|asr]
        [--soak 1000] [--plain] [--variant-env KEY=VALUE ...] [--server-env KEY=VALUE ...] [--hog]
        [--quiet-below CORES] [--no-sequential] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
LLM_MODEL = "smollm2-135m-instruct"
AUDIO = ROOT / "examples" / "media" / "question.wav"


# -- the server subprocess --------------------------------------------------------------------------------


def child_main(argv: list[str]) -> None:
    """Run `mmagent serve ARGV` in this process, with the batchers timed and GET /_bench/stats added."""
    import mmagent.server as server

    original = server.create_app

    def create_app(*args, **kwargs):
        app = original(*args, **kwargs)
        records: dict[str, list] = {}

        def timed(role, run):
            def wrapper(payloads, key):
                start = time.perf_counter()
                try:
                    return run(payloads, key)
                finally:
                    records[role].append((len(payloads), round(time.perf_counter() - start, 4)))
            return wrapper

        for role, batcher in app.state.batchers.items():
            records[role] = []
            batcher.run = timed(role, batcher.run)

        async def stats():
            return {"pid": os.getpid(), "batches": records}

        app.add_api_route("/_bench/stats", stats, methods=["GET"])
        return app

    server.create_app = create_app
    from mmagent.cli.serve_cmd import serve

    serve.main(argv, prog_name="mmagent serve", standalone_mode=True)


class Server:
    """`mmagent serve` on 127.0.0.1, port 0; its log in a temporary file."""

    def __init__(self, label: str, batch_size: int, concurrency: int, batch_wait_ms: float | None, plain: bool,
                 env: dict[str, str] | None = None):
        self.label, self.batch_size = label, batch_size
        args = ["--host", HOST, "--port", "0", "--max-concurrency", str(concurrency),
                "--max-batch-size", str(batch_size)]
        if batch_wait_ms is not None:
            args += ["--batch-wait-ms", str(batch_wait_ms)]
        if plain:
            command = [str(Path(sys.executable).parent / "mmagent"), "serve", *args]
        else:
            command = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
        self.command = command
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"server_load_{label}_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=ROOT, env={**os.environ, **(env or {})})
        self.port: int | None = None
        self.url = ""

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.label} exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
            if self.port is None:
                found = re.search(r"Uvicorn running on http://[^:]+:(\d+)", self.log_text())
                if found:
                    self.port = int(found.group(1))
                    self.url = f"http://{HOST}:{self.port}"
            if self.port is not None:
                try:
                    if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise RuntimeError(f"server {self.label} not ready after {timeout:.0f} s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def rss_mib(self) -> float:
        try:
            import psutil

            return psutil.Process(self.proc.pid).memory_info().rss / 2**20
        except ImportError:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
            raise

    def cpu_s(self) -> float:
        import psutil

        times = psutil.Process(self.proc.pid).cpu_times()
        return times.user + times.system

    def stats(self) -> dict:
        import httpx

        try:
            response = httpx.get(f"{self.url}/_bench/stats", timeout=10)
            return response.json() if response.status_code == 200 else {}
        except httpx.HTTPError:
            return {}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


# -- the requests -----------------------------------------------------------------------------------------


def question(i: int) -> str:
    """The i-th question: short, different answers (numbers vary), the same for every phase."""
    rng = random.Random(i)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    templates = [f"What is {a} plus {b}?", f"What is {a} minus {b}?", f"What is {a} times {b}?",
                 f"Which number is larger, {a} or {b}?", f"Write the number {a} in words.",
                 f"Is {a} an even number? Answer yes or no.", f"Name a word that starts with the letter "
                 f"{chr(ord('a') + a % 26)}.", f"What comes after {a} when counting?"]
    return templates[i % len(templates)]


@dataclass
class Workload:
    kind: str
    max_tokens: int

    def send(self, client, i: int):
        if self.kind == "asr":
            return client.post("/v1/audio/transcriptions", data={"model": "whisper-1"},
                               files={"file": ("question.wav", AUDIO_BYTES, "audio/wav")})
        body = {"model": LLM_MODEL if self.kind == "direct" else "tools",
                "messages": [{"role": "user", "content": question(i)}]}
        if self.kind == "direct":
            body.update(max_tokens=self.max_tokens, temperature=0)
        return client.post("/v1/chat/completions", json=body)

    @staticmethod
    def answer(response) -> str:
        data = response.json()
        if "choices" in data:
            return data["choices"][0]["message"]["content"] or ""
        return data.get("text", "")


AUDIO_BYTES = b""


@dataclass
class Phase:
    name: str
    server: str
    clients: int
    n: int = 0
    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)
    status: Counter = field(default_factory=Counter)
    retries_429: int = 0
    errors: list[str] = field(default_factory=list)
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    batches: dict = field(default_factory=dict)  # role -> [(size, seconds)]
    answers: dict = field(default_factory=dict)
    load: tuple = ()
    others: float = 0.0  # CPU seconds of every other process on the machine during the phase

    @property
    def rps(self) -> float:
        return self.n / self.wall if self.wall else 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        k = (len(xs) - 1) * q
        lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    @property
    def five_xx(self) -> int:
        return sum(c for s, c in self.status.items() if isinstance(s, int) and s >= 500)


def machine_busy_s() -> float:
    """CPU seconds every process on the machine has used (user + nice + system + irq), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_phase(server: Server, workload: Workload, indices: list[int], clients: int, name: str,
              on_done=None) -> Phase:
    """`clients` threads, each with its own keep-alive connection, take the next request index
    until none is left. A 429 is retried after its Retry-After (and counted)."""
    import httpx

    phase = Phase(name, server.label, clients, n=len(indices))
    work: queue.Queue = queue.Queue()
    for i in indices:
        work.put(i)
    lock = threading.Lock()
    before = server.stats().get("batches", {})
    cpu0, self0, busy0 = server.cpu_s(), resource.getrusage(resource.RUSAGE_SELF), machine_busy_s()
    load0 = os.getloadavg()[0]

    def worker():
        with httpx.Client(base_url=server.url, timeout=httpx.Timeout(900.0)) as client:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                start = time.perf_counter()
                while True:
                    try:
                        response = workload.send(client, i)
                    except httpx.HTTPError as exc:
                        with lock:
                            phase.status["transport"] += 1
                            phase.errors.append(f"{i}: {type(exc).__name__}: {exc}")
                        break
                    if response.status_code == 429:
                        with lock:
                            phase.retries_429 += 1
                        time.sleep(float(response.headers.get("retry-after", "1")))
                        continue
                    elapsed = time.perf_counter() - start
                    with lock:
                        phase.status[response.status_code] += 1
                        if response.status_code == 200:
                            phase.latencies.append(elapsed)
                            phase.answers[i] = workload.answer(response)
                        else:
                            phase.errors.append(f"{i}: {response.status_code} {response.text[:300]}")
                        done = sum(phase.status.values())
                    if on_done is not None:
                        on_done(done)
                    break

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"client-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall = time.perf_counter() - t0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    phase.server_cpu = server.cpu_s() - cpu0
    phase.client_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    phase.load = (load0, os.getloadavg()[0])
    phase.others = max(0.0, machine_busy_s() - busy0 - phase.server_cpu - phase.client_cpu)
    after = server.stats().get("batches", {})
    phase.batches = {role: after[role][len(before.get(role, [])):] for role in after}
    return phase


# -- reporting ----------------------------------------------------------------------------------------------


def batch_summary(phase: Phase) -> str:
    parts = []
    for role, batches in phase.batches.items():
        if not batches:
            continue
        sizes = Counter(size for size, _ in batches)
        busy = sum(s for _, s in batches)
        parts.append(f"{role}: {len(batches)} batches, sizes {dict(sorted(sizes.items()))}, "
                     f"mean {statistics.mean(size for size, _ in batches):.2f}, "
                     f"model busy {busy:.1f} s = {100 * busy / phase.wall:.0f}% of wall")
    return "; ".join(parts) or "-"


def print_phase(phase: Phase) -> None:
    other = {k: v for k, v in phase.status.items() if k != 200}
    print(f"  {phase.name:<40} {phase.rps:6.3f} req/s  wall {phase.wall:7.2f} s  p50 {phase.pct(.5):6.2f} s  "
          f"p95 {phase.pct(.95):6.2f} s  mean {statistics.mean(phase.latencies or [float('nan')]):6.2f} s  "
          f"5xx {phase.five_xx}  429 {phase.retries_429}  other {other or '-'}  "
          f"server CPU {phase.server_cpu / max(phase.n, 1):.2f} s/req  client CPU {phase.client_cpu:.1f} s  "
          f"other processes {phase.others / phase.wall:.2f} cores", flush=True)
    if any(phase.batches.values()):
        print(f"  {'':<40} {batch_summary(phase)}", flush=True)
    for error in phase.errors[:5]:
        print(f"  {'':<40} ERROR {error}", flush=True)


def by_size(phases: list[Phase], role: str) -> dict[int, float]:
    """Median seconds of one batched call, by batch size, over the phases."""
    times: dict[int, list[float]] = {}
    for phase in phases:
        for size, seconds in phase.batches.get(role, []):
            times.setdefault(size, []).append(seconds)
    return {size: statistics.median(ts) for size, ts in sorted(times.items())}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="requests per phase (0: only the soak)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the four phases (medians printed)")
    parser.add_argument("--batch-size", type=int, default=8, help="--max-batch-size of the batching server")
    parser.add_argument("--batch-wait-ms", type=float, default=None, help="its --batch-wait-ms (default: the CLI's)")
    parser.add_argument("--workload", choices=("direct", "tools", "asr"), default="direct")
    parser.add_argument("--soak", type=int, default=0, help="then N requests to the batching server, RSS sampled")
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--no-sequential", action="store_true", help="skip (a) and (a')")
    parser.add_argument("--plain", action="store_true", help="run .venv/bin/mmagent serve unchanged (no batch stats)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable for both servers (e.g. OMP_NUM_THREADS=1); repeatable")
    parser.add_argument("--variant-env", action="append", default=[], metavar="KEY=VALUE",
                        help="also (d): a third server, batching, with these environment variables (e.g. "
                        "OMP_NUM_THREADS=1), measured like (c) in every round; repeatable")
    parser.add_argument("--hog", action="store_true",
                        help="keep one core busy with another process (a Python busy loop) during the rounds: "
                        "a machine shared with other work")
    parser.add_argument("--quiet-below", type=float, default=0.25, metavar="CORES",
                        help="also summarise only the phases during which other processes used fewer cores")
    parser.add_argument("--json", type=Path, help="write every phase's figures here")
    args = parser.parse_args()

    global AUDIO_BYTES
    AUDIO_BYTES = AUDIO.read_bytes()
    workload = Workload(args.workload, args.max_tokens)
    concurrency = max(16, args.clients)
    env = dict(item.split("=", 1) for item in args.server_env)
    variant = dict(item.split("=", 1) for item in args.variant_env)
    variant_label = " ".join(f"{k}={v}" for k, v in variant.items())
    print(f"server_load: workload {args.workload} (max_tokens {args.max_tokens}), {args.requests} requests a phase, "
          f"{args.clients} clients, batching server --max-batch-size {args.batch_size}, "
          f"--max-concurrency {concurrency}, {args.repeats} rounds, soak {args.soak}, server env {env or '-'}; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)

    servers: list[Server] = []
    hogs: list[subprocess.Popen] = []
    try:
        unbatched = Server("B1", 1, concurrency, args.batch_wait_ms, args.plain, env) if args.requests else None
        batched = Server(f"B{args.batch_size}", args.batch_size, concurrency, args.batch_wait_ms, args.plain, env)
        other = Server(f"B{args.batch_size}+env", args.batch_size, concurrency, args.batch_wait_ms, args.plain,
                       {**env, **variant}) if variant and args.requests else None
        servers = [s for s in (unbatched, batched, other) if s is not None]
        for s in servers:
            s.wait_ready()
            print(f"server {s.label}: pid {s.proc.pid}, {s.url}, {' '.join(s.command[-9:])}", flush=True)

        # Warm-up: the first request loads the model(s); then a concurrent burst, so that the
        # batched paths (and any per-thread state) have run once before timing.
        for s in servers:
            t0 = time.perf_counter()
            warm = run_phase(s, workload, [10_000], 1, "warm-up 1")
            burst = run_phase(s, workload, list(range(10_001, 10_001 + args.clients)), args.clients, "warm-up burst")
            print(f"warm-up {s.label}: first request {warm.wall:.1f} s (loads the model), burst of {args.clients} "
                  f"{burst.wall:.1f} s, statuses {dict(warm.status + burst.status)}; "
                  f"RSS {s.rss_mib():.0f} MiB ({time.perf_counter() - t0:.1f} s)", flush=True)

        phases: list[Phase] = []
        indices = list(range(args.requests))
        if args.hog:
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
            hogs.append(hog)
            print(f"hog: pid {hog.pid} keeps one core busy", flush=True)
        for r in range(args.repeats if args.requests else 0):
            print(f"round {r + 1}/{args.repeats}:", flush=True)
            order = [("(a) sequential, B=1", unbatched, 1), ("(b) 16 clients, B=1", unbatched, args.clients),
                     (f"(c) 16 clients, B={args.batch_size}", batched, args.clients),
                     (f"(a') sequential, B={args.batch_size}", batched, 1)]
            if other is not None:
                order[3:3] = [(f"(d) 16 clients, B={args.batch_size}, {variant_label}", other, args.clients),
                              (f"(d') sequential, B={args.batch_size}, {variant_label}", other, 1)]
            if args.no_sequential:
                order = [o for o in order if o[2] != 1]
            if r % 2:
                order.reverse()  # interleave: what runs first in one round runs last in the next
            for name, server, clients in order:
                name = name.replace("16 clients", f"{args.clients} clients")
                phase = run_phase(server, workload, indices, clients, name)
                print_phase(phase)
                phases.append(phase)

        if phases:
            print_summary(phases, args)

        for hog in hogs:
            hog.kill()
            hog.wait()
        hogs.clear()
        soak_report = None
        if args.soak:
            soak_report = soak(batched, workload, args)

        if args.json:
            args.json.write_text(json.dumps({
                "args": {k: str(v) for k, v in vars(args).items()},
                "phases": [{"name": p.name, "server": p.server, "n": p.n, "wall": p.wall, "rps": p.rps,
                            "p50": p.pct(.5), "p95": p.pct(.95), "latencies": p.latencies,
                            "status": {str(k): v for k, v in p.status.items()}, "retries_429": p.retries_429,
                            "errors": p.errors, "server_cpu": p.server_cpu, "client_cpu": p.client_cpu,
                            "batches": p.batches, "load": p.load, "answers": p.answers,
                            "others_cores": p.others / p.wall}
                           for p in phases],
                "soak": soak_report}, indent=1))
        for s in servers:
            problems = [line for line in s.log_text().splitlines()
                        if re.search(r"ERROR|Traceback|Exception| 5\d\d ", line)]
            print(f"server {s.label} log: {len(problems)} error lines" + "".join(f"\n  {p}" for p in problems[:10]))
    except KeyboardInterrupt:
        print("interrupted: stopping the servers", flush=True)
        raise SystemExit(130) from None
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        for s in servers:
            s.stop()
        for s in servers:
            print(f"server {s.label} stopped (exit {s.proc.returncode}); log {s.log.name}", flush=True)


def print_summary(phases: list[Phase], args) -> None:
    print("\nmedians over all rounds:")
    summarise(phases)
    quiet = [p for p in phases if p.others / p.wall < args.quiet_below]
    if quiet and len(quiet) < len(phases):
        print(f"\nmedians over the phases during which other processes used < {args.quiet_below} cores "
              f"({len(quiet)} of {len(phases)}):")
        summarise(quiet)
    for server in sorted({p.server for p in phases}):
        mine = [p for p in phases if p.server == server]
        for role in sorted({r for p in mine for r in p.batches}):
            times = by_size(mine, role)
            if times:
                one = times.get(1)
                print(f"  server {server}: {role} batched call, median s by size (all rounds): " + ", ".join(
                    f"{size}: {s:.2f}" + (f" ({size * one / s:.2f}x of {size} single calls)" if one and size > 1
                                          else "") for size, s in times.items()))
    # Same answers with and without batching?
    seq = [p for p in phases if p.name.startswith("(a)")]
    if seq:
        ref = seq[0].answers
        for p in phases:
            if p is not seq[0]:
                differ = sum(1 for i, text in p.answers.items() if i in ref and ref[i] != text)
                if differ:
                    print(f"  answers of {p.name} that differ from the first (a): {differ} of {len(p.answers)}")
        print(f"  answers that differ from the first (a), all other phases: "
              f"{sum(1 for p in phases if p is not seq[0] for i, t in p.answers.items() if ref.get(i, t) != t)}")
        for i in sorted(ref)[:3]:
            print(f"    {'question.wav' if args.workload == 'asr' else repr(question(i))} -> {ref[i]!r}")


def summarise(phases: list[Phase]) -> None:
    groups: dict[str, list[Phase]] = {}
    for p in phases:
        groups.setdefault(p.name, []).append(p)
    print(f"  {'phase':<40} {'n':>2} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'mean s':>7} {'5xx':>4} {'429':>4} "
          f"{'CPU s/req':>9} {'others':>6}  batches")
    med: dict[str, float] = {}
    for name, ps in groups.items():
        rps = statistics.median(p.rps for p in ps)
        med[name.split()[0]] = rps
        roles = sorted({r for p in ps for r, b in p.batches.items() if b})
        print(f"  {name:<40} {len(ps):2d} {rps:7.3f} {statistics.median(p.pct(.5) for p in ps):7.2f} "
              f"{statistics.median(p.pct(.95) for p in ps):7.2f} "
              f"{statistics.median(statistics.mean(p.latencies or [0]) for p in ps):7.2f} "
              f"{sum(p.five_xx for p in ps):4d} {sum(p.retries_429 for p in ps):4d} "
              f"{statistics.median(p.server_cpu / p.n for p in ps):9.2f} "
              f"{statistics.median(p.others / p.wall for p in ps):6.2f}  "
              + "; ".join(f"{role}: mean size "
                          f"{statistics.mean(sz for p in ps for sz, _ in p.batches.get(role, [])):.2f}"
                          for role in roles))
    a, a2, b, c, d = (med.get(k) for k in ("(a)", "(a')", "(b)", "(c)", "(d)"))
    print("  ratios (of the medians of req/s):")
    for label, x, y, note in (("(c)/(a)  batching, concurrent / sequential", c, a, "  (target >= 1.5)"),
                              ("(c)/(b)  batching / no batching, concurrent", c, b, ""),
                              ("(b)/(a)  no batching, concurrent / sequential", b, a, ""),
                              ("(a')/(a) sequential through the batcher / without", a2, a, ""),
                              ("(d)/(c)  the variant server / batching", d, c, ""),
                              ("(d)/(a)  the variant server, concurrent / sequential", d, a, ""),
                              ("(d)/(d') the variant server, concurrent / its sequential", d, med.get("(d')"), ""),
                              ("(d')/(a) the variant server, sequential / sequential", med.get("(d')"), a, "")):
        if x and y:
            print(f"    {label:<58} {x / y:5.2f}{note}")


def soak(server: Server, workload: Workload, args) -> dict:
    """N requests with `clients` threads; RSS after every `sample_every` completed requests."""
    samples: list[tuple[int, float]] = [(0, server.rss_mib())]
    marks = set(range(args.sample_every, args.soak + 1, args.sample_every)) | {args.soak}
    lock = threading.Lock()

    def on_done(done: int) -> None:
        if done in marks:
            rss = server.rss_mib()
            with lock:
                samples.append((done, rss))
            print(f"    soak: {done} requests, server RSS {rss:.1f} MiB", flush=True)

    print(f"\nsoak: {args.soak} requests, {args.clients} clients, server {server.label} (pid {server.proc.pid}), "
          f"RSS before {samples[0][1]:.1f} MiB", flush=True)
    indices = [20_000 + i for i in range(args.soak)]
    phase = run_phase(server, workload, indices, args.clients, f"soak {args.soak}", on_done=on_done)
    time.sleep(1.0)
    samples.append((args.soak, server.rss_mib()))  # after the last responses, settled
    print_phase(phase)
    samples.sort()
    base = next((rss for done, rss in samples if done >= args.sample_every), samples[0][1])
    end = samples[-1][1]
    peak = max(rss for _, rss in samples)
    growth = end - base
    print(f"  RSS: before {samples[0][1]:.1f} MiB, after {args.sample_every} requests {base:.1f} MiB, "
          f"end {end:.1f} MiB, peak {peak:.1f} MiB; growth after warm-up {growth:+.1f} MiB "
          f"({100 * growth / base:+.1f}%) -> {'flat' if abs(growth) / base < 0.05 else 'NOT flat'} (< 5%)")
    return {"samples": samples, "base": base, "end": end, "peak": peak, "growth_mib": growth,
            "growth_pct": 100 * growth / base, "rps": phase.rps, "p50": phase.pct(.5), "p95": phase.pct(.95),
            "status": {str(k): v for k, v in phase.status.items()}, "retries_429": phase.retries_429,
            "batches": {role: dict(Counter(size for size, _ in b)) for role, b in phase.batches.items()}}


if __name__ == "__main__":
    main()
