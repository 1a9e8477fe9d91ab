"""The ``sim`` command (click). Bad input ends in one line on stderr and exit code 1."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .errors import SimError
from .planning.milp_stop import DEFAULT_NODE_LIMIT, DEFAULT_SAFETY_TIME_LIMIT_S
from .runs.engine_profiles import ENGINE_PROFILES
from .units import parse_time


class _Time(click.ParamType):
    name = "TIME"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_time(value)
        except SimError as e:
            self.fail(str(e), param, ctx)


TIME = _Time()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="heterosim")
def cli():
    """Simulate LLM serving on heterogeneous GPU clusters."""


def run_options(f):
    """The options of ``sim run`` (shared with commands that run simulations)."""
    opts = [
        click.option("--cluster", default="helix-single24", show_default=True, help="preset name or TOML file"),
        click.option("--model", default="llama2-70b", show_default=True, help="catalog name, TOML or config.json"),
        click.option("--policy", default=None, help="policy name (planner + scheduler); default: separate"),
        click.option("--placement", default=None, help="override the policy's planner"),
        click.option("--scheduler", default=None, help="override the policy's scheduler"),
        click.option("--trace", default=None,
                     help="trace file or name (azure_conv, azure_code), synthetic:conv / synthetic:code, or Helix's own "
                          "workload protocol helix:conv / helix:code"),
        click.option("--mode", type=click.Choice(["online", "offline"]), default="online", show_default=True),
        click.option("--rate", type=float, default=None, help="offered requests/s (online); default: the trace's"),
        click.option("--token-rate", type=float, default=None, help="offered input+output tokens/s instead of --rate"),
        click.option("--duration", type=TIME, default=600.0, show_default=True, help="measurement window"),
        click.option("--warmup", type=TIME, default=60.0, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--trace-start", type=TIME, default=0.0, show_default=True,
                     help="online, a trace file: start the window this far into the (rescaled) trace"),
        click.option("--profiles", multiple=True, help="folder of measured latency tables (ours or Helix's layout)"),
        click.option("--roofline-only", is_flag=True, help="ignore measured tables"),
        click.option("--max-inflight", type=int, default=None,
                     help="offline: requests in flight (default: admit while KV allows)"),
        click.option("--engine-profile", type=click.Choice(list(ENGINE_PROFILES)), default="runtime",
                     show_default=True,
                     help="engine: the serving software modelled, as defaults for the five options below: our "
                          "runtime's rules, or Helix's real prototype (per-request transfers, host copies helix, "
                          "host scheduling helix, swap; within 7 %% of its six measured points)"),
        click.option("--granularity", type=click.Choice(["node", "layer"]), default=None, show_default="node",
                     help="engine: a node step runs all its layers (node) or one layer, round robin over the "
                          "layers with work (layer, as Helix's simulator)"),
        click.option("--transfers", type=click.Choice(["batched", "per-request"]), default=None,
                     show_default="batched", help="engine: a node's outputs leave as one transfer per next hop, or one per "
                                             "request (as Helix's simulator and prototype)"),
        click.option("--host-copies", type=click.Choice(["none", "helix"]), default=None, show_default="none",
                     help="engine: a node step also copies its inputs on the host (helix: concatenation at "
                          "4 GB/s and host-to-device at 5 GB/s, as Helix's simulator and prototype)"),
        click.option("--host-scheduling", type=click.Choice(["none", "helix"]), default=None, show_default="none",
                     help="engine: host time per sequence per layer of a node step (helix: 25 us, Helix's "
                          "prototype, which runs vLLM's scheduler once per layer; fitted to its measurements)"),
        click.option("--preemption", type=click.Choice(["recompute", "swap"]), default=None,
                     show_default="recompute", help="engine: a node whose KV is full frees a request everywhere for "
                                             "recompute (vLLM's default) or swaps its KV there to the host "
                                             "(swap, as Helix's prototype)"),
        click.option("--feeder", type=click.Choice(["closed", "helix"]), default="closed", show_default=True,
                     help="offline: refill at once (closed) or Helix's feeder (20 queries 0.1 s apart, then one "
                          "more after each finished prompt or query while the fullest node's expected KV <= 0.8)"),
        click.option("--context-rule", type=click.Choice(["reject", "truncate", "drop"]), default="reject",
                     show_default=True, help="requests longer than the model's context"),
        click.option("--slo-ttft", type=TIME, default=None, help="goodput SLO on time to first token"),
        click.option("--slo-tpot", type=TIME, default=None, help="goodput SLO on time per output token"),
        click.option("--max-seqs", type=int, default=256, show_default=True, help="requests per node iteration"),
        click.option("--max-tokens", type=int, default=4096, show_default=True, help="tokens per node iteration"),
        click.option("--gpu-memory-utilisation", type=float, default=0.9, show_default=True),
        click.option("--kv-memory", type=click.Choice(["vllm", "helix"]), default="vllm", show_default=True,
                     help="a node's KV room: its memory share minus the weights it holds (vllm), or the vLLM block "
                          "counts of Helix's prototype per GPU type and layers held, with Helix's layer limits "
                          "(helix; Llama-2-70B and LLaMA-30B on Helix's GPU types)"),
        click.option("--verify-candidates", is_flag=True,
                     help="planner: serve every candidate (helix-milp's variants) and the baselines' placements "
                          "(separate, swarm, petals) with the policy's scheduler in a short offline run, and keep "
                          "the one that serves the most"),
        click.option("--verify-top", type=click.IntRange(min=0), default=None,
                     help="helix-milp: serve the N candidates its serving model ranks highest in a short offline run "
                          "and keep the one that serves the most (default: 3, runs.candidates.VERIFY_TOP; 0: keep "
                          "the model's pick); hexgen2: any N > 0 also serves DistServe's plan, 0 keeps the paper's"),
        click.option("--no-predict", "predict", is_flag=True, flag_value=False, default=True,
                     help="skip the serving model's prediction (predicted_* fields; saves up to a few seconds a run "
                          "on large clusters)"),
        click.option("--partial-inference", is_flag=True, help="allow routes that skip held layers"),
        click.option("--objective", type=click.Choice(["depth-aware", "paper", "serving"]), default="depth-aware",
                     show_default=True, help="helix-milp: T(k) with a per-hop overhead, Helix's own (paper), or "
                                             "from the serving model with a fixed-point hop time (serving)"),
        click.option("--hop-overhead", type=TIME, default=None, help="helix-milp depth-aware: time per hop"),
        click.option("--time-limit", type=TIME, default=DEFAULT_SAFETY_TIME_LIMIT_S, show_default=True,
                     help="MILP wall-clock limit: a safety net behind --milp-nodes (reaching it is reported)"),
        click.option("--gap", "mip_gap", type=float, default=1e-4, show_default=True, help="MILP relative gap"),
        click.option("--milp-nodes", type=click.IntRange(min=0), default=DEFAULT_NODE_LIMIT, show_default=True,
                     help="MILP: stop each solve after this many branch-and-bound nodes (a machine-independent "
                          "stop; --time-limit stays a safety limit); 0: stop by --time-limit alone"),
        click.option("--arrival", type=click.Choice(["poisson", "gamma"]), default="poisson",
                     help="synthetic traces: arrival process"),
        click.option("--burstiness", type=float, default=1.0, help="gamma arrivals: coefficient of variation"),
        click.option("--workload-class", type=click.Choice(["HPHD", "HPLD", "LPHD", "LPLD"], case_sensitive=False),
                     default=None,
                     help="HexGen-2 class: heavy/light prefill x heavy/light decode (split at the trace's medians)"),
        click.option("--length-scale", type=float, default=1.0, show_default=True,
                     help="multiply every request's input and output tokens (a small model on a CPU: 0.1)"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@cli.command()
@run_options
@click.option("--out", type=click.Path(file_okay=False), default=None, help="folder for CSV, JSON and plots")
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", is_flag=True, help="no progress bar")
def run(out, no_plots, quiet, **kw):
    """Simulate a cluster serving a workload and print the summary."""
    from .metrics.report import format_summary
    from .runs.execute import execute, spec_from_options, write_outputs

    spec = spec_from_options(kw)
    spec.progress = not quiet
    result = execute(spec)
    click.echo(result.placement.describe())
    click.echo(format_summary(result.summary))
    if out:
        paths = write_outputs(result, Path(out), plots=not no_plots)
        click.echo(f"wrote {', '.join(p.name for p in paths)} to {out}")


def _fault_option(text):
    """``kill:NODE@SECONDS`` or ``hang:NODE@SECONDS`` (tests of the runtime's fault handling)."""
    if not text:
        return None
    try:
        kind, rest = text.split(":", 1)
        node, at = rest.split("@", 1)
        return kind, int(node), float(at)
    except ValueError:
        raise SimError(f"--inject-fault: expected KIND:NODE@SECONDS (kill:1@5), got '{text}'") from None


def _runtime_runs(spec, command: str) -> None:
    """Refuse engine-only options for a live run: the runtime has none of them (it batches transfers per next
    hop, schedules once per step and recomputes on preemption), so a live run would silently differ."""
    from .runs.spec import engine_options_set

    off = engine_options_set(spec)
    if off:
        raise SimError(f"sim {command}: the runtime does not model {', '.join(off)} (engine-only options for "
                       "`sim run`); leave them at their defaults")


def _require_torch(command: str) -> None:
    """One line instead of a worker's traceback when the runtime's torch is not installed."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        raise SimError(f"sim {command} runs real workers and needs torch, which is not installed: "
                       "run `make install-torch` (or pip install -e '.[gpu]')")


@cli.command("live")
@run_options
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16"]), default=None,
              help="weights and activations (default: float32 on the CPU, float16 on GPUs, as the profiler)")
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads per worker")
@click.option("--slots", type=int, default=256, show_default=True, help="KV slots (resident requests) per worker")
@click.option("--weights", type=click.Path(exists=True), default=None,
              help="safetensors checkpoint (file or folder, Hugging Face names); default: random weights")
@click.option("--data-backend", type=click.Choice(["auto", "gloo", "nccl"]), default="auto", show_default=True,
              help="activations between workers: NCCL when every worker has a GPU, else gloo")
@click.option("--shape-links", is_flag=True,
              help="hold transfers as the cluster's links would (a slow network on one machine)")
@click.option("--hang-timeout", type=TIME, default=60.0, show_default=True,
              help="a worker silent this long inside an iteration is a fault")
@click.option("--inject-fault", default=None, hidden=True, help="tests: kill:NODE@SECONDS or hang:NODE@SECONDS")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="folder for requests.csv, summary.json, plots")
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", is_flag=True, help="no progress bar")
def live(device, dtype, threads, slots, weights, data_backend, shape_links, hang_timeout, inject_fault, out, no_plots,
         quiet, **kw):
    """Serve the workload on real workers (torch) with the simulator's placement and scheduler; print the summary.

    One worker process per node holding layers, started here (or, under torchrun, one rank per machine:
    rank 0 coordinates). Same options and outputs as `sim run`.
    """
    import os

    if "RANK" in os.environ and os.environ.get("RANK") != "0" and "WORLD_SIZE" in os.environ:
        from runtime.worker import main as worker_main  # under torchrun: this rank is a worker

        sys.exit(worker_main())
    _require_torch("live")
    from runtime.launch import LiveOptions, run_live, write_live

    from .metrics.report import format_summary
    from .runs.execute import spec_from_options

    spec = spec_from_options(kw)
    spec.progress = not quiet
    _runtime_runs(spec, "live")
    opts = LiveOptions(device, dtype, threads, slots, weights, data_backend, shape_links, hang_timeout,
                       _fault_option(inject_fault))
    result = run_live(spec, opts)
    click.echo(result.coordinator.placement.describe())
    click.echo(format_summary(result.summary))
    if out:
        paths = write_live(result, Path(out), plots=not no_plots)
        click.echo(f"wrote {', '.join(p.name for p in paths)} to {out}")
    if result.error:
        raise SimError(result.error)


@cli.command("validate")
@click.argument("labels", nargs=-1, metavar="[POLICY...]")
@run_options
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True, help="CPU threads per worker (and when profiling)")
@click.option("--suite/--single", default=True, show_default=True,
              help="offline (closed loop, --max-inflight or 16 in flight) and online at 0.25, 0.8 and 1.3x the "
                   "tokens/s served offline; --single: only the run the options describe")
@click.option("--calibrate/--no-calibrate", default=True, show_default=True,
              help="first serve each policy live on a held-out slice (seed + 1, the next trace window), fit "
                   "latency tables to its iterations and simulate with them (the profiled tables' figures beside)")
@click.option("--out", type=click.Path(file_okay=False), default="results/validate", show_default=True)
@click.option("--quiet", is_flag=True, help="no progress bars")
def validate_cmd(labels, device, threads, suite, calibrate, out, quiet, **kw):
    """Serve the workload live on this machine and simulate it; print simulated against measured.

    POLICY... default: random helix. Profiles this machine first unless --profiles is given. Use the
    options of `sim run` for the cluster (e.g. cpu2), model, trace and window; by default the loads are
    the suite's (offline and three online loads), each row says which tables it was simulated with and
    whether the run is held out from the calibration.
    """
    _require_torch("validate")
    from .runs.execute import spec_from_options
    from .runs.validate import format_rows, validate

    spec = spec_from_options(kw)
    spec.progress = not quiet
    _runtime_runs(spec, "validate")
    rows = validate(spec, list(labels) or ["random", "helix"], Path(out), device=device, threads=threads,
                    echo=lambda line: click.echo(line, err=True), suite=suite, calibrate=calibrate)
    click.echo(format_rows(rows))
    click.echo(f"wrote validation.csv, validation.png and one folder per policy to {out}")


@cli.command("compare")
@click.argument("labels", nargs=-1, required=True, metavar="POLICY...")
@run_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="folder for compare.csv, the figures and one folder per run")
@click.option("--rates", default=None, metavar="R1,R2,...", help="load sweep: comma-separated requests/s (online)")
@click.option("--jobs", type=int, default=None, help="parallel runs (default: one per run, at most the CPUs; 1: in-process)")
@click.option("--no-plots", is_flag=True)
@click.option("--quiet", is_flag=True, help="no per-run lines or placements, only the table")
def compare_cmd(labels, out, rates, jobs, no_plots, quiet, **kw):
    """Run POLICY... (names or PLANNER+SCHEDULER) on the same cluster, model, workload and seed; compare them.

    --placement / --scheduler override that part of every policy (an ablation).
    """
    from .runs.compare import run_compare

    run_compare(labels, kw, rates=rates, jobs=jobs, out=Path(out) if out else None, plots=not no_plots, quiet=quiet,
                echo=click.echo, warn=lambda line: click.echo(line, err=True))


@cli.command("plan")
@run_options
@click.option("--capacities", type=click.Path(dir_okay=False), default=None,
              help="plan from node/link capacities in Helix's MILP-input JSON instead of a cluster")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the placement JSON here")
def plan_cmd(capacities, as_json, out, **kw):
    """Choose (or, with --placement FILE, evaluate) a placement and print its max-flow bound."""
    import json

    from .runs.plan import plan_from_capacities, plan_from_spec
    from .runs.execute import spec_from_options

    if capacities:
        rep = plan_from_capacities(capacities, kw.get("placement"), time_limit=kw["time_limit"], mip_gap=kw["mip_gap"],
                                   node_limit=kw.get("milp_nodes") or None)
    else:
        if not kw.get("policy") and not kw.get("placement"):
            kw["policy"] = "helix"
        rep, _ = plan_from_spec(spec_from_options(kw))
    doc = json.dumps(rep.as_json(), indent=2, default=str)
    click.echo(doc if as_json else rep.format())
    if out:
        Path(out).write_text(doc + "\n")
        if not as_json:
            reuse = "" if getattr(rep, "groups", None) else f" (use it with: sim run --placement {out})"
            click.echo(f"wrote {out}{reuse}")


@cli.group(invoke_without_command=True)
@click.pass_context
def clusters(ctx):
    """List the preset clusters (show NAME prints one; import FILE.ini converts Helix's format)."""
    if ctx.invoked_subcommand is None:
        from .cluster.model import list_presets

        for name, desc in list_presets():
            click.echo(f"{name:<16} {desc}")


@clusters.command("show")
@click.argument("name")
@click.option("--toml", "as_toml", is_flag=True, help="print the cluster as TOML")
def clusters_show(name, as_toml):
    """Print one cluster (preset name or TOML file)."""
    from .cluster.model import load_cluster

    c = load_cluster(name)
    click.echo(c.to_toml() if as_toml else c.describe())


@clusters.command("import")
@click.argument("ini", type=click.Path(dir_okay=False))
@click.option("--machine-profiles", type=click.Path(dir_okay=False), default=None)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="write the TOML here")
def clusters_import(ini, machine_profiles, output):
    """Convert a Helix INI cluster file to our TOML."""
    from .cluster.helix_ini import import_helix_ini

    text = import_helix_ini(Path(ini), Path(machine_profiles) if machine_profiles else None)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("gpu")
@click.argument("model")
@click.option("--profiles", multiple=True, help="folder of measured latency tables")
def costs(gpu, model, profiles):
    """Per-layer latency of MODEL on GPU (e.g. T4x4): measured against roofline."""
    from .costs.compare import compare, format_comparison
    from .catalog.gpus import parse_machine
    from .catalog.models import load_model
    from .runs.execute import RunSpec, profile_dirs

    dirs = profile_dirs(RunSpec(profiles=list(profiles)))
    df = compare(parse_machine(gpu), load_model(model), dirs)
    click.echo(format_comparison(df))


@cli.command()
@click.argument("gpu", required=False)
@click.option("--model", "models", multiple=True, help="fit only to tables of this model (repeatable)")
@click.option("--profiles", multiple=True, help="folder of measured latency tables (repeatable)")
@click.option("--from-live", "live_dirs", multiple=True, type=click.Path(file_okay=False),
              help="fit latency tables to the iterations of this live run (a `sim live --out` folder; repeatable, "
                   "pooled) instead of refitting GPU's roofline")
@click.option("--out", type=click.Path(), default=None,
              help="calibration file to write or update [default: FIRST_PROFILES_DIR/calibration.json, "
                   "else profiler/tables/calibration.json]; with --from-live: the profiles folder to write "
                   "[default: results/calibrated]")
def calibrate(gpu, models, profiles, live_dirs, out):
    """Refit GPU's roofline efficiency factors (e.g. L40S, or L4x2's GPU) to its measured tables, or (--from-live)
    fit latency tables to what a live run measured.

    Later runs whose profiles folders include the file use them for GPU and for GPUs of its
    family that have no calibration or fitted factors of their own. Tables fitted --from-live are used by
    runs given --profiles OUT; they record the runs they were fitted on, and `sim validate` says whether its
    runs are held out from them.
    """
    if live_dirs:
        if gpu or models or profiles:
            raise SimError("sim calibrate --from-live takes only the run folders and --out")
        from .costs.live_fit import calibrate_from_live, format_fits

        fits, written = calibrate_from_live(live_dirs, Path(out or "results/calibrated"))
        click.echo(format_fits(fits))
        click.echo(f"wrote {', '.join(map(str, written))}; use it with --profiles {out or 'results/calibrated'}")
        return
    if not gpu:
        raise SimError("sim calibrate: name a GPU (e.g. L40S) or give --from-live RUN_DIR")
    from .costs.calibrate import CALIBRATION_FILE, calibrate as fit_one, format_result, read_notes, write_calibration
    from .catalog.gpus import parse_machine
    from .catalog.models import load_model
    from .runs.execute import REPO_PROFILES, RunSpec, profile_dirs

    spec = parse_machine(gpu).gpu
    dirs = profile_dirs(RunSpec(profiles=list(profiles)))
    result = fit_one(spec, dirs, [load_model(m) for m in models])
    path = Path(out) if out else (Path(profiles[0]) if profiles else REPO_PROFILES) / CALIBRATION_FILE
    write_calibration(path, spec.name, result.entry())
    click.echo(format_result(result))
    click.echo(f"wrote {path}")
    for note in read_notes(path, spec.name, profile_dirs(RunSpec(profiles=list(profiles)))):  # now with the file
        click.echo(note)


@cli.command()
def gpus():
    """List the GPU catalog."""
    from .catalog.gpus import GPUS

    click.echo(f"{'gpu':<11}{'TFLOPS':>8}{'mem GB':>8}{'GB/s':>7}{'NVLink':>8}{'TDP W':>7}{'$/h':>7}  source")
    for g in GPUS.values():
        price = f"{g.price_per_hour:.2f}" if g.price_per_hour is not None else "n/a"
        click.echo(f"{g.name:<11}{g.fp16_flops / 1e12:8.0f}{g.memory_bytes / 1e9:8.0f}{g.mem_bandwidth / 1e9:7.0f}"
                   f"{g.nvlink_bandwidth / 1e9:8.0f}{g.tdp_w:7.0f}{price:>7}  {g.source}")


@cli.command()
def models():
    """List the model catalog with derived sizes."""
    from .catalog.models import MODELS

    click.echo(f"{'model':<12}{'layers':>7}{'hidden':>7}{'kv heads':>9}{'params B':>9}{'GB/layer':>9}"
               f"{'KV KB/token':>12}")
    for m in MODELS.values():
        click.echo(f"{m.name:<12}{m.layers:7d}{m.hidden:7d}{m.kv_heads:9d}{m.total_params / 1e9:9.2f}"
                   f"{m.bytes_per_layer / 1e9:9.3f}{m.kv_bytes_per_token / 1e3:12.1f}")


@cli.command()
def policies():
    """List the registered policies, planners and schedulers."""
    from .policies import PLANNERS, POLICIES, SCHEDULERS

    for name, (p, s) in sorted(POLICIES.items()):
        click.echo(f"policy     {name:<18} placement {p}, scheduler {s}")
    click.echo(f"placements {', '.join(sorted(PLANNERS))}")
    click.echo(f"schedulers {', '.join(sorted(SCHEDULERS))}")


def main(argv=None):
    """Entry point: run click, turning user errors into one line and exit code 1."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except SimError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        click.echo(f"error: {e.strerror or e}: {e.filename}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
