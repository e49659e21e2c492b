"""``python -m dashboard batch --celery ROOT... --out-dir DIR``: the engine's command line
(every ``iondiff`` option) with one more batch option, ``--celery``, which runs each
simulation on the deployment's Celery workers at ``$REDIS_URL`` instead of local
processes. The engine itself never imports the dashboard."""

import sys

from iondiff_core import cli


def _add_celery_flag(batch_parser) -> None:
    batch_parser.add_argument(
        "--celery", action="store_true",
        help="submit each simulation to the Celery workers at $REDIS_URL (simulations and --out-dir on folders "
             "the workers see at the same paths) instead of local processes",
    )


def batch_executor(jobs, args, params: dict, progress) -> list[dict]:
    """:func:`iondiff_core.cli.local_batch`, or the Celery workers with ``--celery``."""
    if not getattr(args, "celery", False):
        return cli.local_batch(jobs, args, params, progress)
    from dashboard.celery_app import submit_batch

    return submit_batch(jobs, params, args.cache_dir, args.timestep_fs, args.temperature, progress)


def main(argv=None) -> int:
    parser = cli.build_parser(prog="python -m dashboard", extend_batch=_add_celery_flag)
    return cli.main(argv, parser=parser, batch_executor=batch_executor)


if __name__ == "__main__":
    sys.exit(main())
