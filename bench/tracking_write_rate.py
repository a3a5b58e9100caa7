"""Write rate of an ``mlflow server`` as a search's tracking writes load it: runs/s and metric batches/s
with 1, 4 and 16 concurrent writer processes, on SQLite and (when ``initdb`` is installed) on
PostgreSQL, side by side in one run.

The server is ``deployments/mlflow-server.sh`` as shipped (``--serve-artifacts``, ``MLFLOW_WORKERS``
server processes: the script's 4, at most one per CPU here), started by this bench on 127.0.0.1
with a backend store in a temp dir: a SQLite file, and a PostgreSQL cluster of its own (``initdb``
+ ``pg_ctl`` on 127.0.0.1, as tests/deployments/test_mlflow_server.py starts it). Clients are
:class:`mlflow.MlflowClient` over REST, each writer its own process (forked after ``import mlflow``), all released together by a
barrier. Two phases, each ``--seconds`` long, every writer as fast as it can:

- **runs**: what one trial's run costs the store outside its epochs: ``create_run`` (with its
  ``mlflow.parentRunId`` and dlops tags), one ``log_batch`` of 12 params, ``set_terminated``
  (3 requests). Figure: runs/s, all writers together.
- **batches**: one epoch of one trial: ``log_batch`` of 8 metrics at ``step = epoch`` into a run of
  the writer's own. Figure: metric batches/s (8 metrics each), all writers together.

After the server has settled (its processes, MLflow 3's job runner among them, under 0.05 cores
for 3 s; at most 180 s) and a warm-up (the largest writer count for up to 3 s, not counted), each
configuration runs ``--rounds`` times (round 1 in the order 1, 4, 16 writers, round 2 in the
reverse order, and so on). The table gives every round's figure and the mean, the latency
quantiles (ms per call, p50 / p95) of the last round, and the CPU time (ms) that the server's
processes (and PostgreSQL's) spent per run or batch (Linux /proc, read at the barriers between
phases): 1000 / that is what one server core sustains when nothing else waits, a figure less tied
to this machine's load. Calls that raise (after the client's own retries) are counted as errors
and not as work. Everything runs on this machine: the writers, the server and the database share
its cores, so the figures are a floor for a server on its own host.

The LAST line printed is one JSON object. The measured phases take 2 backends x 3 writer counts x
2 rounds x 2 phases x 6 s = 144 s; the rest is mostly the servers' start-up (2-3 min each here at
load average 35, with 2 cores for 7 engineers; not measured on a quiet machine).
Usage: .venv/bin/python bench/tracking_write_rate.py [--seconds 6] [--rounds 2] [--writers 1,4,16]
       [--server-workers N] [--no-postgres]
"""

