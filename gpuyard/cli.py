"""The `gpuyard` command.

Each subcommand lives in the package that owns it, as a module with
`add_arguments(parser)` and `run(args) -> int`; this file only names them, so that
start-up imports nothing but the command that runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from gpuyard.cliargs import CommandError

DESCRIPTION = """\
gpuyard: a control plane for GPU training clusters on Kubernetes (gang-scheduled
training jobs, team capacity, warm capacity, GPU health), with an embedded cluster of
simulated GPU nodes to try it on."""
EXAMPLES = """examples:
  gpuyard up --nodes 16 --autoscale gpu=16:24 --balloons   # a local cluster of 8-GPU nodes
  export KUBECONFIG=$PWD/.gpuyard/kubeconfig                # then, in another terminal:
  gpuyard submit -f examples/ddp.yaml                       # a 16-worker training job
  gpuyard jobs -o wide                                      # phase, restarts, nodes, why it waits
  gpuyard describe job clip-ddp                             # its workers, restarts and events
  gpuyard fault gpu-xid gpu-node-0003 --xid 79              # break a GPU of a simulated node
  gpuyard twin synth --nodes 120 --days 1 --jobs 1000 --out /tmp/jobs.csv

'gpuyard COMMAND --help' describes each command."""

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "apiserver": ("gpuyard.apiserver.cli", "run the embedded Kubernetes-compatible API server"),
    "up": ("gpuyard.cluster.cli", "run an embedded GPU cluster: API server, nodes, controllers"),
    "fault": ("gpuyard.cluster.faultcli", "inject a fault into a simulated node"),
    "scheduler": ("gpuyard.scheduling.cli", "run the gang scheduler against a cluster"),
    "controllers": ("gpuyard.controllers", "run gpuyard's controllers against a cluster"),
    "submit": ("gpuyard.jobs.cli", "submit a TrainingJob from a file"),
    "jobs": ("gpuyard.jobs.cli", "list TrainingJobs"),
    "describe": ("gpuyard.jobs.cli", "describe a TrainingJob"),
    "delete": ("gpuyard.jobs.cli", "delete a TrainingJob"),
    "nodes": ("gpuyard.jobs.cli", "list nodes with GPU use and health"),
    "status": ("gpuyard.jobs.cli", "summarise the cluster: GPUs, gangs, health"),
    "health": ("gpuyard.health.cli", "node health agent and controllers"),
    "gpu-test": ("gpuyard.health.gputest", "run the active GPU test on this machine"),
    "twin": ("gpuyard.twin.cli", "replay workloads through the scheduling policy"),
    "manifests": ("gpuyard.manifests", "print the YAML that installs gpuyard on a real cluster"),
    "netd": ("gpuyard.network.cli", "node network agent: per-pod traffic accounting and shaping"),
    "network": ("gpuyard.network.top", "traffic per pod, namespace or team (network top)"),
    "teams-webhook": ("gpuyard.teams.webhook_cmd", "serve the team admission webhook on a cluster"),
    "dashboard": ("gpuyard.dashboard.cli", "serve the live web dashboard of a cluster"),
}


def _module_for(name: str):  # type: ignore[no-untyped-def]
    modname, _ = COMMANDS[name]
    return importlib.import_module(modname)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Whatever a command writes (data directories, kubeconfigs, keys, reports) is its
    # owner's only: directories 0700, files 0600, unless the code asks for more.
    os.umask(0o077)
    parser = argparse.ArgumentParser(
        prog="gpuyard",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="gpuyard 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen command's module is imported; the others get a bare help line.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if name == chosen:
            try:
                mod = _module_for(name)
            except ModuleNotFoundError as exc:
                print(f"gpuyard: command {name!r} is not available: {exc}", file=sys.stderr)
                return 2
            mod.add_arguments(p, name) if _takes_name(mod) else mod.add_arguments(p)
            p.set_defaults(_module=mod)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    mod = args._module
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place errors reach the user
        return _report(exc)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input or an unusable environment, not a bug. Classes of
    modules not imported cannot have been raised, so only loaded ones are looked up."""
    kinds: list[type[BaseException]] = [CommandError, OSError, ValueError, UnicodeError]
    for modname, name in (
        ("sqlite3", "Error"),
        ("yaml", "YAMLError"),
        ("gpuyard.kube.errors", "KubeError"),
    ):
        mod = sys.modules.get(modname)
        if mod is not None and isinstance(getattr(mod, name, None), type):
            kinds.append(getattr(mod, name))
    return tuple(kinds)


def _report(exc: Exception) -> int:
    """One line for an expected error; the traceback, called a bug, for anything else."""
    if isinstance(exc, _expected_errors()):
        if isinstance(exc, OSError) and exc.strerror and exc.filename:
            message = f"{exc.filename}: {exc.strerror}"
        else:
            message = str(exc) or type(exc).__name__
        print(f"gpuyard: error: {message}", file=sys.stderr)
        return exc.code if isinstance(exc, CommandError) else 1
    import traceback

    traceback.print_exc()
    print(
        f"gpuyard: internal error (a bug in gpuyard; please report it with the traceback "
        f"above): {type(exc).__name__}: {exc}",
        file=sys.stderr,
    )
    return 70


def _takes_name(mod) -> bool:  # type: ignore[no-untyped-def]
    """Modules that serve several commands take the command's name too."""
    import inspect

    return len(inspect.signature(mod.add_arguments).parameters) >= 2


if __name__ == "__main__":
    sys.exit(main())
