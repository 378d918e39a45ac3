"""`python -m gateway` and the `gateway` console script: patch for gevent first, then the CLI."""


def main() -> None:
    from gevent import monkey

    monkey.patch_all()
    from gateway.cli import cli

    cli()


if __name__ == "__main__":
    main()
