"""``python -m profiler --gpu L4 [--model llama2-70b ...]`` (what ``make profile GPU=L4`` runs).

Times one decoder layer of each model on this machine's device and writes tables that
``sim`` uses for that machine type in every cluster (``profiler/tables`` is read
automatically). Bad input ends in one line on stderr and exit code 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from simulator.errors import SimError

from .run import DEFAULT_OUT, DTYPES, ProfileConfig, default_models, profile


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--gpu", required=True, help="machine type to profile (L4, A100-80GB, T4x4) or 'cpu'")
@click.option("--model", "models", multiple=True,
              help="catalog name, TOML or config.json (repeatable); default: the preset clusters' models "
                   "(on the CPU: a small LLaMA-style model)")
@click.option("--out", type=click.Path(file_okay=False), default=str(DEFAULT_OUT), show_default=True,
              help="table root: <out>/<model>/<machine>/")
@click.option("--grid", type=click.Choice(["default", "quick"]), default=None,
              help="points to time (default: quick on the CPU)")
@click.option("--dtype", type=click.Choice(DTYPES), default=None, help="default: float16 on GPUs, float32 on the CPU")
@click.option("--warmup", type=int, default=None, help="untimed runs per point")
@click.option("--repeats", type=int, default=None, help="timed runs per point (the median is kept)")
@click.option("--threads", type=int, default=None, help="CPU: threads to pin")
@click.option("--tp", type=int, default=1, show_default=True, help="CPU: tensor-parallel processes (gloo)")
@click.option("--fresh", is_flag=True, help="discard what the folder holds and time everything again")
@click.option("--quiet", is_flag=True, help="no progress bar")
def main(gpu, models, out, grid, dtype, warmup, repeats, threads, tp, fresh, quiet):
    """Profile real transformer layers on this machine and write the simulator's latency tables."""
    for model in models or default_models(gpu):
        folder = profile(ProfileConfig(gpu, model, Path(out), grid, dtype, warmup, repeats, threads, tp, fresh,
                                       progress=not quiet))
        click.echo(f"wrote {folder} (sim costs {folder.name} {folder.parent.name} --profiles {out})")


def run(argv=None) -> int:
    try:
        main.main(args=argv, standalone_mode=False)
    except SimError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except click.exceptions.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run())
