"""`python -m gateway` and the `gateway` console script: patch for gevent first, then the CLI.

Only `serve` builds the whole app; the other commands open the database and run (see
gateway/cli/common.py), so a command costs about half a second, most of it SQLAlchemy's import."""


def _patch_all() -> None:
    """gevent's patch_all, with the installed packages' entry points looked up once rather than at
    each of its ~25 plugin events (each lookup reads every installed package's metadata: about a
    tenth of a second per command). Nothing is installed meanwhile, so every event sees the same
    plugins it would have found itself."""
    from functools import lru_cache
    from importlib import metadata

    from gevent import monkey

    lookup = metadata.entry_points
    metadata.entry_points = lru_cache(maxsize=None)(lookup)
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = lookup


def main() -> None:
    _patch_all()
    from gateway.cli import cli

    cli()


if __name__ == "__main__":
    main()