from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
SERVER_SH = REPO / "deployments" / "mlflow-server.sh"
N_PARAMS, N_METRICS = 12, 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Optional[Path]:
    """The folder of ``initdb`` / ``pg_ctl``: the Debian package's, else the first on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def _as_postgres() -> list[str]:
    """initdb refuses to run as root: run PostgreSQL's commands as the package's ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class Postgres:
    """A PostgreSQL cluster of its own in a temp dir, listening on 127.0.0.1 only."""

    def __init__(self, pg: Path) -> None:
        self.pg = pg
        self.dir = Path(tempfile.mkdtemp(prefix="dlops-bench-pg-"))
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        port = free_port()
        self._run("initdb", "-D", self.dir / "data", "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self._run("pg_ctl", "-D", self.dir / "data", "-l", self.dir / "log", "-w", "-t", "60",
                  "-o", f"-h 127.0.0.1 -p {port} -k {self.dir}", "start")
        self.port = port

    def _run(self, tool: str, *args: Any) -> None:
        subprocess.run(_as_postgres() + [str(self.pg / tool)] + [str(a) for a in args], check=True,
                       capture_output=True, text=True, timeout=120)

    def new_db(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres", name)
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def postmaster_pid(self) -> int:
        return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        subprocess.run(_as_postgres() + [str(self.pg / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w",
                                         "stop"], capture_output=True, timeout=120)
        shutil.rmtree(self.dir, ignore_errors=True)


class Server:
    """``deployments/mlflow-server.sh`` on ``db_uri``, in its own process group."""

    def __init__(self, db_uri: str, workdir: Path, workers: int) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, MLFLOW_DB_URI=db_uri, MLFLOW_ARTIFACTS=(workdir / "artifacts").as_uri(),
                   MLFLOW_PORT=str(self.port), MLFLOW_WORKERS=str(workers), MLFLOW_HOST="127.0.0.1")
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        # uvicorn (mlflow server's default) restarts a worker that does not answer its health check
        # in 5 s; on a loaded machine a worker importing MLflow takes longer, and is restarted forever
        env.setdefault("UVICORN_TIMEOUT_WORKER_HEALTHCHECK", "120")
        self.log = open(workdir / "server.log", "w")
        self.proc = subprocess.Popen(["bash", str(SERVER_SH)], cwd=workdir, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.time()
        try:
            while time.time() - t0 < 600:  # a loaded machine takes minutes to start the server's workers
                if self.proc.poll() is not None:
                    raise RuntimeError((workdir / "server.log").read_text()[-3000:])
                try:
                    if urllib.request.urlopen(self.uri + "/health", timeout=2).status == 200:
                        self.start_s = time.time() - t0
                        return
                except OSError:
                    time.sleep(0.5)
            raise RuntimeError("the MLflow server did not answer /health in 600 s")
        except BaseException:  # SystemExit on SIGTERM too: leave no server behind
            self.stop()
            raise

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()


def writer(uri: str, experiment_id: str, parent_id: str, seconds: float, barrier: Any, out: Any, idx: int) -> None:
    """One writer process: the two phases, each ``seconds`` long; puts its counts and latencies (s)."""
    import logging

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "View run ..." line per ended run
    client = MlflowClient(tracking_uri=uri)
    tags = {"mlflow.parentRunId": parent_id, "dlops.kind": "trial", "dlops.trial_id": f"w{idx}"}
    own = client.create_run(experiment_id, tags=tags, run_name=f"writer-{idx}").info.run_id  # warm: connection
    res: dict[str, Any] = {}
    for phase in ("runs", "batches"):
        barrier.wait(timeout=900)  # with the parent, which reads the server's CPU time at each barrier
        lat, errors, n = [], 0, 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t = time.perf_counter()
            try:
                if phase == "runs":
                    rid = client.create_run(experiment_id, tags={**tags, "dlops.trial_id": f"w{idx}-{n}"}).info.run_id
                    client.log_batch(rid, params=[Param(f"p{k}", str(k * 0.1)) for k in range(N_PARAMS)])
                    client.set_terminated(rid, "FINISHED")
                else:
                    ts = int(time.time() * 1000)
                    client.log_batch(own, metrics=[Metric(f"m/{k}", 0.5 + k, ts, n) for k in range(N_METRICS)])
                n += 1
                lat.append(time.perf_counter() - t)
            except Exception:  # noqa: BLE001  (counted: a write the server refused after the client's retries)
                errors += 1
        res[phase] = {"n": n, "errors": errors, "elapsed": time.perf_counter() - t0, "lat": lat}
    barrier.wait(timeout=900)
    client.set_terminated(own, "FINISHED")
    out.put(res)


def cpu_seconds(roots: list[int]) -> float:
    """User + system CPU time (s) of the processes ``roots`` and their descendants alive now, from
    Linux's ``/proc/PID/stat`` (fields 14-15, clock ticks); NaN where there is no ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return float("nan")
    parent, ticks = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state is field 3
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid] = int(fields[1])
        ticks[pid] = int(fields[11]) + int(fields[12])
    keep = set(r for r in roots if r in ticks)
    grew = True
    while grew:
        more = {p for p, pp in parent.items() if pp in keep and p not in keep}
        keep |= more
        grew = bool(more)
    return sum(ticks[p] for p in keep) / os.sysconf("SC_CLK_TCK")


def settle(pids: list[int], idle_cores: float = 0.05, window_s: float = 3.0, max_s: float = 180.0) -> float:
    """Wait until the processes ``pids`` (and descendants) use under ``idle_cores`` of CPU over
    ``window_s`` seconds, at most ``max_s`` s; returns the last window's use (cores)."""
    t0 = time.time()
    while True:
        c0 = cpu_seconds(pids)
        time.sleep(window_s)
        use = (cpu_seconds(pids) - c0) / window_s
        if use < idle_cores or time.time() - t0 > max_s:
            return use


def measure(uri: str, n_writers: int, seconds: float, server_pids: list[int]) -> dict[str, Any]:
    """``n_writers`` writer processes at once against ``uri``; totals per phase, and the CPU time
    the server (and its database, among ``server_pids``) spent per call."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"bench-{n_writers}-{time.time_ns()}")
    parent = client.create_run(exp, run_name="search").info.run_id
    ctx = mp.get_context("fork")  # mlflow is imported once, in this process
    barrier, out = ctx.Barrier(n_writers + 1), ctx.Queue()
    procs = [ctx.Process(target=writer, args=(uri, exp, parent, seconds, barrier, out, i), daemon=True)
             for i in range(n_writers)]
    for p in procs:
        p.start()
    cpu = []
    for _ in range(3):  # phase runs starts, phase batches starts, phase batches ended
        barrier.wait(timeout=seconds * 2 + 600)
        cpu.append(cpu_seconds(server_pids))
    results = [out.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(30)
    client.set_terminated(parent, "FINISHED")
    got: dict[str, Any] = {}
    for k, phase in enumerate(("runs", "batches")):
        n = sum(r[phase]["n"] for r in results)
        wall = max(r[phase]["elapsed"] for r in results)
        lat = sorted(x for r in results for x in r[phase]["lat"])
        q = (lambda f: 1000 * lat[min(len(lat) - 1, int(f * len(lat)))]) if lat else (lambda f: float("nan"))
        got[phase] = {"per_s": n / wall, "errors": sum(r[phase]["errors"] for r in results),
                      "p50_ms": q(0.5), "p95_ms": q(0.95),
                      "server_cpu_ms": 1000 * (cpu[k + 1] - cpu[k]) / max(n, 1)}
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each phase, s")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--writers", default="1,4,16")
    ap.add_argument("--server-workers", type=int, default=min(4, os.cpu_count() or 1),
                    help="MLFLOW_WORKERS of the server (default: the script's 4, at most one per CPU)")
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    levels = [int(x) for x in args.writers.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on kill
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    import mlflow  # noqa: F401  (imported before the writers fork)

    work = Path(tempfile.mkdtemp(prefix="dlops-bench-tracking-"))
    backends: dict[str, str] = {"sqlite": f"sqlite:///{work / 'mlflow.db'}"}
    pg = pg_bin()
    postgres = None
    if pg and not args.no_postgres:
        postgres = Postgres(pg)
        backends["postgresql"] = postgres.new_db("mlflow")
    print(f"backends: {', '.join(backends)}{'' if 'postgresql' in backends else ' (no initdb found: SQLite only)'}; "
          f"server workers {args.server_workers}; {args.seconds:g} s per phase; {args.rounds} rounds; "
          f"{os.cpu_count()} CPUs shared by writers, server and database", flush=True)
    table: dict[str, dict[int, list[dict[str, Any]]]] = {b: {n: [] for n in levels} for b in backends}
    t_start = time.time()
    try:
        for backend, db in backends.items():
            d = work / backend
            d.mkdir()
            server = Server(db, d, args.server_workers)
            t_up = time.time()
            print(f"  {backend}: server up in {server.start_s:.0f} s", flush=True)
            pids = [server.proc.pid] + ([postgres.postmaster_pid()] if backend == "postgresql" and postgres else [])
            try:
                # not counted: the server's start-up work after /health answers (MLflow 3 also starts
                # a job runner process, mlflow.server.jobs._job_runner) and every worker's first calls.
                # In runs without this, round 1 was 5-15x slower than round 2, with ~10x the server
                # CPU per call (which of the two caused it was not told apart)
                idle = settle(pids)
                print(f"  {backend}: server idle at {idle:.2f} cores after {time.time() - t_up:.0f} s", flush=True)
                measure(server.uri, max(levels), min(args.seconds, 3.0), pids)
                for r in range(args.rounds):
                    for n in (levels if r % 2 == 0 else levels[::-1]):
                        got = measure(server.uri, n, args.seconds, pids)
                        table[backend][n].append(got)
                        print(f"  {backend:10s} round {r + 1} writers {n:2d}: {got['runs']['per_s']:7.1f} runs/s  "
                              f"{got['batches']['per_s']:7.1f} batches/s  server CPU {got['runs']['server_cpu_ms']:.0f}"
                              f" ms/run {got['batches']['server_cpu_ms']:.0f} ms/batch  errors {got['runs']['errors']}+"
                              f"{got['batches']['errors']}", flush=True)
            finally:
                server.stop()
    finally:
        if postgres:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"{'backend':10s} {'writers':>7s} | {'runs/s (rounds)':>22s} {'mean':>7s} {'p50/p95 ms':>13s} {'cpu ms':>6s} | "
          f"{'batches/s (rounds)':>22s} {'mean':>7s} {'p50/p95 ms':>13s} {'cpu ms':>6s} | errors")
    summary: dict[str, Any] = {}
    for backend in backends:
        for n in levels:
            rows = table[backend][n]
            line = f"{backend:10s} {n:7d} |"
            for phase in ("runs", "batches"):
                vals = [x[phase]["per_s"] for x in rows]
                mean = statistics.fmean(vals)
                last = rows[-1][phase]
                cpu_ms = statistics.fmean(x[phase]["server_cpu_ms"] for x in rows)
                line += (f" {' '.join(f'{v:.1f}' for v in vals):>22s} {mean:7.1f} "
                         f"{last['p50_ms']:6.0f}/{last['p95_ms']:<6.0f} {cpu_ms:6.1f} |")
                summary[f"{backend}_{phase}_per_s_w{n}"] = round(mean, 2)
                summary[f"{backend}_{phase}_p95_ms_w{n}"] = round(last["p95_ms"], 1)
                summary[f"{backend}_{phase}_server_cpu_ms_w{n}"] = round(cpu_ms, 2)
            errors = sum(x[p]["errors"] for x in rows for p in ("runs", "batches"))
            summary[f"{backend}_errors_w{n}"] = errors
            print(line + f" {errors}")
    lo, hi = levels[0], levels[-1]
    print()
    for backend in backends:
        for phase in ("runs", "batches"):
            ratio = summary[f"{backend}_{phase}_per_s_w{hi}"] / summary[f"{backend}_{phase}_per_s_w{lo}"]
            summary[f"{backend}_{phase}_scaling_w{hi}_vs_w{lo}"] = round(ratio, 2)
            print(f"{backend}: {phase}/s with {hi} writers / with {lo}: {ratio:.2f}x")
    for backend in backends:  # what one server core sustains, from the CPU per call (no lock waits)
        for phase in ("runs", "batches"):
            cpu_ms = summary[f"{backend}_{phase}_server_cpu_ms_w{hi}"]
            summary[f"{backend}_{phase}_per_server_core_s"] = round(1000 / cpu_ms, 1) if cpu_ms > 0 else None
            print(f"{backend}: server{' + database' if backend != 'sqlite' else ''} CPU {cpu_ms:.1f} ms per "
                  f"{'run' if phase == 'runs' else 'batch'} with {hi} writers: ~{1000 / max(cpu_ms, 1e-9):.0f} {phase}/s per server core")
    if "postgresql" in backends:
        for phase in ("runs", "batches"):
            for n in levels:
                ratio = summary[f"postgresql_{phase}_per_s_w{n}"] / summary[f"sqlite_{phase}_per_s_w{n}"]
                summary[f"pg_vs_sqlite_{phase}_w{n}"] = round(ratio, 2)
            print(f"PostgreSQL / SQLite {phase}/s at " + ", ".join(
                f"{n} writers {summary[f'pg_vs_sqlite_{phase}_w{n}']:.2f}x" for n in levels))
    summary.update({"seconds_per_phase": args.seconds, "rounds": args.rounds, "server_workers": args.server_workers,
                    "cpus": os.cpu_count(), "backends": list(backends), "wall_s": round(time.time() - t_start, 1)})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
